//! Helpers for the text and meta protocols: start memcached so that it speaks text (no
//! `-B binary`), and a small blocking line client that checks each answer against a
//! pattern, byte for byte.
//!
//! A pattern is the exact expected bytes, except for two placeholders:
//! `%d` matches one or more ASCII digits (a CAS, a stat value) and captures them; `%s`
//! matches one or more bytes other than space, CR and LF (a version string). So
//! `"VALUE k 0 5 %d\r\nhello\r\nEND\r\n"` accepts any CAS and returns it for later use,
//! which is how two servers are compared "byte for byte except CAS values".

use super::{Server, READ_TIMEOUT};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A spec case for text or meta: run `$body` against pincache and against memcached, both started with `$args`.
#[macro_export]
macro_rules! pincache_text_spec {
    ($name:ident, |$server:ident| $body:block) => {
        $crate::pincache_text_spec!($name, [], |$server| $body);
    };
    ($name:ident, [$($arg:expr),*], |$server:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn check($server: &$crate::common::Server) $body

            #[test]
            fn pincache() {
                check(&$crate::common::Server::pincache(&[$($arg),*]));
            }

            #[test]
            fn memcached() {
                if let Some(server) = $crate::common::Server::memcached_text(&[$($arg),*]) {
                    check(&server);
                }
            }
        }
    };
}

impl Server {
    /// Start memcached with its default protocol negotiation (text and binary on one
    /// port), one thread, no UDP; `None` when memcached is not installed and
    /// PINCACHE_SKIP_PEERS=1 (without it, the test fails).
    pub fn memcached_text(extra_args: &[&str]) -> Option<Server> {
        Server::memcached_with(&[], extra_args)
    }

    /// A new text-protocol connection.
    pub fn text(&self) -> TextClient {
        TextClient::connect(self.port)
    }
}

/// How far a pattern matched the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    /// The whole pattern matched the first `len` bytes; `caps` are the `%d` numbers.
    Complete { len: usize, caps: Vec<u64> },
    /// Everything received so far fits the pattern; more bytes are needed.
    Partial,
    /// The byte at this offset cannot match.
    Mismatch(usize),
}

/// Match `pattern` (see the module comment) against the start of `got`.
pub fn match_pattern(pattern: &[u8], got: &[u8]) -> Match {
    let mut caps = Vec::new();
    let (mut p, mut g) = (0, 0);
    while p < pattern.len() {
        let placeholder = pattern[p] == b'%' && matches!(pattern.get(p + 1), Some(b'd' | b's'));
        if !placeholder {
            match got.get(g) {
                None => return Match::Partial,
                Some(&b) if b != pattern[p] => return Match::Mismatch(g),
                Some(_) => (p, g) = (p + 1, g + 1),
            }
            continue;
        }
        let digits = pattern[p + 1] == b'd';
        let fits = |b: u8| {
            if digits {
                b.is_ascii_digit()
            } else {
                !matches!(b, b' ' | b'\r' | b'\n')
            }
        };
        let run = got[g..].iter().take_while(|&&b| fits(b)).count();
        if g + run == got.len() {
            return Match::Partial; // the token may go on in the next read
        }
        if run == 0 {
            return Match::Mismatch(g);
        }
        if digits {
            let text = std::str::from_utf8(&got[g..g + run]).unwrap_or("");
            caps.push(text.parse().unwrap_or(u64::MAX));
        }
        (p, g) = (p + 2, g + run);
    }
    Match::Complete { len: g, caps }
}

/// A blocking text-protocol client. Bytes read past one answer are kept for the next.
pub struct TextClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// What reading for a pattern gave.
#[derive(Debug)]
pub enum Got {
    Matched(Vec<u64>),
    /// The bytes did not fit the pattern (or timed out / closed before they did): all the
    /// bytes received, for the failure message.
    Other(Vec<u8>, &'static str),
}

impl TextClient {
    pub fn connect(port: u16) -> TextClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        TextClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Write bytes (one write call as far as we are concerned).
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .expect("write to server");
    }

    /// Like `send`, but a closed connection is not an error.
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.stream.write_all(bytes.as_ref()).is_ok()
    }

    /// Read more bytes into the buffer; `Ok(false)` on EOF, `Err` on timeout.
    fn fill(&mut self, deadline: Instant) -> Result<bool, ()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(());
        }
        self.stream.set_read_timeout(Some(left)).expect("timeout");
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(())
                }
                Err(_) => return Ok(false), // reset: the server closed
            }
        }
    }

    /// Read until the buffered bytes match `pattern`, or fail to.
    pub fn read_pattern(&mut self, pattern: &str, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            match match_pattern(pattern.as_bytes(), &self.buf) {
                Match::Complete { len, caps } => {
                    self.buf.drain(..len);
                    return Got::Matched(caps);
                }
                Match::Mismatch(_) => {
                    // Collect what else is on its way, for a readable failure message.
                    let _ = self.fill(Instant::now() + Duration::from_millis(50));
                    return Got::Other(std::mem::take(&mut self.buf), "different bytes");
                }
                Match::Partial => match self.fill(deadline) {
                    Ok(true) => {}
                    Ok(false) => return Got::Other(std::mem::take(&mut self.buf), "closed"),
                    Err(()) => return Got::Other(std::mem::take(&mut self.buf), "timeout"),
                },
            }
        }
    }

    /// The next answer must match `pattern`; returns its `%d` captures.
    #[track_caller]
    pub fn expect(&mut self, pattern: &str) -> Vec<u64> {
        match self.read_pattern(pattern, READ_TIMEOUT) {
            Got::Matched(caps) => caps,
            Got::Other(bytes, why) => panic!(
                "expected {:?}\n     got \"{}\" ({why})",
                pattern,
                show(&bytes)
            ),
        }
    }

    /// Send `request` and expect `pattern` as the answer.
    #[track_caller]
    pub fn call(&mut self, request: impl AsRef<[u8]>, pattern: &str) -> Vec<u64> {
        self.send(request);
        self.expect(pattern)
    }

    /// Exactly the next `n` bytes (for answers that are not text).
    #[track_caller]
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.buf.len() < n {
            if self.fill(deadline) != Ok(true) {
                panic!("wanted {n} bytes, got \"{}\"", show(&self.buf));
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Nothing arrives within `ms` milliseconds.
    #[track_caller]
    pub fn expect_silence(&mut self, ms: u64) {
        let deadline = Instant::now() + Duration::from_millis(ms);
        let _ = self.fill(deadline);
        assert!(
            self.buf.is_empty(),
            "expected silence, got \"{}\"",
            show(&self.buf)
        );
    }

    /// The server closes the connection, sending nothing more first.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => break,
                Err(()) => panic!("the connection stayed open"),
            }
        }
        assert!(
            self.buf.is_empty(),
            "expected the connection to close, got \"{}\" first",
            show(&self.buf)
        );
    }

    /// The next line, without its `\r\n`.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            if self.fill(deadline) != Ok(true) {
                panic!("no line; got \"{}\"", show(&self.buf));
            }
        }
    }

    /// Read lines up to and including `END\r\n`; each line without its `\r\n`.
    #[track_caller]
    pub fn lines_until_end(&mut self) -> Vec<String> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(at) = find(&self.buf, b"END\r\n").filter(|&at| {
                at == 0 || self.buf[at - 1] == b'\n' // END at the start of a line
            }) {
                let text = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 5);
                return text.lines().map(str::to_string).collect();
            }
            match self.fill(deadline) {
                Ok(true) => {}
                _ => panic!("no END; got \"{}\"", show(&self.buf)),
            }
        }
    }

    /// `stats <group>` ("" for the general stats) as (name, value) pairs; every line
    /// must be `STAT <name> <value>`.
    #[track_caller]
    pub fn stats(&mut self, group: &str) -> Vec<(String, String)> {
        let command = if group.is_empty() {
            "stats\r\n".to_string()
        } else {
            format!("stats {group}\r\n")
        };
        self.send(command);
        self.lines_until_end()
            .into_iter()
            .map(|line| {
                let mut parts = line.splitn(3, ' ');
                let (stat, name, value) = (parts.next(), parts.next(), parts.next());
                assert_eq!(stat, Some("STAT"), "not a STAT line: {line:?}");
                (
                    name.unwrap_or_default().to_string(),
                    value.unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// First position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Match {
    pub fn is_complete(&self) -> bool {
        matches!(self, Match::Complete { .. })
    }
}

/// Bytes as an escaped string, shortened past 600 bytes (answers are mostly short text).
pub fn show(b: &[u8]) -> String {
    const MAX_SHOWN: usize = 600;
    let shown = super::escape_prefix(b, MAX_SHOWN);
    if b.len() > MAX_SHOWN {
        format!("{shown}...({} bytes)", b.len())
    } else {
        shown
    }
}
