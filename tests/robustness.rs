//! A bad client cannot hurt the server or anyone else's data (issue 5): malformed
//! input, connection and size limits, slow readers, idle timeouts, shutdown, and a
//! bounded soak.
//!
//! Every malformed-input case runs against a server on which a *second* connection (the
//! witness) stored data first; after the bad client is done, the witness must read the
//! same data and get the same answers as before. Where pincache means to behave like
//! memcached, the same bytes are also sent to a real memcached and the outcomes compared.
//!
//! Tests that measure memory or latency take the `HEAVY` lock so that they do not
//! disturb each other's figures. The soak runs only when asked:
//! `cargo test --release --test robustness -- --ignored soak --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{get, noop, op, set, status, store, Client, Read1, Request, Server};
use pincache::server::connection::DIRECT_VALUE_BYTES as DIRECT;

/// Tests whose figures (RSS, latency) another heavy test running alongside would spoil.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

const MB: u64 = 1 << 20;

/// Opaque of the NOOP that closes every probe.
const FENCE: u32 = 0x00fe_fe99;

/// How long a probe waits for an answer that may legitimately never come.
const SILENCE: Duration = Duration::from_millis(1000);

// ---------------------------------------------------------------------------------------
// The witness: a second connection whose data and answers must not change
// ---------------------------------------------------------------------------------------

struct Witness {
    client: Client,
    items: Vec<(Vec<u8>, Vec<u8>, u32)>,
    round: u32,
}

impl Witness {
    /// Connect and store a few items of different shapes.
    fn new(server: &Server) -> Witness {
        let mut client = server.connect();
        let items: Vec<(Vec<u8>, Vec<u8>, u32)> = vec![
            (b"witness:small".to_vec(), b"value".to_vec(), 0),
            (b"witness:flags".to_vec(), b"f".to_vec(), 0xffff_ffff),
            (b"witness:empty".to_vec(), Vec::new(), 7),
            (
                b"witness:binary".to_vec(),
                (0..=255u8).collect::<Vec<u8>>(),
                0xdead_beef,
            ),
            (b"witness:large".to_vec(), vec![b'L'; 200_000], 1),
            (vec![b'k'; 250], b"longest key".to_vec(), 2),
        ];
        for (key, value, flags) in &items {
            client
                .call(&store(op::SET, key, value, *flags, 0))
                .expect(op::SET, status::OK);
        }
        let mut w = Witness {
            client,
            items,
            round: 0,
        };
        w.check();
        w
    }

    /// Every item reads back unchanged, and the connection still stores and deletes.
    #[track_caller]
    fn check(&mut self) {
        for (key, value, flags) in &self.items {
            let r = self.client.call(&get(op::GET, key));
            r.expect(op::GET, status::OK);
            assert_eq!(
                r.value,
                *value,
                "witness item {} changed",
                common::show_bytes(key)
            );
            assert_eq!(r.flags(), *flags, "witness flags changed");
        }
        self.round += 1;
        let key = format!("witness:round:{}", self.round);
        self.client
            .call(&set(&key, "r"))
            .expect(op::SET, status::OK);
        assert_eq!(self.client.call(&get(op::GET, &key)).value, b"r");
        self.client
            .call(&Request::new(op::DELETE).key(&key))
            .expect(op::DELETE, status::OK);
        self.client
            .call(&get(op::GET, &key))
            .expect(op::GET, status::KEY_NOT_FOUND);
        assert!(self.client.until_noop().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Probes: what a connection answers to some bytes
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// The NOOP sent after the probe was answered: the stream is still in step.
    Fence,
    /// The server closed the connection.
    Closed,
    /// Nothing more arrived within `SILENCE` (the server is, for example, swallowing a
    /// declared body), and the connection is still open.
    Silent,
}

/// One answer: opcode, status, value.
type Answer = (u8, u16, Vec<u8>);

/// Answers (opcode, status, value) in order, and how the exchange ended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    answers: Vec<Answer>,
    end: End,
}

fn answer(opcode: u8, status: u16, text: &str) -> Answer {
    (opcode, status, text.as_bytes().to_vec())
}

/// How a probe is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Follow the bytes with a NOOP (opaque `FENCE`) in the same write.
    Fence,
    /// Send only the bytes, then close our writing side (EOF).
    Eof,
}

fn probe(server: &Server, bytes: &[u8], then: Then) -> Outcome {
    let mut c = server.connect();
    let mut all = bytes.to_vec();
    if then == Then::Fence {
        all.extend_from_slice(&noop().opaque(FENCE).encode());
    }
    // The server may close before taking everything: not an error here.
    c.try_send_raw(&all);
    if then == Then::Eof {
        let _ = c.stream.shutdown(Shutdown::Write);
    }
    let mut answers = Vec::new();
    loop {
        match c.read_one(SILENCE) {
            Read1::Response(r) => {
                if then == Then::Fence && r.opcode == op::NOOP && r.opaque == FENCE {
                    r.expect(op::NOOP, status::OK);
                    return Outcome {
                        answers,
                        end: End::Fence,
                    };
                }
                if r.status != status::OK {
                    assert_eq!(r.cas, 0, "error answers carry CAS 0");
                }
                answers.push((r.opcode, r.status, r.value));
            }
            Read1::Closed => {
                return Outcome {
                    answers,
                    end: End::Closed,
                }
            }
            Read1::Timeout => {
                return Outcome {
                    answers,
                    end: End::Silent,
                }
            }
            Read1::Truncated(b) => panic!("truncated answer: {}", common::hex(&b)),
        }
    }
}

/// Send `bytes` to pincache (with a witness connection checked before and after) and
/// require `expected`; then, when `compare` is set, require memcached's outcome to be the
/// same.
#[track_caller]
fn malformed(bytes: &[u8], then: Then, expected: &Outcome, compare: bool) {
    let server = Server::pincache(&[]);
    let mut witness = Witness::new(&server);
    let got = probe(&server, bytes, then);
    assert_eq!(
        &got,
        expected,
        "pincache's answer to {}",
        common::hex(bytes)
    );
    witness.check();
    // A fresh connection works too.
    let mut fresh = server.connect();
    fresh.call(&noop()).expect(op::NOOP, status::OK);
    drop(server);
    if compare {
        if let Some(memcached) = Server::memcached(&[]) {
            let reference = probe(&memcached, bytes, then);
            assert_eq!(
                &reference,
                expected,
                "memcached's answer to {} (the expectation is meant to be memcached's)",
                common::hex(bytes)
            );
        }
    }
}

fn closed_with(answers: Vec<Answer>) -> Outcome {
    Outcome {
        answers,
        end: End::Closed,
    }
}

fn in_step(answers: Vec<Answer>) -> Outcome {
    Outcome {
        answers,
        end: End::Fence,
    }
}

// ---------------------------------------------------------------------------------------
// Malformed input: one test per header field
// ---------------------------------------------------------------------------------------

#[test]
fn bad_magic_closes_without_an_answer() {
    for magic in [0x00u8, 0x7f, 0xff] {
        let bytes = after_noop(get(op::GET, "witness:small").magic(magic).encode());
        malformed(&bytes, Then::Fence, &closed_with(vec![noop_ok()]), true);
    }
}

#[test]
fn response_magic_on_a_request_closes_without_an_answer() {
    let bytes = after_noop(get(op::GET, "witness:small").magic(0x81).encode());
    malformed(&bytes, Then::Fence, &closed_with(vec![noop_ok()]), true);
    let bytes = after_noop(set("witness:small", "overwritten").magic(0x81).encode());
    malformed(&bytes, Then::Fence, &closed_with(vec![noop_ok()]), true);
}

/// A connection's first byte picks its protocol (anything but 0x80 is text), so
/// a bad magic is only bad magic on a connection that has spoken binary.
fn after_noop(bytes: Vec<u8>) -> Vec<u8> {
    [noop().encode(), bytes].concat()
}

fn noop_ok() -> Answer {
    answer(op::NOOP, status::OK, "")
}

#[test]
fn unknown_opcode_answers_0x81_and_the_stream_continues() {
    for opcode in [0x1fu8, 0x40, 0x80, 0xfe, 0xff] {
        let bytes = Request::new(opcode).value(b"0123456789").encode();
        let expected = in_step(vec![answer(
            opcode,
            status::UNKNOWN_COMMAND,
            "Unknown command",
        )]);
        malformed(&bytes, Then::Fence, &expected, true);
    }
}

/// A response opcode value (0x81 is the response magic) sent with the request magic.
#[test]
fn request_magic_with_a_response_opcode_is_an_unknown_command() {
    let bytes = Request::new(0x81).encode();
    let expected = in_step(vec![answer(
        0x81,
        status::UNKNOWN_COMMAND,
        "Unknown command",
    )]);
    malformed(&bytes, Then::Fence, &expected, true);
}

/// memcached skips `bodylen` bytes *after* the extras and key of an unknown command and so
/// eats the start of the next request; pincache skips exactly the frame.
#[test]
fn unknown_opcode_with_extras_and_key_skips_exactly_its_frame() {
    let bytes = Request::new(0x40)
        .extras([1, 2, 3, 4])
        .key("witness:small")
        .value("v")
        .encode();
    let expected = in_step(vec![answer(
        0x40,
        status::UNKNOWN_COMMAND,
        "Unknown command",
    )]);
    malformed(&bytes, Then::Fence, &expected, false);
}

#[test]
fn key_length_over_body_length_answers_0x81_and_closes() {
    // GET "witness:small" whose header claims a 40-byte key in a 13-byte body.
    let mut req = get(op::GET, "witness:small");
    // (memcached waits for 24 + key length bytes before it checks: the NOOP after the
    // probe supplies them.)
    req.key_len_override = Some(30);
    let expected = closed_with(vec![answer(
        op::GET,
        status::UNKNOWN_COMMAND,
        "Unknown command",
    )]);
    malformed(&req.encode(), Then::Fence, &expected, true);

    // SET whose key and extras together overflow the body (value-less SET of 9 bytes).
    let mut req = store(op::SET, "witness:small", "", 0, 0);
    req.body_len_override = Some(9);
    let expected = closed_with(vec![answer(
        op::SET,
        status::UNKNOWN_COMMAND,
        "Unknown command",
    )]);
    malformed(&req.encode(), Then::Fence, &expected, true);
}

#[test]
fn extras_length_wrong_for_the_opcode_answers_0x04_and_closes() {
    let cases: Vec<Request> = vec![
        get(op::GET, "witness:small").extras([0, 0, 0, 0]),
        get(op::GETK, "witness:small").extras([0, 0, 0, 0, 0, 0, 0, 0]),
        Request::new(op::SET).key("witness:small").value("x"),
        Request::new(op::SET)
            .key("witness:small")
            .extras([0, 0, 0, 0])
            .value("x"),
        Request::new(op::SETQ)
            .key("witness:small")
            .extras([0; 12])
            .value("x"),
        Request::new(op::ADD).key("witness:small").value("x"),
        Request::new(op::APPEND)
            .key("witness:small")
            .extras([0; 8])
            .value("x"),
        Request::new(op::INCREMENT)
            .key("witness:small")
            .extras([0; 8]),
        Request::new(op::DELETE)
            .key("witness:small")
            .extras([0, 0, 0, 0]),
        Request::new(op::TOUCH).key("witness:small"),
        Request::new(op::GAT).key("witness:small").extras([0; 8]),
        Request::new(op::FLUSH).extras([0; 8]),
        Request::new(op::NOOP).extras([0, 0, 0, 0]),
        Request::new(op::VERSION).extras([0, 0, 0, 0]),
        Request::new(op::STAT).extras([0, 0, 0, 0]),
    ];
    for req in cases {
        let expected = closed_with(vec![answer(
            req.opcode,
            status::INVALID_ARGUMENTS,
            "Invalid arguments",
        )]);
        malformed(&req.encode(), Then::Fence, &expected, true);
    }
}

/// Extras length field larger than the extras actually sent: the header's extras swallow
/// the start of the key, so the body no longer has the shape the opcode needs.
#[test]
fn extras_length_field_disagreeing_with_the_body_answers_0x04_and_closes() {
    let mut req = store(op::SET, "witness:small", "overwritten", 0, 0);
    req.extras_len_override = Some(12);
    let expected = closed_with(vec![answer(
        op::SET,
        status::INVALID_ARGUMENTS,
        "Invalid arguments",
    )]);
    malformed(&req.encode(), Then::Fence, &expected, true);
}

#[test]
fn body_length_0xffffffff_on_a_get_answers_0x04_and_closes() {
    let mut req = get(op::GET, "witness:small");
    req.body_len_override = Some(0xffff_ffff);
    let expected = closed_with(vec![answer(
        op::GET,
        status::INVALID_ARGUMENTS,
        "Invalid arguments",
    )]);
    malformed(&req.encode(), Then::Fence, &expected, true);
}

/// memcached overflows an int here and parses the next bytes as new requests
/// (PR #1290); pincache answers "too large" and swallows the declared body, so the
/// NOOP after it is part of the body and gets no answer.
#[test]
fn body_length_0xffffffff_on_a_set_answers_too_large_and_swallows_the_body() {
    let mut req = store(op::SET, "victim", "", 0, 0);
    req.body_len_override = Some(0xffff_ffff);
    let expected = Outcome {
        answers: vec![answer(op::SET, status::TOO_LARGE, "Too large.")],
        end: End::Silent,
    };
    malformed(&req.encode(), Then::Fence, &expected, false);
}

/// An unknown command with a 4 GB body: answered, and the body swallowed (memcached
/// answers and parses the body as requests).
#[test]
fn body_length_0xffffffff_on_an_unknown_opcode_answers_0x81() {
    let mut req = Request::new(0x40);
    req.body_len_override = Some(0xffff_ffff);
    let expected = Outcome {
        answers: vec![answer(0x40, status::UNKNOWN_COMMAND, "Unknown command")],
        end: End::Silent,
    };
    malformed(&req.encode(), Then::Fence, &expected, false);
}

#[test]
fn non_zero_data_type_and_vbucket_are_ignored() {
    let mut s = set("dt", "typed");
    s.data_type = 0x01;
    s.vbucket = 0x1234;
    let mut g = get(op::GET, "dt");
    g.data_type = 0xff;
    let bytes: Vec<u8> = [s.encode(), g.encode()].concat();
    let server = Server::pincache(&[]);
    let mut witness = Witness::new(&server);
    let mut c = server.connect();
    c.send_raw(&bytes);
    c.recv().expect(op::SET, status::OK);
    let r = c.recv();
    r.expect(op::GET, status::OK);
    assert_eq!(r.value, b"typed");
    assert_eq!(r.data_type, 0, "answers carry data type 0");
    witness.check();
    drop(server);
    if let Some(memcached) = Server::memcached(&[]) {
        let mut c = memcached.connect();
        c.send_raw(&bytes);
        c.recv().expect(op::SET, status::OK);
        assert_eq!(c.recv().value, b"typed");
    }
}

#[test]
fn a_key_of_251_bytes_answers_0x04_and_closes() {
    let key = vec![b'x'; 251];
    let cases = vec![
        get(op::GET, &key),
        get(op::GETK, &key),
        set(&key, "v"),
        Request::new(op::DELETE).key(&key),
        Request::new(0x40).key(&key),
    ];
    for req in cases {
        let expected = closed_with(vec![answer(
            req.opcode,
            status::INVALID_ARGUMENTS,
            "Invalid arguments",
        )]);
        malformed(&req.encode(), Then::Fence, &expected, true);
    }
}

#[test]
fn a_key_of_250_bytes_is_fine() {
    let key = vec![b'y'; 250];
    let bytes = [set(&key, "v").encode(), get(op::GETK, &key).encode()].concat();
    let server = Server::pincache(&[]);
    let mut c = server.connect();
    c.send_raw(&bytes);
    c.recv().expect(op::SET, status::OK);
    let r = c.recv();
    r.expect(op::GETK, status::OK);
    assert_eq!(r.key, key);
}

#[test]
fn truncated_packets_followed_by_eof_close_quietly() {
    let full_set = store(op::SET, "witness:small", "overwritten!", 0, 0).encode();
    let cases: Vec<(&str, Vec<u8>, Vec<Answer>)> = vec![
        ("one byte", vec![0x80], vec![]),
        ("ten bytes of header", full_set[..10].to_vec(), vec![]),
        ("header only", full_set[..24].to_vec(), vec![]),
        (
            "header, extras and part of the key",
            full_set[..35].to_vec(),
            vec![],
        ),
        (
            "all but the last byte",
            full_set[..full_set.len() - 1].to_vec(),
            vec![],
        ),
        (
            "a whole GET then half a SET",
            [
                get(op::GET, "witness:small").encode(),
                full_set[..30].to_vec(),
            ]
            .concat(),
            vec![answer(op::GET, status::OK, "value")],
        ),
        (
            "a declared 2 MB SET value cut after 100 KB",
            {
                let mut req = store(op::SET, "witness:small", "", 0, 0);
                req.body_len_override = Some(8 + 13 + (2 << 20));
                let mut b = req.encode();
                b.extend_from_slice(&vec![b'z'; 100_000]);
                b
            },
            // The value is over the 1 MB limit: pincache refuses it at once, memcached
            // only once the whole body is in (never, here). The SET also deletes the
            // old value in both, so no witness check for this key: see below.
            vec![],
        ),
    ];
    for (what, bytes, answers) in cases {
        let too_large = what.starts_with("a declared 2 MB");
        let server = Server::pincache(&[]);
        let mut witness = Witness::new(&server);
        let got = probe(&server, &bytes, Then::Eof);
        if too_large {
            assert_eq!(got.end, End::Closed, "{what}: {got:?}");
            assert!(
                got.answers.is_empty()
                    || got.answers == vec![answer(op::SET, status::TOO_LARGE, "Too large.")],
                "{what}: {got:?}"
            );
            // memcached and pincache both drop an item whose SET was too large.
            witness.items.retain(|(k, _, _)| k != b"witness:small");
        } else {
            assert_eq!(got, closed_with(answers.clone()), "{what}");
        }
        witness.check();
        drop(server);
        if !too_large {
            if let Some(memcached) = Server::memcached(&[]) {
                let mut witness = Witness::new(&memcached);
                let reference = probe(&memcached, &bytes, Then::Eof);
                assert_eq!(reference, closed_with(answers), "memcached, {what}");
                witness.check();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

/// Poll `f` every 20 ms until it returns true; panic with `what` after `limit`.
#[track_caller]
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connection_limit_closes_the_next_connection_and_counts_it() {
    const LIMIT: usize = 4;
    let server = Server::pincache(&["-c", &LIMIT.to_string()]);
    let mut first = server.connect();
    // The start-up probe's connection may not have been reaped yet.
    wait_for(Duration::from_secs(5), "curr_connections == 1", || {
        first.stat_u64("curr_connections") == 1
    });
    let rejected_before = first.stat_u64("rejected_connections");
    let mut conns = vec![first];
    for i in 1..LIMIT {
        let mut c = server.connect();
        c.call(&set(format!("conn{i}"), format!("v{i}")))
            .expect(op::SET, status::OK);
        conns.push(c);
    }

    // One over the limit: the kernel completes the handshake, the server closes at once.
    let mut extra = server.connect();
    extra.try_send_raw(&noop().encode());
    let started = Instant::now();
    extra.expect_closed();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closing the extra connection took {:?}",
        started.elapsed()
    );
    let rejected = conns[0].stat_u64("rejected_connections");
    assert_eq!(rejected, rejected_before + 1, "rejected_connections");

    // The connections inside the limit are untouched.
    for (i, c) in conns.iter_mut().enumerate().skip(1) {
        let r = c.call(&get(op::GET, format!("conn{i}")));
        r.expect(op::GET, status::OK);
        assert_eq!(r.value, format!("v{i}").as_bytes());
    }

    // A freed slot can be used again.
    drop(conns.pop());
    wait_for(Duration::from_secs(5), "curr_connections drops", || {
        conns[0].stat_u64("curr_connections") == (LIMIT - 1) as u64
    });
    let mut again = server.connect();
    again.call(&noop()).expect(op::NOOP, status::OK);
}

/// A SET declaring a 100 MB body (over the 1 MB item limit), streamed in full: answered
/// 0x0003, the body swallowed without being buffered, the connection usable afterwards,
/// and the old value of the key removed (memcached's rule for a too-large SET).
#[test]
fn set_with_a_100_mb_body_is_refused_without_buffering_it() {
    let _g = heavy();
    const BODY: usize = 100 << 20;
    let server = Server::pincache(&["-m", "64"]);
    let mut witness = Witness::new(&server);
    let mut c = server.connect();
    c.call(&set("big", "old")).expect(op::SET, status::OK);
    let base = server.rss();

    let mut req = store(op::SET, "big", "", 0, 0);
    req.body_len_override = Some((8 + 3 + BODY) as u32);
    c.send(&req);
    let chunk = vec![b'x'; 1 << 20];
    let started = Instant::now();
    for _ in 0..BODY / chunk.len() {
        c.send_raw(&chunk);
    }
    let streamed = started.elapsed();
    let got = c.until_noop();
    assert_eq!(got.len(), 1, "one answer to the SET: {got:?}");
    got[0].expect(op::SET, status::TOO_LARGE);
    assert_eq!(got[0].value, b"Too large.");
    c.call(&get(op::GET, "big"))
        .expect(op::GET, status::KEY_NOT_FOUND);
    c.call(&set("big", "new")).expect(op::SET, status::OK);
    assert_eq!(c.call(&get(op::GET, "big")).value, b"new");
    assert_eq!(c.stat_u64("store_too_large"), 1);

    let peak = server.proc_status_bytes("VmHWM");
    eprintln!(
        "100 MB refused body: streamed in {streamed:?}; RSS base {} KB, peak {} KB",
        base / 1024,
        peak / 1024
    );
    assert!(
        peak < base + 16 * MB,
        "RSS grew from {base} to a peak of {peak} bytes while swallowing the body"
    );
    witness.check();
}

/// The same, but the client gives up after a few MB and closes.
#[test]
fn set_with_a_100_mb_body_cut_short_by_close_leaves_the_server_fine() {
    let _g = heavy();
    let server = Server::pincache(&["-m", "64"]);
    let mut witness = Witness::new(&server);
    let base = server.rss();
    {
        let mut c = server.connect();
        let mut req = store(op::SET, "big", "", 0, 0);
        req.body_len_override = Some(8 + 3 + (100 << 20));
        c.send(&req);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..3 {
            c.send_raw(&chunk);
        }
        let r = c.recv();
        r.expect(op::SET, status::TOO_LARGE);
    }
    wait_for(
        Duration::from_secs(5),
        "the cut connection is reaped",
        || witness.client.stat_u64("curr_connections") == 1,
    );
    let peak = server.proc_status_bytes("VmHWM");
    assert!(
        peak < base + 16 * MB,
        "RSS grew from {base} to a peak of {peak}"
    );
    witness.check();
}

/// Pipelines up to `gets` GETs of "big" (opaque = index) in batches of 100 until a write
/// blocks; returns how many whole requests went out.
fn pipeline_until_blocked(slow: &mut Client, gets: u32) -> u32 {
    // Each GET "big" is 27 bytes; a write that blocks means the server stopped reading us,
    // which is what it should do: count the whole requests that went out and move on.
    let mut written = 0usize;
    'send: for first in (0..gets).step_by(100) {
        let batch: Vec<u8> = (first..(first + 100).min(gets))
            .flat_map(|i| get(op::GET, "big").opaque(i).encode())
            .collect();
        let mut off = 0;
        while off < batch.len() {
            match slow.stream.write(&batch[off..]) {
                Ok(n) => off += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    written += off;
                    break 'send;
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        written += off;
    }
    (written / 27) as u32
}

/// A client pipelines thousands of GETs for a 500 KB value and does not read: the server
/// stops reading its requests once its output is queued up, so RSS stays bounded, and
/// another client's GETs stay fast. When the slow client finally reads, every answer is
/// there, complete and in order.
#[test]
fn slow_reader_cannot_grow_memory_or_slow_others_down() {
    let _g = heavy();
    const VALUE: usize = 500_000;
    const GETS: u32 = 3000;
    let server = Server::pincache(&["-m", "64"]);
    let mut witness = Witness::new(&server);
    let mut fast = server.connect();
    let big: Vec<u8> = (0..VALUE).map(|i| (i % 251) as u8).collect();
    fast.call(&set("big", &big)).expect(op::SET, status::OK);
    fast.call(&set("small", "s")).expect(op::SET, status::OK);
    let base = server.rss();

    let mut slow = server.connect();
    slow.stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sent = pipeline_until_blocked(&mut slow, GETS);

    // While the slow client sits on its answers, the others are served at once.
    let mut worst = Duration::ZERO;
    let mut peak_rss = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = fast.call(&get(op::GET, "small"));
        let took = t.elapsed();
        r.expect(op::GET, status::OK);
        worst = worst.max(took);
        n += 1;
        if n % 20 == 0 {
            peak_rss = peak_rss.max(server.rss());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let hwm = server.proc_status_bytes("VmHWM");
    eprintln!(
        "slow reader: {sent} GETs of {VALUE} bytes pipelined unread; other client: {n} GETs, \
         worst {worst:?}; RSS base {} KB, peak sampled {} KB, VmHWM {} KB",
        base / 1024,
        peak_rss / 1024,
        hwm / 1024
    );
    // Served at once means well under a millisecond on an idle machine; on a loaded,
    // shared 2-core one a round trip has been seen to take 110 ms from preemption alone.
    // A loop stuck on the slow reader would hold the GET for the whole 3 s.
    assert!(
        worst < Duration::from_millis(1_000),
        "another client's GET took {worst:?}"
    );
    assert!(
        hwm < base + 100 * MB,
        "RSS grew from {base} to {hwm} with a client that does not read"
    );

    // Now read: every answer arrives, complete and in order.
    slow.stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for i in 0..sent {
        let r = match slow.read_one(Duration::from_secs(5)) {
            Read1::Response(r) => r,
            other => panic!("answer {i} of {sent} to the slow reader: {other:?}"),
        };
        r.expect(op::GET, status::OK);
        assert_eq!(r.opaque, i, "answers in request order");
        assert_eq!(r.value.len(), VALUE);
        if i % 500 == 0 {
            assert_eq!(r.value, big);
        }
    }
    witness.check();
}

/// A client pipelines many GETs for a large value in one write and reads as fast as it
/// can: every answer arrives. (The server stops parsing at its output high-water mark;
/// when the socket then takes all the output at once it must go back to the requests
/// still in its buffer, with no new readable event to wake it.)
#[test]
fn pipelined_large_answers_all_arrive_while_the_client_reads() {
    let _g = heavy();
    const VALUE: usize = 500_000;
    const GETS: u32 = 50;
    let server = Server::pincache(&[]);
    let mut c = server.connect();
    let big: Vec<u8> = (0..VALUE).map(|i| (i % 249) as u8).collect();
    c.call(&set("big", &big)).expect(op::SET, status::OK);
    let batch: Vec<u8> = (0..GETS)
        .flat_map(|i| get(op::GET, "big").opaque(i).encode())
        .chain(noop().opaque(FENCE).encode())
        .collect();
    c.send_raw(&batch);
    for i in 0..GETS {
        let r = match c.read_one(Duration::from_secs(5)) {
            Read1::Response(r) => r,
            other => panic!("answer {i} of {GETS}: {other:?}"),
        };
        r.expect(op::GET, status::OK);
        assert_eq!(r.opaque, i);
        assert_eq!(r.value, big);
    }
    let r = c.recv();
    r.expect(op::NOOP, status::OK);
    assert_eq!(r.opaque, FENCE);
}

/// Values of `DIRECT_VALUE_BYTES` and up go to the socket straight from the store
/// (one writev with the answers queued before them). Pipelined with small answers,
/// misses and quiet gets, read in small pieces with pauses so the socket often takes
/// only part of a writev: every answer arrives whole and in order, and a SET between
/// two GETs of the same key is seen by the second.
#[test]
fn large_values_written_from_the_store_arrive_whole_and_in_order() {
    let _g = heavy();
    let server = Server::pincache(&["-I", "2m"]);
    let mut c = server.connect();
    let sizes = [DIRECT - 1, DIRECT, DIRECT + 1, 100_000, 1_500_000];
    let value = |k: usize, round: u8| -> Vec<u8> {
        (0..sizes[k])
            .map(|i| (i % 241) as u8 ^ round ^ k as u8)
            .collect()
    };
    for k in 0..sizes.len() {
        c.call(&set(format!("big{k}"), value(k, 0)))
            .expect(op::SET, status::OK);
    }
    c.call(&set("small", "s")).expect(op::SET, status::OK);
    let mut batch = Vec::new();
    let mut expect: Vec<(u8, u32, Option<Vec<u8>>)> = Vec::new();
    let mut opaque = 0;
    for round in 0..12u8 {
        for k in 0..sizes.len() {
            batch.extend(get(op::GET, format!("big{k}")).opaque(opaque).encode());
            expect.push((op::GET, opaque, Some(value(k, round))));
            opaque += 1;
            batch.extend(get(op::GETK, "small").opaque(opaque).encode());
            expect.push((op::GETK, opaque, Some(b"s".to_vec())));
            opaque += 1;
            batch.extend(get(op::GETQ, "missing").opaque(opaque).encode());
            opaque += 1; // a quiet miss: no answer
        }
        for k in 0..sizes.len() {
            batch.extend(
                set(format!("big{k}"), value(k, round + 1))
                    .opaque(opaque)
                    .encode(),
            );
            expect.push((op::SET, opaque, None));
            opaque += 1;
        }
    }
    batch.extend(noop().opaque(FENCE).encode());
    expect.push((op::NOOP, FENCE, None));
    // Write from another thread: the batch is larger than the socket buffers, and
    // the server stops reading while its answers wait for us.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&batch).unwrap());
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 7_001];
    let mut reader = c.stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reads = 0u32;
    let mut at = 0;
    for (i, (opcode, opaque, value)) in expect.iter().enumerate() {
        let r = loop {
            if let Some((r, used)) = common::Response::parse(&raw[at..]) {
                at += used;
                break r;
            }
            let n = std::io::Read::read(&mut reader, &mut chunk).unwrap();
            assert!(n > 0, "closed before answer {i}");
            raw.extend_from_slice(&chunk[..n]);
            reads += 1;
            if reads.is_multiple_of(50) {
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        r.expect(*opcode, status::OK);
        assert_eq!(r.opaque, *opaque, "answer {i} out of order");
        if let Some(v) = value {
            assert!(
                r.value == *v,
                "answer {i} (opaque {opaque}): wrong value of {} bytes",
                v.len()
            );
        }
    }
    sender.join().unwrap();
    assert_eq!(at, raw.len(), "bytes after the last answer");
}

/// The same in text and meta: `get` of several keys, `gets`, `mg .. v` and small
/// answers around values just below, at and above `DIRECT_VALUE_BYTES`, pipelined
/// and read slowly; the bytes that arrive are exactly the answers, in order.
#[test]
fn text_and_meta_values_around_the_direct_threshold_arrive_whole_and_in_order() {
    let _g = heavy();
    let server = Server::pincache(&["-I", "2m"]);
    let sizes = [0, 1, DIRECT - 1, DIRECT, DIRECT + 1, 100_000, 1_500_000];
    let value = |k: usize, round: usize| -> Vec<u8> {
        (0..sizes[k])
            .map(|i| b'a' + ((i + k + round) % 26) as u8)
            .collect()
    };
    let (mut batch, mut expect) = (Vec::new(), Vec::new());
    let set = |batch: &mut Vec<u8>, expect: &mut Vec<u8>, key: String, v: &[u8]| {
        batch.extend(format!("set {key} 5 0 {}\r\n", v.len()).bytes());
        batch.extend(v);
        batch.extend(b"\r\n");
        expect.extend(b"STORED\r\n");
    };
    set(&mut batch, &mut expect, "small".into(), b"s");
    for round in 0..4 {
        for k in 0..sizes.len() {
            let v = value(k, round);
            set(&mut batch, &mut expect, format!("v{k}"), &v);
            let head = format!("VALUE v{k} 5 {}\r\n", v.len());
            // Two values of one `get`, a miss and a small hit between them.
            batch.extend(format!("get v{k} nope small v{k}\r\n").bytes());
            for part in [head.as_bytes(), &v, b"\r\nVALUE small 5 1\r\ns\r\n"] {
                expect.extend(part);
            }
            for part in [head.as_bytes(), &v, b"\r\nEND\r\n"] {
                expect.extend(part);
            }
            batch.extend(format!("mg v{k} v f\r\nmg nope v\r\nmg small v\r\n").bytes());
            expect.extend(format!("VA {} f5\r\n", v.len()).bytes());
            expect.extend(&v);
            expect.extend(b"\r\nEN\r\nVA 1\r\ns\r\n");
        }
    }
    batch.extend(b"mn\r\n");
    expect.extend(b"MN\r\n");
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&batch).unwrap());
    let mut reader = stream;
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut got, mut chunk, mut reads) = (Vec::new(), vec![0u8; 5_003], 0u32);
    while got.len() < expect.len() {
        let n = std::io::Read::read(&mut reader, &mut chunk).unwrap();
        assert!(
            n > 0,
            "closed after {} of {} bytes",
            got.len(),
            expect.len()
        );
        got.extend_from_slice(&chunk[..n]);
        reads += 1;
        if reads.is_multiple_of(50) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    sender.join().unwrap();
    if let Some(at) = got.iter().zip(&expect).position(|(a, b)| a != b) {
        panic!(
            "first difference at byte {at}: got {:?}, expected {:?}",
            String::from_utf8_lossy(&got[at.saturating_sub(20)..(at + 40).min(got.len())]),
            String::from_utf8_lossy(&expect[at.saturating_sub(20)..(at + 40).min(expect.len())])
        );
    }
    assert_eq!(got.len(), expect.len(), "bytes after the last answer");
}

/// Minor page faults a process has taken (field 10 of /proc/PID/stat).
fn minor_faults(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(7).unwrap().parse().unwrap()
}

/// A value of `len` bytes that names its key `k` throughout.
fn keyed_value(k: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i * 7 + k) % 26) as u8).collect()
}

/// Sends 16 GETs (keys `v0`..`v15`, opaques from `first`) in one write.
fn send_sixteen(c: &mut Client, first: u32) {
    let reqs: Vec<Request> = (0..16u32)
        .map(|k| get(op::GET, format!("v{k}")).opaque(first + k))
        .collect();
    c.send_all(&reqs);
}

/// Reads the answers to `send_sixteen(c, first)`: whole, in order, the right values.
#[track_caller]
fn check_sixteen(c: &mut Client, first: u32, values: &[Vec<u8>]) {
    for k in 0..16u32 {
        let r = c.recv();
        r.expect(op::GET, status::OK);
        assert_eq!(r.opaque, first + k, "answers in request order");
        assert!(
            r.value == values[k as usize],
            "value of v{k} (opaque {})",
            first + k
        );
    }
}

/// A connection with nothing queued answers into the loop's one output buffer and
/// hands it back once sent; a connection whose client is slow keeps it, and the
/// others go on with another. Four clients pipeline batches of 16 GETs of values
/// just under the direct threshold (copied into the output, ~256 KB a batch): every
/// answer arrives whole and in order, also while a fifth client sits on 64 answers
/// and after it reads them. Steady batches do not fault pages in: a buffer of each
/// connection's own, given back after every batch over 64 KB and regrown by doubling,
/// took about 2 page faults per GET whenever the allocator served it with mmap.
#[test]
fn pipelined_batches_share_one_output_buffer_without_faults_or_mixups() {
    let _g = heavy();
    let server = Server::pincache(&[]);
    let size = DIRECT - 384;
    let values: Vec<Vec<u8>> = (0..16).map(|k| keyed_value(k, size)).collect();
    let mut conns: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for (k, v) in values.iter().enumerate() {
        conns[0]
            .call(&set(format!("v{k}"), v))
            .expect(op::SET, status::OK);
    }
    let rounds = |conns: &mut [Client], n: u32, from: u32| {
        for round in from..from + n {
            for c in conns.iter_mut() {
                send_sixteen(c, round * 16);
            }
            for c in conns.iter_mut() {
                check_sixteen(c, round * 16, &values);
            }
        }
    };
    rounds(&mut conns, 10, 0);
    let before = minor_faults(server.pid());
    rounds(&mut conns, 100, 10);
    let faults = minor_faults(server.pid()) - before;
    eprintln!("400 batches of 16 GETs of {size} B: {faults} minor faults");
    assert!(faults < 400, "{faults} page faults over 400 steady batches");

    // A client that does not read keeps its answers; the others are unaffected.
    let mut slow = server.connect();
    for b in 0..4 {
        send_sixteen(&mut slow, 1000 + b * 16);
    }
    std::thread::sleep(Duration::from_millis(100));
    rounds(&mut conns, 20, 200);
    for b in 0..4 {
        check_sixteen(&mut slow, 1000 + b * 16, &values);
    }
    rounds(&mut conns, 5, 300);
    send_sixteen(&mut slow, 2000);
    check_sixteen(&mut slow, 2000, &values);
}

#[test]
fn idle_timeout_closes_idle_connections_only() {
    let server = Server::pincache(&["--idle-timeout", "1"]);
    let mut idle = server.connect();
    idle.call(&noop()).expect(op::NOOP, status::OK);
    let idle_since = Instant::now();
    let mut active = server.connect();
    let closed_after = loop {
        active.call(&noop()).expect(op::NOOP, status::OK);
        match idle.read_one(Duration::from_millis(200)) {
            Read1::Closed => break idle_since.elapsed(),
            Read1::Timeout => {}
            other => panic!("idle connection got {other:?}"),
        }
        // 10x the 1 s timeout: the close is checked once a second, and a loaded machine
        // adds its own delay.
        assert!(
            idle_since.elapsed() < Duration::from_secs(10),
            "the idle connection was not closed within 10 s"
        );
    };
    eprintln!("idle connection closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed too early: {closed_after:?}"
    );
    // The active one keeps working well past the timeout.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        active.call(&noop()).expect(op::NOOP, status::OK);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn without_idle_timeout_idle_connections_stay() {
    let server = Server::pincache(&[]);
    let mut idle = server.connect();
    idle.call(&noop()).expect(op::NOOP, status::OK);
    idle.expect_silence(2500);
    idle.call(&noop()).expect(op::NOOP, status::OK);
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_exits_0_promptly_and_closes_idle_connections() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::pincache(&[]);
        let mut clients: Vec<Client> = (0..5).map(|_| server.connect()).collect();
        for c in &mut clients {
            c.call(&noop()).expect(op::NOOP, status::OK);
        }
        let t = Instant::now();
        server.signal(signal);
        let code = server
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("still running 5 s after SIG{signal}"));
        eprintln!("SIG{signal}: exited with {code} after {:?}", t.elapsed());
        assert!(code.success(), "exit status after SIG{signal}: {code}");
        assert!(t.elapsed() < Duration::from_secs(3));
        for c in &mut clients {
            c.expect_closed();
        }
    }
}

/// Answers queued for a client when SIGTERM arrives are delivered whole before the
/// server exits 0.
#[test]
fn sigterm_delivers_queued_answers_then_exits_0() {
    let _g = heavy();
    const VALUE: usize = 500_000;
    const GETS: u32 = 20;
    let mut server = Server::pincache(&[]);
    let mut admin = server.connect();
    let big: Vec<u8> = (0..VALUE).map(|i| (i % 253) as u8).collect();
    admin.call(&set("big", &big)).expect(op::SET, status::OK);
    let gets_before = admin.stat_u64("cmd_get");

    let mut slow = server.connect();
    let batch: Vec<u8> = (0..GETS)
        .flat_map(|i| get(op::GET, "big").opaque(i).encode())
        .chain(noop().opaque(FENCE).encode())
        .collect();
    slow.send_raw(&batch);
    // Wait until the server has executed what it will before the slow client's output
    // fills up: cmd_get stops moving.
    let mut last = 0;
    let mut executed = 0;
    wait_for(Duration::from_secs(5), "cmd_get settles", || {
        let now = admin.stat_u64("cmd_get") - gets_before;
        let settled = now > 0 && now == last;
        last = now;
        executed = now;
        if !settled {
            std::thread::sleep(Duration::from_millis(150));
        }
        settled
    });
    drop(admin);

    server.signal("TERM");
    let t = Instant::now();
    let mut delivered = 0u32;
    let mut noop_seen = false;
    loop {
        match slow.read_one(Duration::from_secs(5)) {
            Read1::Response(r) if r.opcode == op::NOOP => {
                assert_eq!(r.opaque, FENCE);
                noop_seen = true;
            }
            Read1::Response(r) => {
                r.expect(op::GET, status::OK);
                assert_eq!(r.opaque, delivered, "answers in order");
                assert_eq!(r.value, big, "a complete value");
                delivered += 1;
            }
            Read1::Closed => break,
            other => panic!("after SIGTERM: {other:?}"),
        }
    }
    let code = server
        .wait_exit(Duration::from_secs(5))
        .expect("pincache still running 5 s after SIGTERM");
    eprintln!(
        "SIGTERM with queued output: {executed} GETs executed before the signal, \
         {delivered} of {GETS} answered (NOOP answered: {noop_seen}), exit {code} after {:?}",
        t.elapsed()
    );
    assert!(code.success(), "exit status {code}");
    assert!(
        u64::from(delivered) >= executed,
        "{executed} GETs were executed before SIGTERM but only {delivered} answers arrived"
    );
}

/// A client that never reads cannot hold the shutdown up for long.
#[test]
fn sigterm_with_a_client_that_never_reads_still_exits_0_within_a_bound() {
    let _g = heavy();
    let mut server = Server::pincache(&[]);
    let mut admin = server.connect();
    admin
        .call(&set("big", vec![b'b'; 500_000]))
        .expect(op::SET, status::OK);
    let mut slow = server.connect();
    let batch: Vec<u8> = (0..200)
        .flat_map(|_| get(op::GET, "big").encode())
        .collect();
    slow.send_raw(&batch);
    wait_for(Duration::from_secs(5), "GETs executed", || {
        admin.stat_u64("cmd_get") > 0
    });
    let t = Instant::now();
    server.signal("TERM");
    let code = server
        .wait_exit(Duration::from_secs(20))
        .expect("pincache still running 20 s after SIGTERM");
    eprintln!(
        "SIGTERM with a non-reading client: exit {code} after {:?}",
        t.elapsed()
    );
    assert!(code.success(), "exit status {code}");
    // The grace for queued answers is 2 s; 5x that for a loaded machine.
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
    drop(slow);
}

// ---------------------------------------------------------------------------------------
// Huge pages (-L)
// ---------------------------------------------------------------------------------------

/// `AnonHugePages` of a process, in kB, from /proc/PID/smaps_rollup.
fn anon_huge_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// With `-L` the anonymous arena gets transparent huge pages when the kernel's THP
/// switch allows them (`always` or `madvise`), and the server says so once at start;
/// when it is `never`, the server warns that `-L` has no effect. The switch is read
/// here from sysfs, and each state has its own assertion.
#[test]
fn large_pages_give_the_arena_huge_pages_or_warn_that_they_cannot() {
    let _g = heavy();
    let mode =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let log = std::env::temp_dir().join(format!("pincache-L-{}.log", std::process::id()));
    let server = Server::custom("pincache", |port| {
        let mut cmd = std::process::Command::new(common::pincache_bin());
        cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1", "-m", "64", "-L"]);
        cmd.env("RUST_LOG", "info");
        cmd.stderr(std::fs::File::create(&log).unwrap());
        cmd
    });
    // 8 MB of values: several 2 MB stretches of the arena get written.
    let mut c = server.connect();
    let value = vec![b'h'; 64 << 10];
    for i in 0..128 {
        c.call(&set(format!("huge-{i}"), &value))
            .expect(op::SET, status::OK);
    }
    let pid = server.pid();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if mode.contains("[always]") || mode.contains("[madvise]") {
        // A fault in an advised, aligned 2 MB range takes a huge page when one is free;
        // otherwise khugepaged collapses it later: allow it time.
        wait_for(Duration::from_secs(30), "AnonHugePages > 0 with -L", || {
            anon_huge_kb(pid) > 0
        });
        let log = read_log();
        assert_eq!(log.matches("advised MADV_HUGEPAGE").count(), 1, "{log}");
        assert!(!log.contains("no effect"), "{log}");
    } else {
        assert!(mode.contains("[never]"), "THP switch reads {mode:?}");
        wait_for(Duration::from_secs(5), "the -L warning", || {
            read_log().contains("-L has no effect")
        });
    }
    drop(c);
    drop(server);
    let _ = std::fs::remove_file(&log);
}

// ---------------------------------------------------------------------------------------
// Soak (run on demand)
// ---------------------------------------------------------------------------------------

/// `ulimit -n` of this process: (soft, hard).
fn nofile_limits(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// Connect, retrying while the listen backlog is full.
fn connect_retry(port: u16, deadline: Instant) -> TcpStream {
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// One SET and one GET on a raw stream; panics on a wrong answer.
fn round_trip(c: &mut Client, key: &str, value: &[u8]) {
    c.call(&set(key, value)).expect(op::SET, status::OK);
    let r = c.call(&get(op::GET, key));
    r.expect(op::GET, status::OK);
    assert_eq!(r.value, value, "value of {key}");
}

#[test]
#[ignore = "soak: 60+ s; run with `cargo test --release --test robustness -- --ignored soak --nocapture`"]
fn soak_many_connections_and_churn_return_to_baseline() {
    let _g = heavy();
    const TARGET_HELD: usize = 10_000;
    const CHURN_PER_SEC: u64 = 1_000;
    const CHURN_THREADS: u64 = 8;
    const WORKERS: usize = 4;
    let duration = Duration::from_secs(
        std::env::var("SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );

    // File descriptors: raise our soft limit to the hard one (prlimit, no libc), and start
    // the server under a shell that raises its own.
    let me = std::process::id();
    let (soft, hard) = nofile_limits(me);
    if soft < hard {
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &me.to_string(), &format!("--nofile={hard}:{hard}")])
            .status();
    }
    let (soft, _) = nofile_limits(me);
    let held_target = TARGET_HELD.min((soft as usize).saturating_sub(1_000));
    let bin = common::pincache_bin();
    let server = Server::custom("pincache", |port| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c").arg(format!(
            "ulimit -n {hard} 2>/dev/null || ulimit -n $(ulimit -Hn); \
             exec {bin} -p {port} -l 127.0.0.1 -c 20000 -m 64"
        ));
        cmd
    });
    let (server_soft, _) = nofile_limits(server.pid());
    let port = server.port;

    // Warm-up: the keys the soak uses exist, so item memory is in the baseline.
    let mut admin = server.connect();
    for i in 0..1000 {
        admin
            .call(&set(format!("soak:{i}"), vec![b'v'; 100]))
            .expect(op::SET, status::OK);
    }
    wait_for(Duration::from_secs(5), "curr_connections == 1", || {
        admin.stat_u64("curr_connections") == 1
    });
    let base_rss = server.rss();
    let base_fds = server.fd_count();
    eprintln!(
        "soak: nofile soft limit test={soft} server={server_soft}; holding {held_target} \
         connections, churn {CHURN_PER_SEC}/s for {duration:?}; baseline RSS {} KB, fds {base_fds}",
        base_rss / 1024
    );

    // Hold connections open; each one proves it works with a NOOP.
    let t = Instant::now();
    let mut held: Vec<Client> = Vec::with_capacity(held_target);
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..held_target {
        let mut c = Client::from_stream(connect_retry(port, deadline));
        if i % 100 == 0 {
            c.call(&noop()).expect(op::NOOP, status::OK);
        }
        held.push(c);
    }
    for c in held.iter_mut() {
        c.call(&noop()).expect(op::NOOP, status::OK);
    }
    let connected_in = t.elapsed();
    wait_for(Duration::from_secs(30), "held connections counted", || {
        admin.stat_u64("curr_connections") > held_target as u64
    });
    let held_rss = server.rss();
    let held_fds = server.fd_count();
    eprintln!(
        "soak: {} connections open in {connected_in:?}; RSS {} KB, fds {held_fds}",
        held.len(),
        held_rss / 1024
    );

    // Requests flowing on the held connections, and churn: connect, SET+GET, close.
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let held = Arc::new(Mutex::new(held));
    let mut threads = Vec::new();
    for w in 0..WORKERS {
        let (stop, requests, held) = (stop.clone(), requests.clone(), held.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let mut guard = held.lock().unwrap();
                let n = guard.len();
                // Each worker walks its own stripe of the held connections.
                let c = &mut guard[i % n];
                let key = format!("soak:{}", i % 1000);
                round_trip(c, &key, &[b'v'; 100]);
                drop(guard);
                requests.fetch_add(2, Ordering::Relaxed);
                i += WORKERS;
            }
        }));
    }
    let per_thread_interval = Duration::from_secs_f64(CHURN_THREADS as f64 / CHURN_PER_SEC as f64);
    for t in 0..CHURN_THREADS {
        let (stop, churned, requests) = (stop.clone(), churned.clone(), requests.clone());
        threads.push(std::thread::spawn(move || {
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // Fixed rate: the n-th connection of this thread is due at n * interval.
                let due = start + per_thread_interval.mul_f64(n as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let mut c = Client::from_stream(connect_retry(
                    port,
                    Instant::now() + Duration::from_secs(10),
                ));
                let key = format!("churn:{t}:{}", n % 100);
                round_trip(&mut c, &key, b"churn");
                requests.fetch_add(2, Ordering::Relaxed);
                if n.is_multiple_of(2) {
                    // Half leave with QUIT (the server closes first) ...
                    c.call(&Request::new(op::QUIT)).expect(op::QUIT, status::OK);
                    c.expect_closed();
                }
                // ... half just close.
                drop(c);
                churned.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let t = Instant::now();
    let mut max_rss = 0;
    let mut max_fds = 0;
    while t.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(500));
        max_rss = max_rss.max(server.rss());
        max_fds = max_fds.max(server.fd_count());
    }
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().expect("soak thread panicked");
    }
    let elapsed = t.elapsed();
    let churned = churned.load(Ordering::Relaxed);
    let requests = requests.load(Ordering::Relaxed);
    eprintln!(
        "soak: {elapsed:?}: {churned} connect/disconnect ({:.0}/s), {requests} requests \
         ({:.0}/s); max RSS {} KB, max fds {max_fds}",
        churned as f64 / elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        max_rss / 1024
    );

    // Everything still works, then everything goes away.
    let mut held = Arc::try_unwrap(held)
        .ok()
        .expect("threads joined")
        .into_inner()
        .unwrap();
    for c in held.iter_mut().step_by(97) {
        c.call(&noop()).expect(op::NOOP, status::OK);
    }
    drop(held);
    let t = Instant::now();
    wait_for(Duration::from_secs(30), "connections closed", || {
        admin.stat_u64("curr_connections") == 1
    });
    wait_for(Duration::from_secs(10), "fds back to baseline", || {
        server.fd_count() <= base_fds + 2
    });
    let end_fds = server.fd_count();
    // Give the allocator a moment; RSS is polled, not slept on.
    let mut end_rss = server.rss();
    let rss_deadline = Instant::now() + Duration::from_secs(10);
    while end_rss > base_rss + 32 * MB && Instant::now() < rss_deadline {
        std::thread::sleep(Duration::from_millis(200));
        end_rss = server.rss();
    }
    let stats = admin.stats();
    let stat = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    eprintln!(
        "soak: after closing all ({:?}): RSS {} KB (baseline {} KB, held {} KB, max {} KB), \
         fds {end_fds} (baseline {base_fds}, held {held_fds}, max {max_fds}); \
         total_connections {}, rejected_connections {}",
        t.elapsed(),
        end_rss / 1024,
        base_rss / 1024,
        held_rss / 1024,
        max_rss / 1024,
        stat("total_connections"),
        stat("rejected_connections"),
    );
    assert_eq!(stat("rejected_connections"), "0");
    assert!(
        end_fds <= base_fds + 2,
        "fds: {end_fds} after, {base_fds} before"
    );
    assert!(
        end_rss <= base_rss + 32 * MB,
        "RSS {end_rss} after the soak, {base_rss} before: not back near the baseline"
    );
    for i in (0..1000).step_by(50) {
        let r = admin.call(&get(op::GET, format!("soak:{i}")));
        r.expect(op::GET, status::OK);
    }
}

// ---------------------------------------------------------------------------------------
// Out of file descriptors
// ---------------------------------------------------------------------------------------

/// CPU time (user + system, clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Whether a NOOP sent earlier on `stream` has been answered, waiting up to `wait`.
fn noop_answered(stream: &mut TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut header = [0u8; 24];
    match stream.read_exact(&mut header) {
        Ok(()) => header[0] == 0x81 && header[1] == op::NOOP,
        Err(_) => false,
    }
}

#[test]
fn out_of_file_descriptors_backs_off_without_spinning_and_recovers() {
    let _heavy = heavy();
    let bin = common::pincache_bin();
    let server = Server::custom("pincache", |port| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c").arg(format!(
            "ulimit -n 24; exec {bin} -p {port} -l 127.0.0.1 -c 1000"
        ));
        cmd
    });
    let noop_bytes = noop().encode();
    let mut clients: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            s.write_all(&noop_bytes).unwrap();
            s
        })
        .collect();
    // The kernel completes every handshake; the server can accept only ~18 of them.
    let answered: Vec<bool> = clients
        .iter_mut()
        .map(|s| noop_answered(s, Duration::from_millis(100)))
        .collect();
    let served = answered.iter().filter(|&&a| a).count();
    assert!(
        served > 0 && served < 40,
        "served {served} of 40 with 24 fds"
    );

    // Out of descriptors with connections waiting: the server must not spin.
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(server.pid()) - before;
    assert!(
        used < 30,
        "server used {used} ticks in 1 s while out of fds"
    );

    // Free descriptors: the waiting connections are accepted and answered.
    let mut waiting = Vec::new();
    for (stream, was_answered) in clients.drain(..).zip(answered) {
        if was_answered {
            drop(stream);
        } else {
            waiting.push(stream);
        }
    }
    let mut late = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    for stream in waiting.iter_mut().take(served.saturating_sub(2)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            noop_answered(stream, left.max(Duration::from_millis(1))),
            "a waiting connection was not served after fds were freed"
        );
        late += 1;
    }
    assert!(late > 0);
    // With every client gone, a new one is served as usual.
    drop(waiting);
    let mut fresh = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    fresh.write_all(&noop_bytes).unwrap();
    assert!(
        noop_answered(&mut fresh, Duration::from_secs(5)),
        "a new connection was not served once fds were free"
    );
}

#[test]
fn a_flood_of_bad_packets_cannot_flood_the_log() {
    let bin = common::pincache_bin();
    let log_path = std::env::temp_dir().join(format!("pincache-log-{}.txt", std::process::id()));
    let log_file = log_path.display().to_string();
    let server = Server::custom("pincache", |port| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(format!("exec {bin} -p {port} -l 127.0.0.1 -v 2>{log_file}"));
        cmd
    });
    let mut c = server.connect();
    let unknown = Request::new(0x40).encode();
    let mut flood = Vec::new();
    for _ in 0..5000 {
        flood.extend_from_slice(&unknown);
    }
    flood.extend_from_slice(&noop().opaque(7).encode());
    c.send_raw(&flood);
    let answers = c.until_noop();
    assert_eq!(answers.len(), 5001, "every unknown opcode is answered");
    drop(c);
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let lines = log.lines().filter(|l| l.contains("unknown opcode")).count();
    assert!(
        (1..=20).contains(&lines),
        "{lines} log lines for 5000 bad packets"
    );
    // Each line names the client.
    assert!(log
        .lines()
        .filter(|l| l.contains("unknown opcode"))
        .all(|l| l.contains("127.0.0.1:")));
}
