//! A small blocking binary-protocol client: send requests, read answers with a timeout,
//! tell a close from a timeout from a truncated answer, read `stat` groups.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::binary::{hex, noop, op, status, Request, Response, HEADER_LEN, RES_MAGIC};

/// How long a client waits for one answer before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

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
        let mut header = [0u8; HEADER_LEN];
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
