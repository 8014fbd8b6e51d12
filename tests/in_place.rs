//! Large SET values read straight into their item (server/arrival.rs), seen from
//! clients of both protocols: every size around the threshold reads back byte for
//! byte while other connections pipeline small requests; a value that trickles in
//! one byte at a time; a client that leaves halfway (the key keeps its old value,
//! nothing stays held); eviction while a value arrives; a bad data block end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::text::TextClient;
use common::{get, op, status, store, Client, Request, Server};
use pincache::server::arrival::IN_PLACE_VALUE_BYTES;

/// memcached's item overhead in the size check (`store::MEMCACHED_ITEM_OVERHEAD`).
const ITEM_OVERHEAD: usize = 59;
const ITEM_SIZE_MAX: usize = 1 << 20;
/// A pause long enough that the server reads the first part of a request alone.
const GAP: Duration = Duration::from_millis(20);

/// A value whose bytes name their position (a misplaced byte shows), with CRLF in it.
fn value(len: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(31) as u8).wrapping_add(seed))
        .collect();
    if len > 10 {
        v[3..5].copy_from_slice(b"\r\n");
    }
    v
}

/// The sizes around the threshold, and the largest the item limit takes.
fn sizes(key: &str) -> [usize; 5] {
    let t = IN_PLACE_VALUE_BYTES;
    [
        0,
        t - 1,
        t,
        t + 1,
        ITEM_SIZE_MAX - ITEM_OVERHEAD - key.len(),
    ]
}

/// Sends `bytes` in two writes with a pause between, splitting at `at`.
fn send_split(stream: &mut std::net::TcpStream, bytes: &[u8], at: usize) {
    let at = at.min(bytes.len());
    stream.write_all(&bytes[..at]).unwrap();
    thread::sleep(GAP);
    stream.write_all(&bytes[at..]).unwrap();
}

/// A pincache server, and memcached to answer the same (unless skipped).
fn pincache_and_memcached() -> Vec<Server> {
    let mut servers = vec![Server::pincache(&[])];
    servers.extend(Server::memcached_text(&[]));
    servers
}

fn stat(stats: &[(String, String)], name: &str) -> u64 {
    let found = stats.iter().find(|(k, _)| k == name);
    found
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
        .parse()
        .unwrap()
}

/// A client pipelining small sets and gets until told to stop, checking each answer.
fn pipeliner(
    server: &Server,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<u32> {
    let mut c = server.connect();
    thread::spawn(move || {
        let mut rounds = 0u32;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut batch = Vec::new();
            for i in 0..20u32 {
                let key = format!("small:{i}");
                batch.push(store(op::SETQ, &key, format!("{rounds}:{i}"), 0, 0));
                batch.push(get(op::GETK, &key));
            }
            c.send_all(&batch);
            let got = c.until_noop();
            assert_eq!(got.len(), 20);
            for (i, r) in got.iter().enumerate() {
                r.expect(op::GETK, status::OK);
                assert_eq!(r.value, format!("{rounds}:{i}").into_bytes());
            }
            rounds += 1;
        }
        rounds
    })
}

#[test]
fn every_size_around_the_threshold_reads_back_while_others_pipeline() {
    let server = Server::pincache(&["-m", "64"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = pipeliner(&server, stop.clone());
    let mut bin = server.connect();
    let mut text = server.text();
    for (n, len) in sizes("binary:k").into_iter().enumerate() {
        let v = value(len, n as u8);
        let req = store(op::SET, "binary:k", &v, 7, 0).encode();
        // Split inside the value: its head first, then the rest.
        send_split(&mut bin.stream, &req, 24 + 8 + 8 + len / 3);
        bin.recv().expect(op::SET, status::OK);
        let r = bin.call(&get(op::GET, "binary:k"));
        r.expect(op::GET, status::OK);
        assert!(r.value == v, "binary value of {len} bytes differs");
        assert_eq!(r.flags(), 7);
    }
    for (n, len) in sizes("text:k").into_iter().enumerate() {
        let v = value(len, 100 + n as u8);
        let mut req = format!("set text:k 9 0 {len}\r\n").into_bytes();
        req.extend_from_slice(&v);
        req.extend_from_slice(b"\r\n");
        send_split(&mut text.stream, &req, 20 + len / 2);
        text.expect("STORED\r\n");
        text.send("get text:k\r\n");
        text.expect(&format!("VALUE text:k 9 {len}\r\n"));
        assert!(
            text.read_bytes(len) == v,
            "text value of {len} bytes differs"
        );
        text.expect("\r\nEND\r\n");
    }
    meta_sizes_read_back(&mut text);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(other.join().unwrap() > 0);
}

#[test]
fn a_value_trickling_in_one_byte_at_a_time_is_stored_whole() {
    let server = Server::pincache(&[]);
    let len = IN_PLACE_VALUE_BYTES + 1;
    let v = value(len, 3);
    let mut bin = server.connect();
    let mut other = server.connect();
    let req = store(op::SET, "slow", &v, 0, 0).encode();
    for (i, byte) in req.iter().enumerate() {
        bin.send_raw(&[*byte]);
        if i % 4096 == 0 {
            // The loop keeps serving others meanwhile.
            other
                .call(&Request::new(op::NOOP))
                .expect(op::NOOP, status::OK);
        }
    }
    bin.recv().expect(op::SET, status::OK);
    assert!(bin.call(&get(op::GET, "slow")).value == v);
    let mut text = server.text();
    let mut req = format!("set slow-text 0 0 {len}\r\n").into_bytes();
    req.extend_from_slice(&v);
    req.extend_from_slice(b"\r\nget slow-text\r\n");
    for byte in &req {
        text.send([*byte]);
    }
    text.expect("STORED\r\n");
    text.expect(&format!("VALUE slow-text 0 {len}\r\n"));
    assert!(text.read_bytes(len) == v);
    text.expect("\r\nEND\r\n");
}

/// The general stats a client that leaves must not change, and segments in use.
fn held(c: &mut Client) -> (u64, u64, u64) {
    let general = c.stats();
    let slabs = c.stats_group("slabs");
    (
        stat(&general, "curr_items"),
        stat(&general, "bytes"),
        stat(&slabs, "segments_used"),
    )
}

#[test]
fn a_client_leaving_halfway_keeps_the_old_value_and_holds_nothing() {
    // 8 segments: a reservation never given back would show within a few rounds.
    let server = Server::pincache(&["-m", "8"]);
    let mut c = server.connect();
    c.call(&store(op::SET, "k", "old", 0, 0))
        .expect(op::SET, status::OK);
    let before = held(&mut c);
    let len = 600_000;
    let v = value(len, 9);
    for round in 0..30 {
        let mut gone = server.connect();
        let mut req = store(op::SET, "k", &v, 0, 0).encode();
        if round % 2 == 1 {
            let mut text = format!("set k 0 0 {len}\r\n").into_bytes();
            text.extend_from_slice(&v);
            req = text;
        }
        let half = req.len() / 2;
        gone.send_raw(&req[..half]);
        thread::sleep(GAP);
        drop(gone);
        let r = c.call(&get(op::GET, "k"));
        assert_eq!(r.value, b"old");
    }
    // The server sees each close in its own time: wait (10 s at most) for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held(&mut c) != before && std::time::Instant::now() < deadline {
        thread::sleep(GAP);
    }
    assert_eq!(held(&mut c).0, before.0, "curr_items");
    assert_eq!(held(&mut c).1, before.1, "bytes");
    // The abandoned room is dead space; a flush frees every segment.
    c.call(&Request::new(op::FLUSH))
        .expect(op::FLUSH, status::OK);
    assert_eq!(held(&mut c), (0, 0, 0));
}

#[test]
fn eviction_while_a_value_arrives_leaves_it_whole() {
    let server = Server::pincache(&["-m", "8"]);
    let len = 700_000;
    let v = value(len, 5);
    let mut slow = server.connect();
    let req = store(op::SET, "arriving", &v, 0, 0).encode();
    slow.send_raw(&req[..req.len() / 3]);
    thread::sleep(GAP);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut c = server.connect();
            thread::spawn(move || {
                let filler = vec![b'f'; 50_000];
                for i in 0..150 {
                    let r = c.call(&store(op::SET, format!("fill:{w}:{i}"), &filler, 0, 0));
                    r.expect(op::SET, status::OK);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut c = server.connect();
    assert!(c.stat_u64("evictions") > 0, "the cache did not turn over");
    slow.send_raw(&req[req.len() / 3..]);
    slow.recv().expect(op::SET, status::OK);
    assert!(c.call(&get(op::GET, "arriving")).value == v);
}

#[test]
fn a_bad_data_block_end_is_refused_and_the_old_value_kept() {
    let servers = pincache_and_memcached();
    for server in &servers {
        let mut c: TextClient = server.text();
        c.call("set k 0 0 3\r\nold\r\n", "STORED\r\n");
        let len = IN_PLACE_VALUE_BYTES * 2;
        let mut req = format!("set k 0 0 {len}\r\n").into_bytes();
        req.extend_from_slice(&value(len, 1));
        req.extend_from_slice(b"XYget k\r\n");
        send_split(&mut c.stream, &req, len / 2);
        c.expect("CLIENT_ERROR bad data chunk\r\n");
        c.expect("VALUE k 0 3\r\nold\r\nEND\r\n");
    }
}

/// Large values each followed by a burst of small SETs (more than one read's worth),
/// all in one write: the reads alternate between values read in place (each read
/// that brings a value's header takes at most 16 KiB) and runs of small requests
/// (whole-buffer reads), in both protocols.
fn mixed_batch_values() -> Vec<Vec<u8>> {
    let t = IN_PLACE_VALUE_BYTES;
    [100_000, t, 40_000, 3 * t + 7, t + 1]
        .iter()
        .enumerate()
        .map(|(n, &len)| value(len, 50 + n as u8))
        .collect()
}

#[test]
fn large_and_small_sets_pipelined_in_one_write_read_back() {
    let server = Server::pincache(&["-m", "64"]);
    let big = mixed_batch_values();
    let mut bin = server.connect();
    let mut batch = Vec::new();
    for (n, v) in big.iter().enumerate() {
        batch.push(store(op::SETQ, format!("big:{n}"), v, n as u32, 0));
        for i in 0..300 {
            batch.push(store(
                op::SETQ,
                format!("small:{n}:{i}"),
                format!("{n}.{i}"),
                0,
                0,
            ));
        }
    }
    bin.send_all(&batch);
    assert!(bin.until_noop().is_empty(), "a quiet set failed");
    for (n, v) in big.iter().enumerate() {
        let r = bin.call(&get(op::GET, format!("big:{n}")));
        r.expect(op::GET, status::OK);
        assert!(
            r.value == *v,
            "binary value {n} of {} bytes differs",
            v.len()
        );
        assert_eq!(r.flags(), n as u32);
        let r = bin.call(&get(op::GET, format!("small:{n}:299")));
        assert_eq!(r.value, format!("{n}.299").into_bytes());
    }
    let mut text = server.text();
    let mut req = Vec::new();
    for (n, v) in big.iter().enumerate() {
        req.extend_from_slice(format!("set tbig:{n} {n} 0 {} noreply\r\n", v.len()).as_bytes());
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
        for i in 0..300 {
            let small = format!("{n}.{i}");
            let line = format!(
                "set tsmall:{n}:{i} 0 0 {} noreply\r\n{small}\r\n",
                small.len()
            );
            req.extend_from_slice(line.as_bytes());
        }
    }
    req.extend_from_slice(b"get tsmall:4:299\r\n");
    text.send(&req);
    text.expect("VALUE tsmall:4:299 0 5\r\n4.299\r\nEND\r\n");
    for (n, v) in big.iter().enumerate() {
        text.send(format!("get tbig:{n}\r\n"));
        text.expect(&format!("VALUE tbig:{n} {n} {}\r\n", v.len()));
        assert!(text.read_bytes(v.len()) == *v, "text value {n} differs");
        text.expect("\r\nEND\r\n");
    }
}

/// An `ms` request line and its data block (`value`, then `end`).
fn ms(key: &str, flags: &str, value: &[u8], end: &[u8]) -> Vec<u8> {
    let mut req = format!("ms {key} {} {flags}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(end);
    req
}

/// Sends `req` with its value split (the line and part of the value first).
fn send_ms(c: &mut TextClient, req: &[u8]) {
    let at = req.iter().position(|&b| b == b'\n').map_or(0, |n| n + 1);
    send_split(&mut c.stream, req, at + (req.len() - at) / 3);
}

/// Reads back `key` as `mg <key> v f` and compares.
fn expect_mg(c: &mut TextClient, key: &str, value: &[u8], flags: u32) {
    c.send(format!("mg {key} v f\r\n"));
    c.expect(&format!("VA {} f{flags}\r\n", value.len()));
    assert!(c.read_bytes(value.len()) == *value, "{key}: value differs");
    c.expect("\r\n");
}

/// `ms` at every size around the threshold (split after the line), with
/// its echoed flags, read back; then base64 and quiet ones.
fn meta_sizes_read_back(c: &mut TextClient) {
    let before = stat(&c.stats(""), "set_in_place");
    for (n, len) in sizes("meta:k").into_iter().enumerate() {
        let v = value(len, 200 + n as u8);
        send_ms(c, &ms("meta:k", "c k O12345 F3 T0", &v, b"\r\n"));
        let caps = c.expect("HD c%d kmeta:k O12345\r\n");
        c.send("mg meta:k c\r\n");
        c.expect(&format!("HD c{}\r\n", caps[0]));
        expect_mg(c, "meta:k", &v, 3);
    }
    // A base64 key is echoed base64; `q` hides the success, `mn` answers.
    let len = IN_PLACE_VALUE_BYTES * 2;
    let v = value(len, 7);
    send_ms(c, &ms("bWV0YTpi", "b k O1", &v, b"\r\n"));
    c.expect("HD kbWV0YTpi b O1\r\n");
    send_ms(c, &ms("meta:q", "q F9", &v, b"\r\nmn\r\n"));
    c.expect("MN\r\n");
    expect_mg(c, "meta:b", &v, 0);
    expect_mg(c, "meta:q", &v, 9);
    // Threshold, threshold + 1, the limit, and the two above were read in place.
    assert_eq!(stat(&c.stats(""), "set_in_place") - before, 5);
}

#[test]
fn meta_set_modes_cas_and_invalidation_in_place_answer_as_memcached() {
    let servers = pincache_and_memcached();
    let len = IN_PLACE_VALUE_BYTES + 100;
    let (a, b) = (value(len, 1), value(len, 2));
    for server in &servers {
        let mut c = server.text();
        // E (add): stored on a miss, NS on a hit; R (replace): the reverse.
        send_ms(&mut c, &ms("r", "MR", &a, b"\r\n"));
        c.expect("NS\r\n");
        send_ms(&mut c, &ms("e", "ME c", &a, b"\r\n"));
        c.expect("HD c%d\r\n");
        send_ms(&mut c, &ms("e", "ME", &b, b"\r\n"));
        c.expect("NS\r\n");
        expect_mg(&mut c, "e", &a, 0);
        send_ms(&mut c, &ms("e", "MR T100", &b, b"\r\n"));
        c.expect("HD\r\n");
        expect_mg(&mut c, "e", &b, 0);
        // A (append), P (prepend): the old value and the new piece.
        send_ms(&mut c, &ms("e", "MA", &a, b"\r\n"));
        c.expect("HD\r\n");
        send_ms(&mut c, &ms("e", "MP", b"<", b"\r\n"));
        c.expect("HD\r\n");
        expect_mg(&mut c, "e", &[&b"<"[..], &b[..], &a[..]].concat(), 0);
        // C: a stale CAS is refused (EX), the current one stores.
        let old = c.call("mg e c\r\n", "HD c%d\r\n")[0];
        send_ms(&mut c, &ms("e", "T0", &a, b"\r\n"));
        c.expect("HD\r\n");
        send_ms(&mut c, &ms("e", &format!("C{old} c"), &b, b"\r\n"));
        c.expect("EX c0\r\n");
        let now = c.call("mg e c\r\n", "HD c%d\r\n")[0];
        send_ms(&mut c, &ms("e", &format!("C{now}"), &b, b"\r\n"));
        c.expect("HD\r\n");
        // I with the older CAS: stored, but stale (X) and the first reader wins (W).
        send_ms(&mut c, &ms("e", &format!("I C{old}"), &a, b"\r\n"));
        c.expect("HD\r\n");
        c.send("mg e v\r\n");
        c.expect(&format!("VA {len} X W\r\n"));
        assert!(c.read_bytes(len) == a);
        c.expect("\r\n");
        // A stale value keeps the TTL of the item it replaces, whether or not
        // its own request gave one.
        send_ms(&mut c, &ms("t", "T1000 c", &a, b"\r\n"));
        let old = c.expect("HD c%d\r\n")[0];
        for (ttl, late_ttl) in [("T1000", "T0"), ("T0", "T50"), ("T2000", "T50")] {
            send_ms(&mut c, &ms("t", ttl, &a, b"\r\n"));
            c.expect("HD\r\n");
            send_ms(
                &mut c,
                &ms("t", &format!("I C{old} {late_ttl}"), &b, b"\r\n"),
            );
            c.expect("HD\r\n");
            let want: u64 = ttl[1..].parse().unwrap();
            if want == 0 {
                c.call("mg t t\r\n", "HD t-1 X W\r\n");
            } else {
                let left = c.call("mg t t\r\n", "HD t%d X W\r\n")[0];
                assert!(left <= want && left + 100 >= want, "{ttl}: t{left}");
            }
            // The late value is served, stale, its win handed out already.
            c.send("mg t v\r\n");
            c.expect(&format!("VA {len} Z X\r\n"));
            assert!(c.read_bytes(len) == b);
            c.expect("\r\n");
        }
    }
}

#[test]
fn meta_set_bad_data_end_and_a_client_leaving_keep_the_old_value() {
    let servers = pincache_and_memcached();
    let len = IN_PLACE_VALUE_BYTES * 2;
    for server in &servers {
        let mut c = server.text();
        c.call("ms k 3\r\nold\r\n", "HD\r\n");
        send_ms(&mut c, &ms("k", "q", &value(len, 1), b"XYmn\r\n"));
        c.expect("CLIENT_ERROR bad data chunk\r\n");
        c.expect("MN\r\n");
        let mut gone = server.text();
        let req = ms("k", "T0", &value(len, 2), b"\r\n");
        gone.send(&req[..req.len() / 2]);
        thread::sleep(GAP);
        drop(gone);
        c.call("mg k v\r\n", "VA 3\r\nold\r\n");
    }
}

/// Whether `stats conns` lists a connection in `conn_nread`.
fn any_nread(c: &mut TextClient) -> bool {
    let conns = c.stats("conns");
    conns
        .iter()
        .any(|(k, v)| k.ends_with(":state") && v == "conn_nread")
}

/// Asks until `any_nread` is `want` (memcached registers and moves its
/// connections on a worker thread, in its own time): 10 s at most.
fn until_nread(c: &mut TextClient, want: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while any_nread(c) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "conn_nread never {want}"
        );
        thread::sleep(GAP);
    }
}

#[test]
fn stats_conns_shows_conn_nread_while_a_value_arrives() {
    let servers = pincache_and_memcached();
    let len = IN_PLACE_VALUE_BYTES * 4;
    for server in &servers {
        let mut c = server.text();
        until_nread(&mut c, false);
        let mut half = server.text();
        let req = ms("nread", "T0", &value(len, 3), b"\r\n");
        half.send(&req[..req.len() / 2]);
        until_nread(&mut c, true);
        half.send(&req[req.len() / 2..]);
        half.expect("HD\r\n");
        until_nread(&mut c, false);
    }
}

#[test]
fn set_in_place_and_set_buffered_count_each_storage_command() {
    let server = Server::pincache(&[]);
    let mut c = server.text();
    let counts = |c: &mut TextClient| {
        let stats = c.stats("");
        (
            stat(&stats, "set_in_place"),
            stat(&stats, "set_buffered"),
            stat(&stats, "cmd_set"),
        )
    };
    let before = counts(&mut c);
    c.call("set small 0 0 1\r\nx\r\n", "STORED\r\n");
    c.call("ms small 1 MA\r\ny\r\n", "HD\r\n");
    let len = IN_PLACE_VALUE_BYTES;
    // Each value split after its header: read in place.
    let mut req = format!("set big 0 0 {len}\r\n").into_bytes();
    req.extend_from_slice(&value(len, 1));
    req.extend_from_slice(b"\r\n");
    send_split(&mut c.stream, &req, 30);
    c.expect("STORED\r\n");
    send_ms(&mut c, &ms("big", "", &value(len, 2), b"\r\n"));
    c.expect("HD\r\n");
    let mut bin = server.connect();
    let req = store(op::SET, "big", value(len, 3), 0, 0).encode();
    send_split(&mut bin.stream, &req, 40);
    bin.recv().expect(op::SET, status::OK);
    // A smaller value whole in one write: copied from the read buffer.
    bin.call(&store(op::SET, "mid", value(1000, 4), 0, 0))
        .expect(op::SET, status::OK);
    let after = counts(&mut c);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (3, 3, 6)
    );
}
