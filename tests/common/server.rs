//! Starting servers for a test: pincache (the binary cargo built) or memcached, each on a
//! port no other test of the process was given, killed when the test drops it; and the
//! process inspection (pid, signals, /proc) the robustness tests need.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::binary::{op, status, Request};
use super::client::{Client, Read1};
use super::peers::{missing_tool, on_path};

/// How long a server gets to start listening before the test fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two connection attempts while a server starts.
pub const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// A port that was free a moment ago: bind 127.0.0.1:0, read the port, drop the listener.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Ports already handed to a server by this test process: tests run in parallel threads,
/// and two of them must never get the same port (one server would fail to bind and its
/// test would silently talk to the other test's server).
static PORTS_IN_USE: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free port that no other server of this process has been given, and on which
/// nothing listens right now.
fn fresh_port() -> u16 {
    let mut used = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = free_port();
        if used.contains(&port) || TcpStream::connect(("127.0.0.1", port)).is_ok() {
            continue;
        }
        used.push(port);
        return port;
    }
}

/// Whether this process runs as root (memcached then needs `-u root`).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The pincache binary: the one cargo built for this crate, or `PINCACHE_BIN`.
pub fn pincache_bin() -> String {
    if let Some(p) = option_env!("CARGO_BIN_EXE_pincache") {
        return p.to_string();
    }
    std::env::var("PINCACHE_BIN")
        .expect("no pincache binary: not built by cargo and PINCACHE_BIN is not set")
}

/// True when the "pincache" under test is really memcached behind a wrapper script
/// (`PINCACHE_IS_MEMCACHED=1`), used while developing these tests before pincache existed.
/// Tests that pin down a place where pincache deliberately differs from memcached skip
/// themselves then.
pub fn pincache_is_memcached() -> bool {
    option_env!("CARGO_BIN_EXE_pincache").is_none()
        && std::env::var("PINCACHE_IS_MEMCACHED").is_ok_and(|v| v == "1")
}

/// A running server process on 127.0.0.1; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub name: &'static str,
}

impl Server {
    /// Start pincache with `-p PORT -l 127.0.0.1` plus `extra_args`.
    pub fn pincache(extra_args: &[&str]) -> Server {
        Server::pincache_env(extra_args, &[])
    }

    /// Start pincache with `-p PORT -l 127.0.0.1` plus `extra_args` and extra environment
    /// variables.
    pub fn pincache_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let bin = pincache_bin();
        Server::custom("pincache", |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1"]);
            cmd.args(extra_args);
            // Keep the startup banner out of the test output unless asked for.
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            cmd.envs(env.iter().copied());
            cmd
        })
    }

    /// Start memcached in binary mode, one thread, no UDP; `None` when memcached is not
    /// installed and PINCACHE_SKIP_PEERS=1 (without it, the test fails).
    pub fn memcached(extra_args: &[&str]) -> Option<Server> {
        Server::memcached_with(&["-B", "binary"], extra_args)
    }

    /// Start memcached with `protocol_args` (e.g. `-B binary`; none = memcached's own
    /// negotiation, text and binary on one port), one thread, no UDP, plus `extra_args`.
    pub fn memcached_with(protocol_args: &[&str], extra_args: &[&str]) -> Option<Server> {
        if !on_path("memcached") {
            missing_tool("memcached", "the Debian package memcached");
            return None;
        }
        let root = running_as_root();
        Some(Server::custom("memcached", |port| {
            let mut cmd = Command::new("memcached");
            cmd.args(protocol_args);
            cmd.args(["-t", "1", "-U", "0", "-l", "127.0.0.1"]);
            cmd.args(["-p", &port.to_string()]);
            if root {
                cmd.args(["-u", "root"]);
            }
            cmd.args(extra_args);
            cmd
        }))
    }

    /// Start a server from any command (a wrapper script that `exec`s the real server,
    /// extra environment variables, ...): `make` gets the port to listen on. Spawns on a
    /// free port and poll-connects until it listens; if the process exits first (the port
    /// was taken in the meantime), tries again on another port.
    pub fn custom(name: &'static str, make: impl Fn(u16) -> Command) -> Server {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = fresh_port();
            let mut cmd = make(port);
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
            let mut server = Server { child, port, name };
            loop {
                if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                    server.check_identity(stream);
                    return server;
                }
                if let Some(status) = server.child.try_wait().expect("try_wait") {
                    if attempts >= 3 {
                        panic!("{name} exited before listening on port {port}: {status}");
                    }
                    break; // retry on a fresh port
                }
                if Instant::now() > deadline {
                    panic!("{name} did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT:?}");
                }
                std::thread::sleep(CONNECT_RETRY);
            }
        }
    }

    /// Make sure the server that answered on our port is our child: when it reports a
    /// `pid` stat (memcached does), it must be the child's. Anything else (no STAT
    /// support, no `pid`, an error) is accepted: this only guards against a foreign
    /// server on a reused port.
    fn check_identity(&mut self, stream: TcpStream) {
        let mut c = Client::from_stream(stream);
        c.send(&Request::new(op::STAT));
        let pid = self.child.id().to_string();
        loop {
            match c.read_one(Duration::from_secs(2)) {
                Read1::Response(r) if r.opcode == op::STAT && r.status == status::OK => {
                    if r.key.is_empty() {
                        return;
                    }
                    if r.key == b"pid" {
                        assert_eq!(
                            String::from_utf8_lossy(&r.value),
                            pid,
                            "the server on port {} is not the {} we started",
                            self.port,
                            self.name
                        );
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send a signal (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, ...), in bytes.
    pub fn proc_status_bytes(&self, field: &str) -> u64 {
        proc_status_bytes(self.pid(), field)
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> u64 {
        self.proc_status_bytes("VmRSS")
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of /proc/PID/status, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line[field.len() + 1..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    kb * 1024
}
