//! The classic text protocol, as a spec: every `text_spec!` case runs twice, as
//! `<case>::pincache` and `<case>::memcached` (memcached 1.6.18 speaking text, `-t 1 -U 0`),
//! and each answer is checked byte for byte against the same pattern, so both servers must
//! give the same bytes; only CAS values (`%d`) and the version string (`%s`) may differ.
//! The memcached run proves that the expectation is memcached's real behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::text::{match_pattern, Match, TextClient};
use common::{get, op, status, Server};
use pincache_text_spec as text_spec;

/// Default item size limit (`-I 1m`) of both servers.
const ITEM_SIZE_MAX_BYTES: usize = 1024 * 1024;

/// `set` and check `STORED`.
#[track_caller]
fn stored(c: &mut TextClient, key: &str, flags: u32, value: &str) {
    c.call(
        format!("set {key} {flags} 0 {}\r\n{value}\r\n", value.len()),
        "STORED\r\n",
    );
}

/// `gets` one key that must hit with this value and flags; returns its CAS.
#[track_caller]
fn cas_of(c: &mut TextClient, key: &str, flags: u32, value: &str) -> u64 {
    let pattern = format!(
        "VALUE {key} {flags} {} %d\r\n{value}\r\nEND\r\n",
        value.len()
    );
    c.call(format!("gets {key}\r\n"), &pattern)[0]
}

#[track_caller]
fn assert_miss(c: &mut TextClient, key: &str) {
    c.call(format!("get {key}\r\n"), "END\r\n");
}

#[test]
fn patterns_match_digits_and_tokens() {
    let p = b"VALUE k 0 1 %d\r\nx\r\n";
    assert_eq!(match_pattern(p, b"VALUE k 0 1 12"), Match::Partial);
    assert_eq!(
        match_pattern(p, b"VALUE k 0 1 12\r\nx\r\nEND"),
        Match::Complete {
            len: 19,
            caps: vec![12]
        }
    );
    assert_eq!(match_pattern(p, b"VALUE k 0 2"), Match::Mismatch(10));
    assert_eq!(match_pattern(p, b"VALUE k 0 1 \r\n"), Match::Mismatch(12));
    assert!(match_pattern(b"V %s\r\n", b"V 1.6.18\r\n").is_complete());
}

// ---------------------------------------------------------------------------------------
// Retrieval
// ---------------------------------------------------------------------------------------

text_spec!(get_hit_and_miss, |server| {
    let mut c = server.text();
    stored(&mut c, "k", 0x1234_5678, "hello");
    c.call("get k\r\n", "VALUE k 305419896 5\r\nhello\r\nEND\r\n");
    assert_miss(&mut c, "nope");
});

text_spec!(get_many_keys_answers_hits_in_order, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 1, "A");
    stored(&mut c, "c", 3, "C");
    c.call(
        "get a b c a\r\n",
        "VALUE a 1 1\r\nA\r\nVALUE c 3 1\r\nC\r\nVALUE a 1 1\r\nA\r\nEND\r\n",
    );
});

text_spec!(gets_returns_a_cas_that_changes_on_every_store, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 0, "A");
    stored(&mut c, "b", 0, "B");
    let caps = c.call(
        "gets a b zz\r\n",
        "VALUE a 0 1 %d\r\nA\r\nVALUE b 0 1 %d\r\nB\r\nEND\r\n",
    );
    assert_ne!(caps[0], caps[1]);
    stored(&mut c, "a", 0, "A");
    assert_ne!(cas_of(&mut c, "a", 0, "A"), caps[0]);
});

text_spec!(gat_and_gats_touch_and_return_hits, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 1, "A");
    stored(&mut c, "c", 3, "C");
    c.call(
        "gat 100 a zz c\r\n",
        "VALUE a 1 1\r\nA\r\nVALUE c 3 1\r\nC\r\nEND\r\n",
    );
    c.call("gats 100 a\r\n", "VALUE a 1 1 %d\r\nA\r\nEND\r\n");
    c.call("gat 100 zz\r\n", "END\r\n");
    // A negative expiry makes the item expire now: the gat still answers it once.
    c.call("gat -1 a\r\n", "VALUE a 1 1\r\nA\r\nEND\r\n");
    assert_miss(&mut c, "a");
});

text_spec!(get_without_a_key_is_an_error, |server| {
    let mut c = server.text();
    c.call("get\r\n", "ERROR\r\n");
    c.call("gat 10\r\n", "END\r\n");
    c.call("gat\r\n", "ERROR\r\n");
});

text_spec!(key_of_251_bytes_is_refused, |server| {
    let mut c = server.text();
    let long = "k".repeat(251);
    c.call(
        format!("get {long}\r\n"),
        "CLIENT_ERROR bad command line format\r\n",
    );
    let ok = "k".repeat(250);
    stored(&mut c, &ok, 0, "v");
    c.call(
        format!("get {ok}\r\n"),
        &format!("VALUE {ok} 0 1\r\nv\r\nEND\r\n"),
    );
    // A storage command with a long key does not swallow its data block: the data line
    // is read as a command.
    c.call(
        format!("set {long} 0 0 5\r\nhello\r\n"),
        "CLIENT_ERROR bad command line format\r\nERROR\r\n",
    );
    c.call("version\r\n", "VERSION %s\r\n");
});

// ---------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------

text_spec!(set_add_replace_hit_and_miss, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 1, "A");
    c.call("add a 0 0 1\r\nX\r\n", "NOT_STORED\r\n");
    c.call("add b 7 0 1\r\nB\r\n", "STORED\r\n");
    c.call("replace zz 0 0 1\r\nX\r\n", "NOT_STORED\r\n");
    c.call("replace b 5 0 2\r\nBB\r\n", "STORED\r\n");
    c.call(
        "get a b zz\r\n",
        "VALUE a 1 1\r\nA\r\nVALUE b 5 2\r\nBB\r\nEND\r\n",
    );
});

text_spec!(append_prepend_keep_flags_and_miss_is_not_stored, |server| {
    let mut c = server.text();
    stored(&mut c, "b", 5, "BB");
    c.call("append b 9 9 1\r\n+\r\n", "STORED\r\n");
    c.call("prepend b 9 9 1\r\n-\r\n", "STORED\r\n");
    c.call("append zz 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    c.call("prepend zz 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    c.call("get b zz\r\n", "VALUE b 5 4\r\n-BB+\r\nEND\r\n");
});

text_spec!(every_storage_command_with_noreply_is_silent, |server| {
    let mut c = server.text();
    c.send("set a 1 0 1 noreply\r\nA\r\n");
    c.send("add a 0 0 1 noreply\r\nX\r\n"); // NOT_STORED, silent
    c.send("add b 2 0 1 noreply\r\nB\r\n");
    c.send("replace b 3 0 1 noreply\r\nb\r\n");
    c.send("replace zz 0 0 1 noreply\r\nX\r\n");
    c.send("append a 0 0 1 noreply\r\n+\r\n");
    c.send("prepend a 0 0 1 noreply\r\n-\r\n");
    c.send("append zz 0 0 1 noreply\r\nX\r\n");
    c.call(
        "get a b zz\r\n",
        "VALUE a 1 3\r\n-A+\r\nVALUE b 3 1\r\nb\r\nEND\r\n",
    );
});

text_spec!(cas_match_mismatch_and_missing, |server| {
    let mut c = server.text();
    c.call("cas zz 0 0 1 1\r\nx\r\n", "NOT_FOUND\r\n");
    stored(&mut c, "a", 0, "A");
    let cas = cas_of(&mut c, "a", 0, "A");
    c.call(format!("cas a 0 0 1 {}\r\nx\r\n", cas + 1000), "EXISTS\r\n");
    c.call(format!("cas a 4 0 1 {cas}\r\nB\r\n"), "STORED\r\n");
    let new = cas_of(&mut c, "a", 4, "B");
    assert_ne!(new, cas);
    // The old CAS no longer matches.
    c.call(format!("cas a 0 0 1 {cas}\r\nC\r\n"), "EXISTS\r\n");
    c.send(format!("cas a 0 0 1 {cas} noreply\r\nC\r\n"));
    c.send(format!("cas a 6 0 1 {new} noreply\r\nD\r\n"));
    c.call("get a\r\n", "VALUE a 6 1\r\nD\r\nEND\r\n");
});

text_spec!(negative_exptime_stores_an_expired_item, |server| {
    let mut c = server.text();
    stored(&mut c, "k", 0, "old");
    c.call("set k 0 -1 1\r\nx\r\n", "STORED\r\n");
    assert_miss(&mut c, "k");
});

text_spec!(value_containing_crlf_is_binary_safe, |server| {
    let mut c = server.text();
    c.call("set k 0 0 9\r\na\r\nb\r\nEND\r\n", "STORED\r\n");
    c.call("get k\r\n", "VALUE k 0 9\r\na\r\nb\r\nEND\r\nEND\r\n");
    let all: Vec<u8> = (0..=255u8).collect();
    let mut req = b"set bin 0 0 256\r\n".to_vec();
    req.extend_from_slice(&all);
    req.extend_from_slice(b"\r\n");
    c.call(req, "STORED\r\n");
    c.send("get bin\r\n");
    c.expect("VALUE bin 0 256\r\n");
    let mut want = all.clone();
    want.extend_from_slice(b"\r\nEND\r\n");
    let got = c.read_bytes(want.len());
    assert_eq!(got, want);
});

text_spec!(bad_data_chunk_is_a_client_error, |server| {
    let mut c = server.text();
    c.call(
        "set k 0 0 5\r\nhelloX\r\n",
        "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    );
    c.call("get k\r\n", "END\r\n");
    c.call("set k 0 0 5\r\nhello\r\n", "STORED\r\n");
});

text_spec!(
    too_large_value_is_refused_swallowed_and_removes_the_old_item,
    |server| {
        let mut c = server.text();
        stored(&mut c, "k", 0, "old");
        let size = ITEM_SIZE_MAX_BYTES + 1;
        let mut req = format!("set k 0 0 {size}\r\n").into_bytes();
        req.resize(req.len() + size, b'v');
        req.extend_from_slice(b"\r\n");
        c.call(&req, "SERVER_ERROR object too large for cache\r\n");
        assert_miss(&mut c, "k");
        // With noreply the error is silent, and the data is swallowed all the same.
        let mut req = format!("set k 0 0 {size} noreply\r\n").into_bytes();
        req.resize(req.len() + size, b'v');
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        assert_miss(&mut c, "k");
    }
);

text_spec!(bad_storage_lines_are_client_errors, |server| {
    let mut c = server.text();
    c.call("set k 0 0\r\n", "ERROR\r\n");
    // The refused line's data block is not swallowed: "x" is read as a command.
    c.call(
        "set k abc 0 1\r\nx\r\n",
        "CLIENT_ERROR bad command line format\r\nERROR\r\n",
    );
    c.call(
        "set k 0 0 -1\r\n",
        "CLIENT_ERROR bad command line format\r\n",
    );
    c.call("get k\r\n", "END\r\n");
    c.call("cas k 0 0 1\r\n", "ERROR\r\n");
});

// ---------------------------------------------------------------------------------------
// Delete, arithmetic, touch
// ---------------------------------------------------------------------------------------

text_spec!(delete_hit_miss_noreply_and_usage, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 0, "A");
    stored(&mut c, "b", 0, "B");
    c.call("delete a\r\n", "DELETED\r\n");
    c.call("delete a\r\n", "NOT_FOUND\r\n");
    c.send("delete b noreply\r\n");
    c.send("delete b noreply\r\n");
    c.call("get a b\r\n", "END\r\n");
    stored(&mut c, "a", 0, "A");
    c.call("delete a 0\r\n", "DELETED\r\n");
    c.call(
        "delete a x\r\n",
        "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    );
});

text_spec!(incr_decr_hit_miss_and_bounds, |server| {
    let mut c = server.text();
    c.call("incr nope 1\r\n", "NOT_FOUND\r\n");
    c.call("decr nope 1\r\n", "NOT_FOUND\r\n");
    stored(&mut c, "n", 3, "10");
    c.call("incr n 5\r\n", "15\r\n");
    c.call("decr n 100\r\n", "0\r\n");
    c.call("set n 0 0 20\r\n18446744073709551615\r\n", "STORED\r\n");
    c.call("incr n 2\r\n", "1\r\n");
    c.call(
        "get n\r\n",
        "VALUE n 0 20\r\n1                   \r\nEND\r\n",
    );
    c.send("incr n 4 noreply\r\n");
    c.call("decr n 1\r\n", "4\r\n");
});

text_spec!(incr_errors_non_numeric_and_bad_delta, |server| {
    let mut c = server.text();
    stored(&mut c, "m", 0, "x");
    c.call(
        "incr m 1\r\n",
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.call(
        "incr m -1\r\n",
        "CLIENT_ERROR invalid numeric delta argument\r\n",
    );
    c.call(
        "incr m 18446744073709551616\r\n",
        "CLIENT_ERROR invalid numeric delta argument\r\n",
    );
    c.call("incr m\r\n", "ERROR\r\n");
    // noreply silences the non-numeric error too.
    c.send("incr m 1 noreply\r\n");
    c.call("get m\r\n", "VALUE m 0 1\r\nx\r\nEND\r\n");
});

text_spec!(touch_hit_miss_and_noreply, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 0, "A");
    c.call("touch a 100\r\n", "TOUCHED\r\n");
    c.call("touch zz 100\r\n", "NOT_FOUND\r\n");
    c.send("touch a -1 noreply\r\n");
    assert_miss(&mut c, "a");
});

// ---------------------------------------------------------------------------------------
// Other commands, errors
// ---------------------------------------------------------------------------------------

text_spec!(flush_all_forms, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 0, "A");
    c.call("flush_all\r\n", "OK\r\n");
    assert_miss(&mut c, "a");
    stored(&mut c, "a", 0, "A");
    c.send("flush_all noreply\r\n");
    assert_miss(&mut c, "a");
    // A delay in the future leaves the item readable for now.
    stored(&mut c, "a", 0, "A");
    c.call("flush_all 100\r\n", "OK\r\n");
    c.call("get a\r\n", "VALUE a 0 1\r\nA\r\nEND\r\n");
    c.call("flush_all 0\r\n", "OK\r\n");
    assert_miss(&mut c, "a");
    c.call(
        "flush_all x\r\n",
        "CLIENT_ERROR invalid exptime argument\r\n",
    );
});

text_spec!(version_verbosity_memlimit_quit, |server| {
    let mut c = server.text();
    c.call("version\r\n", "VERSION %s\r\n");
    c.call("verbosity 1\r\n", "OK\r\n");
    c.send("verbosity 0 noreply\r\n");
    c.call("verbosity\r\n", "ERROR\r\n");
    c.call("quit\r\n", "");
    c.expect_closed();
});

text_spec!(
    unknown_commands_are_error_and_the_connection_stays,
    |server| {
        let mut c = server.text();
        c.call("bogus\r\n", "ERROR\r\n");
        c.call("GET k\r\n", "ERROR\r\n");
        c.call("\r\n", "ERROR\r\n");
        c.call("bogus noreply\r\n", "ERROR\r\n");
        c.call("version\r\n", "VERSION %s\r\n");
    }
);

text_spec!(a_bare_newline_ends_a_line, |server| {
    let mut c = server.text();
    c.call("set k 1 0 2\nab\r\n", "STORED\r\n");
    c.call("get k\n", "VALUE k 1 2\r\nab\r\nEND\r\n");
});

text_spec!(line_lengths, |server| {
    let mut c = server.text();
    // A long line is fine once it ends; a sixth token that is not "noreply" is ignored.
    c.call(
        format!("set k 0 0 1 {}\r\nv\r\n", "a".repeat(2100)),
        "STORED\r\n",
    );
    c.call(format!("bogus {}\r\n", "a".repeat(3000)), "ERROR\r\n");
    // A get of 2000 keys (a line of 4000 bytes) is answered in full.
    let keys = vec!["k"; 2000].join(" ");
    c.call(
        format!("get {keys}\r\n"),
        &format!("{}END\r\n", "VALUE k 0 1\r\nv\r\n".repeat(2000)),
    );
    // Any other line still without an end after 2048 bytes closes the connection.
    c.send(format!("bogus {}", "a".repeat(3000)));
    c.expect_closed();
});

text_spec!(request_split_at_every_byte, |server| {
    let req = b"set k 2 0 5\r\nhe\r\no\r\nget k\r\n";
    let want = "STORED\r\nVALUE k 2 5\r\nhe\r\no\r\nEND\r\n";
    for at in 1..req.len() {
        let mut c = server.text();
        c.send(&req[..at]);
        // Give the server time to read (and buffer) the first piece on its own.
        std::thread::sleep(std::time::Duration::from_millis(2));
        c.send(&req[at..]);
        c.expect(want);
    }
});

text_spec!(a_hundred_pipelined_requests_in_one_write, |server| {
    let mut c = server.text();
    let mut req = String::new();
    let mut want = String::new();
    for i in 0..100 {
        match i % 4 {
            0 => {
                req += &format!("set k{i} {i} 0 {}\r\nv{i}\r\n", format!("v{i}").len());
                want += "STORED\r\n";
            }
            1 => {
                req += &format!("get k{}\r\n", i - 1);
                want += &format!(
                    "VALUE k{} {} {}\r\nv{}\r\nEND\r\n",
                    i - 1,
                    i - 1,
                    format!("v{}", i - 1).len(),
                    i - 1
                );
            }
            2 => {
                req += &format!("delete k{}\r\n", i - 2);
                want += "DELETED\r\n";
            }
            _ => {
                req += &format!("incr k{} 1\r\n", i - 3);
                want += "NOT_FOUND\r\n";
            }
        }
    }
    c.call(req, &want);
});

text_spec!(a_key_set_over_text_reads_back_over_binary, |server| {
    let mut t = server.text();
    stored(&mut t, "shared", 0xabcd, "value");
    let cas = cas_of(&mut t, "shared", 0xabcd, "value");
    let mut b = server.connect();
    let r = b.call(&get(op::GET, "shared"));
    r.expect(op::GET, status::OK);
    assert_eq!(r.value, b"value");
    assert_eq!(r.flags(), 0xabcd);
    assert_eq!(r.cas, cas, "binary GET sees the CAS text gets returned");
});

// ---------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------

text_spec!(stats_groups_answer_stat_lines, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 0, "A");
    let settings = c.stats("settings");
    for name in [
        "maxbytes",
        "maxconns",
        "tcpport",
        "evictions",
        "item_size_max",
    ] {
        assert!(settings.iter().any(|(k, _)| k == name), "no setting {name}");
    }
    let items = c.stats("items");
    assert!(
        items
            .iter()
            .any(|(k, v)| k.starts_with("items:") && k.ends_with(":number") && v == "1"),
        "no items:N:number 1 in {items:?}"
    );
    let slabs = c.stats("slabs");
    for name in ["active_slabs", "total_malloced"] {
        assert!(slabs.iter().any(|(k, _)| k == name), "no slabs stat {name}");
    }
    c.stats("sizes");
    c.call("stats reset\r\n", "RESET\r\n");
    c.call("stats bogus\r\n", "ERROR\r\n");
});

text_spec!(stats_detail_on_dump_off, |server| {
    let mut c = server.text();
    c.call("stats detail on\r\n", "OK\r\n");
    stored(&mut c, "p:a", 0, "A");
    c.call("get p:a p:b\r\n", "VALUE p:a 0 1\r\nA\r\nEND\r\n");
    c.call(
        "stats detail dump\r\n",
        "PREFIX p get 2 hit 1 set 1 del 0\r\nEND\r\n",
    );
    c.call("stats detail off\r\n", "OK\r\n");
    c.call(
        "stats detail bogus\r\n",
        "CLIENT_ERROR usage: stats detail on|off|dump\r\n",
    );
});

// ---------------------------------------------------------------------------------------
// Found while comparing with memcached
// ---------------------------------------------------------------------------------------

text_spec!(get_with_one_long_key_answers_only_the_error, |server| {
    let mut c = server.text();
    let (ok, long) = ("k".repeat(250), "k".repeat(251));
    stored(&mut c, &ok, 0, "v");
    // One bad key spoils the whole get: no VALUE for the good keys around it, no END.
    c.call(
        format!("get {ok} {long} {ok}\r\n"),
        "CLIENT_ERROR bad command line format\r\n",
    );
    c.call("version\r\n", "VERSION %s\r\n");
});

text_spec!(too_large_cas_keeps_the_old_item, |server| {
    let mut c = server.text();
    stored(&mut c, "k", 0, "old");
    let cas = cas_of(&mut c, "k", 0, "old");
    let size = ITEM_SIZE_MAX_BYTES + 1;
    let mut req = format!("cas k 0 0 {size} {cas}\r\n").into_bytes();
    req.resize(req.len() + size, b'v');
    req.extend_from_slice(b"\r\n");
    c.call(&req, "SERVER_ERROR object too large for cache\r\n");
    // Only a plain set drops the old item; cas (like add, replace, append) keeps it.
    c.call("get k\r\n", "VALUE k 0 3\r\nold\r\nEND\r\n");
});

/// Names memcached_exporter reads from `stats` (it marks the server down without some).
const EXPORTER_STATS: &[&str] = &[
    "pid",
    "uptime",
    "time",
    "version",
    "rusage_user",
    "rusage_system",
    "curr_connections",
    "total_connections",
    "connection_structures",
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "bytes_read",
    "bytes_written",
    "limit_maxbytes",
    "threads",
    "bytes",
    "curr_items",
    "total_items",
    "evictions",
    "reclaimed",
    "listen_disabled_num",
    "accepting_conns",
    "rejected_connections",
    "max_connections",
    "malloc_fails",
];

text_spec!(stats_has_the_names_monitoring_reads, |server| {
    let mut c = server.text();
    stored(&mut c, "a", 0, "A");
    c.call("get a zz\r\n", "VALUE a 0 1\r\nA\r\nEND\r\n");
    let stats = c.stats("");
    for name in EXPORTER_STATS {
        assert!(stats.iter().any(|(k, _)| k == name), "no stat {name}");
    }
    let value = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(value("cmd_set"), "1");
    assert_eq!(value("get_hits"), "1");
    assert_eq!(value("get_misses"), "1");
    assert_eq!(value("curr_items"), "1");
    assert_eq!(value("pid"), server.pid().to_string());
});

// ---------------------------------------------------------------------------------------
// Text authentication
// ---------------------------------------------------------------------------------------

/// A `-Y` file (memcached's text-protocol auth file: `user:password` lines).
fn auth_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("pincache-text-auth-{}", std::process::id()));
    std::fs::write(&path, "alice:secret\nbob:hunter2\n").unwrap();
    path
}

#[test]
fn text_auth_pincache() {
    let file = auth_file();
    check_text_auth(&Server::pincache(&["-Y", file.to_str().unwrap()]));
}

#[test]
fn text_auth_memcached() {
    let file = auth_file();
    if let Some(server) = Server::memcached_text(&["-Y", file.to_str().unwrap()]) {
        check_text_auth(&server);
    }
}

fn check_text_auth(server: &Server) {
    let mut c = server.text();
    c.call("get k\r\n", "CLIENT_ERROR unauthenticated\r\n");
    c.call(
        "set a 0 0 12\r\nalice wrong!\r\n",
        "CLIENT_ERROR authentication failure\r\n",
    );
    c.call("set a 0 0 12\r\nalice secret\r\n", "STORED\r\n");
    stored(&mut c, "k", 0, "v");
    c.call("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
    let mut other = server.text();
    other.call("version\r\n", "CLIENT_ERROR unauthenticated\r\n");
    other.call("set x 0 0 11\r\nbob hunter2\r\n", "STORED\r\n");
    other.call("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
}
text_spec!(cache_memlimit_at_the_current_limit_is_ok, |server| {
    let mut c = server.text();
    // Both servers start with -m 64.
    c.call("cache_memlimit 64\r\n", "OK\r\n");
    c.send("cache_memlimit 64 noreply\r\n");
    c.call("version\r\n", "VERSION %s\r\n");
});

/// pincache's store is one mapping sized at start (docs/protocols.md): another limit
/// is refused with memcached's own words; memcached would resize.
#[test]
fn cache_memlimit_other_than_the_start_limit_is_refused_pincache() {
    let server = Server::pincache(&[]);
    let mut c = server.text();
    c.call(
        "cache_memlimit 100\r\n",
        "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n",
    );
    c.call("version\r\n", "VERSION %s\r\n");
}

/// `stats conns` once it lists exactly `clients` connections (or after 5 s):
/// memcached registers an accepted socket on its worker thread, and forgets a
/// closed one (such as the harness's readiness probe), asynchronously, so an
/// answer given at once may miss one connection or still list an old one.
fn stats_conns_listing(c: &mut TextClient, clients: usize) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let lines = c.stats("conns");
        if lines.len() == 3 + 4 * clients || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

text_spec!(stats_conns_lists_each_socket, |server| {
    let mut c = server.text();
    let mut spoke = server.text();
    spoke.call("version\r\n", "VERSION %s\r\n");
    let silent = server.text();
    spoke.call("version\r\n", "VERSION %s\r\n");
    let lines = stats_conns_listing(&mut c, 3);
    let listen = format!("tcp:127.0.0.1:{}", server.port);
    let id_of = |addr: String| {
        let line = lines
            .iter()
            .find(|(k, v)| k.ends_with(":addr") && *v == addr);
        let (name, _) = line.unwrap_or_else(|| panic!("no {addr} in {lines:?}"));
        name.trim_end_matches(":addr").to_string()
    };
    let value = |id: &str, name: &str| {
        let key = format!("{id}:{name}");
        let line = lines.iter().find(|(k, _)| *k == key);
        line.unwrap_or_else(|| panic!("no {key} in {lines:?}"))
            .1
            .clone()
    };
    let listener = id_of(listen.clone());
    assert_eq!(value(&listener, "state"), "conn_listening");
    value(&listener, "secs_since_last_cmd")
        .parse::<u64>()
        .unwrap();
    let peers = [(&c, "conn_parse_cmd"), (&spoke, "conn_read")];
    for (client, state) in peers {
        let id = id_of(format!("tcp:{}", client.stream.local_addr().unwrap()));
        assert_eq!(value(&id, "listen_addr"), listen);
        assert_eq!(value(&id, "state"), state);
        let secs: u64 = value(&id, "secs_since_last_cmd").parse().unwrap();
        assert!(secs <= 10, "{secs}");
    }
    let id = id_of(format!("tcp:{}", silent.stream.local_addr().unwrap()));
    assert_eq!(value(&id, "state"), "conn_new_cmd");
    // Four lines per connection, three for the listener.
    assert_eq!(lines.len(), 3 + 4 * 3, "{lines:?}");
});
