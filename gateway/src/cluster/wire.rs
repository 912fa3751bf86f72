//! Peer link frames: `[len u32][from u32][postcard message][HMAC-SHA256]`,
//! the MAC over `from` and the message with the cluster's shared key. A
//! frame with a bad MAC or from a node not in `[cluster] peers` is dropped
//! and counted; an oversized length closes the link.

use super::store::Entry;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest frame accepted (a state-transfer chunk is far smaller).
pub const MAX_FRAME: usize = 16 << 20;
const MAC_LEN: usize = 32;

/// What peers say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Writes made on the sender (or relayed in a resync).
    Deltas(Vec<Entry>),
    /// Ask for the whole state (a node joining or restarting).
    StateRequest,
    /// One chunk of the state; `last` ends the transfer.
    State { entries: Vec<Entry>, last: bool },
}

/// Why a frame was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    BadMac,
    Malformed,
}

fn mac(key: &[u8], from: u32, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(&from.to_be_bytes());
    m.update(body);
    m
}

/// Encode one signed frame.
pub fn encode(key: &[u8], from: u32, msg: &Message) -> Vec<u8> {
    let body = postcard::to_allocvec(msg).expect("messages serialize");
    let tag = mac(key, from, &body).finalize().into_bytes();
    let len = 4 + body.len() + MAC_LEN;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    out
}

/// Check and decode a frame's payload (after its length): (from, message).
pub fn decode(key: &[u8], frame: &[u8]) -> Result<(u32, Message), Refused> {
    if frame.len() < 4 + MAC_LEN {
        return Err(Refused::Malformed);
    }
    let from = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
    let (body, tag) = frame[4..].split_at(frame.len() - 4 - MAC_LEN);
    mac(key, from, body).verify_slice(tag).map_err(|_| Refused::BadMac)?;
    let msg = postcard::from_bytes(body).map_err(|_| Refused::Malformed)?;
    Ok((from, msg))
}

/// Read one frame's payload; `Ok(None)` at a clean end of stream.
pub async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes is over {MAX_FRAME}")));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Write one encoded frame.
pub async fn write_frame(w: &mut (impl AsyncWriteExt + Unpin), frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_wrong_key_or_a_flipped_bit_is_refused() {
        let msg = Message::Deltas(vec![Entry { key: "k".into(), version: (3, 1), value: Some(b"v".to_vec()), expires_ms: 9 }]);
        let f = encode(b"key-a", 7, &msg);
        assert_eq!(decode(b"key-a", &f[4..]), Ok((7, msg)));
        assert_eq!(decode(b"key-b", &f[4..]), Err(Refused::BadMac));
        let mut flipped = f.clone();
        flipped[10] ^= 1;
        assert_eq!(decode(b"key-a", &flipped[4..]), Err(Refused::BadMac));
        // Claiming another sender breaks the MAC too.
        let mut other = f.clone();
        other[7] ^= 1;
        assert_eq!(decode(b"key-a", &other[4..]), Err(Refused::BadMac));
        assert_eq!(decode(b"key-a", &f[4..10]), Err(Refused::Malformed));
    }
}
