# Shared set-up steps for scripts/quickstart.sh and scripts/test.sh.

# Install Debian packages that are missing (one apt-get update first).
need_apt() {
    local missing=()
    for pkg in "$@"; do
        # "ok installed", not a removed package whose config files remain.
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo ">> installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# rustup does not install targets from rust-toolchain.toml here
# (RUSTUP_AUTO_INSTALL=0), so add the Wasm target explicitly.
need_wasm_target() {
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
}

# Plugins are their own workspace; keep their target dir next to the
# gateway's cache when CARGO_TARGET_DIR is set, else in plugins/target.
plugin_target_dir() {
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR/plugins"; else echo "$PWD/plugins/target"; fi
}

build_plugins() {
    # --target: plugins/.cargo/config.toml is only read when cargo runs inside plugins/.
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir "$(plugin_target_dir)"
    # The SQL routers are their own workspace (the SDK's `sql` feature).
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/sql/Cargo.toml --target-dir "$(plugin_target_dir)"
    # The session strategies (the SDK's `session` feature), plugins/session-*.
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/session/Cargo.toml --target-dir "$(plugin_target_dir)"
    # The access-control policies (the SDK's `access` feature), plugins/access-*.
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/access/Cargo.toml --target-dir "$(plugin_target_dir)"
    export SWITCHYARD_PLUGIN_DIR="$(plugin_target_dir)/wasm32-wasip2/release"
}

# The round-robin policy in Python and JavaScript. Their tool chains
# (componentize-py from PyPI, componentize-js from npm) are installed once
# under ~/.cache/switchyard/tools. Needs build_plugins first.
build_polyglot_plugins() {
    python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt python3-venv
    command -v npm >/dev/null || need_apt nodejs npm
    bash plugins/python/round-robin/build.sh "$SWITCHYARD_PLUGIN_DIR"
    bash plugins/js/round-robin/build.sh "$SWITCHYARD_PLUGIN_DIR"
}

# PyMySQL, a Python driver the SQL tests use as a client nobody here wrote.
need_pymysql() {
    python3 -c 'import pymysql' 2>/dev/null || python3 -m pip install -q --root-user-action=ignore pymysql
}

# MariaDB server, CLI and MariaDB's own client test suite for the SQL tests
# (the harness starts its own instances on spare ports; the machine's own
# server is not touched).
need_mariadb() {
    [ -x /usr/sbin/mariadbd ] && [ -x /usr/bin/mariadb-install-db ] && command -v mariadb >/dev/null \
        && command -v mariadb-client-test >/dev/null && return 0
    need_apt mariadb-server mariadb-client mariadb-test
}
