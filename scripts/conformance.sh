#!/usr/bin/env bash
# MariaDB's C API test suite (mariadb-client-test) test by test, directly
# and through the gateway over a primary and 2 replicas; prints the 4-way
# table and every proxy-only failure. Also part of scripts/test.sh.
# CONFORMANCE_TESTS=test_a,test_b limits the run to those tests.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_apt cmake protobuf-compiler
need_mariadb
cargo build -p switchyard --bins
cargo test -p switchyard-tests --test sql_conformance -- --nocapture
