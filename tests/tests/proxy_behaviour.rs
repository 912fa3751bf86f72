//! Health ejection and recovery, connect retries, headers.

use switchyard_tests::*;

#[test]
fn active_health_check_ejects_and_recovers() {
    let port = free_port();
    let mut b1 = backend_on(port, "b1", &[]);
    let b2 = backend("b2", &[]);
    let cfg = format!(
        "{SERVER}{}",
        upstream(
            "web",
            None,
            &[(&b1, 1), (&b2, 1)],
            // Killing b1 also ejects it passively (connect errors); keep that short.
            "health = { check = \"http\", path = \"/healthz\", interval_ms = 100, timeout_ms = 200, rise = 2, fall = 1, eject_ms = 500 }",
        )
    );
    let gw = gateway(&cfg);
    eventually(10, "both backends serve", || tally(gw.addr, "/", 10, &[]).len() == 2);
    b1.kill();
    eventually(10, "b1 is ejected and every request is served by b2", || {
        let t = tally(gw.addr, "/", 10, &[]);
        t.len() == 1 && t.contains_key("b2")
    });
    let _b1_again = backend_on(port, "b1", &[]);
    eventually(20, "b1 recovers", || tally(gw.addr, "/", 10, &[]).contains_key("b1"));
    assert!(gw.log_text().contains("health changed"), "{}", gw.log_text());
}

#[test]
fn connect_failure_retries_on_another_backend() {
    let live = backend("live", &[]);
    let dead_port = free_port(); // nothing listens here
    let cfg = format!(
        "{SERVER}[[upstreams]]\nname = \"web\"\nbackends = [{{ address = \"127.0.0.1:{dead_port}\" }}, {{ address = \"{}\" }}]\n\
         health = {{ check = \"none\", max_failures = 1000 }}\nretries = 2\n[[routes]]\nupstream = \"web\"\n",
        live.addr
    );
    let gw = gateway(&cfg);
    for _ in 0..20 {
        let r = get(gw.addr, "/", &[]);
        assert_eq!((r.status, r.backend()), (200, "live"), "{r:?}");
    }
}

#[test]
fn passive_ejection_stops_sending_to_a_dead_backend() {
    let live = backend("live", &[]);
    let dead_port = free_port();
    let cfg = format!(
        "{SERVER}[[upstreams]]\nname = \"web\"\nbackends = [{{ address = \"127.0.0.1:{dead_port}\" }}, {{ address = \"{}\" }}]\n\
         health = {{ check = \"none\", max_failures = 2, eject_ms = 60000 }}\n[[routes]]\nupstream = \"web\"\n",
        live.addr
    );
    let gw = gateway(&cfg);
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/", &[]).status, 200);
    }
    assert!(gw.log_text().contains("ejected after 2 failures in a row"), "{}", gw.log_text());
}

#[test]
fn headers_forwarded_and_internal_ones_stripped() {
    let b = backend("b", &[]);
    let gw = gateway(&format!("{SERVER}{}", upstream("web", None, &[(&b, 1)], "")));
    let r = get(gw.addr, "/echo", &[("x-switchyard-session", "forged"), ("x-request-id", "abc-123")]);
    assert_eq!(r.status, 200);
    let seen = r.body.to_ascii_lowercase();
    assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
    assert!(seen.contains("x-request-id: abc-123"), "{seen}");
    assert!(!seen.contains("x-switchyard-session"), "client injected an internal header: {seen}");
    assert!(r.header("x-switchyard-served-by").is_none(), "internal header leaked to client: {r:?}");
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    // A malformed id is replaced, not forwarded.
    let r = get(gw.addr, "/echo", &[("x-request-id", "bad id with spaces")]);
    assert!(!r.body.contains("bad id"), "{}", r.body);
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
}

#[test]
fn unknown_route_is_404() {
    let b = backend("b", &[]);
    let cfg = format!(
        "{SERVER}[[upstreams]]\nname = \"web\"\nbackends = [{{ address = \"{}\" }}]\n[[routes]]\npath_prefix = \"/portal\"\nupstream = \"web\"\n",
        b.addr
    );
    let gw = gateway(&cfg);
    assert_eq!(get(gw.addr, "/portal/x", &[]).status, 200);
    assert_eq!(get(gw.addr, "/portals", &[]).status, 404);
    let r = get(gw.addr, "/other", &[]);
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no route") && r.body.contains("\"/other\""), "{r:?}");
    assert!(r.header("x-request-id").is_some_and(|id| r.body.contains(id)), "{r:?}");
    assert!(r.header("server").is_none(), "{r:?}");
}

/// Clients that go away (mid-response, or closing keep-alive connections)
/// are routine: logged at debug, never as ERROR.
#[test]
fn client_hang_ups_are_not_errors() {
    use std::io::Write;
    let b = backend("b", &["--delay-ms", "300"]);
    let gw = gateway(&format!("{SERVER}{}", upstream("web", None, &[(&b, 1)], "")));
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr).as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(s);
    }
    let load = Load::start(gw.addr, "/", 4, 3, std::time::Duration::from_secs(30));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (samples, errors) = load.finish();
    assert!(errors.is_empty() && !samples.is_empty(), "{errors:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = gw.log_text();
    assert!(!log.lines().any(|l| l.contains("ERROR")), "a client going away was logged as an error:\n{log}");
}

/// SIGTERM (what a service manager sends) lets the request in flight
/// finish, then the gateway exits, within the configured grace rather than
/// Pingora's 300 s default.
#[test]
fn sigterm_drains_then_exits() {
    drains_then_exits("-TERM");
}

/// Ctrl-C drains too (Pingora alone would drop the request in flight).
#[test]
fn sigint_drains_then_exits() {
    drains_then_exits("-INT");
}

fn drains_then_exits(signal: &str) {
    let b = backend("b", &["--delay-ms", "800"]);
    let server = SERVER.replace("threads = 2\n", "threads = 2\ngrace_ms = 2000\n");
    let gw = gateway(&format!("{server}{}", upstream("web", None, &[(&b, 1)], "")));
    let addr = gw.addr;
    let in_flight = std::thread::spawn(move || get(addr, "/", &[]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = std::process::Command::new("kill").args([signal, &gw.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let r = in_flight.join().unwrap();
    assert_eq!((r.status, r.backend()), (200, "b"), "the request in flight when {signal} came finished");
    // A bound on a hang, not a timing check: grace 2 s + runtimes 2 s.
    let exited = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::read_to_string(format!("/proc/{}/stat", gw.pid())).map_or(true, |s| s.rsplit(')').next().is_some_and(|t| t.trim_start().starts_with('Z')))
    });
    assert!(exited, "still running 30 s after {signal}:\n{}", gw.log_text());
}

/// An idle gateway does not wait out its grace on SIGTERM: with a 30 s
/// grace it is gone long before (a bound, not a timing check).
#[test]
fn sigterm_on_an_idle_gateway_exits_without_waiting_the_grace() {
    let b = backend("b", &[]);
    let server = SERVER.replace("threads = 2\n", "threads = 2\ngrace_ms = 30000\n");
    let gw = gateway(&format!("{server}{}", upstream("web", None, &[(&b, 1)], "")));
    assert_eq!(get(gw.addr, "/", &[]).status, 200);
    let status = std::process::Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exited = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::read_to_string(format!("/proc/{}/stat", gw.pid())).map_or(true, |s| s.rsplit(')').next().is_some_and(|t| t.trim_start().starts_with('Z')))
    });
    assert!(exited, "an idle gateway still ran 10 s after SIGTERM (grace 30 s):\n{}", gw.log_text());
    assert!(gw.log_text().contains("nothing in flight, exiting"), "{}", gw.log_text());
}

#[test]
fn a_backend_that_stops_answering_gets_504_after_read_timeout_ms() {
    // It would answer 200 after 10 s; the gateway gives up after 300 ms.
    let stuck = backend("stuck", &["--delay-ms", "10000"]);
    let cfg = format!(
        "{SERVER}[[upstreams]]\nname = \"web\"\nbackends = [{{ address = \"{}\" }}]\nread_timeout_ms = 300\n\
         health = {{ check = \"none\", max_failures = 1000 }}\n[[routes]]\nupstream = \"web\"\n",
        stuck.addr
    );
    let gw = gateway(&cfg);
    let r = get(gw.addr, "/", &[]);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(r.body.contains("did not answer within read_timeout_ms"), "the answer names the limit: {r:?}");
    // Nothing wedged: the next request is bounded the same way.
    let again = get(gw.addr, "/", &[]);
    assert_eq!(again.status, 504, "{again:?}");
}

#[test]
fn io_timeouts_out_of_range_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"web\"\nbackends = [{ address = \"127.0.0.1:1\" }]\nread_timeout_ms = 0\n[[routes]]\nupstream = \"web\"\n",
    )
    .unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains("upstreams[0].read_timeout_ms") && out.contains("must be 1..=3600000"), "{out}");
}

/// A backend on a raw socket that never reads what it is sent; it keeps
/// every connection open.
fn deaf_backend() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    addr
}

/// POST a 64 MiB body (far more than the loopback socket buffers hold)
/// through `gw` to a deaf backend; the gateway's answer head and body, or
/// `None` if none came within `wait`.
fn post_to_deaf(gw: &Proc, wait: std::time::Duration) -> Option<String> {
    use std::io::{Read, Write};
    let len = 64usize << 20;
    let mut c = std::net::TcpStream::connect(gw.addr).unwrap();
    c.write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes()).unwrap();
    let mut w = c.try_clone().unwrap();
    w.set_write_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        (0..64).take_while(|_| w.write_all(&chunk).is_ok()).count()
    });
    c.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    let got = c.read_to_end(&mut answer).is_ok() || !answer.is_empty();
    let _ = c.shutdown(std::net::Shutdown::Both);
    let sent = writer.join().unwrap();
    assert!(sent < 64, "the client could send the whole body ({sent} MiB): nothing stalled");
    got.then(|| String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn a_backend_that_stops_reading_gets_504_after_write_timeout_ms() {
    // A stalled write ends after write_timeout_ms; the gateway then still
    // waits up to read_timeout_ms for an early answer (a 413, say).
    let config = |write_ms: u64| {
        format!(
            "{SERVER}[[upstreams]]\nname = \"web\"\nbackends = [{{ address = \"{}\" }}]\nwrite_timeout_ms = {write_ms}\nread_timeout_ms = 1000\n\
             health = {{ check = \"none\", max_failures = 1000 }}\n[[routes]]\nupstream = \"web\"\n",
            deaf_backend()
        )
    };
    let gw = gateway(&config(300));
    let answer = post_to_deaf(&gw, std::time::Duration::from_secs(30)).unwrap_or_else(|| panic!("no answer within 30 s\n{}", gw.log_text()));
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("within write_timeout_ms") && answer.contains("300ms"), "the answer names the write timeout: {answer}");
    // The same backend with a long write timeout: the gateway is still writing.
    let patient = gateway(&config(600_000));
    assert_eq!(post_to_deaf(&patient, std::time::Duration::from_secs(3)), None, "write_timeout_ms = 600000 ended the write early");
}

/// A keep-alive backend on a raw socket; it counts connections the peer
/// (the gateway's pool) closed.
fn counting_backend() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = closed.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = std::io::BufReader::new(s);
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => {
                            if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

#[test]
fn pooled_backend_connections_close_after_idle_timeout_ms() {
    let (short, short_closed) = counting_backend();
    let (long, long_closed) = counting_backend();
    let cfg = format!(
        "{SERVER}[[upstreams]]\nname = \"short\"\nbackends = [{{ address = \"{short}\" }}]\nidle_timeout_ms = 300\n\
         health = {{ check = \"none\" }}\n\
         [[upstreams]]\nname = \"long\"\nbackends = [{{ address = \"{long}\" }}]\nidle_timeout_ms = 600000\n\
         health = {{ check = \"none\" }}\n\
         [[routes]]\npath_prefix = \"/short\"\nupstream = \"short\"\n[[routes]]\npath_prefix = \"/long\"\nupstream = \"long\"\n"
    );
    let gw = gateway(&cfg);
    assert_eq!(get(gw.addr, "/short", &[]).status, 200);
    assert_eq!(get(gw.addr, "/long", &[]).status, 200);
    let closed = |c: &std::sync::Arc<std::sync::atomic::AtomicUsize>| c.load(std::sync::atomic::Ordering::SeqCst);
    eventually(10, "the gateway closes the pooled connection idle past 300 ms", || closed(&short_closed) == 1);
    // Same pool, a longer wait, a long idle timeout: still open.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(closed(&long_closed), 0, "the connection with idle_timeout_ms = 600000 was closed too");
    // The pool reconnects after an idle close.
    assert_eq!(get(gw.addr, "/short", &[]).status, 200);
}

/// One keep-alive GET on `s`; the status.
fn keepalive_get(s: &mut std::net::TcpStream) -> u16 {
    use std::io::{BufRead, Read, Write};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    status
}

#[test]
fn http_connections_past_max_connections_get_503_and_the_others_are_served() {
    let b = backend("b", &[]);
    let gw = gateway(&format!("{SERVER}max_connections = 2\n{}", upstream("web", None, &[(&b, 1)], "")));
    let open = || {
        let s = std::net::TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s
    };
    // The start-up probe's connection may still hold a place for a moment.
    let mut held = Vec::new();
    eventually(10, "two keep-alive clients are served", || {
        while held.len() < 2 {
            let mut s = open();
            if keepalive_get(&mut s) != 200 {
                return false;
            }
            held.push(s);
        }
        true
    });
    let (mut one, two) = (held.remove(0), held.remove(0));
    let refused = get(gw.addr, "/", &[]);
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("at most 2 connections (server.max_connections)"), "{refused:?}");
    // The connections inside the cap keep being served.
    assert_eq!(keepalive_get(&mut one), 200);
    drop(two);
    eventually(10, "a closed connection frees its place", || get(gw.addr, "/", &[]).status == 200);
    assert_eq!(keepalive_get(&mut one), 200);
}
