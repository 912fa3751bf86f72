//! MySQL packet framing: raw frames for forwarding, whole payloads for
//! commands, the response scanner that finds where a result ends, and
//! ERR/OK packets the gateway writes itself.

use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{CommonOkPacket, OkPacketDeserializer, ResultSetTerminator};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload of one frame; a longer packet continues in the next.
pub const MAX_FRAME: usize = 0xFF_FFFF;

/// Largest command a client may send (MariaDB's `max_allowed_packet` default).
pub const MAX_COMMAND: usize = 64 << 20;

/// Flush the client's buffer once it holds this much of a result.
const FLUSH_AT: usize = 64 << 10;

/// Payload length from a frame header.
pub fn frame_len(header: &[u8]) -> usize {
    usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16
}

/// Buffered packet reading and writing over one stream.
pub struct PacketIo<S> {
    pub stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(stream: S) -> Self {
        // Empty until used: an idle or never-logged-in client holds no buffers.
        Self { stream, rbuf: BytesMut::new(), wbuf: Vec::new() }
    }

    /// Read until `need` bytes are buffered. The buffer grows with the
    /// data that arrived, `MIN_READ` to `GROW` at a time, never by what a
    /// header claims.
    async fn fill(&mut self, need: usize) -> io::Result<()> {
        const GROW: usize = 64 << 10;
        // At least a page per read, so small packets do not cost a read each.
        const MIN_READ: usize = 4 << 10;
        while self.rbuf.len() < need {
            self.rbuf.reserve((need - self.rbuf.len()).clamp(MIN_READ, GROW));
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                let what = if self.rbuf.is_empty() { "connection closed" } else { "connection closed inside a packet" };
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
            }
        }
        Ok(())
    }

    /// The bytes read past the last packet, taken out (the start of a TLS
    /// handshake that followed an SSL request).
    pub fn take_unread(&mut self) -> BytesMut {
        std::mem::take(&mut self.rbuf)
    }

    /// True when no bytes are buffered (a clean point between packets).
    pub fn drained(&self) -> bool {
        self.rbuf.is_empty()
    }

    /// One frame, header included, exactly as it arrived.
    pub async fn read_frame(&mut self) -> io::Result<BytesMut> {
        self.fill(4).await?;
        let len = frame_len(&self.rbuf[..3]);
        self.fill(4 + len).await?;
        Ok(self.rbuf.split_to(4 + len))
    }

    /// One whole packet: its payload (continuation frames joined) and the
    /// sequence id of its last frame. Longer than `max` is an error.
    pub async fn read_packet(&mut self, max: usize) -> io::Result<(u8, Vec<u8>)> {
        let mut payload = Vec::new();
        loop {
            // Refuse on the header's claim, before reading (or buffering) the data.
            self.fill(4).await?;
            let len = frame_len(&self.rbuf[..3]);
            if payload.len() + len > max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("packet larger than {max} bytes")));
            }
            let frame = self.read_frame().await?;
            payload.extend_from_slice(&frame[4..]);
            if len < MAX_FRAME {
                return Ok((frame[3], payload));
            }
        }
    }

    /// Queue `payload` as a packet starting at sequence `seq`; returns the
    /// next sequence id.
    pub fn push_packet(&mut self, mut seq: u8, payload: &[u8]) -> u8 {
        let mut chunks = payload.chunks(MAX_FRAME).peekable();
        if chunks.peek().is_none() {
            self.wbuf.extend_from_slice(&[0, 0, 0, seq]);
            return seq.wrapping_add(1);
        }
        let mut last_len = 0;
        for chunk in chunks {
            let len = chunk.len() as u32;
            self.wbuf.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
            self.wbuf.extend_from_slice(chunk);
            seq = seq.wrapping_add(1);
            last_len = chunk.len();
        }
        if last_len == MAX_FRAME {
            self.wbuf.extend_from_slice(&[0, 0, 0, seq]);
            seq = seq.wrapping_add(1);
        }
        seq
    }

    /// Queue bytes that are already framed.
    pub fn push_raw(&mut self, frames: &[u8]) {
        self.wbuf.extend_from_slice(frames);
    }

    /// Flush when a large result has piled up.
    pub async fn flush_if_full(&mut self) -> io::Result<()> {
        if self.wbuf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.stream.flush().await
    }

    /// Write one packet now.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> io::Result<u8> {
        let next = self.push_packet(seq, payload);
        self.flush().await?;
        Ok(next)
    }
}

/// What kind of response a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY: OK, ERR, or result sets.
    Result,
    /// COM_STMT_EXECUTE: as `Result`, but a result whose column EOF says
    /// `SERVER_STATUS_CURSOR_EXISTS` ends there (rows come by COM_STMT_FETCH).
    Execute,
    /// COM_FIELD_LIST: column definitions, then a terminator (or ERR).
    FieldList,
    /// COM_STMT_PREPARE: ERR, or prepare-OK with parameter and column definitions.
    Prepare,
    /// COM_STMT_FETCH: rows, then a terminator.
    Rows,
    /// OK or ERR only (COM_INIT_DB, COM_PING, COM_STMT_RESET, ...).
    Simple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    Params { left: u64, cols: u64 },
    ParamsEof { cols: u64 },
    PrepareCols(u64),
    PrepareColsEof,
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// OK or EOF with the server status flags.
    Ok(StatusFlags),
    /// An ERR packet.
    Err,
}

/// A response that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Follows a response frame by frame (without copying it) and says when
/// it is complete, so frames can be forwarded as they arrive.
#[derive(Debug, Clone)]
pub struct Scanner {
    caps: CapabilityFlags,
    state: State,
    /// The previous frame was full: this one continues its packet.
    continuing: bool,
    /// From a prepare-OK: (statement id, columns, params).
    pub prepared: Option<(u32, u16, u16)>,
    /// Warnings the final OK or EOF reported.
    pub warnings: u16,
    /// The server asked for a local file (LOAD DATA LOCAL INFILE): the
    /// client's file packets go to the server, then its OK or ERR follows.
    pub file_request: bool,
    /// The `last_gtid` a final OK reported in its session-state changes
    /// (the primary's connections track it).
    pub last_gtid: Option<String>,
    /// Rows a result set carried, or the rows an OK says were affected.
    pub rows: u64,
}

impl Scanner {
    pub fn new(caps: CapabilityFlags, expect: Expect) -> Self {
        let state = if matches!(expect, Expect::Rows | Expect::FieldList) { State::Rows } else { State::First };
        Self { caps, state, continuing: false, prepared: None, warnings: 0, file_request: false, last_gtid: None, rows: 0 }
    }

    /// After a file request was answered: the server's OK or ERR is next.
    pub fn file_sent(&mut self) {
        self.file_request = false;
        self.state = State::First;
    }

    fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Feed one frame (header included). `Some` when the response is over.
    pub fn feed(&mut self, frame: &[u8], expect: Expect) -> Result<Option<End>, ProtocolError> {
        if frame.len() < 4 || frame_len(frame) != frame.len() - 4 {
            return Err(ProtocolError("truncated frame".into()));
        }
        let payload = &frame[4..];
        let was_continuing = std::mem::replace(&mut self.continuing, payload.len() == MAX_FRAME);
        if was_continuing {
            return Ok(None);
        }
        let head = *payload.first().ok_or_else(|| ProtocolError("empty packet in a response".into()))?;
        // A MariaDB progress report (ERR with code 0xFFFF): more follows.
        if head == 0xFF && payload.get(1..3) == Some(&[0xFF, 0xFF][..]) {
            return Ok(None);
        }
        if head == 0xFF && !matches!(self.state, State::Columns(_) | State::Params { .. } | State::PrepareCols(_)) {
            return Ok(Some(End::Err));
        }
        let short = payload.len() < MAX_FRAME;
        match self.state {
            State::First => match (head, expect) {
                (0x00, Expect::Prepare) => self.prepare_ok(payload),
                (0x00, _) => {
                    self.rows = ParseBuf(&payload[1..]).checked_eat_lenenc_int().unwrap_or(0);
                    self.terminator(payload, false)
                }
                // COM_SET_OPTION answers with an EOF.
                (0xFE, Expect::Simple) if payload.len() < 9 => Ok(Some(End::Ok(self.eof_status(payload)?))),
                (_, Expect::Simple) => Err(ProtocolError(format!("expected OK or ERR, got a packet starting 0x{head:02x}"))),
                (0xFB, Expect::Result) => {
                    self.file_request = true;
                    Ok(None)
                }
                (0xFB, _) => Err(ProtocolError("a local file request answers only a query".into())),
                (_, Expect::Prepare) => Err(ProtocolError(format!("expected a prepare OK, got 0x{head:02x}"))),
                _ => {
                    let n = ParseBuf(payload).checked_eat_lenenc_int().filter(|&n| n > 0).ok_or_else(|| ProtocolError("bad column count".into()))?;
                    self.state = State::Columns(n);
                    Ok(None)
                }
            },
            State::Columns(left) => {
                self.state = match (left - 1, self.deprecate_eof()) {
                    (0, false) => State::ColumnsEof,
                    (0, true) => State::Rows,
                    (n, _) => State::Columns(n),
                };
                Ok(None)
            }
            State::ColumnsEof => {
                let status = self.eof_status(payload)?;
                // Only an execute opens a cursor; a text result can carry
                // the flag (a FOR loop in a stored program) and rows follow.
                if expect == Expect::Execute && status.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS) {
                    return Ok(Some(End::Ok(status)));
                }
                self.state = State::Rows;
                Ok(None)
            }
            State::Rows if head == 0xFE && short => self.terminator(payload, true),
            State::Rows => {
                self.rows += 1;
                Ok(None)
            }
            State::Params { left, cols } => {
                self.state = match (left - 1, self.deprecate_eof()) {
                    (0, false) => State::ParamsEof { cols },
                    (0, true) => self.after_params(cols),
                    (n, _) => State::Params { left: n, cols },
                };
                Ok(self.prepare_done())
            }
            State::ParamsEof { cols } => {
                self.eof_status(payload)?;
                self.state = self.after_params(cols);
                Ok(self.prepare_done())
            }
            State::PrepareCols(left) => {
                self.state = match (left - 1, self.deprecate_eof()) {
                    (0, false) => State::PrepareColsEof,
                    (0, true) => return Ok(Some(End::Ok(StatusFlags::empty()))),
                    (n, _) => State::PrepareCols(n),
                };
                Ok(None)
            }
            State::PrepareColsEof => {
                let status = self.eof_status(payload)?;
                Ok(Some(End::Ok(status)))
            }
        }
    }

    fn after_params(&self, cols: u64) -> State {
        if cols == 0 { State::First } else { State::PrepareCols(cols) }
    }

    /// After the parameter block of a prepare without columns, it is over.
    fn prepare_done(&self) -> Option<End> {
        (self.state == State::First).then_some(End::Ok(StatusFlags::empty()))
    }

    fn prepare_ok(&mut self, p: &[u8]) -> Result<Option<End>, ProtocolError> {
        if p.len() < 12 {
            return Err(ProtocolError("short prepare OK".into()));
        }
        let id = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
        let cols = u16::from_le_bytes([p[5], p[6]]);
        let params = u16::from_le_bytes([p[7], p[8]]);
        self.prepared = Some((id, cols, params));
        self.state = match (params, cols) {
            (0, 0) => return Ok(Some(End::Ok(StatusFlags::empty()))),
            (0, c) => State::PrepareCols(u64::from(c)),
            (n, c) => State::Params { left: u64::from(n), cols: u64::from(c) },
        };
        Ok(None)
    }

    /// An OK (or, in rows, EOF/OK-as-EOF): done unless more results follow.
    fn terminator(&mut self, p: &[u8], in_rows: bool) -> Result<Option<End>, ProtocolError> {
        let (status, warnings) = if in_rows && !self.deprecate_eof() {
            (self.eof_status(p)?, p.get(1..3).map_or(0, |w| u16::from_le_bytes([w[0], w[1]])))
        } else if in_rows {
            let ok = ParseBuf(p)
                .parse::<OkPacketDeserializer<ResultSetTerminator>>(self.caps)
                .map_err(|e| ProtocolError(format!("bad result terminator: {e}")))?
                .into_inner();
            (ok.status_flags(), ok.warnings())
        } else {
            let ok = ParseBuf(p)
                .parse::<OkPacketDeserializer<CommonOkPacket>>(self.caps)
                .map_err(|e| ProtocolError(format!("bad OK packet: {e}")))?
                .into_inner();
            if ok.status_flags().contains(StatusFlags::SERVER_SESSION_STATE_CHANGED) {
                self.last_gtid = tracked_gtid(&ok).or(self.last_gtid.take());
            }
            (ok.status_flags(), ok.warnings())
        };
        self.warnings = warnings;
        if status.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS) {
            self.state = State::First;
            return Ok(None);
        }
        Ok(Some(End::Ok(status)))
    }

    /// A pre-4.1-style EOF: 0xFE, warnings, status.
    fn eof_status(&self, p: &[u8]) -> Result<StatusFlags, ProtocolError> {
        match p {
            [0xFE, _, _, s0, s1, ..] if p.len() < 9 => Ok(StatusFlags::from_bits_truncate(u16::from_le_bytes([*s0, *s1]))),
            [0xFE, ..] if p.len() < 9 => Ok(StatusFlags::empty()),
            _ => Err(ProtocolError(format!("expected an EOF packet, got {} bytes starting 0x{:02x}", p.len(), p.first().copied().unwrap_or(0)))),
        }
    }
}

/// An ERR packet payload.
pub fn err_payload(code: u16, state: &str, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + msg.len());
    p.push(0xFF);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut st = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in st.iter_mut().zip(state.bytes()) {
        *d = s;
    }
    p.extend_from_slice(&st);
    p.extend_from_slice(msg.as_bytes());
    p
}

/// An OK packet payload with no rows affected.
pub fn ok_payload(status: StatusFlags) -> Vec<u8> {
    let s = status.bits().to_le_bytes();
    vec![0x00, 0, 0, s[0], s[1], 0, 0]
}

/// Error code and message of an ERR payload.
pub fn parse_err(p: &[u8]) -> (u16, String) {
    if p.len() < 3 || p[0] != 0xFF {
        return (0, "malformed error packet".into());
    }
    let code = u16::from_le_bytes([p[1], p[2]]);
    let msg = if p.get(3) == Some(&b'#') && p.len() >= 9 { &p[9..] } else { &p[3..] };
    (code, String::from_utf8_lossy(msg).into_owned())
}

/// `last_gtid` among an OK packet's tracked system variables.
fn tracked_gtid(ok: &mysql_common::packets::OkPacket<'_>) -> Option<String> {
    use mysql_common::packets::session_state_change::SessionStateChange;
    for info in ok.session_state_info().ok()? {
        if let Ok(SessionStateChange::SystemVariables(vars)) = info.decode() {
            if let Some(v) = vars.iter().find(|v| v.name_bytes() == b"last_gtid") {
                return Some(String::from_utf8_lossy(v.value_bytes()).into_owned()).filter(|g| !g.is_empty());
            }
        }
    }
    None
}

/// The text-protocol row: each column as text or NULL.
pub fn parse_text_row(p: &[u8], columns: usize) -> Option<Vec<Option<String>>> {
    let mut buf = ParseBuf(p);
    (0..columns)
        .map(|_| {
            if buf.0.first() == Some(&0xFB) {
                buf.skip(1);
                Some(None)
            } else {
                buf.checked_eat_lenenc_str().map(|s| Some(String::from_utf8_lossy(s).into_owned()))
            }
        })
        .collect()
}

/// A column definition's name.
pub fn column_name(p: &[u8]) -> Option<String> {
    let mut buf = ParseBuf(p);
    for _ in 0..4 {
        buf.checked_eat_lenenc_str()?;
    }
    buf.checked_eat_lenenc_str().map(|s| String::from_utf8_lossy(s).into_owned())
}

/// Feed arbitrary bytes through every decoder a peer can reach: frames,
/// the response scanner under each expectation, the handshake response
/// parser, ERR and row parsing, and the statement classifier. The fuzz target and property tests call
/// this; it must never panic.
/// The first byte selects capability bits 24..31 (bit 24: no
/// `CLIENT_DEPRECATE_EOF` when clear), the rest is frames.
pub fn decode_untrusted(data: &[u8]) {
    let mut buf = BytesMut::from(data.get(1..).unwrap_or_default());
    let mut caps = CapabilityFlags::from_bits_truncate(u32::from(data.first().copied().unwrap_or(0)) << 24) | crate::auth::GATEWAY_CAPS;
    caps.set(CapabilityFlags::CLIENT_DEPRECATE_EOF, data.first().is_some_and(|b| b & 1 == 1));
    let mut scanners: Vec<_> =
        [Expect::Result, Expect::Execute, Expect::FieldList, Expect::Prepare, Expect::Rows, Expect::Simple].into_iter().map(|e| (e, Scanner::new(caps, e), false)).collect();
    while buf.len() >= 4 {
        let len = frame_len(&buf[..3]);
        if buf.len() < 4 + len {
            break;
        }
        let frame = buf.split_to(4 + len);
        for (expect, s, done) in scanners.iter_mut() {
            if !*done {
                *done = !matches!(s.feed(&frame, *expect), Ok(None));
            }
        }
        let payload = &frame[4..];
        let _ = crate::auth::parse_handshake_response(payload);
        let _ = parse_err(payload);
        let _ = parse_text_row(payload, 3);
        let _ = column_name(payload);
        let _ = crate::classify::classify(&String::from_utf8_lossy(payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header that claims 16 MiB is refused on the claim, and the read
    /// buffer has not grown towards it.
    #[tokio::test]
    async fn oversized_claim_is_refused_before_buffering() {
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let mut io = PacketIo::new(ours);
        tokio::io::AsyncWriteExt::write_all(&mut peer, &[0xff, 0xff, 0xff, 0, 1, 2, 3]).await.unwrap();
        let err = io.read_packet(64 << 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("larger than 65536"), "{err}");
        assert!(io.rbuf.capacity() <= 16 << 10, "buffer grew to {}", io.rbuf.capacity());
    }

    /// A frame that arrives in pieces still grows the buffer only with what came.
    #[tokio::test]
    async fn buffer_grows_with_data_not_with_the_header() {
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let mut io = PacketIo::new(ours);
        tokio::io::AsyncWriteExt::write_all(&mut peer, &[0x00, 0x00, 0x40, 0, 3, b'x']).await.unwrap();
        let read = tokio::time::timeout(std::time::Duration::from_millis(50), io.read_packet(MAX_COMMAND)).await;
        assert!(read.is_err(), "a 4 MiB frame with 2 bytes of it cannot be complete");
        assert!(io.rbuf.capacity() <= 128 << 10, "buffer grew to {} on a claim", io.rbuf.capacity());
    }

    /// Real MariaDB responses recorded by `tests/tests/sql_recorded_responses.rs`
    /// (also the fuzzer's seeds): the scanner ends at their last frame.
    #[test]
    fn recorded_real_responses_end_exactly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mysql_packets");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz corpus") {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("recorded-") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let expect = match name.as_str() {
                n if n.contains("field-list") => Expect::FieldList,
                n if n.contains("prepare") => Expect::Prepare,
                n if n.contains("ping") || n.contains("init-db") || n.contains("set-option") => Expect::Simple,
                _ => Expect::Result,
            };
            let mut caps = crate::auth::GATEWAY_CAPS;
            caps.set(CapabilityFlags::CLIENT_DEPRECATE_EOF, data[0] & 1 == 1);
            let mut scanner = Scanner::new(caps, expect);
            let mut rest = &data[1..];
            let mut ended = false;
            while !rest.is_empty() {
                let len = 4 + frame_len(rest);
                assert!(!ended, "{name}: the scanner ended before the last frame");
                ended = scanner.feed(&rest[..len], expect).unwrap_or_else(|e| panic!("{name}: {e}")).is_some();
                rest = &rest[len..];
            }
            assert!(ended, "{name}: the scanner did not see the end");
            seen += 1;
        }
        assert!(seen >= 30, "expected the recorded responses in {}, found {seen}", dir.display());
    }

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![payload.len() as u8, (payload.len() >> 8) as u8, (payload.len() >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    fn eof(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0xFE, 0, 0, s[0], s[1]]
    }

    fn run(caps: CapabilityFlags, expect: Expect, packets: &[Vec<u8>]) -> Vec<Option<End>> {
        let mut s = Scanner::new(caps, expect);
        packets.iter().enumerate().map(|(i, p)| s.feed(&frame(i as u8 + 1, p), expect).unwrap()).collect()
    }

    #[test]
    fn ok_and_err_end_at_once() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        assert_eq!(run(caps, Expect::Result, &[ok_payload(StatusFlags::SERVER_STATUS_IN_TRANS)]), vec![Some(End::Ok(StatusFlags::SERVER_STATUS_IN_TRANS))]);
        assert_eq!(run(caps, Expect::Result, &[err_payload(1064, "42000", "syntax")]), vec![Some(End::Err)]);
    }

    #[test]
    fn result_set_with_eof() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        let got = run(caps, Expect::Result, &[vec![2], vec![3, b'd', b'e', b'f'], vec![3, b'd', b'e', b'f'], eof(2), vec![1, b'1', 1, b'2'], eof(0x0003)]);
        assert_eq!(got[..5], [None, None, None, None, None]);
        assert_eq!(got[5], Some(End::Ok(StatusFlags::from_bits_truncate(3))));
    }

    #[test]
    fn result_set_deprecate_eof_and_more_results() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF;
        let more = StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits().to_le_bytes();
        let got = run(
            caps,
            Expect::Result,
            &[vec![1], vec![3, b'd', b'e', b'f'], vec![1, b'x'], vec![0xFE, 0, 0, more[0], more[1], 0, 0], ok_payload(StatusFlags::SERVER_STATUS_AUTOCOMMIT)],
        );
        assert_eq!(got, vec![None, None, None, None, Some(End::Ok(StatusFlags::SERVER_STATUS_AUTOCOMMIT))]);
    }

    #[test]
    fn prepare_response() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        let ok = vec![0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let def = vec![3, b'd', b'e', b'f'];
        let got = run(caps, Expect::Prepare, &[ok, def.clone(), def.clone(), eof(2), def, eof(2)]);
        assert_eq!(got, vec![None, None, None, None, None, Some(End::Ok(StatusFlags::SERVER_STATUS_AUTOCOMMIT))]);
    }

    #[test]
    fn big_packets_round_trip_through_frames() {
        let payload = vec![7u8; MAX_FRAME + 10];
        let mut io = PacketIo::new(tokio::io::empty());
        let next = io.push_packet(0, &payload);
        assert_eq!(next, 2);
        assert_eq!(io.wbuf.len(), payload.len() + 8);
    }

    #[test]
    fn truncated_or_garbage_is_an_error_not_a_panic() {
        let mut s = Scanner::new(CapabilityFlags::CLIENT_PROTOCOL_41, Expect::Result);
        assert!(s.feed(&[5, 0, 0, 1, 0], Expect::Result).is_err());
        assert!(Scanner::new(CapabilityFlags::empty(), Expect::Simple).feed(&frame(1, &[0x03]), Expect::Simple).is_err());
        assert_eq!(parse_err(&[0xFF]).0, 0);
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            decode_untrusted(&data);
        }

        #[test]
        fn framing_never_panics_on_frames(frames in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..12)) {
            let mut data = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                data.extend(frame(i as u8, f));
            }
            decode_untrusted(&data);
        }
    }
}
