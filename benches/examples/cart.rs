//! A counted cart load for `benches/instructions.sh`: USERS closed-loop
//! cart users (log in, add 5 items, read the cart), each making STEPS
//! requests on its own keep-alive connection, or stopping after 300 s.
//! Prints the requests answered 200 and exits non-zero if any failed.
//!
//! `cart ADDR USERS STEPS`

use std::time::Duration;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, users, steps] = args.as_slice() else {
        eprintln!("usage: cart ADDR USERS STEPS");
        return std::process::ExitCode::from(2);
    };
    let (Ok(addr), Ok(users), Ok(steps)) = (addr.parse(), users.parse::<usize>(), steps.parse::<usize>()) else {
        eprintln!("cart: ADDR is host:port, USERS and STEPS are counts");
        return std::process::ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (lat, errors, secs) = switchyard_benches::cart_users(&rt, &[addr], users, Duration::from_secs(300), steps);
    println!("{} ok {errors} failed in {secs:.1} s", lat.len());
    if errors > 0 || lat.len() != users * steps {
        eprintln!("cart: {errors} of {} requests failed", users * steps);
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
