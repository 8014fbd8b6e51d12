//! libmemcached's `memccapable -b` (Debian's libmemcached-tools) against pincache: every
//! binary-protocol test must pass. Also run against memcached, as a check of the harness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Server;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// memccapable runs a few dozen small tests; this bounds a hung run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Per-operation I/O timeout given to memccapable (`-t`), in seconds.
const IO_TIMEOUT_SECS: &str = "5";

/// Run `memccapable -b` against `port`; panics unless it exits 0 and reports every test
/// as passed. Returns the number of tests that passed.
fn run_memccapable(server: &Server) -> usize {
    let port = server.port.to_string();
    let mut child = Command::new("memccapable")
        .args(["-b", "-h", "127.0.0.1", "-p", &port, "-t", IO_TIMEOUT_SECS])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memccapable");
    let pid = child.id();
    // Kill it if it runs too long, so the test fails instead of hanging.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(RUN_TIMEOUT).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            return true;
        }
        false
    });
    let stdout_pipe = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let mut pipe = stdout_pipe;
        std::io::Read::read_to_string(&mut pipe, &mut s).expect("read stdout");
        s
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    let stdout = reader.join().expect("stdout reader");
    let status = child.wait().expect("wait memccapable");
    let _ = done_tx.send(());
    let killed = watchdog.join().expect("watchdog");

    println!(
        "memccapable against {} on port {port}:\n{stdout}",
        server.name
    );
    if !stderr.is_empty() {
        println!("memccapable stderr:\n{stderr}");
    }
    assert!(!killed, "memccapable did not finish within {RUN_TIMEOUT:?}");

    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_suffix("[pass]") {
            passed.push(name.trim().to_string());
        } else if line.ends_with(']') && line.starts_with("binary") {
            failed.push(line.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "memccapable against {}: tests not passed: {failed:#?}",
        server.name
    );
    assert!(
        status.success(),
        "memccapable against {} exited with {status}",
        server.name
    );
    assert!(
        stdout.contains("All tests passed"),
        "memccapable against {} did not report \"All tests passed\"",
        server.name
    );
    // Debian's libmemcached-tools 1.x runs 27 binary tests (noop ... stat).
    for name in ["binary noop", "binary getkq", "binary incrq", "binary stat"] {
        assert!(
            passed.iter().any(|p| p == name),
            "memccapable against {}: {name:?} did not run",
            server.name
        );
    }
    passed.len()
}

fn have_memccapable() -> bool {
    if common::on_path("memccapable") {
        return true;
    }
    common::missing_tool("memccapable", "the Debian package libmemcached-tools");
    false
}

#[test]
fn memccapable_binary_tests_all_pass_against_pincache() {
    if !have_memccapable() {
        return;
    }
    let server = Server::pincache(&[]);
    let n = run_memccapable(&server);
    eprintln!("memccapable: {n} binary tests passed against pincache");
}

#[test]
fn memccapable_binary_tests_all_pass_against_memcached() {
    if !have_memccapable() {
        return;
    }
    let Some(server) = Server::memcached(&[]) else {
        return;
    };
    let n = run_memccapable(&server);
    eprintln!("memccapable: {n} binary tests passed against memcached");
}
