//! Requests from many loopback source addresses (127.1.x.y), for the
//! splits keyed by client address (canaries, sticky sessions).

use std::net::SocketAddr;
use std::time::Duration;

/// `n` distinct loopback client addresses (127.1.0.1 …).
pub fn clients(n: usize) -> Vec<std::net::Ipv4Addr> {
    (0..n).map(|i| std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)).collect()
}

/// One request from each of `from`, in turn: (status, backend) each.
pub fn from_each(gw: SocketAddr, from: &[std::net::Ipv4Addr]) -> Vec<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut out = Vec::with_capacity(from.len());
        for ip in from {
            out.push(visit(gw, *ip, "").await.map(|(status, backend, _)| (status, backend)).unwrap_or_else(|e| (0, format!("error: {e}"))));
        }
        out
    })
}

/// One GET from the loopback address `from` with `cookie`: the status,
/// the backend that answered, and the cookies the answer sets.
pub async fn visit(gw: SocketAddr, from: std::net::Ipv4Addr, cookie: &str) -> std::io::Result<(u16, String, Vec<String>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(gw)).await??;
    let cookie = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
    stream.write_all(format!("GET / HTTP/1.1\r\nHost: gw\r\n{cookie}Connection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let sets = head.lines().filter_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: "))).map(|c| c.split(';').next().unwrap_or("").to_string()).collect();
    Ok((status, body.lines().next().unwrap_or("").to_string(), sets))
}

