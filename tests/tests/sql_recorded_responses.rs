//! The response scanner against real MariaDB responses: each command is
//! sent on a raw connection, everything the server answers is recorded
//! (until it falls silent), and the scanner must end exactly at the last
//! frame, with and without `CLIENT_DEPRECATE_EOF`. With `RECORD_CORPUS=1`
//! the recordings are written to `fuzz/corpus/mysql_packets/` as seeds
//! (first byte: the capability selector `decode_untrusted` reads).

use std::path::Path;
use std::time::Duration;
use switchyard_mysql::auth::{login, GATEWAY_CAPS};
use switchyard_mysql::wire::{Expect, PacketIo, Scanner};
use switchyard_tests::mariadb::{Cluster, APP_PASSWORD, APP_USER, DB};
use mysql_common::constants::CapabilityFlags;

fn commands() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let q = |s: &str| [&[0x03u8][..], s.as_bytes()].concat();
    vec![
        ("select-one", q("SELECT 1"), Expect::Result),
        ("select-rows", q("SELECT id, v, note FROM items ORDER BY id"), Expect::Result),
        ("insert-ok", q("INSERT INTO items (v, note) VALUES (9, 'recorded')"), Expect::Result),
        ("error", q("SELECT no_such_column FROM items"), Expect::Result),
        ("multi-results", q("SELECT 1; SELECT 2, 3; DO 1"), Expect::Result),
        ("for-loop-cursor-flag", q("BEGIN NOT ATOMIC FOR r IN (SELECT v FROM items ORDER BY id) DO SELECT r.v; END FOR; END"), Expect::Result),
        ("procedure-results", q("CALL rec_proc()"), Expect::Result),
        ("show-warnings", q("SHOW WARNINGS"), Expect::Result),
        ("show-variables", q("SHOW VARIABLES LIKE 'version%'"), Expect::Result),
        ("null-and-empty", q("SELECT NULL, '', REPEAT('x', 300)"), Expect::Result),
        ("field-list", [&[0x04u8][..], b"items\0"].concat(), Expect::FieldList),
        ("prepare", [&[0x16u8][..], b"SELECT ?, v FROM items WHERE id > ?"].concat(), Expect::Prepare),
        ("prepare-no-columns", [&[0x16u8][..], b"INSERT INTO items (v) VALUES (?)"].concat(), Expect::Prepare),
        ("ping", vec![0x0E], Expect::Simple),
        ("init-db", [&[0x02u8][..], DB.as_bytes()].concat(), Expect::Simple),
        ("set-option", vec![0x1B, 0, 0], Expect::Simple),
    ]
}

/// Everything the server sends for one command, frame by frame.
async fn record(io: &mut PacketIo<tokio::net::TcpStream>, payload: &[u8]) -> Vec<Vec<u8>> {
    io.send(0, payload).await.expect("send");
    let mut frames = Vec::new();
    // The first frame may take a while (a statement runs); later silence
    // means the response is complete.
    let mut wait = Duration::from_secs(10);
    while let Ok(Ok(f)) = tokio::time::timeout(wait, io.read_frame()).await {
        frames.push(f.to_vec());
        wait = Duration::from_millis(300);
    }
    frames
}

#[test]
fn the_scanner_ends_real_responses_exactly() {
    let cluster = Cluster::start(0);
    cluster.primary.sql(&format!(
        "INSERT INTO {DB}.items (v, note) VALUES (1, 'a'), (2, NULL), (3, 'c');
         DELIMITER //
         CREATE PROCEDURE {DB}.rec_proc() BEGIN SELECT 1 AS a; SELECT v FROM {DB}.items; END//
         DELIMITER ;"
    ));
    let write = std::env::var_os("RECORD_CORPUS").is_some();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mysql_packets");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for deprecate_eof in [true, false] {
            let mut caps = GATEWAY_CAPS;
            caps.set(CapabilityFlags::CLIENT_DEPRECATE_EOF, deprecate_eof);
            let stream = tokio::net::TcpStream::connect(cluster.primary.addr()).await.unwrap();
            let mut io = PacketIo::new(stream);
            let (caps, _, _, _) = login(&mut io, APP_USER, APP_PASSWORD, caps, 0, 45, None).await.expect("raw login");
            assert_eq!(caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF), deprecate_eof);
            record(&mut io, &[&[0x02u8][..], DB.as_bytes()].concat()).await;
            for (name, payload, expect) in commands() {
                let frames = record(&mut io, &payload).await;
                assert!(!frames.is_empty(), "{name}: no answer");
                let mut scanner = Scanner::new(caps, expect);
                let mut ended_at = None;
                for (i, f) in frames.iter().enumerate() {
                    let r = scanner.feed(f, expect).unwrap_or_else(|e| panic!("{name} (deprecate_eof={deprecate_eof}) frame {i}: {e}"));
                    if r.is_some() {
                        ended_at = Some(i);
                        break;
                    }
                }
                assert_eq!(ended_at, Some(frames.len() - 1), "{name} (deprecate_eof={deprecate_eof}): {} frames", frames.len());
                if write {
                    let mut bytes = vec![u8::from(deprecate_eof)];
                    frames.iter().for_each(|f| bytes.extend_from_slice(f));
                    let eof = if deprecate_eof { "deprecate-eof" } else { "eof" };
                    std::fs::write(corpus.join(format!("recorded-{name}-{eof}")), bytes).unwrap();
                }
            }
        }
    });
}
