//! Warm restart over TCP (`-e PATH`): a clean stop (SIGTERM, SIGINT or SIGUSR1)
//! keeps every item, byte for byte with flags and CAS, TTLs count through the
//! downtime; anything doubtful starts cold with a logged reason, serves, and
//! restores fine the time after.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, noop, op, pincache_bin, status, store, Client, Request, Server};

/// How long a clean stop may take (drain plus the record), generously.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The default `-I` (1 MiB) less memcached's overhead and the key: the largest value.
const LARGEST_VALUE: usize = (1 << 20) - 59 - 8;

/// One pincache instance's memory file and log, over several processes.
struct Shard {
    path: PathBuf,
    log: PathBuf,
    memory_mb: u32,
}

impl Shard {
    fn new(name: &str) -> Shard {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("pincache-test-{}-{name}", std::process::id()));
        let shard = Shard {
            log: PathBuf::from(format!("{}.log", path.display())),
            path,
            memory_mb: 64,
        };
        shard.remove_files();
        shard
    }

    fn meta(&self) -> PathBuf {
        PathBuf::from(format!("{}.meta", self.path.display()))
    }

    fn remove_files(&self) {
        for p in [&self.path, &self.meta(), &self.log] {
            let _ = fs::remove_file(p);
        }
    }

    /// Starts pincache on this memory file, its log appended to `self.log`,
    /// with `--verify-restore`: every restore is followed by the server's own
    /// full consistency check, whose result the log says.
    fn start(&self) -> Server {
        Server::custom("pincache", |port| self.command(port))
    }

    /// The command `start` runs, listening on `port`.
    fn command(&self, port: u16) -> Command {
        let mut cmd = Command::new(pincache_bin());
        cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1"]);
        cmd.args(["-m", &self.memory_mb.to_string(), "--verify-restore", "-e"])
            .arg(&self.path);
        cmd.env("RUST_LOG", "info");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.stderr(Stdio::from(file));
        cmd
    }

    /// Stops `server` with `signal` and waits for it to exit cleanly.
    fn stop(&self, mut server: Server, signal: &str) {
        server.signal(signal);
        let status = server.wait_exit(STOP_TIMEOUT).expect("did not stop");
        assert!(status.success(), "exit status {status}");
    }

    /// The log's lines so far, and empties it for the next start.
    fn take_log(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::write(&self.log, b"");
        text
    }
}

/// Asserts that `log` shows `n` restores, each one passing the server's
/// consistency check (`--verify-restore`), and none failing it.
fn assert_verified_restores(log: &str, n: usize) {
    assert_eq!(log.matches("warm restart from").count(), n, "{log}");
    assert_eq!(
        log.matches("restore verified in").count(),
        n,
        "a restore without its check: {log}"
    );
    assert!(!log.contains("consistency check:"), "{log}");
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.remove_files();
    }
}

fn value_of(c: &mut Client, key: &str) -> Option<(Vec<u8>, u32, u64)> {
    let r = c.call(&get(op::GET, key));
    match r.status {
        status::OK => Some((r.value.clone(), r.flags(), r.cas)),
        status::KEY_NOT_FOUND => None,
        other => panic!("GET {key}: status {other:#x}"),
    }
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
}

/// Sets `key` and returns its CAS.
fn put(c: &mut Client, key: &str, value: &[u8], flags: u32, exptime: u32) -> u64 {
    let r = c.call(&store(op::SET, key, value, flags, exptime));
    assert_eq!(r.status, status::OK, "SET {key}");
    r.cas
}

#[test]
fn every_item_comes_back_byte_for_byte_after_sigterm_sigint_and_sigusr1() {
    let shard = Shard::new("sizes");
    let server = shard.start();
    let mut c = server.connect();
    let sizes = [0usize, 1, 100, 16 << 10, 100_000, LARGEST_VALUE];
    let mut want = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let (key, value, flags) = (format!("size:{i}"), pattern(len, i), 0xdead_0000 + i as u32);
        let cas = put(&mut c, &key, &value, flags, 0);
        want.push((key, value, flags, cas));
    }
    put(&mut c, "deleted", b"v", 0, 0);
    c.call(&get(op::DELETE, "deleted"))
        .expect(op::DELETE, status::OK);
    put(&mut c, "overwritten", b"old", 0, 0);
    put(&mut c, "overwritten", b"new", 0, 0);
    drop(c);
    // Each signal keeps it, the restart coming within the same second as the stop.
    let mut server = server;
    for signal in ["TERM", "INT", "USR1"] {
        shard.stop(server, signal);
        server = shard.start();
    }
    let mut c = server.connect();
    for (key, value, flags, cas) in &want {
        let got = value_of(&mut c, key).unwrap_or_else(|| panic!("{key} lost"));
        assert!(got == (value.clone(), *flags, *cas), "{key} changed");
    }
    assert_eq!(value_of(&mut c, "deleted"), None, "a deleted key came back");
    assert_eq!(value_of(&mut c, "overwritten").unwrap().0, b"new");
    // A CAS token taken before the restarts still works.
    let (key, _, _, cas) = &want[2];
    let r = c.call(&store(op::SET, key, b"swapped", 0, 0).cas(*cas));
    assert_eq!(r.status, status::OK, "pre-restart CAS refused");
    assert!(
        want.iter().all(|w| r.cas > w.3),
        "new CAS not above the restored ones"
    );
    let log = shard.take_log();
    assert_verified_restores(&log, 3);
    assert!(log.contains("agree (7 items"), "{log}");
}

#[test]
fn ttls_count_through_the_downtime() {
    let shard = Shard::new("ttl");
    let server = shard.start();
    let mut c = server.connect();
    let set_at = Instant::now();
    put(&mut c, "short", b"v", 0, 2);
    put(&mut c, "ten", b"v", 0, 10);
    put(&mut c, "forever", b"v", 0, 0);
    shard.stop(server, "TERM");
    std::thread::sleep(Duration::from_secs(4));
    let server = shard.start();
    let mut c = server.connect();
    assert_eq!(
        value_of(&mut c, "short"),
        None,
        "expired while down, yet served"
    );
    assert!(value_of(&mut c, "ten").is_some(), "10 s TTL gone after 4 s");
    let log = shard.take_log();
    assert!(log.contains("1 expired while down"), "{log}");
    assert_verified_restores(&log, 1);
    // Had the clock restarted at the start, "ten" would live until 14 s.
    let deadline = set_at + Duration::from_millis(11_500);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    assert_eq!(value_of(&mut c, "ten"), None, "the downtime did not count");
    assert!(value_of(&mut c, "forever").is_some());
}

#[test]
fn a_delayed_flush_pending_at_the_stop_still_happens() {
    let shard = Shard::new("flush");
    let server = shard.start();
    let mut c = server.connect();
    put(&mut c, "old", b"v", 0, 0);
    c.call(&Request::new(op::FLUSH).extras(2u32.to_be_bytes()))
        .expect(op::FLUSH, status::OK);
    shard.stop(server, "TERM");
    std::thread::sleep(Duration::from_secs(3));
    let server = shard.start();
    let mut c = server.connect();
    assert_eq!(value_of(&mut c, "old"), None, "the pending flush was lost");
    put(&mut c, "new", b"v", 0, 0);
    assert!(value_of(&mut c, "new").is_some());
    assert_verified_restores(&shard.take_log(), 1);
}

#[test]
fn evictions_and_compaction_before_the_stop_leave_no_wrong_value() {
    let mut shard = Shard::new("evict");
    shard.memory_mb = 8;
    let server = shard.start();
    let mut c = server.connect();
    let mut last = std::collections::HashMap::new();
    for round in 0..6 {
        let mut batch = Vec::new();
        for i in 0..6000usize {
            let key = format!("k{}", (i * 7 + round) % 20_000);
            let value = pattern(300 + i % 500, round * 6000 + i);
            batch.push(store(op::SETQ, &key, &value, i as u32, 0));
            last.insert(key, value);
            if i % 4 == 0 {
                batch.push(get(op::GETQ, format!("k{}", i / 2)));
            }
        }
        batch.push(noop());
        c.send_all(&batch);
        c.until_noop();
    }
    assert!(c.stat_u64("evictions") > 0, "nothing was evicted");
    let items = c.stat_u64("curr_items");
    shard.stop(server, "TERM");
    let server = shard.start();
    let mut c = server.connect();
    assert_eq!(c.stat_u64("curr_items"), items);
    let mut found = 0;
    for (key, value) in &last {
        if let Some((got, _, _)) = value_of(&mut c, key) {
            assert!(&got == value, "{key}: wrong value after restart");
            found += 1;
        }
    }
    assert_eq!(found, items);
    assert_verified_restores(&shard.take_log(), 1);
}

/// Writes `keys` items, stops cleanly, spoils something, starts: the server
/// must start cold with `reason` in its log, answer no old key, serve, and
/// restore fine after its own clean stop.
fn cold_start_case(name: &str, reason: &str, spoil: impl Fn(&Shard)) {
    let mut shard = Shard::new(name);
    let server = shard.start();
    let mut c = server.connect();
    for i in 0..1000 {
        put(&mut c, &format!("old:{i}"), &pattern(50, i), 0, 0);
    }
    shard.stop(server, "TERM");
    spoil(&shard);
    if name == "m" {
        shard.memory_mb = 32;
    }
    shard.take_log();
    let server = shard.start();
    let mut c = server.connect();
    for i in 0..1000 {
        assert_eq!(
            value_of(&mut c, &format!("old:{i}")),
            None,
            "{name}: served old:{i}"
        );
    }
    put(&mut c, "new", b"v", 0, 0);
    let log = shard.take_log();
    assert!(
        log.contains("starting cold") && log.contains(reason),
        "{name}: {log}"
    );
    assert_verified_restores(&log, 0);
    shard.stop(server, "TERM");
    let server = shard.start();
    let mut c = server.connect();
    assert_eq!(
        value_of(&mut c, "new").unwrap().0,
        b"v",
        "{name}: next start"
    );
    assert_verified_restores(&shard.take_log(), 1);
}

#[test]
fn a_flipped_byte_in_the_metadata_starts_cold() {
    cold_start_case("flip", "checksum", |s| {
        let mut bytes = fs::read(s.meta()).unwrap();
        bytes[20] ^= 0x01;
        fs::write(s.meta(), bytes).unwrap();
    });
}

#[test]
fn metadata_cut_short_starts_cold() {
    cold_start_case("short", "cut short", |s| {
        let bytes = fs::read(s.meta()).unwrap();
        fs::write(s.meta(), &bytes[..bytes.len() / 3]).unwrap();
    });
}

#[test]
fn empty_metadata_starts_cold() {
    cold_start_case("empty", "cut short (0 bytes)", |s| {
        fs::write(s.meta(), b"").unwrap()
    });
}

#[test]
fn removed_metadata_starts_cold() {
    cold_start_case("removed", "no metadata", |s| {
        fs::remove_file(s.meta()).unwrap()
    });
}

#[test]
fn a_truncated_memory_file_starts_cold() {
    cold_start_case("truncated", "memory file is", |s| {
        let file = OpenOptions::new().write(true).open(&s.path).unwrap();
        file.set_len(4096).unwrap();
    });
}

#[test]
fn another_memory_limit_starts_cold() {
    cold_start_case("m", "-m differs", |_| {});
}

#[test]
fn sigkill_mid_traffic_starts_cold() {
    let shard = Shard::new("kill");
    let server = shard.start();
    let mut c = server.connect();
    put(&mut c, "a", b"v", 0, 0);
    shard.stop(server, "TERM");
    // Restored, then killed while a client writes: the record was removed at
    // the start, so the next start cannot take the torn state for a clean one.
    let server = shard.start();
    let mut c = server.connect();
    let batch: Vec<Request> = (0..20_000)
        .map(|i| store(op::SETQ, format!("k{i}"), pattern(200, i), 0, 0))
        .collect();
    c.send_all(&batch[..10_000]);
    server.signal("KILL");
    drop(server);
    assert_verified_restores(&shard.take_log(), 1);
    let server = shard.start();
    let mut c = server.connect();
    assert_eq!(value_of(&mut c, "a"), None);
    assert_eq!(value_of(&mut c, "k1"), None);
    assert!(shard.take_log().contains("no metadata"));
    put(&mut c, "b", b"v", 0, 0);
    shard.stop(server, "TERM");
    let server = shard.start();
    assert!(value_of(&mut server.connect(), "b").is_some());
    assert_verified_restores(&shard.take_log(), 1);
}

#[test]
fn twenty_stop_start_cycles_keep_every_item_with_no_growth() {
    let shard = Shard::new("cycles");
    let mut model: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
    let mut fds = Vec::new();
    let mut sizes = Vec::new();
    let mut rss = Vec::new();
    for cycle in 0..20usize {
        let server = shard.start();
        let mut c = server.connect();
        for (key, value) in &model {
            let got = value_of(&mut c, key).map(|v| v.0);
            assert!(
                got.as_ref() == Some(value),
                "cycle {cycle}: {key} lost or changed"
            );
        }
        // Overwrite a tenth, add some, delete a few.
        for i in 0..500 {
            let key = format!("k{}", (cycle * 300 + i) % 3000);
            let value = pattern(100 + i % 300, cycle * 1000 + i);
            put(&mut c, &key, &value, 0, 0);
            model.insert(key, value);
        }
        let gone = format!("k{}", cycle * 13 % 3000);
        c.call(&get(op::DELETE, &gone));
        model.remove(&gone);
        fds.push(server.fd_count());
        rss.push(server.rss());
        sizes.push(fs::metadata(&shard.path).unwrap().len());
        // The file's pages (tmpfs allocates on write) stay within the segments
        // the store uses: a restore must not touch free segments or leak them.
        let allocated =
            std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&shard.path).unwrap()) * 512;
        let slabs = c.stats_group("slabs");
        let stat = |name: &str| -> u64 {
            slabs
                .iter()
                .find(|(k, _)| k == name)
                .unwrap()
                .1
                .parse()
                .unwrap()
        };
        let in_use = (stat("segments_used") + 1) * stat("segment_size");
        assert!(
            allocated <= in_use,
            "cycle {cycle}: the file holds {allocated} bytes, the store uses {in_use}"
        );
        shard.stop(server, if cycle % 2 == 0 { "TERM" } else { "USR1" });
        assert!(
            fs::metadata(shard.meta()).is_ok(),
            "no record after a clean stop"
        );
    }
    assert!(
        sizes.iter().all(|&s| s == sizes[0]),
        "file size changed: {sizes:?}"
    );
    assert!(fds.iter().all(|&f| f <= fds[0]), "fds grew: {fds:?}");
    assert!(rss[19] < rss[2] + (16 << 20), "RSS grew: {rss:?}");
    assert_verified_restores(&shard.take_log(), 19);
}

#[test]
fn a_stop_signal_during_the_restore_keeps_the_cache() {
    let mut shard = Shard::new("early-term");
    shard.memory_mb = 256;
    let server = shard.start();
    let mut c = server.connect();
    // Enough items that the restore takes a while (tens of ms or more).
    const ITEMS: usize = 300_000;
    for start in (0..ITEMS).step_by(5000) {
        let mut batch: Vec<Request> = (start..start + 5000)
            .map(|i| store(op::SETQ, format!("k{i}"), pattern(100, i), 0, 0))
            .collect();
        batch.push(noop());
        c.send_all(&batch);
        c.until_noop();
    }
    assert_eq!(c.stat_u64("curr_items"), ITEMS as u64);
    shard.stop(server, "TERM");
    // A restart begun while the last one is still restoring (a rolling restart
    // run twice, systemd's stop timeout): the restore removes the record as it
    // starts, so SIGTERM must be caught from then on, not kill the process.
    let mut child = shard.command(0).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while shard.meta().exists() {
        assert!(Instant::now() < deadline, "the restore never began");
        std::thread::sleep(Duration::from_micros(200));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "SIGTERM during the restore: {status}");
    let server = shard.start();
    let mut c = server.connect();
    assert_eq!(c.stat_u64("curr_items"), ITEMS as u64, "the cache was lost");
    for i in (0..ITEMS).step_by(997) {
        let got = value_of(&mut c, &format!("k{i}")).map(|v| v.0);
        assert!(got == Some(pattern(100, i)), "k{i} lost or changed");
    }
    assert_verified_restores(&shard.take_log(), 2);
}

#[test]
fn stats_settings_show_the_memory_file() {
    let shard = Shard::new("settings");
    let server = shard.start();
    let settings = server.connect().stats_group("settings");
    let file = settings
        .iter()
        .find(|(k, _)| k == "memory_file")
        .map(|(_, v)| v.clone());
    assert_eq!(file, Some(shard.path.display().to_string()));
    let plain = Server::pincache(&[]);
    let settings = plain.connect().stats_group("settings");
    assert!(settings.contains(&("memory_file".to_string(), "NULL".to_string())));
}
