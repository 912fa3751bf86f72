//! Losing a memcached server loses nothing: sessions spread over 2 and 3
//! real memcached servers with one backup copy each, one server killed
//! under load and later restarted empty; every logged-in user keeps their
//! whole cart, locks still serialize, a usage limit (UCON counter) is
//! still never exceeded, and `GET /stores` shows each server's state.

use jsonwebtoken::{encode, EncodingKey, Header};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_tests::browser::Browser;
use switchyard_tests::memcached::Memcached;
use switchyard_tests::*;

const KEY: &str = "test-session-signing-key-0123456789abcdef";
const JWT_KEY: &str = "test-access-jwt-signing-key-0123456789abc";
const USERS: usize = 100;

fn config(mcs: &[Memcached], backends: &[Proc]) -> String {
    let servers: Vec<String> = mcs.iter().map(|m| format!("\"{}\"", m.addr)).collect();
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    format!(
        "{SERVER}\n[session]\nkeys = [\"{KEY}\"]\n[session.central]\nservers = [{}]\ntimeout_ms = 200\nlock_timeout_ms = 10000\n\
         [access]\njwt_keys = [\"{JWT_KEY}\"]\nmutable = [\"attempts\"]\n\
         [plugins.sess]\npath = {:?}\non_error = \"fail-closed\"\nlimits = {{ deadline_ms = 2000 }}\nconfig = {{ lock = true }}\n\
         [plugins.ucon]\npath = {:?}\nlimits = {{ deadline_ms = 2000 }}\n\
         [plugins.ucon.config.roles]\nstudent = {{ grants = [\"submit:exam\"] }}\n[plugins.ucon.config.classes]\nstudents = [\"student\"]\n\
         [[plugins.ucon.config.rules]]\npermission = \"submit:exam\"\nlimit = {{ attribute = \"attempts\", max = 3, reason = \"no submission attempts left\" }}\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n\
         [[routes]]\npath_prefix = \"/quiz\"\nupstream = \"app\"\naccess = \"ucon\"\nobject = {{ kind = \"exam\" }}\nrights = {{ POST = \"submit\" }}\n\
         [[routes]]\nupstream = \"app\"\nsession = \"sess\"\n",
        servers.join(", "),
        plugin("session_centralized").to_string_lossy(),
        plugin("access_s_ucon").to_string_lossy(),
        list.join(", ")
    )
}

fn token(sub: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    encode(&Header::default(), &serde_json::json!({ "sub": sub, "exp": exp, "class": "students" }), &EncodingKey::from_secret(JWT_KEY.as_bytes())).unwrap()
}

fn add(b: &mut Browser, item: &str) -> (u16, serde_json::Value) {
    b.json("POST", &format!("/cart/add?item={item}"))
}

fn stores(admin: SocketAddr) -> serde_json::Value {
    let (k, v) = bearer();
    serde_json::from_str(&get(admin, "/stores", &[(k, v.as_str())]).body).unwrap()
}

/// One submission of `student`: its status.
fn submit(gw: SocketAddr, student: &str) -> u16 {
    let t = format!("Bearer {}", token(student));
    request(gw, "POST", "/quiz/submit", &[("Authorization", t.as_str())], b"answer").status
}

fn lose_one_server(n: usize) {
    let mut mcs: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
    let bs: Vec<Proc> = (0..2).map(|i| backend(&format!("b{i}"), &["--sessions", "header"])).collect();
    let (gw, admin) = gateway_with_admin(&config(&mcs, &bs), "");
    // Every user logs in and puts two items in the cart.
    let mut users: Vec<(Browser, Vec<String>)> = (0..USERS)
        .map(|u| {
            let mut b = Browser::new(gw.addr);
            assert_eq!(b.json("POST", &format!("/cart/login?user=u{u}")).0, 200);
            let items: Vec<String> = (0..2).map(|i| format!("u{u}-{i}")).collect();
            for it in &items {
                let (s, v) = add(&mut b, it);
                assert_eq!(s, 200, "{v}");
            }
            (b, items)
        })
        .collect();
    // Two students use 2 of their 3 attempts before the loss.
    for st in ["s1", "s2"] {
        for _ in 0..2 {
            assert_eq!(submit(gw.addr, st), 200);
        }
    }
    // Load runs while the last server dies: a user's adds are answered
    // 200 or, while the store call times out, 503; none is half-kept.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, addr) = (stop.clone(), gw.addr);
        std::thread::spawn(move || {
            let mut b = Browser::new(addr);
            assert_eq!(b.json("POST", "/cart/login?user=load").0, 200);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2000 {
                let (s, v) = add(&mut b, &format!("load-{n}"));
                assert!(s == 200 || s == 503, "{s} {v}");
                n += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let lost = mcs.last().unwrap().addr.to_string();
    mcs.last_mut().unwrap().stop();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    // Every user still has every item, and the next add lands.
    for (u, (b, items)) in users.iter_mut().enumerate() {
        let item = format!("u{u}-after");
        let (s, v) = add(b, &item);
        assert_eq!(s, 200, "user u{u} after losing {lost}: {v}");
        items.push(item);
        assert_eq!(v["cart"], serde_json::json!(items), "user u{u} after losing {lost}");
    }
    let state = stores(admin);
    let down: Vec<_> = state["central"].as_array().unwrap().iter().filter(|s| s["state"].as_str().unwrap().starts_with("down")).collect();
    assert!(down.is_empty() || down.iter().all(|s| s["server"] == lost.as_str()), "only the lost server may show down: {state}");
    // The limit still holds through the backup copy of the counter.
    for st in ["s1", "s2"] {
        let statuses: Vec<u16> = (0..3).map(|_| submit(gw.addr, st)).collect();
        assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{st}: exactly the one attempt left: {statuses:?}");
    }
    // Locks still serialize: 20 concurrent increments of one session, none lost.
    let mut counter = Browser::new(gw.addr);
    assert_eq!(counter.json("POST", "/cart/login?user=counter").0, 200);
    let oks: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20).map(|_| {
            let mut b = counter.clone();
            s.spawn(move || usize::from(b.json("POST", "/cart/incr").0 == 200))
        }).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(counter.json("GET", "/cart").1["count"], serde_json::json!(oks), "no increment lost under the lock");
    // The server comes back empty: it is used again, and what was written
    // while it was away is not lost.
    mcs.last_mut().unwrap().restart();
    eventually(10, "the restarted server is up again in GET /stores", || {
        let _ = users[0].0.json("GET", "/cart");
        stores(admin)["central"].as_array().unwrap().iter().all(|s| s["state"] == "up")
    });
    for (u, (b, items)) in users.iter_mut().enumerate() {
        let (s, v) = b.json("GET", "/cart");
        assert_eq!((s, &v["cart"]), (200, &serde_json::json!(items)), "user u{u} after {lost} came back");
    }
    assert!(metric(admin, "switchyard_session_central_rehomed_total", &[("result", "ok")]) > 0.0, "sessions were put back on the returned server");
}

#[test]
fn losing_one_of_two_memcached_servers_loses_no_session() {
    lose_one_server(2);
}

#[test]
fn losing_one_of_three_memcached_servers_loses_no_session() {
    lose_one_server(3);
}
