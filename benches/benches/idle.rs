//! Memory per idle keep-alive client (issue 23): N clients connect, then
//! each sends one request, reads the answer and stays connected. Prints the
//! server's RSS growth over N after the connects and after the requests,
//! for stock Pingora (plain), Switchyard plain and Switchyard TLS 1.3, each
//! with one worker thread, all against the same demo backend.
//!
//! `cargo build --release -p switchyard -p switchyard-benches --bins --example bare_pingora &&
//!  cargo bench -p switchyard-benches --bench idle [-- N]`

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use switchyard_benches::rss_kib;
use switchyard_tests::pki::Pki;
use switchyard_tests::{backend, bin_dir, free_port, gateway, upstream, Proc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;

/// Connections opened and requests sent at once.
const BATCH: usize = 200;
/// The clients warmed up with (connected, served, closed) before RSS is read.
const WARM: usize = 500;

/// What the clients connect to.
#[derive(Clone)]
enum Dial {
    Plain(SocketAddr),
    Tls(SocketAddr, tokio_rustls::TlsConnector),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Dial {
    async fn connect(&self) -> Box<dyn Io> {
        match self {
            Dial::Plain(a) => Box::new(TcpStream::connect(a).await.expect("connect")),
            Dial::Tls(a, c) => {
                let tcp = TcpStream::connect(a).await.expect("connect");
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Box::new(c.connect(name, tcp).await.expect("TLS handshake"))
            }
        }
    }
}

/// One keep-alive request; the answer read whole (by Content-Length).
async fn request(io: &mut Box<dyn Io>) {
    io.write_all(b"GET /idle HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the server closed a keep-alive connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + len {
            return;
        }
    }
}

/// Open `n` connections, BATCH at a time.
async fn connect_all(dial: &Dial, n: usize) -> Vec<Box<dyn Io>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let k = BATCH.min(n - out.len());
        let batch: Vec<_> = (0..k).map(|_| { let d = dial.clone(); tokio::spawn(async move { d.connect().await }) }).collect();
        for h in batch {
            out.push(h.await.unwrap());
        }
    }
    out
}

/// One request on every connection, BATCH at a time.
async fn request_all(conns: Vec<Box<dyn Io>>) -> Vec<Box<dyn Io>> {
    let mut out = Vec::with_capacity(conns.len());
    let mut it = conns.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<_> = it.by_ref().take(BATCH).map(|mut c| tokio::spawn(async move { request(&mut c).await; c })).collect();
        for h in batch {
            out.push(h.await.unwrap());
        }
    }
    out
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// KiB of RSS growth per connection: (after connecting, after one request).
async fn measure(dial: Dial, pid: u32, n: usize) -> (f64, f64) {
    let warm = request_all(connect_all(&dial, WARM).await).await;
    drop(warm);
    settle().await;
    let rss0 = rss_kib(pid);
    let conns = connect_all(&dial, n).await;
    settle().await;
    let rss1 = rss_kib(pid);
    let conns = request_all(conns).await;
    settle().await;
    let rss2 = rss_kib(pid);
    drop(conns);
    let per = |r: u64| r.saturating_sub(rss0) as f64 / n as f64;
    (per(rss1), per(rss2))
}

/// Stock Pingora (`examples/bare_pingora.rs`), one thread.
struct Bare(Child);

impl Bare {
    fn start(listen: SocketAddr, backend: SocketAddr) -> Self {
        let bin = bin_dir().join("examples/bare_pingora");
        assert!(bin.exists(), "{} is missing: cargo build --release -p switchyard-benches --example bare_pingora", bin.display());
        let child = Command::new(bin)
            .args([listen.to_string(), "1".into(), "true".into(), backend.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(listen).is_ok() {
                return Self(child);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("bare_pingora did not listen on {listen}");
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// *ring*, as the gateway's own provider (`tls/pem.rs`): rustls deprecates
// it for lacking post-quantum key exchange.
#[allow(deprecated)]
fn tls_connector(pki: &Pki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca_file()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn row(rt: &tokio::runtime::Runtime, name: &str, dial: Dial, pid: u32, n: usize) {
    let (connected, served) = rt.block_on(measure(dial, pid, n));
    println!("| {name} | {n} | {connected:.1} | {served:.1} |");
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let b = backend("b", &["--threads", "1"]);
    println!("RSS growth per idle keep-alive client, KiB (one worker thread each, {n} clients, one request each)");
    println!("| server | clients | after connect | after one request |");
    println!("|---|---|---|---|");
    {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let bare = Bare::start(listen, b.addr);
        row(&rt, "stock Pingora, plain", Dial::Plain(listen), bare.0.id(), n);
    }
    let lb = upstream("web", None, &[(&b, 1)], "health = { check = \"none\" }");
    {
        let gw: Proc = gateway(&format!("[server]\nlisten = \"{{listen}}\"\nthreads = 1\n{lb}"));
        row(&rt, "Switchyard, plain", Dial::Plain(gw.addr), gw.pid(), n);
    }
    {
        let pki = Pki::new("idle-ca");
        let (cert, key) = pki.leaf("srv", "localhost", &["localhost"], false);
        let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let gw = gateway(&format!(
            "[server]\nlisten = \"{{listen}}\"\nthreads = 1\n[server.tls]\nlisten = \"{tls}\"\n[[server.tls.certs]]\ncert = {cert:?}\nkey = {key:?}\n{lb}"
        ));
        for _ in 0..100 {
            if std::net::TcpStream::connect(tls).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        row(&rt, "Switchyard, TLS 1.3", Dial::Tls(tls, tls_connector(&pki)), gw.pid(), n);
    }
}
