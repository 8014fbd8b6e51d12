//! Fuzz target: one whole connection without a socket. A byte stream derived from
//! the input arrives in arbitrary chunks and goes through `dispatch::process` the
//! way `server/connection.rs` drives it (unconsumed bytes kept, `skip` honoured,
//! nothing more after `close`), against a real, small `Store`. Every answer is
//! checked against the request it answers and against a model of what each key
//! may hold; the store's own accounting is checked after every chunk.
//!
//! ```text
//!  input:  | c0 | c1 | c2 | c3 | request stream ...                      |
//!    c0: bits 0-1 item size max (64K/128K/256K/1M), bits 2-3 memory (4/2/1/4 MB),
//!        bit 4 SASL on, bit 5 vary keys between repeats, bits 6-7 the value size
//!        from which a SET's value is read in place (1, 100, 16K, never)
//!    c1: output high-water mark    c2: repeats of the stream (more memory churn)
//!    c3: seed for chunk sizes and clock jumps
//! ```
//!
//! Each frame's opaque is rewritten to its index in the stream (framing does not
//! depend on it), so every answer names exactly one request.

#![no_main]

use std::collections::HashMap;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use pincache::config::Config;
use pincache::protocol::header::{be16, be32, be64, RESPONSE_MAGIC};
use pincache::protocol::request::{parse, Extras, Limits, ParseError};
use pincache::protocol::{Opcode, Status, HEADER_LEN, MAX_KEY_LEN};
use pincache::server::arrival::Arrival;
use pincache::server::conns::ConnTable;
use pincache::server::dispatch::{process, Context, Direct, Protocol, Session};
use pincache::server::log_limit::LogLimit;
use pincache::server::sasl::Sasl;
use pincache::server::stats::{Settings, Stats, VERSION};
use pincache::store::{Clock, Store, StoreConfig};

/// Bytes of configuration in front of the stream.
const CONFIG_LEN: usize = 4;
/// The derived stream stays under this size, however many repeats are asked for.
const STREAM_MAX_BYTES: usize = 3 << 20;
/// The connection's own mark (`OUTPUT_HIGH_WATER_BYTES`) and some small ones
/// that make `process` stop and resume mid-batch.
const HIGH_WATER: [usize; 6] = [256 * 1024, 1, 30, 200, 4096, 65536];
/// Clock jumps, in seconds: none, ticks, an hour, past the relative-exptime limit.
const CLOCK_JUMPS: [u32; 6] = [0, 1, 2, 61, 3600, 60 * 60 * 24 * 31];
const SASL_USERS: &[u8] = b"user:pass\n";
const MB: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() < CONFIG_LEN {
        return;
    }
    let (config, body) = data.split_at(CONFIG_LEN);
    Run::new(config, body).run();
});

/// Minimal xorshift: chunk sizes and clock jumps, reproducible from the input.
/// Stands in for the client's socket: takes a random share of each write.
struct Socket {
    wire: Vec<u8>,
    rng: Rng,
}

impl std::io::Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let take = match self.rng.below(4) {
            0 => return Err(std::io::ErrorKind::WouldBlock.into()),
            1 => self.rng.below(total + 1),
            _ => total,
        };
        let mut left = take;
        for b in bufs {
            let n = left.min(b.len());
            self.wire.extend_from_slice(&b[..n]);
            left -= n;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One frame of the stream, as the server must see it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Request {
        command: Opcode,
        quiet: bool,
        extras: Extras,
        cas: u64,
        key: (usize, usize),
        value: (usize, usize),
    },
    Skip {
        status: Status,
        command: Opcode,
        key: (usize, usize),
    },
    Invalid {
        status: Status,
    },
    BadMagic,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    at: usize,
    opcode: u8,
    kind: Kind,
}

/// What a key may hold, as far as the answers so far tell.
#[derive(Clone, Debug, PartialEq)]
enum Held {
    /// Certainly not stored (never written, deleted, flushed).
    Absent,
    /// If still there (eviction and expiry may drop it), exactly this.
    Value {
        value: Vec<u8>,
        flags: u32,
        cas: Option<u64>,
    },
    /// Not known (an incr wrote it, an out-of-memory store may have dropped it).
    Unknown,
}

/// One answer packet, borrowed from the output buffer.
#[derive(Clone, Copy, Debug)]
struct Response<'a> {
    opcode: u8,
    status: Status,
    opaque: u32,
    cas: u64,
    extras: &'a [u8],
    key: &'a [u8],
    value: &'a [u8],
}

struct Run {
    store: Store,
    stats: Stats,
    settings: Settings,
    sasl: Option<Sasl>,
    /// What `stats conns` lists (no other connection here).
    conns: ConnTable,
    limits: Limits,
    max_frame: usize,
    high_water: usize,
    in_place_min: usize,
    rng: Rng,
    stream: Vec<u8>,
    frames: Vec<Frame>,
    /// Where the incomplete frame at the stream's end (not in `frames`) starts.
    tail_at: usize,
    /// Model of the keys; a key not in the map is absent (the store starts empty).
    model: HashMap<Vec<u8>, Held>,
    authenticated: bool,
    last_cas: u64,
    /// Successful writes seen: an upper bound for `curr_items`.
    writes: u64,
}

impl Run {
    fn new(config: &[u8], body: &[u8]) -> Run {
        let item_size_max = [64 * 1024, 128 * 1024, 256 * 1024, MB][usize::from(config[0] & 3)];
        let memory_limit = [4 * MB, 2 * MB, MB, 4 * MB][usize::from((config[0] >> 2) & 3)];
        let sasl = config[0] & 0x10 != 0;
        let vary_keys = config[0] & 0x20 != 0;
        let high_water = HIGH_WATER[usize::from(config[1]) % HIGH_WATER.len()];
        let repeats = 1 + usize::from(config[2] % 32);
        let repeats = repeats.min(STREAM_MAX_BYTES / body.len().max(1)).max(1);
        let limits = Limits {
            max_value_len: item_size_max,
        };
        let store = match Store::new(
            StoreConfig {
                memory_limit,
                item_size_max,
            },
            Clock::start(),
        ) {
            Ok(store) => store,
            Err(e) => panic!("cannot map {memory_limit} bytes: {e}"),
        };
        let mut stream = Vec::with_capacity(body.len() * repeats);
        for _ in 0..repeats {
            stream.extend_from_slice(body);
        }
        let (frames, tail_at) = frame_stream(&mut stream, body.len(), vary_keys, &limits);
        Run {
            store,
            stats: Stats::default(),
            settings: Settings {
                started: Instant::now(),
                port: 11211,
                config: Config {
                    memory_limit_mb: memory_limit >> 20,
                    item_size_max,
                    sasl,
                    ..Config::default()
                },
            },
            sasl: sasl.then(|| Sasl::from_lines(SASL_USERS)),
            conns: ConnTable::new(3, "tcp:127.0.0.1:11211".into(), Instant::now()),
            limits,
            max_frame: HEADER_LEN + 20 + MAX_KEY_LEN + item_size_max,
            high_water,
            in_place_min: [1, 100, 16 * 1024, usize::MAX][usize::from(config[0] >> 6)],
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (u64::from(config[3]) << 32 | body.len() as u64)),
            stream,
            frames,
            tail_at,
            model: HashMap::new(),
            authenticated: false,
            last_cas: 0,
            writes: 0,
        }
    }

    /// Feeds the stream chunk by chunk, as reads from a socket would deliver it.
    /// While a value is read in place, a chunk goes straight into its item
    /// (`Connection::fill_arriving`) or through the input like any other.
    fn run(mut self) {
        let mut arriving: Option<Arrival> = None;
        let stream = std::mem::take(&mut self.stream);
        let mut input: Vec<u8> = Vec::new();
        let mut out: Vec<u8> = Vec::new();
        // This target drives the binary protocol: a stream whose first byte is
        // not 0x80 would otherwise be taken for text.
        let mut session = Session {
            protocol: Protocol::Binary,
            ..Session::default()
        };
        // Stream offset of input[0]; bytes of a refused frame still to drop.
        let mut base = 0usize;
        let mut skip = 0u64;
        let mut closing = false;
        let mut next_frame = 0usize;
        let mut fed = 0usize;
        while fed < stream.len() && !closing {
            let left = stream.len() - fed;
            let chunk = match self.rng.below(4) {
                0 => 1 + self.rng.below(HEADER_LEN.min(left)),
                1 => 1 + self.rng.below(4096.min(left)),
                2 => 1 + self.rng.below(left),
                _ => left,
            };
            let mut chunk = chunk;
            if let Some(a) = arriving.as_mut().filter(|a| a.value_left() > 0) {
                if self.rng.below(2) == 0 {
                    let n = chunk.min(a.value_left());
                    a.room(&mut self.store)[..n].copy_from_slice(&stream[fed..fed + n]);
                    a.advance(n);
                    (fed, base, chunk) = (fed + n, base + n, chunk - n);
                }
            }
            input.extend_from_slice(&stream[fed..fed + chunk]);
            fed += chunk;
            // Connection::answer, repeated while it stops at the high-water mark
            // (the writable event resumes it once the output is sent).
            loop {
                if skip > 0 {
                    let dropped = skip.min(input.len() as u64) as usize;
                    input.drain(..dropped);
                    base += dropped;
                    skip -= dropped as u64;
                    if skip > 0 {
                        break;
                    }
                }
                if let Some(a) = arriving.as_mut() {
                    let n = a.feed(&input, &mut self.store);
                    input.drain(..n);
                    base += n;
                    if !a.is_complete() {
                        break;
                    }
                    out.clear();
                    if let Some(a) = arriving.take() {
                        let mut log = LogLimit::new(std::time::Instant::now());
                        a.finish(&mut self.context(&mut log), &mut out);
                    }
                    next_frame = self.check_batch(&stream, &out, next_frame, base, false);
                }
                if input.is_empty() {
                    break;
                }
                out.clear();
                // Large values go to a socket that takes a random part of each
                // writev; what it took, then the queue, must read as the answers.
                let mut socket = Socket {
                    wire: Vec::new(),
                    rng: Rng((self.rng.0 ^ base as u64) | 1),
                };
                let mut sent = 0;
                let min_value = [1, 100, usize::MAX][self.rng.below(3)];
                let progress = {
                    let mut direct = Direct {
                        socket: &mut socket,
                        sent: &mut sent,
                        min_value,
                    };
                    let mut log = LogLimit::new(std::time::Instant::now());
                    let high_water = self.high_water;
                    let mut ctx = self.context(&mut log);
                    process(
                        &input,
                        &mut out,
                        Some(&mut direct),
                        high_water,
                        &mut ctx,
                        &mut session,
                        "fuzz",
                    )
                };
                assert!(progress.consumed <= input.len());
                let end = base + progress.consumed;
                // A frame whose value is arriving is answered when it is complete.
                let checked = match progress.arrival {
                    Some(_) => self.frame_start_before(end),
                    None => end,
                };
                let mut answers = std::mem::take(&mut socket.wire);
                answers.extend_from_slice(&out[sent..]);
                next_frame =
                    self.check_batch(&stream, &answers, next_frame, checked, progress.close);
                assert_eq!(session.authenticated, self.authenticated);
                if progress.arrival.is_some() {
                    assert!(!progress.close && progress.skip == 0);
                    input.drain(..progress.consumed);
                    base = end;
                    arriving = progress.arrival;
                    continue;
                }
                if !progress.close && !progress.throttled && progress.consumed < input.len() {
                    // Stopped on an incomplete frame: the connection's buffer grows to
                    // min(need, max_frame), which must be enough to make progress.
                    let pending = input.len() - progress.consumed;
                    match progress.need {
                        Some(need) => assert!(
                            (pending as u64) < need.min(self.max_frame as u64),
                            "stalled: {pending} bytes pending, need {need}"
                        ),
                        None => assert!(pending < HEADER_LEN, "no need with {pending} bytes"),
                    }
                }
                input.drain(..progress.consumed);
                base = end;
                skip = progress.skip;
                if progress.close {
                    closing = true;
                    break;
                }
                if !progress.throttled {
                    break;
                }
                assert!(
                    progress.consumed > 0 || !answers.is_empty(),
                    "throttled without progress"
                );
            }
            self.check_store();
            if self.rng.below(8) == 0 {
                let jump = CLOCK_JUMPS[self.rng.below(CLOCK_JUMPS.len())];
                self.store.advance_clock(jump);
                let budget = [1, 16, 1000][self.rng.below(3)];
                self.store.run_due_work(budget);
                self.check_store();
            }
        }
        // The client went away mid-value: its item's room becomes dead space.
        if let Some(a) = arriving.take() {
            a.abandon(&mut self.store);
            self.check_store();
        }
    }

    /// The context `process` runs in.
    fn context<'a>(&'a mut self, log: &'a mut LogLimit) -> Context<'a> {
        Context {
            store: &mut self.store,
            stats: &mut self.stats,
            settings: &self.settings,
            sasl: self.sasl.as_ref(),
            limits: self.limits,
            log,
            conns: &self.conns,
            in_place_min: self.in_place_min,
        }
    }

    /// Where the frame holding stream offset `end - 1` starts.
    fn frame_start_before(&self, end: usize) -> usize {
        if end > self.tail_at {
            return self.tail_at;
        }
        let after = self.frames.partition_point(|f| f.at < end);
        match after.checked_sub(1) {
            Some(i) => self.frames[i].at,
            None => panic!("no frame before {end}"),
        }
    }

    fn check_store(&self) {
        if let Err(e) = self.store.check_consistency() {
            panic!("store inconsistent: {e}");
        }
        let st = self.store.stats();
        assert!(
            st.curr_items <= self.writes,
            "{} items after {} writes",
            st.curr_items,
            self.writes
        );
        assert!(
            st.bytes <= self.settings.config.memory_limit_bytes() as u64,
            "{} bytes stored under a {} limit",
            st.bytes,
            self.settings.config.memory_limit_bytes()
        );
        assert_eq!(st.curr_items == 0, st.bytes == 0, "{st:?}");
    }

    /// Checks the answers of one `process` call: the frames starting before `end`
    /// (and the one at `end` if it closed the connection without being consumed).
    /// Returns the index of the first frame not yet answered.
    fn check_batch(
        &mut self,
        stream: &[u8],
        out: &[u8],
        first: usize,
        end: usize,
        close: bool,
    ) -> usize {
        let responses = split_responses(out, self.settings.config.item_size_max);
        let mut r = 0;
        let mut next = first;
        let mut closed_by = None;
        while next < self.frames.len() && self.frames[next].at < end {
            assert!(closed_by.is_none(), "frame {next} answered after a close");
            let frame = self.frames[next];
            let start = r;
            while r < responses.len() && responses[r].opaque == next as u32 {
                r += 1;
            }
            if self.check_frame(stream, &frame, &responses[start..r]) {
                closed_by = Some(next);
            }
            next += 1;
        }
        if close && closed_by.is_none() {
            // Closed on a frame it could not take: bad magic or invalid lengths.
            let frame = self.frames[next];
            assert_eq!(
                frame.at, end,
                "closed at {end} but the next frame is {frame:?}"
            );
            let start = r;
            while r < responses.len() && responses[r].opaque == next as u32 {
                r += 1;
            }
            let mine = &responses[start..r];
            match frame.kind {
                Kind::BadMagic => assert!(mine.is_empty(), "bad magic answered"),
                Kind::Invalid { status } => {
                    assert_eq!(mine.len(), 1, "invalid frame answered {mine:?}");
                    // memcached checks the login before an opcode's lengths (but
                    // after key + extras > body, which is 0x0081).
                    let status =
                        if self.must_log_in(frame.opcode) && status == Status::InvalidArguments {
                            Status::AuthError
                        } else {
                            status
                        };
                    check_error(&mine[0], frame.opcode, status);
                }
                other => panic!("closed at a frame the parser takes: {other:?}"),
            }
            next += 1;
        } else if !close {
            assert!(
                closed_by.is_none(),
                "request {closed_by:?} closed, process did not"
            );
        }
        assert_eq!(
            r,
            responses.len(),
            "answers not matching any request: {:?}",
            &responses[r..]
        );
        next
    }

    /// Whether SASL is on, we are not logged in, and `opcode` is not one memcached
    /// serves before login (the SASL commands and VERSION).
    fn must_log_in(&self, opcode: u8) -> bool {
        self.sasl.is_some()
            && !self.authenticated
            && !matches!(
                Opcode::from_u8(opcode),
                Some(Opcode::SaslListMechs | Opcode::SaslAuth | Opcode::SaslStep | Opcode::Version)
            )
    }

    /// Checks one consumed frame's answers and applies it to the model.
    /// Returns whether it closes the connection.
    fn check_frame(&mut self, stream: &[u8], frame: &Frame, mine: &[Response<'_>]) -> bool {
        for response in mine {
            assert_eq!(response.opcode, frame.opcode, "opcode not echoed");
        }
        match frame.kind {
            Kind::BadMagic | Kind::Invalid { .. } => {
                panic!("frame {frame:?} consumed")
            }
            Kind::Skip {
                status,
                command,
                key,
            } => {
                assert_eq!(mine.len(), 1, "refused frame answered {mine:?}");
                if self.must_log_in(frame.opcode) {
                    // memcached checks authentication before anything else: an
                    // unknown opcode or an oversized SET from an unauthenticated
                    // client gets AUTH_ERROR and a close, and touches no key.
                    check_error(&mine[0], frame.opcode, Status::AuthError);
                    return true;
                }
                check_error(&mine[0], frame.opcode, status);
                if status == Status::ValueTooLarge && command == Opcode::Set {
                    self.model
                        .insert(stream[key.0..key.1].to_vec(), Held::Absent);
                }
                false
            }
            Kind::Request {
                command,
                quiet,
                extras,
                cas,
                key,
                value,
            } => {
                let key = &stream[key.0..key.1];
                let value = &stream[value.0..value.1];
                if self.must_log_in(frame.opcode) {
                    assert_eq!(mine.len(), 1, "unauthenticated request answered {mine:?}");
                    check_error(&mine[0], frame.opcode, Status::AuthError);
                    return true;
                }
                if command == Opcode::Stat {
                    self.check_stat(key, mine);
                    return false;
                }
                assert!(mine.len() <= 1, "{command:?} answered {} times", mine.len());
                let gets = matches!(
                    command,
                    Opcode::Get | Opcode::GetK | Opcode::Gat | Opcode::GatK
                );
                let status = match mine.first() {
                    Some(response) => {
                        if quiet {
                            let suppressed = if gets {
                                Status::KeyNotFound
                            } else {
                                Status::NoError
                            };
                            assert_ne!(response.status, suppressed, "quiet {command:?} answered");
                        }
                        response.status
                    }
                    None if quiet && gets => Status::KeyNotFound,
                    None if quiet => Status::NoError,
                    None => panic!("{command:?} (opcode 0x{:02x}) not answered", frame.opcode),
                };
                self.check_request(
                    command,
                    quiet,
                    extras,
                    cas,
                    key,
                    value,
                    status,
                    mine.first(),
                );
                command == Opcode::Quit
            }
        }
    }

    fn check_stat(&mut self, group: &[u8], mine: &[Response<'_>]) {
        assert!(!mine.is_empty(), "stat not answered");
        let known = matches!(
            group,
            b"" | b"settings"
                | b"items"
                | b"slabs"
                | b"sizes"
                | b"conns"
                | b"reset"
                | b"detail on"
                | b"detail off"
                | b"detail dump"
        );
        if !known {
            assert_eq!(mine.len(), 1, "unknown stat group answered {mine:?}");
            check_error(&mine[0], 0x10, Status::KeyNotFound);
            return;
        }
        let (last, stats) = match mine.split_last() {
            Some(split) => split,
            None => unreachable!(),
        };
        for stat in stats {
            assert_eq!(stat.status, Status::NoError);
            assert!(!stat.key.is_empty(), "stat without a name: {stat:?}");
            assert!(stat.extras.is_empty());
        }
        assert_eq!(last.status, Status::NoError);
        assert!(
            last.key.is_empty() && last.value.is_empty() && last.extras.is_empty(),
            "stat group not closed by an empty packet: {last:?}"
        );
    }

    fn held(&self, key: &[u8]) -> Held {
        self.model.get(key).cloned().unwrap_or(Held::Absent)
    }

    fn new_cas(&mut self, response: Option<&Response<'_>>) -> Option<u64> {
        let response = response?;
        assert!(
            response.cas > self.last_cas,
            "CAS {} after {}",
            response.cas,
            self.last_cas
        );
        self.last_cas = response.cas;
        Some(response.cas)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_request(
        &mut self,
        command: Opcode,
        quiet: bool,
        extras: Extras,
        cas: u64,
        key: &[u8],
        value: &[u8],
        status: Status,
        response: Option<&Response<'_>>,
    ) {
        use Opcode::*;
        use Status::*;
        let allowed: &[Status] = match command {
            Get | GetK | Gat | GatK | Touch => &[NoError, KeyNotFound],
            Set | Add | Replace => &[NoError, KeyNotFound, KeyExists, ValueTooLarge, OutOfMemory],
            Append | Prepend => &[
                NoError,
                ItemNotStored,
                KeyExists,
                ValueTooLarge,
                OutOfMemory,
            ],
            Increment | Decrement => &[NoError, KeyNotFound, KeyExists, NonNumeric, OutOfMemory],
            Delete => &[NoError, KeyNotFound, KeyExists],
            Flush | Noop | Version | Quit => &[NoError],
            SaslListMechs | SaslAuth | SaslStep if self.sasl.is_none() => &[UnknownCommand],
            SaslListMechs | SaslAuth | SaslStep => &[NoError, AuthError, AuthContinue],
            _ => &[],
        };
        assert!(allowed.contains(&status), "{command:?} answered {status:?}");
        let held = self.held(key);
        // Any of these says the key is stored right now.
        let present = match (command, status) {
            (Get | GetK | Gat | GatK | Touch, NoError) => true,
            (Replace | Append | Prepend | Delete, NoError) => true,
            (_, KeyExists) => true,
            _ => false,
        };
        if present && held == Held::Absent {
            panic!("{command:?} {key:?} answered {status:?} but the key was deleted or never set");
        }

        // The answer's shape.
        if let Some(r) = response {
            let with_key = matches!(command, GetK | GatK);
            if status == KeyNotFound && with_key {
                assert_eq!(r.key, key, "GETK miss without its key");
                assert!(r.extras.is_empty() && r.value.is_empty() && r.cas == 0);
            } else if status != NoError {
                check_error(r, r.opcode, status);
            } else {
                match command {
                    Get | GetK | Gat | GatK | Touch => {
                        assert_eq!(r.extras.len(), 4, "hit without flags");
                        assert_eq!(r.key, if with_key { key } else { &[] });
                        assert_ne!(r.cas, 0);
                        if command == Touch {
                            assert!(r.value.is_empty(), "touch answered a value");
                        }
                    }
                    Set | Add | Replace | Append | Prepend => {
                        assert!(r.extras.is_empty() && r.key.is_empty() && r.value.is_empty());
                    }
                    Increment | Decrement => {
                        assert!(r.extras.is_empty() && r.key.is_empty());
                        assert_eq!(r.value.len(), 8, "counter not 8 bytes");
                    }
                    Delete | Flush | Noop | Quit => {
                        assert!(r.extras.is_empty() && r.key.is_empty() && r.value.is_empty());
                        assert_eq!(r.cas, 0);
                    }
                    Version => assert_eq!(r.value, VERSION.as_bytes()),
                    _ => {}
                }
            }
        }

        // Compare hits with the model, then apply the request to it.
        match (command, status) {
            (Get | GetK | Gat | GatK | Touch, NoError) => {
                if let (
                    Held::Value {
                        value: want,
                        flags,
                        cas,
                    },
                    Some(r),
                ) = (&held, response)
                {
                    assert_eq!(be32(r.extras, 0), *flags, "flags of {key:?}");
                    if command != Touch {
                        assert!(r.value == &want[..], "value of {key:?} changed");
                    }
                    if let Some(cas) = cas {
                        assert_eq!(r.cas, *cas, "CAS of {key:?} changed");
                    }
                }
            }
            (Set | Add | Replace, NoError) => {
                let Extras::Store { flags, .. } = extras else {
                    panic!("store without store extras");
                };
                let cas = self.new_cas(response);
                self.writes += 1;
                self.model.insert(
                    key.to_vec(),
                    Held::Value {
                        value: value.to_vec(),
                        flags,
                        cas,
                    },
                );
            }
            (Append | Prepend, NoError) => {
                let cas = self.new_cas(response);
                self.writes += 1;
                let now = match held {
                    Held::Value {
                        value: old, flags, ..
                    } => {
                        let joined = if command == Prepend {
                            [value, &old[..]].concat()
                        } else {
                            [&old[..], value].concat()
                        };
                        Held::Value {
                            value: joined,
                            flags,
                            cas,
                        }
                    }
                    _ => Held::Unknown,
                };
                self.model.insert(key.to_vec(), now);
            }
            (Increment | Decrement, NoError) => {
                self.new_cas(response);
                self.writes += 1;
                self.model.insert(key.to_vec(), Held::Unknown);
            }
            (Delete, NoError) => {
                self.model.insert(key.to_vec(), Held::Absent);
            }
            (Set, ValueTooLarge) => {
                // A failed SET must not leave the old value readable.
                self.model.insert(key.to_vec(), Held::Absent);
            }
            (_, OutOfMemory) => {
                self.model.insert(key.to_vec(), Held::Unknown);
            }
            (Flush, NoError) => {
                if matches!(extras, Extras::None | Extras::Flush { delay: 0 }) {
                    // Everything is gone now; a delayed flush only ever removes.
                    self.model.clear();
                }
            }
            (SaslAuth, NoError) => self.authenticated = true,
            _ => {}
        }
        let _ = (quiet, cas);
    }
}

/// An error answer: memcached's text for the status as the body, nothing else.
fn check_error(response: &Response<'_>, opcode: u8, status: Status) {
    assert_eq!(response.opcode, opcode);
    assert_eq!(response.status, status, "{response:?}");
    assert!(response.extras.is_empty() && response.key.is_empty());
    assert_eq!(response.value, status.text(), "{response:?}");
    assert_eq!(response.cas, 0);
}

fn status_of(code: u16) -> Option<Status> {
    use Status::*;
    [
        NoError,
        KeyNotFound,
        KeyExists,
        ValueTooLarge,
        InvalidArguments,
        ItemNotStored,
        NonNumeric,
        AuthError,
        AuthContinue,
        UnknownCommand,
        OutOfMemory,
    ]
    .into_iter()
    .find(|s| *s as u16 == code)
}

/// Splits the output into well-formed response packets, or panics.
fn split_responses(out: &[u8], item_size_max: usize) -> Vec<Response<'_>> {
    let mut responses = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let rest = &out[at..];
        assert!(
            rest.len() >= HEADER_LEN,
            "truncated response header at {at}"
        );
        assert_eq!(rest[0], RESPONSE_MAGIC, "bad response magic at {at}");
        let key_len = usize::from(be16(rest, 2));
        let extras_len = usize::from(rest[4]);
        assert_eq!(rest[5], 0, "data type not raw");
        let code = be16(rest, 6);
        let Some(status) = status_of(code) else {
            panic!("unknown status 0x{code:04x}");
        };
        let body = be32(rest, 8) as usize;
        assert!(extras_len + key_len <= body, "extras + key over the body");
        assert!(HEADER_LEN + body <= rest.len(), "body runs past the output");
        assert!(key_len <= MAX_KEY_LEN, "key of {key_len}");
        let value_len = body - extras_len - key_len;
        assert!(value_len <= item_size_max, "value of {value_len}");
        let extras = &rest[HEADER_LEN..HEADER_LEN + extras_len];
        let key = &rest[HEADER_LEN + extras_len..HEADER_LEN + extras_len + key_len];
        let value = &rest[HEADER_LEN + extras_len + key_len..HEADER_LEN + body];
        responses.push(Response {
            opcode: rest[1],
            status,
            opaque: be32(rest, 12),
            cas: be64(rest, 16),
            extras,
            key,
            value,
        });
        at += HEADER_LEN + body;
    }
    responses
}

/// Walks the stream frame by frame as the server will, numbering each frame's
/// opaque and (with `vary_keys`) changing keys in later repeats; returns the frames.
fn frame_stream(
    stream: &mut [u8],
    body_len: usize,
    vary_keys: bool,
    limits: &Limits,
) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while stream.len() - pos >= HEADER_LEN {
        let index = frames.len() as u32;
        if stream[pos] == 0x80 {
            stream[pos + 12..pos + 16].copy_from_slice(&index.to_be_bytes());
        }
        let repeat = (pos / body_len.max(1)) as u8;
        if vary_keys && repeat > 0 {
            let key_len = usize::from(be16(stream, pos + 2));
            let key_end = pos + HEADER_LEN + usize::from(stream[pos + 4]) + key_len;
            let framed = matches!(
                parse(&stream[pos..], limits),
                Ok(_)
                    | Err(ParseError::Skip {
                        status: Status::ValueTooLarge,
                        ..
                    })
            );
            if framed && key_len > 0 && key_end <= stream.len() {
                stream[key_end - 1] = stream[key_end - 1].wrapping_add(repeat);
            }
        }
        let offset = |s: &[u8], base: &[u8]| {
            let at = s.as_ptr() as usize - base.as_ptr() as usize;
            (at, at + s.len())
        };
        let whole: &[u8] = stream;
        let opcode = whole[pos + 1];
        let (kind, len) = match parse(&whole[pos..], limits) {
            Ok((request, len)) => (
                Kind::Request {
                    command: request.command,
                    quiet: request.quiet,
                    extras: request.extras,
                    cas: request.cas,
                    key: offset(request.key, whole),
                    value: offset(request.value, whole),
                },
                len as u64,
            ),
            Err(ParseError::Skip {
                request,
                status,
                skip,
            }) => {
                let key = if request.key.is_empty() {
                    (0, 0)
                } else {
                    offset(request.key, whole)
                };
                (
                    Kind::Skip {
                        status,
                        command: request.command,
                        key,
                    },
                    skip,
                )
            }
            Err(ParseError::Invalid { status, .. }) => (Kind::Invalid { status }, 0),
            Err(ParseError::BadMagic) => (Kind::BadMagic, 0),
            Err(ParseError::Incomplete) => break,
        };
        frames.push(Frame {
            at: pos,
            opcode,
            kind,
        });
        if len == 0 || len > (whole.len() - pos) as u64 {
            break;
        }
        pos += len as usize;
    }
    (frames, pos)
}
