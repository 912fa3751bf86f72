//! Logins: the gateway's handshake with clients (`mysql_native_password`
//! and the `caching_sha2_password` fast path) and its own login to backends.

use crate::wire::{ok_payload, parse_err, PacketIo, MAX_COMMAND};
use crate::SqlError;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use mysql_common::scramble::{scramble_native, scramble_sha256};
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncWrite};

/// Capabilities the gateway offers clients. No compression: packets pass
/// through unchanged, so the client's choices must be ones every backend
/// connection can share. `CLIENT_LOCAL_FILES` passes to the backend
/// login of a client that offered it; the file is relayed packet by packet. TLS (`CLIENT_SSL`) is added
/// to the greeting when the listener offers it: it ends at the gateway.
pub const GATEWAY_CAPS: CapabilityFlags = CapabilityFlags::from_bits_truncate(
    CapabilityFlags::CLIENT_LONG_PASSWORD.bits()
        | CapabilityFlags::CLIENT_FOUND_ROWS.bits()
        | CapabilityFlags::CLIENT_LONG_FLAG.bits()
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB.bits()
        | CapabilityFlags::CLIENT_ODBC.bits()
        | CapabilityFlags::CLIENT_LOCAL_FILES.bits()
        | CapabilityFlags::CLIENT_IGNORE_SPACE.bits()
        | CapabilityFlags::CLIENT_PROTOCOL_41.bits()
        | CapabilityFlags::CLIENT_INTERACTIVE.bits()
        | CapabilityFlags::CLIENT_TRANSACTIONS.bits()
        | CapabilityFlags::CLIENT_SECURE_CONNECTION.bits()
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS.bits()
        | CapabilityFlags::CLIENT_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH.bits()
        | CapabilityFlags::CLIENT_CONNECT_ATTRS.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits()
        | CapabilityFlags::CLIENT_SESSION_TRACK.bits()
        | CapabilityFlags::CLIENT_DEPRECATE_EOF.bits(),
);

/// Capabilities that matter only during login; the rest of
/// `GATEWAY_CAPS` changes what travels on the wire afterwards, and backend
/// connections are pooled by it.
const LOGIN_ONLY_CAPS: u32 = CapabilityFlags::CLIENT_LONG_PASSWORD.bits()
    | CapabilityFlags::CLIENT_CONNECT_WITH_DB.bits()
    | CapabilityFlags::CLIENT_PLUGIN_AUTH.bits()
    | CapabilityFlags::CLIENT_CONNECT_ATTRS.bits()
    | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits();

const WIRE_CAPS: CapabilityFlags = CapabilityFlags::from_bits_truncate(GATEWAY_CAPS.bits() & !LOGIN_ONLY_CAPS);

/// utf8mb4_general_ci.
const DEFAULT_COLLATION: u8 = 45;

/// MariaDB's extended capabilities the gateway offers (bits 32..63, sent
/// in the greeting's reserved bytes when `CLIENT_MYSQL`, bit 0, is clear):
/// progress reports (1), bulk execute (4) and extended metadata (8). Not
/// metadata caching: it changes execute responses the scanner follows.
pub const GATEWAY_EXT_CAPS: u32 = 1 | 4 | 8;

/// Where the extended capabilities sit in a greeting: after version, id,
/// scramble part 1, filler, caps, collation, status, caps, scramble length
/// and 6 reserved bytes. `None` if the greeting is too short.
fn greeting_ext_at(g: &[u8]) -> Option<usize> {
    let vlen = g.get(1..)?.iter().position(|&b| b == 0)?;
    let at = 1 + vlen + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 6;
    (g.len() >= at + 4).then_some(at)
}

/// The caps in a handshake response start at 0; the extended ones fill
/// the last 4 of the 23 reserved bytes (4 caps + 4 max packet + 1 collation).
const RESPONSE_EXT_AT: usize = 28;

const NATIVE: &[u8] = b"mysql_native_password";

/// A client that logged in.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
    /// The client's capabilities, limited to the gateway's wire set.
    pub caps: CapabilityFlags,
    pub collation: u8,
    pub schema: Option<String>,
    /// MariaDB extended capabilities both sides have.
    pub ext_caps: u32,
    /// The greeting's scramble: COM_CHANGE_USER is signed with it.
    pub nonce: [u8; 20],
    /// The connection id the client was given.
    pub conn_id: u32,
}

/// The parts of a HandshakeResponse41 the gateway uses.
#[derive(Debug)]
pub struct ClientHello {
    pub caps: CapabilityFlags,
    pub collation: u8,
    pub user: String,
    pub scramble: Vec<u8>,
    pub schema: Option<String>,
    pub plugin: Option<Vec<u8>>,
    /// MariaDB extended capabilities (0 from a MySQL client).
    pub ext_caps: u32,
}

/// Switches a client connection to TLS after its SSL request: the
/// handshake's first bytes may already sit unread in `io`.
pub trait StartTls<S>: Sync {
    fn start<'a>(&'a self, io: &'a mut PacketIo<S>) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'a>>;
}

/// TLS as a listener offers it.
pub struct TlsOffer<'a, S> {
    pub start: &'a dyn StartTls<S>,
    /// A client that does not switch is refused.
    pub required: bool,
}

/// True when a login packet asks for TLS (an SSL request, or a full
/// response sent after the switch).
fn asks_tls(p: &[u8]) -> bool {
    p.len() >= 4 && CapabilityFlags::from_bits_truncate(u32::from_le_bytes([p[0], p[1], p[2], p[3]])).contains(CapabilityFlags::CLIENT_SSL)
}

/// Parse a client's handshake response; a clear reason when it is not one.
/// `tls`: the connection already switched to TLS.
pub fn parse_handshake_response(p: &[u8]) -> Result<ClientHello, String> {
    parse_response(p, false)
}

fn parse_response(p: &[u8], tls: bool) -> Result<ClientHello, String> {
    if p.len() < 32 {
        return Err(format!("handshake response of {} bytes is too short (TLS is not offered)", p.len()));
    }
    let caps = CapabilityFlags::from_bits_truncate(u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
    if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err("the client does not speak protocol 4.1".into());
    }
    if caps.contains(CapabilityFlags::CLIENT_SSL) && !tls {
        return Err("the client asked for TLS, which this listener does not offer ([sql] tls)".into());
    }
    let r: HandshakeResponse<'_> = ParseBuf(p).parse(()).map_err(|e| format!("malformed handshake response: {e}"))?;
    Ok(ClientHello {
        caps: r.capabilities(),
        collation: r.collation(),
        user: String::from_utf8_lossy(r.user()).into_owned(),
        scramble: r.scramble_buf().to_vec(),
        schema: r.db_name().map(|d| String::from_utf8_lossy(d).into_owned()).filter(|d| !d.is_empty()),
        plugin: r.auth_plugin().map(|p| p.as_bytes().to_vec()),
        ext_caps: if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
            0
        } else {
            u32::from_le_bytes([p[RESPONSE_EXT_AT], p[RESPONSE_EXT_AT + 1], p[RESPONSE_EXT_AT + 2], p[RESPONSE_EXT_AT + 3]])
        },
    })
}

/// 20 bytes of nonce without NUL (clients read it as a C string).
fn nonce() -> [u8; 20] {
    let mut n = [0u8; 20];
    if getrandom::fill(&mut n).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        n.iter_mut().enumerate().for_each(|(i, b)| *b = (t >> (i % 16 * 8)) as u8);
    }
    n.map(|b| (b % 94) + 33)
}

fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn denied(user: &str, sent: bool) -> SqlError {
    SqlError::new(1045, "28000", format!("Access denied for user '{user}' (using password: {})", if sent { "YES" } else { "NO" }))
}

/// Largest login packet from a client that has not authenticated: user,
/// scramble, schema, plugin and connect attributes fit in a few hundred
/// bytes; MariaDB's own limit before login is far below `max_allowed_packet`.
pub const MAX_HANDSHAKE: usize = 64 << 10;

/// Run the server side of the handshake. On failure the client has been
/// sent an ERR packet naming the problem.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut PacketIo<S>,
    users: &BTreeMap<String, String>,
    version: &str,
    conn_id: u32,
    autocommit: bool,
    tls: Option<TlsOffer<'_, S>>,
) -> Result<Login, SqlError> {
    let status = if autocommit { StatusFlags::SERVER_STATUS_AUTOCOMMIT } else { StatusFlags::empty() };
    let offered = if tls.is_some() { GATEWAY_CAPS | CapabilityFlags::CLIENT_SSL } else { GATEWAY_CAPS };
    let n = nonce();
    let greeting = HandshakePacket::new(
        10,
        version.as_bytes(),
        conn_id,
        n[..8].try_into().expect("8 bytes"),
        // Part 2 of the scramble goes out NUL-terminated (13 bytes).
        Some([&n[8..], &[0]].concat()),
        offered,
        DEFAULT_COLLATION,
        status,
        Some(NATIVE),
    );
    let mut buf = Vec::new();
    greeting.serialize(&mut buf);
    // Say "MariaDB" (CLIENT_MYSQL clear) and offer the extended capabilities.
    if let Some(at) = greeting_ext_at(&buf) {
        let caps_at = at - 6 - 1 - 2 - 2 - 1 - 2;
        buf[caps_at] &= !1;
        buf[at..at + 4].copy_from_slice(&GATEWAY_EXT_CAPS.to_le_bytes());
    }
    io.send(0, &buf).await.map_err(SqlError::io)?;
    let (mut seq, mut payload) = read_login(io).await?;
    let switched = match &tls {
        // An SSL request is the response's first 32 bytes: switch, then the
        // whole response arrives over TLS.
        Some(offer) if asks_tls(&payload) && payload.len() == 32 => {
            offer.start.start(io).await.map_err(|e| SqlError::new(2026, "08S01", format!("TLS handshake failed: {e}")))?;
            (seq, payload) = read_login(io).await?;
            true
        }
        Some(offer) if offer.required && !asks_tls(&payload) => {
            let e = SqlError::new(3159, "08004", "Connections using insecure transport are prohibited: this listener requires TLS ([sql] require_tls)".into());
            return Err(reply_err(io, seq.wrapping_add(1), e).await);
        }
        _ => false,
    };
    let hello = match parse_response(&payload, switched) {
        Ok(h) => h,
        Err(msg) => return Err(reply_err(io, seq + 1, SqlError::new(1043, "08S01", format!("Bad handshake: {msg}"))).await),
    };
    if let Some(cs) = wide_charset(hello.collation) {
        // The server refuses these too: SQL text cannot be parsed in them.
        let e = SqlError::new(1231, "42000", format!("Variable 'character_set_client' can't be set to the value of '{cs}'"));
        return Err(reply_err(io, seq + 1, e).await);
    }
    let Some(password) = users.get(&hello.user) else {
        return Err(reply_err(io, seq + 1, denied(&hello.user, !hello.scramble.is_empty())).await);
    };
    let mut seq = seq.wrapping_add(1);
    let ok = match hello.plugin.as_deref() {
        Some(b"caching_sha2_password") => {
            let want = scramble_sha256(&n, password.as_bytes()).map(|s| s.to_vec()).unwrap_or_default();
            let ok = eq_ct(&want, &hello.scramble);
            if ok {
                // fast_auth_success, then the OK below.
                seq = io.send(seq, &[0x01, 0x03]).await.map_err(SqlError::io)?;
            }
            ok
        }
        None | Some(b"mysql_native_password") => check_native(&n, password, &hello.scramble),
        Some(_) => {
            let ok;
            (ok, seq) = switch_to_native(io, seq, &n, password).await?;
            ok
        }
    };
    if !ok {
        return Err(reply_err(io, seq, denied(&hello.user, !hello.scramble.is_empty())).await);
    }
    io.send(seq, &ok_payload(status)).await.map_err(SqlError::io)?;
    Ok(Login {
        user: hello.user,
        password: password.clone(),
        caps: hello.caps & GATEWAY_CAPS,
        collation: hello.collation,
        schema: hello.schema,
        ext_caps: hello.ext_caps & GATEWAY_EXT_CAPS,
        nonce: n,
        conn_id,
    })
}

/// COM_CHANGE_USER: authenticate the new user (signed with the
/// connection's greeting scramble, or after an auth switch) and answer OK
/// or ERR. On `Err` the ERR was sent; the server closes such a
/// connection, and so does the gateway.
pub async fn change_user<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut PacketIo<S>,
    payload: &[u8],
    users: &BTreeMap<String, String>,
    current: &Login,
) -> Result<Login, SqlError> {
    let bad = |what: &str| SqlError::new(1835, "08S01", format!("malformed COM_CHANGE_USER: {what}"));
    let p = &payload[1..];
    let cstr = |from: usize| -> Option<(&[u8], usize)> {
        let rest = p.get(from..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some((&rest[..end], from + end + 1))
    };
    let Some((user, at)) = cstr(0) else { return Err(reply_err(io, 1, bad("no user name")).await) };
    let (scramble, at) = match p.get(at) {
        Some(&len) if current.caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) => match p.get(at + 1..at + 1 + usize::from(len)) {
            Some(s) => (s.to_vec(), at + 1 + usize::from(len)),
            None => return Err(reply_err(io, 1, bad("auth data cut off")).await),
        },
        _ => match cstr(at) {
            Some((s, next)) => (s.to_vec(), next),
            None => (Vec::new(), p.len()),
        },
    };
    let (schema, at) = cstr(at).map_or((None, p.len()), |(d, next)| ((!d.is_empty()).then(|| String::from_utf8_lossy(d).into_owned()), next));
    let collation = p.get(at..at + 2).map_or(current.collation, |c| u8::try_from(u16::from_le_bytes([c[0], c[1]])).unwrap_or(DEFAULT_COLLATION));
    let plugin = cstr(at + 2).map(|(pl, _)| pl.to_vec());
    if let Some(cs) = wide_charset(collation) {
        return Err(reply_err(io, 1, SqlError::new(1231, "42000", format!("Variable 'character_set_client' can't be set to the value of '{cs}'"))).await);
    }
    let user = String::from_utf8_lossy(user).into_owned();
    let Some(password) = users.get(&user) else {
        return Err(reply_err(io, 1, denied(&user, !scramble.is_empty())).await);
    };
    let mut seq = 1u8;
    let native = matches!(plugin.as_deref(), None | Some(b"mysql_native_password"));
    let mut ok = native && check_native(&current.nonce, password, &scramble);
    if !ok && current.caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        (ok, seq) = switch_to_native(io, seq, &nonce(), password).await?;
    }
    if !ok {
        return Err(reply_err(io, seq, denied(&user, !scramble.is_empty())).await);
    }
    io.send(seq, &ok_payload(StatusFlags::SERVER_STATUS_AUTOCOMMIT)).await.map_err(SqlError::io)?;
    Ok(Login { user, password: password.clone(), collation, schema, ..current.clone() })
}

/// Character sets a client cannot use for SQL text, by collation id.
fn wide_charset(collation: u8) -> Option<&'static str> {
    match collation {
        35 | 90 | 128..=151 | 159 => Some("ucs2"),
        54 | 55 | 101..=124 => Some("utf16"),
        56 | 62 => Some("utf16le"),
        60 | 61 | 160..=183 => Some("utf32"),
        _ => None,
    }
}

/// Ask the client to sign `nonce` with `mysql_native_password` (an auth
/// switch) and check its answer; (accepted, next sequence number).
async fn switch_to_native<S: AsyncRead + AsyncWrite + Unpin>(io: &mut PacketIo<S>, seq: u8, nonce: &[u8; 20], password: &str) -> Result<(bool, u8), SqlError> {
    let switch = AuthSwitchRequest::new(NATIVE, [&nonce[..], &[0]].concat());
    let mut buf = Vec::new();
    switch.serialize(&mut buf);
    io.send(seq, &buf).await.map_err(SqlError::io)?;
    let (s, answer) = io.read_packet(1024).await.map_err(SqlError::io)?;
    Ok((check_native(nonce, password, &answer), s.wrapping_add(1)))
}

fn check_native(nonce: &[u8], password: &str, scramble: &[u8]) -> bool {
    match scramble_native(nonce, password.as_bytes()) {
        Some(want) => eq_ct(&want, scramble),
        None => scramble.is_empty(),
    }
}

/// A login packet, bounded by `MAX_HANDSHAKE`.
async fn read_login<S: AsyncRead + AsyncWrite + Unpin>(io: &mut PacketIo<S>) -> Result<(u8, Vec<u8>), SqlError> {
    match io.read_packet(MAX_HANDSHAKE).await {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let e = SqlError::new(1043, "08S01", format!("Bad handshake: the login packet is larger than {MAX_HANDSHAKE} bytes"));
            Err(reply_err(io, 2, e).await)
        }
        Err(e) => Err(SqlError::io(e)),
    }
}

async fn reply_err<S: AsyncRead + AsyncWrite + Unpin>(io: &mut PacketIo<S>, seq: u8, e: SqlError) -> SqlError {
    let _ = io.send(seq, &e.payload()).await;
    e
}

/// Log in to a backend as `user` with the client's wire capabilities and
/// collation. Returns the capabilities in effect.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut PacketIo<S>,
    user: &str,
    password: &str,
    caps: CapabilityFlags,
    ext_caps: u32,
    collation: u8,
    tls: Option<&dyn StartTls<S>>,
) -> Result<(CapabilityFlags, String, u32, u32), SqlError> {
    let (_, payload) = io.read_packet(1 << 16).await.map_err(SqlError::io)?;
    if payload.first() == Some(&0xFF) {
        let (code, msg) = parse_err(&payload);
        return Err(SqlError::new(code, "HY000", msg));
    }
    let hs: HandshakePacket<'_> =
        ParseBuf(&payload).parse(()).map_err(|e| SqlError::new(2027, "HY000", format!("malformed greeting from backend: {e}")))?;
    let version = hs.server_version_str().into_owned();
    let backend_ext = match greeting_ext_at(&payload) {
        Some(at) if !hs.capabilities().contains(CapabilityFlags::CLIENT_LONG_PASSWORD) => {
            u32::from_le_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]])
        }
        _ => 0,
    };
    let ext = ext_caps & backend_ext;
    let mut caps = (caps & WIRE_CAPS & hs.capabilities())
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH;
    if ext == 0 {
        caps |= CapabilityFlags::CLIENT_LONG_PASSWORD;
    }
    if tls.is_some() {
        if !hs.capabilities().contains(CapabilityFlags::CLIENT_SSL) {
            return Err(SqlError::new(2026, "HY000", format!("the backend ({version}) does not offer TLS, which [sql.backend_tls] asks for")));
        }
        caps |= CapabilityFlags::CLIENT_SSL;
    }
    let nonce = hs.nonce();
    let scramble = scramble_native(&nonce, password.as_bytes()).map(|s| s.to_vec());
    let resp = HandshakeResponse::new(
        scramble,
        hs.server_version_parsed().unwrap_or((5, 5, 5)),
        Some(user.as_bytes()),
        None::<&[u8]>,
        Some(AuthPlugin::MysqlNativePassword),
        caps,
        None,
        MAX_COMMAND as u32,
    );
    let mut buf = Vec::new();
    resp.serialize(&mut buf);
    buf[8] = collation;
    if ext != 0 && buf.len() >= RESPONSE_EXT_AT + 4 {
        buf[RESPONSE_EXT_AT..RESPONSE_EXT_AT + 4].copy_from_slice(&ext.to_le_bytes());
    }
    let mut seq = 1;
    if let Some(tls) = tls {
        // The SSL request is the response's first 32 bytes (capabilities,
        // packet size, collation, MariaDB's extended capabilities); the
        // whole response follows over TLS.
        io.send(seq, &buf[..32]).await.map_err(SqlError::io)?;
        tls.start(io).await.map_err(|e| SqlError::new(2026, "HY000", format!("TLS to the backend failed: {e}")))?;
        seq = 2;
    }
    io.send(seq, &buf).await.map_err(SqlError::io)?;
    let caps = caps - CapabilityFlags::CLIENT_SSL;
    let mut answers = 0;
    loop {
        let (seq, reply) = io.read_packet(1 << 16).await.map_err(SqlError::io)?;
        answers += 1;
        match reply.first() {
            Some(0x00) => return Ok((caps, version, ext, hs.connection_id())),
            Some(0xFF) => {
                let (code, msg) = parse_err(&reply);
                return Err(SqlError::new(code, "28000", format!("backend refused the login of '{user}': {msg}")));
            }
            Some(0xFE) if answers == 1 => {
                let switch: AuthSwitchRequest<'_> =
                    ParseBuf(&reply).parse(()).map_err(|e| SqlError::new(2027, "HY000", format!("malformed auth switch from backend: {e}")))?;
                if switch.auth_plugin().as_bytes() != NATIVE {
                    return Err(SqlError::new(
                        1251,
                        "08004",
                        format!("backend asks for auth plugin {:?}; create '{user}' with mysql_native_password", String::from_utf8_lossy(switch.auth_plugin().as_bytes())),
                    ));
                }
                let s = scramble_native(switch.plugin_data(), password.as_bytes()).map(|s| s.to_vec()).unwrap_or_default();
                io.send(seq.wrapping_add(1), &s).await.map_err(SqlError::io)?;
            }
            Some(0x01) if reply.get(1) == Some(&0x03) => {}
            _ => return Err(SqlError::new(2027, "HY000", "unexpected answer from the backend during login".into())),
        }
        if answers > 3 {
            return Err(SqlError::new(2027, "HY000", "backend login did not finish".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_has_no_nul() {
        assert!(nonce().iter().all(|&b| b > 32 && b < 128));
    }

    #[test]
    fn handshake_response_round_trips() {
        let resp = HandshakeResponse::new(
            Some(vec![1u8; 20]),
            (10, 11, 0),
            Some(&b"app"[..]),
            Some(&b"shop"[..]),
            Some(AuthPlugin::MysqlNativePassword),
            GATEWAY_CAPS,
            None,
            1 << 24,
        );
        let mut buf = Vec::new();
        resp.serialize(&mut buf);
        let h = parse_handshake_response(&buf).unwrap();
        assert_eq!(h.user, "app");
        assert_eq!(h.schema.as_deref(), Some("shop"));
        assert_eq!(h.scramble, vec![1u8; 20]);
        assert!(parse_handshake_response(&buf[..20]).unwrap_err().contains("too short"));
    }

    #[test]
    fn native_check() {
        let n = nonce();
        let s = scramble_native(&n, b"secret").unwrap();
        assert!(check_native(&n, "secret", &s));
        assert!(!check_native(&n, "other", &s));
        assert!(check_native(&n, "", &[]));
    }
}
