//! Real text-protocol clients against pincache (and, to prove each check is memcached's
//! real behaviour, against memcached): pymemcache's `HashClient` over three instances
//! writes and reads back 10,000 keys (`tests/clients/hash_pymemcache.py`).
//!
//! Without pymemcache the test fails, naming the package, unless `PINCACHE_SKIP_PEERS=1`
//! (see tests/common/peers.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::python_with;
use common::Server;
use std::path::Path;
use std::process::{Command, Stdio};

/// Keys pymemcache writes (the issue asks for 10,000).
const KEYS: usize = 10_000;
/// Instances behind the hash ring.
const INSTANCES: usize = 3;
/// The smallest share of the keys each instance must hold: rendezvous hashing gives each
/// of three about a third; 15% only catches a broken ring.
const MIN_SHARE: f64 = 0.15;

// ---------------------------------------------------------------------------------------
// pymemcache
// ---------------------------------------------------------------------------------------

fn run_hash_client(servers: &[Server]) {
    let Some(python) = python_with(
        "pymemcache",
        "the Debian package python3-pymemcache (or pip's pymemcache)",
    ) else {
        return;
    };
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/hash_pymemcache.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(list.join(","))
        .arg(KEYS.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {script:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pymemcache script failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!("SET {KEYS}\nGET {KEYS} 0\nMANY {KEYS} 0\nCAS 1\nOK\n");
    assert_eq!(stdout, want, "pymemcache HashClient over {list:?}");
    let held: Vec<u64> = servers
        .iter()
        .map(|s| {
            s.text()
                .stats("")
                .into_iter()
                .find(|(k, _)| k == "curr_items")
        })
        .map(|kv| kv.expect("curr_items").1.parse().expect("a number"))
        .collect();
    eprintln!("pymemcache HashClient: {KEYS} keys written and read back; per instance {held:?}");
    assert_eq!(held.iter().sum::<u64>(), KEYS as u64, "{held:?}");
    for n in &held {
        assert!(
            *n as f64 >= MIN_SHARE * KEYS as f64,
            "uneven ring: {held:?}"
        );
    }
}

#[test]
fn pymemcache_hash_client_over_three_pincache_instances() {
    let servers: Vec<Server> = (0..INSTANCES).map(|_| Server::pincache(&[])).collect();
    run_hash_client(&servers);
}

#[test]
fn pymemcache_hash_client_over_three_memcached_instances() {
    let servers: Option<Vec<Server>> = (0..INSTANCES)
        .map(|_| Server::memcached_text(&[]))
        .collect();
    if let Some(servers) = servers {
        run_hash_client(&servers);
    }
}
