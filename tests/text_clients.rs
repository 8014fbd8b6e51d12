//! Real text-protocol clients and tools against pincache (and, to prove each check is
//! memcached's real behaviour, against memcached):
//!
//! - pymemcache's `HashClient` over three instances writes and reads back 10,000 keys
//!   (`tests/clients/hash_pymemcache.py`);
//! - `stats`, `stats settings`, `stats items` and `stats slabs` scraped the way
//!   Prometheus' memcached_exporter reads them: it reports the server down when
//!   `cmd_set` or a `cas_*` counter is missing or when a value it reads does not parse
//!   (a float; `rusage_*` as `seconds.micros`; booleans as yes/no);
//! - `memcached-tool HOST:PORT stats` and `display` (Debian ships it with memcached).
//!
//! Without pymemcache or memcached-tool a test fails, naming the package, unless
//! `PINCACHE_SKIP_PEERS=1` (see tests/common/peers.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::text::TextClient;
use common::{missing_tool, python_with, Server};
use pincache_text_spec as text_spec;
use std::collections::HashMap;
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

// ---------------------------------------------------------------------------------------
// memcached_exporter's reading of stats
// ---------------------------------------------------------------------------------------

/// General stats memcached_exporter reads as numbers (it skips missing ones, except that
/// without `cmd_set` and the three `cas_*` counters it reports the server down). The
/// issue asks for all of these to be present.
const EXPORTER_NUMBERS: &[&str] = &[
    "uptime",
    "time",
    "curr_connections",
    "total_connections",
    "rejected_connections",
    "conn_yields",
    "listen_disabled_num",
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "bytes_read",
    "bytes_written",
    "bytes",
    "limit_maxbytes",
    "curr_items",
    "total_items",
    "evictions",
    "reclaimed",
    "accepting_conns",
];

/// Read as `seconds.microseconds` (exactly one dot, both sides numbers).
const EXPORTER_TIMEVALS: &[&str] = &["rusage_user", "rusage_system"];

/// Read only when present, as numbers: a value that does not parse marks the server down.
const EXPORTER_OPTIONAL: &[&str] = &[
    "store_too_large",
    "store_no_memory",
    "lru_crawler_starts",
    "direct_reclaims",
    "crawler_items_checked",
    "crawler_reclaimed",
    "moves_to_cold",
    "moves_to_warm",
    "moves_within_lru",
    "total_malloced",
];

fn as_map(pairs: Vec<(String, String)>) -> HashMap<String, String> {
    pairs.into_iter().collect()
}

#[track_caller]
fn assert_number(group: &str, stats: &HashMap<String, String>, name: &str) {
    let v = stats
        .get(name)
        .unwrap_or_else(|| panic!("stats {group}: no {name}"));
    assert!(
        v.parse::<f64>().is_ok(),
        "stats {group}: {name} = {v:?} is not a number"
    );
}

#[track_caller]
fn assert_timeval(stats: &HashMap<String, String>, name: &str) {
    let v = stats
        .get(name)
        .unwrap_or_else(|| panic!("stats: no {name}"));
    let parts: Vec<&str> = v.split('.').collect();
    assert!(
        parts.len() == 2 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "stats: {name} = {v:?} is not seconds.micros"
    );
}

/// The exporter's reading of the general stats.
fn scrape_general(c: &mut TextClient) {
    let stats = as_map(c.stats(""));
    assert!(stats.contains_key("version"), "stats: no version");
    for name in EXPORTER_NUMBERS {
        assert_number("", &stats, name);
    }
    for name in EXPORTER_TIMEVALS {
        assert_timeval(&stats, name);
    }
    for name in EXPORTER_OPTIONAL.iter().filter(|n| stats.contains_key(**n)) {
        assert_number("", &stats, name);
    }
    // What the scrape asserts after one set, one hit and one miss.
    for (name, want) in [("cmd_set", "1"), ("get_hits", "1"), ("get_misses", "1")] {
        assert_eq!(stats[name], want, "stats {name}");
    }
}

/// `stats settings`: maxconns as a number; the LRU crawler settings read when
/// `lru_crawler` is `yes` (booleans yes/no).
fn scrape_settings(c: &mut TextClient) {
    let settings = as_map(c.stats("settings"));
    assert_number("settings", &settings, "maxconns");
    if settings.get("lru_crawler").map(String::as_str) == Some("yes") {
        for name in [
            "lru_crawler_sleep",
            "lru_crawler_tocrawl",
            "hot_lru_pct",
            "warm_lru_pct",
        ] {
            assert_number("settings", &settings, name);
        }
        for name in ["hot_max_factor", "warm_max_factor"] {
            assert_number("settings", &settings, name);
        }
        let threaded = settings.get("lru_maintainer_thread").map(String::as_str);
        assert!(
            matches!(threaded, Some("yes" | "no")),
            "lru_maintainer_thread {threaded:?}"
        );
    }
}

/// `stats items` (`items:<class>:<name>`) and `stats slabs` (`<class>:<name>`, plus
/// totals): every value the exporter reads is a number; one class holds the item.
fn scrape_items_and_slabs(c: &mut TextClient) {
    let items = c.stats("items");
    let mut classes: HashMap<String, HashMap<String, String>> = HashMap::new();
    for (name, value) in items {
        let parts: Vec<&str> = name.splitn(3, ':').collect();
        assert!(
            parts.len() == 3 && parts[0] == "items" && parts[1].parse::<u32>().is_ok(),
            "stats items: {name}"
        );
        classes
            .entry(parts[1].to_string())
            .or_default()
            .insert(parts[2].to_string(), value);
    }
    let numbers: Vec<&String> = classes.values().filter_map(|c| c.get("number")).collect();
    assert_eq!(numbers, vec!["1"], "items:N:number over all classes");
    for stats in classes.values() {
        assert_number("items", stats, "number");
        assert_number("items", stats, "age");
        for (name, _) in stats.iter().filter(|(k, _)| k.as_str() != "number") {
            assert_number("items", stats, name);
        }
    }
    let slabs = c.stats("slabs");
    for (name, value) in &slabs {
        assert!(
            value.parse::<f64>().is_ok(),
            "stats slabs: {name} = {value:?}"
        );
    }
    let names: Vec<&str> = slabs.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"active_slabs"), "stats slabs: {names:?}");
    assert!(names.contains(&"total_malloced"), "stats slabs: {names:?}");
}

text_spec!(stats_scraped_as_memcached_exporter_reads_them, |server| {
    let mut c = server.text();
    c.call("set k 0 0 1\r\nv\r\n", "STORED\r\n");
    c.call("get k nope\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
    scrape_general(&mut c);
    scrape_settings(&mut c);
    scrape_items_and_slabs(&mut c);
});

// ---------------------------------------------------------------------------------------
// memcached-tool
// ---------------------------------------------------------------------------------------

/// memcached-tool: on PATH, or where Debian's memcached package puts it.
fn memcached_tool() -> Option<String> {
    if common::on_path("memcached-tool") {
        return Some("memcached-tool".to_string());
    }
    let debian = "/usr/share/memcached/scripts/memcached-tool";
    if Path::new(debian).exists() {
        return Some(debian.to_string());
    }
    missing_tool("memcached-tool", "the Debian package memcached");
    None
}

/// Run memcached-tool with perl warnings on; returns stdout; fails on a non-zero exit
/// or any warning (a missing field shows up as "uninitialized value").
fn run_tool(tool: &str, port: u16, mode: &str) -> String {
    let out = Command::new("perl")
        .arg("-w")
        .arg(tool)
        .arg(format!("127.0.0.1:{port}"))
        .arg(mode)
        .stdin(Stdio::null())
        .output()
        .expect("run perl memcached-tool");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "memcached-tool {mode}: {} {stderr}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

text_spec!(memcached_tool_stats_and_display, |server| {
    let Some(tool) = memcached_tool() else {
        return;
    };
    let mut c = server.text();
    for i in 0..5 {
        c.call(format!("set k{i} 0 0 3\r\nabc\r\n"), "STORED\r\n");
    }
    let stats = run_tool(&tool, server.port, "stats");
    let curr = stats
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&"curr_items"))
        .unwrap_or_else(|| panic!("no curr_items in:\n{stats}"));
    assert_eq!(curr.get(1), Some(&"5"), "{stats}");
    let display = run_tool(&tool, server.port, "display");
    let rows: Vec<Vec<&str>> = display
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(display.starts_with("  #  Item_Size"), "{display}");
    // Columns: # Item_Size Max_age Pages Count Full? Evicted Evict_Time OOM.
    let counted: u64 = rows.iter().map(|r| r[4].parse::<u64>().unwrap()).sum();
    assert_eq!(counted, 5, "items counted by display:\n{display}");
});
