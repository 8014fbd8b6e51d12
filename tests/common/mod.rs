//! Helpers shared by the integration tests: start a server (pincache or memcached) on a
//! free port, and talk the memcached binary protocol to it with a tiny blocking client.
//!
//! ```text
//!  byte   0       1       2       3
//!      +-------+-------+-------+-------+
//!    0 | magic |opcode |   key length  |
//!    4 |extlen | dtype | status/vbucket|
//!    8 |          total body length    |
//!   12 |            opaque             |
//!   16 |              cas              |
//!      |          (8 bytes)            |
//!   24 | extras | key | value ...      |   body = extras + key + value
//!      +-------------------------------+
//! ```
//!
//! Every test binary compiles this file on its own, and not every binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod rng;
pub mod text;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a server gets to start listening before the test fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two connection attempts while a server starts.
pub const CONNECT_RETRY: Duration = Duration::from_millis(10);
/// How long a client waits for one answer before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub const REQ_MAGIC: u8 = 0x80;
pub const RES_MAGIC: u8 = 0x81;

pub mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;

    /// A readable name for an opcode, for failure messages.
    pub fn name(opcode: u8) -> &'static str {
        match opcode {
            GET => "GET",
            SET => "SET",
            ADD => "ADD",
            REPLACE => "REPLACE",
            DELETE => "DELETE",
            INCREMENT => "INCREMENT",
            DECREMENT => "DECREMENT",
            QUIT => "QUIT",
            FLUSH => "FLUSH",
            GETQ => "GETQ",
            NOOP => "NOOP",
            VERSION => "VERSION",
            GETK => "GETK",
            GETKQ => "GETKQ",
            APPEND => "APPEND",
            PREPEND => "PREPEND",
            STAT => "STAT",
            SETQ => "SETQ",
            ADDQ => "ADDQ",
            REPLACEQ => "REPLACEQ",
            DELETEQ => "DELETEQ",
            INCREMENTQ => "INCREMENTQ",
            DECREMENTQ => "DECREMENTQ",
            QUITQ => "QUITQ",
            FLUSHQ => "FLUSHQ",
            APPENDQ => "APPENDQ",
            PREPENDQ => "PREPENDQ",
            VERBOSITY => "VERBOSITY",
            TOUCH => "TOUCH",
            GAT => "GAT",
            GATQ => "GATQ",
            SASL_LIST_MECHS => "SASL_LIST_MECHS",
            SASL_AUTH => "SASL_AUTH",
            SASL_STEP => "SASL_STEP",
            GATK => "GATK",
            GATKQ => "GATKQ",
            _ => "UNKNOWN",
        }
    }
}

pub mod status {
    pub const OK: u16 = 0x0000;
    pub const KEY_NOT_FOUND: u16 = 0x0001;
    pub const KEY_EXISTS: u16 = 0x0002;
    pub const TOO_LARGE: u16 = 0x0003;
    pub const INVALID_ARGUMENTS: u16 = 0x0004;
    pub const NOT_STORED: u16 = 0x0005;
    pub const NON_NUMERIC: u16 = 0x0006;
    pub const AUTH_ERROR: u16 = 0x0020;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    pub const OUT_OF_MEMORY: u16 = 0x0082;
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

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

/// Whether `name` is an executable found on `PATH`.
pub fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
}

/// A tool the tests need is missing: under CI (env `CI` set) that is a failure; on a
/// developer machine the test is skipped, loudly.
pub fn missing_tool(tool: &str, install_hint: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("`{tool}` is not installed but CI is set: {install_hint}");
    }
    eprintln!();
    eprintln!("######################################################################");
    eprintln!("## SKIPPED: `{tool}` is not on PATH, so this test did not run.");
    eprintln!("## Install it ({install_hint}) to run it.");
    eprintln!("######################################################################");
    eprintln!();
}

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
        let bin = pincache_bin();
        Server::start("pincache", |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1"]);
            cmd.args(extra_args);
            // Keep the startup banner out of the test output unless asked for.
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            cmd
        })
    }

    /// Start memcached in binary mode, one thread, no UDP; `None` (after a loud message)
    /// when memcached is not installed and `CI` is not set.
    pub fn memcached(extra_args: &[&str]) -> Option<Server> {
        if !on_path("memcached") {
            missing_tool("memcached", "apt-get install -y memcached");
            return None;
        }
        let root = running_as_root();
        Some(Server::start("memcached", |port| {
            let mut cmd = Command::new("memcached");
            cmd.args(["-B", "binary", "-t", "1", "-U", "0", "-l", "127.0.0.1"]);
            cmd.args(["-p", &port.to_string()]);
            if root {
                cmd.args(["-u", "root"]);
            }
            cmd.args(extra_args);
            cmd
        }))
    }

    /// Spawn on a free port and poll-connect until it listens. If the process exits first
    /// (for example the port was taken in the meantime), try again on another port.
    fn start(name: &'static str, make: impl Fn(u16) -> Command) -> Server {
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------

/// One request, with every header field settable so tests can build malformed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub magic: u8,
    pub opcode: u8,
    pub data_type: u8,
    pub vbucket: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Override the header's key length (for inconsistent-length tests).
    pub key_len_override: Option<u16>,
    /// Override the header's extras length.
    pub extras_len_override: Option<u8>,
    /// Override the header's total body length.
    pub body_len_override: Option<u32>,
}

impl Request {
    pub fn new(opcode: u8) -> Request {
        Request {
            magic: REQ_MAGIC,
            opcode,
            data_type: 0,
            vbucket: 0,
            opaque: 0,
            cas: 0,
            extras: Vec::new(),
            key: Vec::new(),
            value: Vec::new(),
            key_len_override: None,
            extras_len_override: None,
            body_len_override: None,
        }
    }
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = key.as_ref().to_vec();
        self
    }
    pub fn value(mut self, value: impl AsRef<[u8]>) -> Self {
        self.value = value.as_ref().to_vec();
        self
    }
    pub fn extras(mut self, extras: impl AsRef<[u8]>) -> Self {
        self.extras = extras.as_ref().to_vec();
        self
    }
    pub fn cas(mut self, cas: u64) -> Self {
        self.cas = cas;
        self
    }
    pub fn opaque(mut self, opaque: u32) -> Self {
        self.opaque = opaque;
        self
    }
    pub fn magic(mut self, magic: u8) -> Self {
        self.magic = magic;
        self
    }

    /// The request as it goes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let body_len = (self.extras.len() + self.key.len() + self.value.len()) as u32;
        let mut out = Vec::with_capacity(24 + body_len as usize);
        out.push(self.magic);
        out.push(self.opcode);
        let key_len = self.key_len_override.unwrap_or(self.key.len() as u16);
        out.extend_from_slice(&key_len.to_be_bytes());
        out.push(self.extras_len_override.unwrap_or(self.extras.len() as u8));
        out.push(self.data_type);
        out.extend_from_slice(&self.vbucket.to_be_bytes());
        let body_len = self.body_len_override.unwrap_or(body_len);
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&self.opaque.to_be_bytes());
        out.extend_from_slice(&self.cas.to_be_bytes());
        out.extend_from_slice(&self.extras);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        out
    }

    /// A one-line readable form for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}(0x{:02x}) opaque={} cas={} extras={} key={} value={}",
            op::name(self.opcode),
            self.opcode,
            self.opaque,
            self.cas,
            hex(&self.extras),
            show_bytes(&self.key),
            show_bytes(&self.value)
        );
        if self.magic != REQ_MAGIC {
            s.push_str(&format!(" magic=0x{:02x}", self.magic));
        }
        if let Some(k) = self.key_len_override {
            s.push_str(&format!(" key_len_override={k}"));
        }
        if let Some(e) = self.extras_len_override {
            s.push_str(&format!(" extras_len_override={e}"));
        }
        if let Some(b) = self.body_len_override {
            s.push_str(&format!(" body_len_override={b}"));
        }
        s
    }
}

// Request builders for the common commands.

/// Extras of SET/ADD/REPLACE: flags, expiration.
pub fn store_extras(flags: u32, exptime: u32) -> Vec<u8> {
    let mut e = flags.to_be_bytes().to_vec();
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

/// Extras of INCREMENT/DECREMENT: delta, initial, expiration.
pub fn counter_extras(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let mut e = delta.to_be_bytes().to_vec();
    e.extend_from_slice(&initial.to_be_bytes());
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

pub fn get(opcode: u8, key: impl AsRef<[u8]>) -> Request {
    Request::new(opcode).key(key)
}

pub fn store(
    opcode: u8,
    key: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
    flags: u32,
    exp: u32,
) -> Request {
    Request::new(opcode)
        .key(key)
        .value(value)
        .extras(store_extras(flags, exp))
}

pub fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Request {
    store(op::SET, key, value, 0, 0)
}

pub fn concat(opcode: u8, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Request {
    Request::new(opcode).key(key).value(value)
}

pub fn counter(opcode: u8, key: impl AsRef<[u8]>, delta: u64, initial: u64, exp: u32) -> Request {
    Request::new(opcode)
        .key(key)
        .extras(counter_extras(delta, initial, exp))
}

pub fn touch(opcode: u8, key: impl AsRef<[u8]>, exp: u32) -> Request {
    Request::new(opcode).key(key).extras(exp.to_be_bytes())
}

pub fn noop() -> Request {
    Request::new(op::NOOP)
}

/// One decoded response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub data_type: u8,
    pub status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Response {
    /// Decode from a 24-byte header and its body. Panics if the lengths disagree, which
    /// is a server bug worth failing on.
    /// Decodes the answer at the front of `bytes` if all of it is there; returns it
    /// with the number of bytes it took.
    pub fn parse(bytes: &[u8]) -> Option<(Response, usize)> {
        let header: &[u8; 24] = bytes.get(..24)?.try_into().ok()?;
        let body_len = u32::from_be_bytes(header[8..12].try_into().ok()?) as usize;
        let body = bytes.get(24..24 + body_len)?.to_vec();
        Some((Response::decode(header, body), 24 + body_len))
    }

    pub fn decode(header: &[u8; 24], body: Vec<u8>) -> Response {
        let key_len = u16::from_be_bytes([header[2], header[3]]);
        let extras_len = header[4];
        let body_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        assert_eq!(body.len(), body_len as usize, "body length");
        let e = extras_len as usize;
        let k = key_len as usize;
        assert!(
            e + k <= body.len(),
            "response with extras_len {e} + key_len {k} > body_len {}",
            body.len()
        );
        Response {
            magic: header[0],
            opcode: header[1],
            key_len,
            extras_len,
            data_type: header[5],
            status: u16::from_be_bytes([header[6], header[7]]),
            body_len,
            opaque: u32::from_be_bytes([header[12], header[13], header[14], header[15]]),
            cas: u64::from_be_bytes(header[16..24].try_into().expect("8 bytes")),
            extras: body[..e].to_vec(),
            key: body[e..e + k].to_vec(),
            value: body[e + k..].to_vec(),
        }
    }

    /// The response as it was on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.body_len as usize);
        out.push(self.magic);
        out.push(self.opcode);
        out.extend_from_slice(&self.key_len.to_be_bytes());
        out.push(self.extras_len);
        out.push(self.data_type);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.body_len.to_be_bytes());
        out.extend_from_slice(&self.opaque.to_be_bytes());
        out.extend_from_slice(&self.cas.to_be_bytes());
        out.extend_from_slice(&self.extras);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        out
    }

    /// The flags of a GET-family or TOUCH hit.
    pub fn flags(&self) -> u32 {
        assert_eq!(
            self.extras.len(),
            4,
            "expected 4 bytes of flags in {self:?}"
        );
        u32::from_be_bytes(self.extras[..4].try_into().expect("4 bytes"))
    }

    /// The 8-byte big-endian number of an INCREMENT/DECREMENT answer.
    pub fn counter(&self) -> u64 {
        assert_eq!(
            self.value.len(),
            8,
            "expected an 8-byte counter in {self:?}"
        );
        u64::from_be_bytes(self.value[..8].try_into().expect("8 bytes"))
    }

    /// Assert the answer's opcode and status (with a readable message).
    #[track_caller]
    pub fn expect(&self, opcode: u8, status: u16) -> &Self {
        assert!(
            self.magic == RES_MAGIC && self.opcode == opcode && self.status == status,
            "expected {}(0x{opcode:02x}) status 0x{status:04x}, got {}",
            op::name(opcode),
            self.describe()
        );
        self
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}(0x{:02x}) status=0x{:04x} opaque={} cas={} extras={} key={} value={}",
            op::name(self.opcode),
            self.opcode,
            self.status,
            self.opaque,
            self.cas,
            hex(&self.extras),
            show_bytes(&self.key),
            show_bytes(&self.value)
        );
        if self.magic != RES_MAGIC {
            s.push_str(&format!(" magic=0x{:02x}", self.magic));
        }
        if self.data_type != 0 {
            s.push_str(&format!(" data_type=0x{:02x}", self.data_type));
        }
        s
    }
}

pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".to_string();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes as a quoted string with escapes, shortened when long.
pub fn show_bytes(b: &[u8]) -> String {
    const MAX_SHOWN: usize = 64;
    let shown: String = b
        .iter()
        .take(MAX_SHOWN)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    if b.len() > MAX_SHOWN {
        format!("\"{shown}\"...({} bytes)", b.len())
    } else {
        format!("\"{shown}\"")
    }
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// What reading one answer gave.
#[derive(Debug)]
pub enum Read1 {
    Response(Response),
    /// The server closed the connection (EOF or reset) before a header started.
    Closed,
    /// Nothing (complete) arrived within the timeout.
    Timeout,
    /// The connection ended in the middle of an answer.
    Truncated(Vec<u8>),
}

/// A small blocking binary-protocol client.
pub struct Client {
    pub stream: TcpStream,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        Client { stream }
    }

    /// Send raw bytes (one write call as far as we are concerned).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Like `send_raw`, but a reset/closed connection is not an error (the server may
    /// legitimately close on malformed input).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        match self.stream.write_all(bytes) {
            Ok(()) => true,
            Err(e) if is_reset(&e) => false,
            Err(e) => panic!("write to server: {e}"),
        }
    }

    pub fn send(&mut self, req: &Request) {
        self.send_raw(&req.encode());
    }

    /// Send several requests in a single write.
    pub fn send_all(&mut self, reqs: &[Request]) {
        let bytes: Vec<u8> = reqs.iter().flat_map(|r| r.encode()).collect();
        self.send_raw(&bytes);
    }

    /// Read one answer, waiting up to `timeout`.
    pub fn read_one(&mut self, timeout: Duration) -> Read1 {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut header = [0u8; 24];
        match read_full(&mut self.stream, &mut header) {
            ReadFull::Done => {}
            ReadFull::Eof(0) => return Read1::Closed,
            ReadFull::Eof(n) => return Read1::Truncated(header[..n].to_vec()),
            ReadFull::Timeout(0) => return Read1::Timeout,
            ReadFull::Timeout(n) => panic!(
                "timed out in the middle of a response header ({n} of 24 bytes: {})",
                hex(&header[..n])
            ),
        }
        if header[0] != RES_MAGIC {
            panic!("response with bad magic: header {}", hex(&header));
        }
        let body_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let mut body = vec![0u8; body_len as usize];
        match read_full(&mut self.stream, &mut body) {
            ReadFull::Done => Read1::Response(Response::decode(&header, body)),
            ReadFull::Eof(n) | ReadFull::Timeout(n) => {
                let mut got = header.to_vec();
                got.extend_from_slice(&body[..n]);
                Read1::Truncated(got)
            }
        }
    }

    /// Read one answer; fail the test on timeout or close.
    #[track_caller]
    pub fn recv(&mut self) -> Response {
        match self.read_one(READ_TIMEOUT) {
            Read1::Response(r) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Send one request and read one answer.
    #[track_caller]
    pub fn call(&mut self, req: &Request) -> Response {
        self.send(req);
        self.recv()
    }

    /// Assert that nothing arrives within `ms` milliseconds (quiet-mode checks). Prefer
    /// closing a quiet batch with a NOOP and checking the NOOP comes next: that needs no
    /// waiting at all; this is for the cases where no such fence is possible.
    #[track_caller]
    pub fn expect_silence(&mut self, ms: u64) {
        match self.read_one(Duration::from_millis(ms)) {
            Read1::Timeout => {}
            other => panic!("expected silence for {ms} ms, got {other:?}"),
        }
    }

    /// Assert that the server closes the connection (EOF or reset) within `READ_TIMEOUT`,
    /// with no further answer before that.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        match self.read_one(READ_TIMEOUT) {
            Read1::Closed => {}
            other => panic!("expected the connection to be closed, got {other:?}"),
        }
    }

    /// Send a NOOP and read answers until its answer; returns the answers before it.
    #[track_caller]
    pub fn until_noop(&mut self) -> Vec<Response> {
        const FENCE: u32 = 0xfe9c_e000;
        self.send(&noop().opaque(FENCE));
        let mut got = Vec::new();
        loop {
            let r = self.recv();
            if r.opcode == op::NOOP && r.opaque == FENCE {
                r.expect(op::NOOP, status::OK);
                return got;
            }
            got.push(r);
        }
    }
}

enum ReadFull {
    Done,
    Eof(usize),
    Timeout(usize),
}

fn read_full(stream: &mut TcpStream, buf: &mut [u8]) -> ReadFull {
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]) {
            Ok(0) => return ReadFull::Eof(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return ReadFull::Timeout(n),
            Err(e) if is_reset(&e) => return ReadFull::Eof(n),
            Err(e) => panic!("read from server: {e}"),
        }
    }
    ReadFull::Done
}

// ---------------------------------------------------------------------------------------
// Process inspection (added for tests/robustness.rs and tests/sasl.rs)
// ---------------------------------------------------------------------------------------

impl Server {
    /// Start a server from an arbitrary command (a wrapper script that `exec`s the real
    /// server, extra environment variables, ...): `make` gets the port to listen on.
    pub fn custom(name: &'static str, make: impl Fn(u16) -> Command) -> Server {
        Server::start(name, make)
    }

    /// Start pincache with `-p PORT -l 127.0.0.1` plus `extra_args` and extra environment
    /// variables.
    pub fn pincache_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let bin = pincache_bin();
        Server::start("pincache", |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1"]);
            cmd.args(extra_args);
            cmd.envs(env.iter().copied());
            cmd
        })
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

impl Client {
    /// The general stats as (name, value) pairs, read up to the terminating packet.
    #[track_caller]
    pub fn stats(&mut self) -> Vec<(String, String)> {
        self.stats_group("")
    }

    /// A `stat` group (`settings`, ...; "" for the general stats) as (name, value)
    /// pairs, read up to the terminating packet.
    #[track_caller]
    pub fn stats_group(&mut self, group: &str) -> Vec<(String, String)> {
        self.send(&Request::new(op::STAT).key(group));
        let mut out = Vec::new();
        loop {
            let r = self.recv();
            r.expect(op::STAT, status::OK);
            if r.key.is_empty() {
                return out;
            }
            out.push((
                String::from_utf8_lossy(&r.key).into_owned(),
                String::from_utf8_lossy(&r.value).into_owned(),
            ));
        }
    }

    /// One general stat as a number.
    #[track_caller]
    pub fn stat_u64(&mut self, name: &str) -> u64 {
        let stats = self.stats();
        let value = stats
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no stat {name:?}"));
        value
            .1
            .parse()
            .unwrap_or_else(|_| panic!("stat {name} = {:?} is not a number", value.1))
    }
}
