//! The worker: one mio loop over a share of the connections, keeping `--pipeline`
//! requests in flight on each (closed loop) or sending at a fixed `--rate` (open loop,
//! latency measured from each request's intended send time, so no coordinated omission).

mod issue;
mod phase;
mod respond;
mod respond_text;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::cli::Mode;
use crate::histogram::Hist;
use crate::wire::{parse_header, HEADER, RESPONSE_MAGIC};
use crate::workload::{Plan, Rng};

pub use phase::{pin_current_thread, run_phase};

/// Bytes requested per read(); large enough that one read usually drains a socket.
const READ_CHUNK: usize = 256 * 1024;

/// What a request in flight was.
#[derive(Clone, Copy)]
enum Kind {
    Get,
    Set,
    Batch(u32),
}

struct Pending {
    opaque: u32,
    kind: Kind,
    id: u32,
    t0: Instant,
    /// Issued during a count-based warm-up (`--warmup-ops`): checked, not counted.
    warm: bool,
}

struct Conn {
    sock: TcpStream,
    server: usize,
    out: Vec<u8>,
    out_pos: usize,
    inb: Vec<u8>,
    in_start: usize,
    in_end: usize,
    pending: VecDeque<Pending>,
    batch_ids: VecDeque<u32>,
    batch_hits: u32,
    batch_last: Option<u32>,
    opaque: u32,
    todo_sets: VecDeque<u32>,
    fill_next: usize,
    fill_stride: usize,
    sent: u64,
    first_due_ns: f64,
    dead: bool,
    /// WRITABLE is registered only while output is queued: fewer wakeups per response.
    want_write: bool,
}

/// Counts and latencies of one phase, merged across workers.
#[derive(Default)]
pub struct Stats {
    pub gets: u64,
    pub sets: u64,
    pub hits: u64,
    pub misses: u64,
    pub keys: u64,
    pub batches: u64,
    pub errors: u64,
    pub samples: Vec<String>,
    pub hist: Option<Hist>,
    pub elapsed: f64,
    /// This process's CPU, % of one core, over the measured window.
    pub bench_cpu: f64,
}

impl Stats {
    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.samples.len() < 8 {
            self.samples.push(msg);
        }
    }

    fn merge(&mut self, o: Stats) {
        self.gets += o.gets;
        self.sets += o.sets;
        self.hits += o.hits;
        self.misses += o.misses;
        self.keys += o.keys;
        self.batches += o.batches;
        self.errors += o.errors;
        for s in o.samples {
            if self.samples.len() < 8 {
                self.samples.push(s);
            }
        }
        match (&mut self.hist, o.hist) {
            (Some(a), Some(b)) => a.merge(&b),
            (a @ None, b) => *a = b,
            _ => {}
        }
    }

    /// Requests answered: a quiet batch counts once.
    pub fn ops(&self) -> u64 {
        if self.batches > 0 {
            self.batches + self.sets
        } else {
            self.gets + self.sets
        }
    }
}

struct Worker<'a> {
    plan: &'a Plan,
    conns: Vec<Conn>,
    rng: Rng,
    st: Stats,
    hist: Hist,
    start: Instant,
    mstart: Instant,
    end: Instant,
    interval_ns: f64,
    registry: mio::Registry,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Worker<'_> {
    /// Fills and count-based runs end when every request is answered.
    fn finite(&self) -> bool {
        self.plan.cfg.mode == Mode::Fill || self.plan.cfg.ops > 0
    }

    fn flush(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        while c.out_pos < c.out.len() && !c.dead {
            match c.sock.write(&c.out[c.out_pos..]) {
                Ok(0) => c.dead = true,
                Ok(n) => c.out_pos += n,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.dead = true;
                    self.st
                        .error(format!("write to {}: {e}", self.plan.cfg.servers[c.server]));
                }
            }
        }
        let pending_out = c.out_pos < c.out.len();
        if !pending_out {
            c.out.clear();
            c.out_pos = 0;
        }
        if pending_out != c.want_write && !c.dead {
            c.want_write = pending_out;
            let interest = if pending_out {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self.registry.reregister(&mut c.sock, Token(ci), interest) {
                c.dead = true;
                self.st.error(format!("reregister: {e}"));
            }
        }
    }

    /// Makes room for a read of at least a quarter chunk: compacts, then grows.
    fn make_room(c: &mut Conn) {
        if c.inb.len() - c.in_end < READ_CHUNK / 4 {
            if c.in_start > 0 {
                c.inb.copy_within(c.in_start..c.in_end, 0);
                c.in_end -= c.in_start;
                c.in_start = 0;
            }
            if c.inb.len() - c.in_end < READ_CHUNK / 4 {
                let n = c.inb.len() * 2;
                c.inb.resize(n, 0);
            }
        }
    }

    fn read(&mut self, ci: usize) {
        loop {
            let c = &mut self.conns[ci];
            if c.dead {
                return;
            }
            Self::make_room(c);
            let end = c.in_end;
            match c.sock.read(&mut c.inb[end..]) {
                Ok(0) => {
                    c.dead = true;
                    let s = &self.plan.cfg.servers[c.server];
                    self.st.error(format!("{s} closed the connection"));
                    return;
                }
                Ok(n) => {
                    c.in_end += n;
                    let short = c.in_end < c.inb.len();
                    self.parse(ci);
                    if short {
                        return; // a short read means the socket is drained
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.dead = true;
                    let s = &self.plan.cfg.servers[c.server];
                    self.st.error(format!("read from {s}: {e}"));
                    return;
                }
            }
        }
    }

    /// Takes every whole response out of the input buffer.
    fn parse(&mut self, ci: usize) {
        if self.plan.cfg.proto != crate::text::Proto::Binary {
            return self.parse_text(ci);
        }
        loop {
            let c = &self.conns[ci];
            let avail = c.in_end - c.in_start;
            if avail < HEADER || c.dead {
                return;
            }
            let h = parse_header(&c.inb[c.in_start..]);
            if h.magic != RESPONSE_MAGIC {
                let m = format!("bad magic 0x{:02x} (stream out of sync)", h.magic);
                self.conns[ci].dead = true;
                return self.st.error(m);
            }
            if avail < HEADER + h.body {
                return;
            }
            let (s, e) = (c.in_start + HEADER, c.in_start + HEADER + h.body);
            let body = std::mem::take(&mut self.conns[ci].inb);
            self.response(ci, &h, &body[s..e]);
            let c = &mut self.conns[ci];
            c.inb = body;
            c.in_start = e;
            if c.in_start == c.in_end {
                c.in_start = 0;
                c.in_end = 0;
            }
        }
    }

    /// When connection `ci`'s next request is due (open loop).
    fn due(&self, c: &Conn) -> Instant {
        self.start
            + Duration::from_nanos((c.first_due_ns + c.sent as f64 * self.interval_ns) as u64)
    }

    /// Closed loop: top each connection up to `pipeline`. Open loop: send what is due.
    fn top_up(&mut self, ci: usize, now: Instant) -> bool {
        let cfg = &self.plan.cfg;
        let mut any = false;
        while !self.conns[ci].dead && self.conns[ci].pending.len() < cfg.pipeline && now < self.end
        {
            let t0 = if cfg.rate > 0.0 {
                let due = self.due(&self.conns[ci]);
                if due > now {
                    break;
                }
                due
            } else {
                now
            };
            if !self.issue(ci, t0) {
                break;
            }
            any = true;
        }
        any
    }

    fn next_due(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter(|c| !c.dead && c.pending.len() < self.plan.cfg.pipeline)
            .map(|c| self.due(c))
            .min()
    }

    /// How long the next poll may wait: until the end, or until the next send is due.
    fn poll_timeout(&self, now: Instant) -> Duration {
        let timeout = (self.end - now).min(Duration::from_millis(100));
        if self.plan.cfg.rate <= 0.0 {
            return timeout;
        }
        match self.next_due() {
            // epoll waits in whole milliseconds: spin the last one.
            Some(d) => {
                let wait = d.saturating_duration_since(now);
                timeout.min(wait.saturating_sub(Duration::from_millis(1)))
            }
            None => timeout,
        }
    }

    fn run(mut self, poll: &mut Poll) -> Stats {
        let mut events = Events::with_capacity(1024);
        for ci in 0..self.conns.len() {
            self.top_up(ci, Instant::now());
            self.flush(ci);
        }
        loop {
            let now = Instant::now();
            let finished = self.conns.iter().all(|c| c.dead || c.pending.is_empty());
            if now >= self.end || (self.finite() && finished) {
                break;
            }
            if let Err(e) = poll.poll(&mut events, Some(self.poll_timeout(now))) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.st.error(format!("poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                let ci = ev.token().0;
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(ci);
                }
                self.top_up(ci, Instant::now());
                self.flush(ci);
            }
            if self.plan.cfg.rate > 0.0 {
                let now = Instant::now();
                for ci in 0..self.conns.len() {
                    if self.top_up(ci, now) {
                        self.flush(ci);
                    }
                }
            }
        }
        let mut st = self.st;
        st.hist = Some(self.hist);
        st
    }
}
