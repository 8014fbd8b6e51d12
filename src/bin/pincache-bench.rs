//! pincache-bench: a load generator for memcached-compatible servers that speak the
//! binary protocol (pincache, memcached), in one self-contained file.
//!
//! It drives N connections from a few mio worker threads, keeps `--pipeline` requests
//! in flight per connection (closed loop) or sends at a fixed `--rate` (open loop, latency
//! measured from each request's intended send time, so no coordinated omission), checks
//! every response byte for byte (values are derived from the key, so gets are verified),
//! and prints a table plus one JSON line. Any error makes the run fail loudly.
//!
//! ```text
//! pincache-bench [run] --server 127.0.0.1:11211 [--server HOST:PORT ...] --conns 50
//!     --pipeline 1 --keys 100000 --value-size 32 --get-ratio 0.9 [--zipf 0.99]
//!     [--quiet-batch 100] [--prefill] --duration 5 --warmup 1 --threads 1 [--rate OPS]
//! pincache-bench fill --server S [--items 1000000] [--value-size 100]   # keys key:%010d
//! pincache-bench hits --server S --keys N [--zipf 0.99]                 # get, set on miss
//! pincache-bench ring --server A --server B KEY... | -   (or: --print-ring-owner KEY...)
//! pincache-bench ring --balance 10                     (or: --ring-balance 10)
//! pincache-bench compare --pincache PATH [--memcached PATH] [--rounds 3]
//!     [--workloads p1,p16,quiet,latency,large,memory,bound,hits] [--server-cpu 0 --client-cpu 1]
//! ```
//!
//! Several `--server`s are spread with a ketama ring placed exactly as libmemcached 1.x
//! places it (`--ring-mode`): `ketama` = MEMCACHED_BEHAVIOR_KETAMA, i.e. pylibmc
//! `{"ketama": True}` (100 points per server, libmemcached's default one-at-a-time hash of
//! "host:port-N", or "host-N" when the port is 11211); `ketama-md5` = the same with
//! `{"hash": "md5"}`; `ketama-weighted` = `{"ketama_weighted": True}`, the classic
//! libketama layout (40 md5 digests of "host:port-N", 4 points each, md5 key hash).
//! pylibmc's docs say "ketama" implies md5; in libmemcached 1.x it does not. All three
//! modes were checked key for key against libmemcached 1.1.4 (the library pylibmc uses).
//!
//! `compare` pins the servers and this process to separate CPUs, alternates the servers
//! round by round and prints medians, ratios and both sides' %CPU (from /proc), so a
//! figure where the bench itself was at 100% can be told apart. `latency` offers 50% and
//! 80% of memcached's `p1` rate with up to 16 requests in flight per connection, so sends
//! are not held back by slow responses. `large` is `p1` with 100 KB values on its own
//! 2,000 keys; the bench is its bottleneck, so its figure is the server's CPU time per
//! request. `memory`, `bound` and `hits` start a fresh server per round (RSS from
//! /proc/PID/status, items from the binary STAT command).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------
// Binary protocol: just what a client sends and checks.
// ---------------------------------------------------------------------------------------

const REQ_MAGIC: u8 = 0x80;
const RES_MAGIC: u8 = 0x81;
const OP_GET: u8 = 0x00;
const OP_SET: u8 = 0x01;
const OP_NOOP: u8 = 0x0a;
const OP_GETKQ: u8 = 0x0d;
const OP_STAT: u8 = 0x10;
const STATUS_OK: u16 = 0x0000;
const STATUS_KEY_ENOENT: u16 = 0x0001;
const HEADER_LEN: usize = 24;
/// Flags stored with every value, checked on every hit: catches a server that loses them.
const ITEM_FLAGS: u32 = 0x7e57_f1a6;
/// Bytes requested per read(); large enough that one read usually drains a socket.
const READ_CHUNK: usize = 256 * 1024;

fn put_header(out: &mut Vec<u8>, op: u8, key_len: usize, extras: u8, body: usize, opaque: u32) {
    out.extend_from_slice(&[
        REQ_MAGIC,
        op,
        (key_len >> 8) as u8,
        key_len as u8,
        extras,
        0,
        0,
        0,
    ]);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// Appends `prefix` and the id as 10 zero-padded digits (`key:%010d` by default).
fn put_key(out: &mut Vec<u8>, prefix: &[u8], id: u32) {
    out.extend_from_slice(prefix);
    let mut digits = [b'0'; 10];
    let mut v = id;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits);
}

fn key_string(prefix: &str, id: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 10);
    put_key(&mut k, prefix.as_bytes(), id);
    k
}

struct Header {
    magic: u8,
    op: u8,
    key_len: usize,
    extras: usize,
    status: u16,
    body: usize,
    opaque: u32,
}

fn parse_header(b: &[u8]) -> Header {
    Header {
        magic: b[0],
        op: b[1],
        key_len: u16::from_be_bytes([b[2], b[3]]) as usize,
        extras: b[4] as usize,
        status: u16::from_be_bytes([b[6], b[7]]),
        body: u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize,
        opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic values: a value is a function of its key id, so every hit is verified.
// ---------------------------------------------------------------------------------------

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug)]
struct ValueSpec {
    min: usize,
    max: usize,
}

impl ValueSpec {
    /// Fixed size, or log-uniform in [min, max] chosen by the key id (the `bound` mix).
    fn len(&self, id: u32) -> usize {
        if self.min >= self.max {
            return self.min;
        }
        let u = (mix64(id as u64 ^ 0x51ce) >> 11) as f64 / (1u64 << 53) as f64;
        let (lo, hi) = ((self.min as f64).ln(), (self.max as f64 + 1.0).ln());
        ((lo + u * (hi - lo)).exp() as usize).clamp(self.min, self.max)
    }
}

fn put_value(out: &mut Vec<u8>, id: u32, len: usize) {
    let seed = mix64(id as u64);
    let mut left = len;
    let mut i = 0u64;
    while left > 0 {
        let w = mix64(seed ^ i).to_le_bytes();
        let n = left.min(8);
        out.extend_from_slice(&w[..n]);
        left -= n;
        i += 1;
    }
}

fn put_set(out: &mut Vec<u8>, prefix: &[u8], id: u32, vlen: usize, opaque: u32) {
    let klen = prefix.len() + 10;
    put_header(out, OP_SET, klen, 8, 8 + klen + vlen, opaque);
    out.extend_from_slice(&ITEM_FLAGS.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // no expiry
    put_key(out, prefix, id);
    put_value(out, id, vlen);
}

fn put_get(out: &mut Vec<u8>, op: u8, prefix: &[u8], id: u32, opaque: u32) {
    let klen = prefix.len() + 10;
    put_header(out, op, klen, 0, klen, opaque);
    put_key(out, prefix, id);
}

// ---------------------------------------------------------------------------------------
// MD5 (RFC 1321), written here so the file needs no crate the main package lacks.
// ---------------------------------------------------------------------------------------

fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32);
    let mut st: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = st;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        st = [
            st[0].wrapping_add(a),
            st[1].wrapping_add(b),
            st[2].wrapping_add(c),
            st[3].wrapping_add(d),
        ];
    }
    let mut out = [0u8; 16];
    for (i, w) in st.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------
// The ketama ring, as libmemcached 1.x builds it (src/libmemcached/hosts.cc).
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum RingMode {
    Ketama,
    KetamaMd5,
    KetamaWeighted,
}

/// libhashkit's default hash (Jenkins one-at-a-time); bytes go through a signed `char`.
fn one_at_a_time(key: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in key {
        h = h.wrapping_add(b as i8 as i32 as u32);
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
    }
    h = h.wrapping_add(h << 3);
    h ^= h >> 11;
    h.wrapping_add(h << 15)
}

fn md5_point(d: &[u8; 16], align: usize) -> u32 {
    u32::from_le_bytes([
        d[4 * align],
        d[4 * align + 1],
        d[4 * align + 2],
        d[4 * align + 3],
    ])
}

struct Ring {
    mode: RingMode,
    points: Vec<(u32, u32)>, // (point, server index), sorted as libmemcached's qsort
}

impl Ring {
    fn new(servers: &[(String, u16)], mode: RingMode) -> Ring {
        let mut points = Vec::new();
        let n = servers.len() as f32;
        for (idx, (host, port)) in servers.iter().enumerate() {
            // MEMCACHED_DEFAULT_PORT is left out of the point name.
            let name = |i: u32| {
                if *port == 11211 {
                    format!("{host}-{i}")
                } else {
                    format!("{host}:{port}-{i}")
                }
            };
            if mode == RingMode::KetamaWeighted {
                // All weights 1; the float formula is kept so rounding matches exactly.
                let pct = 1.0f32 / n;
                let per_server = ((pct * 160.0 / 4.0 * n + 0.000_000_000_1f32).floor() as u32) * 4;
                for i in 0..per_server / 4 {
                    let d = md5(name(i).as_bytes());
                    for a in 0..4 {
                        points.push((md5_point(&d, a), idx as u32));
                    }
                }
            } else {
                for i in 0..100 {
                    points.push((Self::hash_with(mode, name(i).as_bytes()), idx as u32));
                }
            }
        }
        points.sort_unstable();
        Ring { mode, points }
    }

    fn hash_with(mode: RingMode, key: &[u8]) -> u32 {
        match mode {
            RingMode::Ketama => one_at_a_time(key),
            RingMode::KetamaMd5 | RingMode::KetamaWeighted => md5_point(&md5(key), 0),
        }
    }

    /// Index of the server owning `key`: the first point >= hash, wrapping.
    fn owner(&self, key: &[u8]) -> usize {
        let h = Self::hash_with(self.mode, key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        let (_, s) = self
            .points
            .get(i)
            .or(self.points.first())
            .copied()
            .unwrap_or((0, 0));
        s as usize
    }
}

// ---------------------------------------------------------------------------------------
// Random numbers, Zipf, latency histogram.
// ---------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// Zipf over ranks 1..=n by rejection-inversion (Hörmann & Derflinger 1996): O(1) per
/// sample and no O(n) table, valid for any exponent > 0.
struct Zipf {
    n: f64,
    s: f64,
    hx1: f64,
    hn: f64,
    cut: f64,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let mut z = Zipf {
            n: n as f64,
            s,
            hx1: 0.0,
            hn: 0.0,
            cut: 0.0,
        };
        z.hx1 = z.hi(1.5) - 1.0;
        z.hn = z.hi(n as f64 + 0.5);
        z.cut = 2.0 - z.hi_inv(z.hi(2.5) - z.h(2.0));
        z
    }
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }
    fn hi(&self, x: f64) -> f64 {
        let lx = x.ln();
        let t = (1.0 - self.s) * lx;
        let q = if t.abs() > 1e-8 {
            t.exp_m1() / t
        } else {
            1.0 + t * 0.5 * (1.0 + t / 3.0 * (1.0 + 0.25 * t))
        };
        q * lx
    }
    fn hi_inv(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        let q = if t.abs() > 1e-8 {
            t.ln_1p() / t
        } else {
            1.0 - t * (0.5 - t * (1.0 / 3.0 - 0.25 * t))
        };
        (q * x).exp()
    }
    /// Rank in 0..n (0 is the most popular).
    fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.hn + rng.unit() * (self.hx1 - self.hn);
            let x = self.hi_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.cut || u >= self.hi(k + 0.5) - self.h(k) {
                return k as u64 - 1;
            }
        }
    }
}

/// Log-linear histogram of nanoseconds: 128 linear sub-buckets per power of two, so a
/// reported percentile is within 0.8% of the true value (HdrHistogram's layout).
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; 64 * SUB],
            total: 0,
            max: 0,
            sum: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        (shift as usize + 1) * SUB + ((v >> shift) as usize - SUB)
    }
    fn value(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i / SUB - 1) as u32;
        (((i % SUB + SUB) as u64) << shift) + ((1u64 << shift) >> 1)
    }
    fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
        self.sum += ns as u128;
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }
    /// Percentile in microseconds.
    fn pct_us(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let want = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Hist::value(i).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }
}

// ---------------------------------------------------------------------------------------
// Run configuration and the command line.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Gets and sets (or quiet multi-get batches), for a fixed time.
    Mixed,
    /// Set every key once, `items` of them, then stop.
    Fill,
    /// Zipf gets; a miss is followed by a set of that key.
    Hits,
}

#[derive(Clone, Debug)]
struct Cfg {
    servers: Vec<String>,
    ring_mode: RingMode,
    mode: Mode,
    conns: usize,
    pipeline: usize,
    quiet_batch: usize,
    keys: u64,
    value: ValueSpec,
    get_ratio: f64,
    zipf: f64,
    prefill: bool,
    duration: f64,
    warmup: f64,
    threads: usize,
    rate: f64,
    key_prefix: String,
    items: u64,
    fill_bytes: u64,
    seed: u64,
    /// Count-based run: each connection issues its share of warmup_ops + ops, then stops.
    ops: u64,
    warmup_ops: u64,
    client_cpu: Option<usize>,
}

impl Default for Cfg {
    fn default() -> Cfg {
        Cfg {
            servers: Vec::new(),
            ring_mode: RingMode::Ketama,
            mode: Mode::Mixed,
            conns: 50,
            pipeline: 1,
            quiet_batch: 0,
            keys: 100_000,
            value: ValueSpec { min: 32, max: 32 },
            get_ratio: 0.9,
            zipf: 0.0,
            prefill: false,
            duration: 5.0,
            warmup: 1.0,
            threads: 1,
            rate: 0.0,
            key_prefix: "key:".into(),
            items: 1_000_000,
            fill_bytes: 0,
            seed: 1,
            ops: 0,
            warmup_ops: 0,
            client_cpu: None,
        }
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Res<T> {
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

fn parse_ring_mode(v: &str) -> Res<RingMode> {
    match v {
        "ketama" => Ok(RingMode::Ketama),
        "ketama-md5" => Ok(RingMode::KetamaMd5),
        "ketama-weighted" => Ok(RingMode::KetamaWeighted),
        _ => Err(format!(
            "--ring-mode: expected ketama, ketama-md5 or ketama-weighted, got {v:?}"
        )),
    }
}

/// Splits `--flag value` / `--flag=value` pairs; bare words are returned as positionals.
type Flags = Vec<(String, String)>;

fn split_args(args: &[String], boolean: &[&str]) -> Res<(Flags, Vec<String>)> {
    let (mut flags, mut pos) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(f) = a.strip_prefix("--") {
            if let Some((k, v)) = f.split_once('=') {
                flags.push((k.to_string(), v.to_string()));
            } else if boolean.contains(&f) {
                flags.push((f.to_string(), "true".into()));
            } else {
                let v = it.next().ok_or(format!("--{f} needs a value"))?;
                flags.push((f.to_string(), v.clone()));
            }
        } else {
            pos.push(a.clone());
        }
    }
    Ok((flags, pos))
}

fn apply_flag(c: &mut Cfg, k: &str, v: &str) -> Res<bool> {
    let f = format!("--{k}");
    match k {
        "server" => c.servers.push(v.to_string()),
        "ring-mode" => c.ring_mode = parse_ring_mode(v)?,
        "conns" => c.conns = num(&f, v)?,
        "pipeline" => c.pipeline = num(&f, v)?,
        "quiet-batch" => c.quiet_batch = num(&f, v)?,
        "keys" => c.keys = num(&f, v)?,
        "value-size" => {
            let (a, b) = v.split_once("..").unwrap_or((v, v));
            c.value = ValueSpec {
                min: num(&f, a)?,
                max: num(&f, b)?,
            };
        }
        "get-ratio" => c.get_ratio = num(&f, v)?,
        "zipf" => c.zipf = num(&f, v)?,
        "prefill" => c.prefill = v != "false",
        "duration" => c.duration = num(&f, v)?,
        "warmup" => c.warmup = num(&f, v)?,
        "threads" => c.threads = num(&f, v)?,
        "rate" => c.rate = num(&f, v)?,
        "key-prefix" => c.key_prefix = v.to_string(),
        "items" => c.items = num(&f, v)?,
        "fill-bytes" => c.fill_bytes = num(&f, v)?,
        "seed" => c.seed = num(&f, v)?,
        "ops" => c.ops = num(&f, v)?,
        "warmup-ops" => c.warmup_ops = num(&f, v)?,
        "client-cpu" => c.client_cpu = Some(num(&f, v)?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn validate(c: &Cfg) -> Res<()> {
    if c.servers.is_empty() {
        return Err("give at least one --server HOST:PORT".into());
    }
    if c.conns == 0 || c.pipeline == 0 || c.threads == 0 || c.keys == 0 {
        return Err("--conns, --pipeline, --threads and --keys must be > 0".into());
    }
    if c.keys > 9_999_999_999u64.min(u32::MAX as u64) {
        return Err("--keys must fit in 10 digits and 32 bits".into());
    }
    if c.key_prefix.len() + 10 > 250 {
        return Err("--key-prefix too long (keys are at most 250 bytes)".into());
    }
    if !(0.0..=1.0).contains(&c.get_ratio) || c.zipf < 0.0 || c.duration <= 0.0 {
        return Err("--get-ratio must be in [0,1], --zipf >= 0, --duration > 0".into());
    }
    Ok(())
}

fn split_host_port(s: &str) -> Res<(String, u16)> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or(format!("server {s:?}: expected HOST:PORT"))?;
    Ok((
        h.trim_matches(|c| c == '[' || c == ']').to_string(),
        num("--server", p)?,
    ))
}

// ---------------------------------------------------------------------------------------
// The worker: mio loop over a share of the connections.
// ---------------------------------------------------------------------------------------

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

#[derive(Default)]
struct Stats {
    gets: u64,
    sets: u64,
    hits: u64,
    misses: u64,
    keys: u64,
    batches: u64,
    errors: u64,
    samples: Vec<String>,
    hist: Option<Hist>,
    elapsed: f64,
    offered: f64,
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
    fn ops(&self) -> u64 {
        if self.batches > 0 {
            self.batches + self.sets
        } else {
            self.gets + self.sets
        }
    }
}

/// What every worker shares: the config, and with several servers who owns which key.
struct Plan {
    cfg: Cfg,
    addrs: Vec<SocketAddr>,
    /// Per server, the key ids it owns (only with more than one server).
    owned: Vec<Vec<u32>>,
    owner: Vec<u16>,
    zipf: Option<Zipf>,
    /// Number of keys written by a fill.
    fill_items: u64,
}

impl Plan {
    fn new(cfg: Cfg) -> Res<Plan> {
        validate(&cfg)?;
        let mut addrs = Vec::new();
        let mut named = Vec::new();
        for s in &cfg.servers {
            let a = s.to_socket_addrs().map_err(|e| format!("{s}: {e}"))?.next();
            addrs.push(a.ok_or(format!("{s}: no address"))?);
            named.push(split_host_port(s)?);
        }
        let fill_items = if cfg.fill_bytes > 0 {
            let (mut n, mut bytes) = (0u64, 0u64);
            while bytes < cfg.fill_bytes {
                bytes += cfg.value.len(n as u32) as u64;
                n += 1;
            }
            n
        } else if cfg.mode == Mode::Fill {
            cfg.items
        } else {
            cfg.keys
        };
        let (mut owned, mut owner) = (Vec::new(), Vec::new());
        if addrs.len() > 1 {
            let ring = Ring::new(&named, cfg.ring_mode);
            let n = fill_items.max(cfg.keys);
            owned = vec![Vec::new(); addrs.len()];
            for id in 0..n as u32 {
                let s = ring.owner(&key_string(&cfg.key_prefix, id));
                owner.push(s as u16);
                owned[s].push(id);
            }
        }
        let zipf = (cfg.zipf > 0.0).then(|| Zipf::new(cfg.keys, cfg.zipf));
        Ok(Plan {
            cfg,
            addrs,
            owned,
            owner,
            zipf,
            fill_items,
        })
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
    scratch: Vec<u8>,
    interval_ns: f64,
    registry: mio::Registry,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl<'a> Worker<'a> {
    fn pick_key(&mut self, server: usize) -> u32 {
        let p = self.plan;
        for _ in 0..10_000 {
            let id = match &p.zipf {
                Some(z) => z.sample(&mut self.rng) as u32,
                None => self.rng.below(p.cfg.keys) as u32,
            };
            if p.owner.is_empty() || p.owner[id as usize] as usize == server {
                return id;
            }
        }
        0 // this server owns (almost) no keys: rare, harmless
    }

    /// Queues one request (or quiet batch) on connection `ci`; false when nothing is left.
    fn issue(&mut self, ci: usize, t0: Instant) -> bool {
        let p = self.plan;
        let cfg = &p.cfg;
        let prefix = cfg.key_prefix.as_bytes();
        let server = self.conns[ci].server;
        let share = |n: u64| n.div_ceil(cfg.conns as u64);
        let sent = self.conns[ci].sent;
        if cfg.ops > 0 && sent >= share(cfg.ops) + share(cfg.warmup_ops) {
            return false;
        }
        let warm = cfg.ops > 0 && sent < share(cfg.warmup_ops);
        let (kind, id) = match cfg.mode {
            Mode::Fill => {
                let c = &mut self.conns[ci];
                let id = if p.owned.is_empty() {
                    c.fill_next as u64
                } else {
                    p.owned[server]
                        .get(c.fill_next)
                        .map_or(u64::MAX, |&i| i as u64)
                };
                if id >= p.fill_items {
                    return false;
                }
                c.fill_next += c.fill_stride;
                (Kind::Set, id as u32)
            }
            Mode::Hits => match self.conns[ci].todo_sets.pop_front() {
                Some(id) => (Kind::Set, id),
                None => (Kind::Get, self.pick_key(server)),
            },
            Mode::Mixed if cfg.quiet_batch > 0 => (Kind::Batch(cfg.quiet_batch as u32), 0),
            Mode::Mixed => {
                let id = self.pick_key(server);
                let kind = if self.rng.unit() < cfg.get_ratio {
                    Kind::Get
                } else {
                    Kind::Set
                };
                (kind, id)
            }
        };
        let opaque = self.conns[ci].opaque;
        match kind {
            Kind::Get => put_get(&mut self.conns[ci].out, OP_GET, prefix, id, opaque),
            Kind::Set => {
                let vlen = cfg.value.len(id);
                put_set(&mut self.conns[ci].out, prefix, id, vlen, opaque);
            }
            Kind::Batch(n) => {
                for i in 0..n {
                    let id = self.pick_key(server);
                    let c = &mut self.conns[ci];
                    c.batch_ids.push_back(id);
                    put_get(&mut c.out, OP_GETKQ, prefix, id, opaque.wrapping_add(i));
                }
                put_header(
                    &mut self.conns[ci].out,
                    OP_NOOP,
                    0,
                    0,
                    0,
                    opaque.wrapping_add(n),
                );
            }
        }
        let c = &mut self.conns[ci];
        c.opaque = opaque.wrapping_add(match kind {
            Kind::Batch(n) => n + 1,
            _ => 1,
        });
        c.pending.push_back(Pending {
            opaque,
            kind,
            id,
            t0,
            warm,
        });
        c.sent += 1;
        true
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

    fn read(&mut self, ci: usize) {
        loop {
            let c = &mut self.conns[ci];
            if c.dead {
                return;
            }
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
                    self.st.error(format!(
                        "read from {}: {e}",
                        self.plan.cfg.servers[c.server]
                    ));
                    return;
                }
            }
        }
    }

    fn parse(&mut self, ci: usize) {
        loop {
            let c = &self.conns[ci];
            let avail = c.in_end - c.in_start;
            if avail < HEADER_LEN || c.dead {
                return;
            }
            let h = parse_header(&c.inb[c.in_start..]);
            if h.magic != RES_MAGIC {
                let m = format!("bad magic 0x{:02x} (stream out of sync)", h.magic);
                self.conns[ci].dead = true;
                return self.st.error(m);
            }
            if avail < HEADER_LEN + h.body {
                return;
            }
            let (s, e) = (c.in_start + HEADER_LEN, c.in_start + HEADER_LEN + h.body);
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

    /// Checks the value part of a hit: flags, length and bytes must be what we set.
    fn check_value(&mut self, id: u32, h: &Header, body: &[u8]) -> Result<(), String> {
        if h.extras != 4 || h.key_len + h.extras > body.len() {
            return Err(format!(
                "hit with extras={} key={} body={}",
                h.extras, h.key_len, h.body
            ));
        }
        let flags = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let value = &body[4 + h.key_len..];
        self.scratch.clear();
        put_value(&mut self.scratch, id, self.plan.cfg.value.len(id));
        if flags != ITEM_FLAGS || value != self.scratch.as_slice() {
            return Err(format!(
                "wrong value for {}: flags 0x{flags:08x}, {} bytes (want {})",
                String::from_utf8_lossy(&key_string(&self.plan.cfg.key_prefix, id)),
                value.len(),
                self.scratch.len()
            ));
        }
        Ok(())
    }

    fn response(&mut self, ci: usize, h: &Header, body: &[u8]) {
        let now = Instant::now();
        let Some(front) = self.conns[ci].pending.front() else {
            self.conns[ci].dead = true;
            return self.st.error(format!(
                "unexpected response op 0x{:02x}: nothing pending",
                h.op
            ));
        };
        let (opaque, kind, id, t0) = (front.opaque, front.kind, front.id, front.t0);
        let finite = self.plan.cfg.mode == Mode::Fill || self.plan.cfg.ops > 0;
        let counted = !front.warm && (finite || (now <= self.end && t0 >= self.mstart));
        if h.key_len + h.extras > h.body {
            self.conns[ci].dead = true;
            return self.st.error(format!(
                "lengths: key {} + extras {} > body {}",
                h.key_len, h.extras, h.body
            ));
        }
        let mut done = true;
        let res: Result<(), String> = match kind {
            Kind::Batch(n) if h.op == OP_GETKQ => {
                done = false;
                let idx = h.opaque.wrapping_sub(opaque);
                let c = &self.conns[ci];
                if idx >= n || c.batch_last.is_some_and(|l| idx <= l) || h.status != STATUS_OK {
                    Err(format!(
                        "GETKQ opaque {idx} / status {} out of order in batch",
                        h.status
                    ))
                } else {
                    let kid = c.batch_ids[idx as usize];
                    let key = &body[h.extras..h.extras + h.key_len];
                    self.conns[ci].batch_last = Some(idx);
                    self.conns[ci].batch_hits += 1;
                    if key != key_string(&self.plan.cfg.key_prefix, kid).as_slice() {
                        Err(format!(
                            "GETKQ returned key {:?}",
                            String::from_utf8_lossy(key)
                        ))
                    } else {
                        self.check_value(kid, h, body)
                    }
                }
            }
            Kind::Batch(n) => {
                let c = &mut self.conns[ci];
                let hits = c.batch_hits as u64;
                c.batch_hits = 0;
                c.batch_last = None;
                c.batch_ids.drain(..n as usize);
                if h.op != OP_NOOP
                    || h.opaque != opaque.wrapping_add(n)
                    || h.status != 0
                    || h.body != 0
                {
                    Err(format!(
                        "batch end: op 0x{:02x} status {} body {}",
                        h.op, h.status, h.body
                    ))
                } else {
                    if counted {
                        self.st.batches += 1;
                        self.st.keys += n as u64;
                        self.st.hits += hits;
                        self.st.misses += n as u64 - hits;
                    }
                    Ok(())
                }
            }
            _ if h.opaque != opaque => {
                Err(format!("opaque {} where {} was expected", h.opaque, opaque))
            }
            Kind::Get if h.op != OP_GET => Err(format!("op 0x{:02x} answering a GET", h.op)),
            Kind::Set if h.op != OP_SET => Err(format!("op 0x{:02x} answering a SET", h.op)),
            Kind::Get if h.status == STATUS_KEY_ENOENT => {
                if self.plan.cfg.mode == Mode::Hits {
                    self.conns[ci].todo_sets.push_back(id);
                }
                if counted {
                    self.st.gets += 1;
                    self.st.misses += 1;
                }
                if h.extras != 0 {
                    Err("miss with extras".into())
                } else {
                    Ok(())
                }
            }
            Kind::Get if h.status == STATUS_OK => {
                if counted {
                    self.st.gets += 1;
                    self.st.hits += 1;
                }
                if h.key_len != 0 {
                    Err("GET hit carries a key".into())
                } else {
                    self.check_value(id, h, body)
                }
            }
            Kind::Set if h.status == STATUS_OK && h.body == 0 => {
                if counted {
                    self.st.sets += 1;
                }
                Ok(())
            }
            _ => Err(format!(
                "op 0x{:02x} status 0x{:04x} body {} ({})",
                h.op,
                h.status,
                h.body,
                String::from_utf8_lossy(&body[h.extras + h.key_len..])
            )),
        };
        if let Err(m) = res {
            let s = &self.plan.cfg.servers[self.conns[ci].server];
            self.st.error(format!("{s}: {m}"));
        }
        if done {
            self.conns[ci].pending.pop_front();
            if counted {
                self.hist
                    .record(now.saturating_duration_since(t0).as_nanos() as u64);
            }
        }
    }

    /// Closed loop: top each connection up to `pipeline`. Open loop: send what is due.
    fn top_up(&mut self, ci: usize, now: Instant) -> bool {
        let cfg = &self.plan.cfg;
        let mut any = false;
        while !self.conns[ci].dead && self.conns[ci].pending.len() < cfg.pipeline && now < self.end
        {
            let t0 = if cfg.rate > 0.0 {
                let c = &self.conns[ci];
                let due = self.start
                    + Duration::from_nanos(
                        (c.first_due_ns + c.sent as f64 * self.interval_ns) as u64,
                    );
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
            .map(|c| {
                self.start
                    + Duration::from_nanos(
                        (c.first_due_ns + c.sent as f64 * self.interval_ns) as u64,
                    )
            })
            .min()
    }

    fn run(mut self, poll: &mut Poll) -> Stats {
        let mut events = Events::with_capacity(1024);
        let open = self.plan.cfg.rate > 0.0;
        for ci in 0..self.conns.len() {
            self.top_up(ci, Instant::now());
            self.flush(ci);
        }
        loop {
            let now = Instant::now();
            let finished = self.conns.iter().all(|c| c.dead || c.pending.is_empty());
            let finite = self.plan.cfg.mode == Mode::Fill || self.plan.cfg.ops > 0;
            if now >= self.end || (finite && finished) {
                break;
            }
            let mut timeout = (self.end - now).min(Duration::from_millis(100));
            if open {
                if let Some(d) = self.next_due() {
                    // epoll waits in whole milliseconds: spin the last one.
                    let wait = d.saturating_duration_since(now);
                    timeout = timeout.min(wait.saturating_sub(Duration::from_millis(1)));
                }
            }
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
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
                let now = Instant::now();
                self.top_up(ci, now);
                self.flush(ci);
            }
            if open {
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

fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = StdTcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(TcpStream::from_std(s))
}

fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0, ..) affects this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs one phase: connects, drives the load for warmup + duration (or until a fill is
/// done), merges the workers' results. `on_measure` runs when the measured window opens
/// and closes, so the caller can sample CPU counters at the right moments.
fn run_phase(plan: &Plan, on_measure: &mut dyn FnMut(bool)) -> Res<Stats> {
    let cfg = &plan.cfg;
    let nserv = plan.addrs.len();
    let mut per_thread: Vec<Vec<Conn>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    let conns = cfg.conns.max(nserv);
    for g in 0..conns {
        let server = g % nserv;
        let (rank, of) = (
            g / nserv,
            conns / nserv + usize::from(server < conns % nserv),
        );
        per_thread[g % cfg.threads].push(Conn {
            sock: connect(plan.addrs[server])?,
            server,
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            inb: vec![0; READ_CHUNK],
            in_start: 0,
            in_end: 0,
            pending: VecDeque::new(),
            batch_ids: VecDeque::new(),
            batch_hits: 0,
            batch_last: None,
            opaque: (g as u32) << 20,
            todo_sets: VecDeque::new(),
            fill_next: rank,
            fill_stride: of,
            sent: 0,
            first_due_ns: g as f64 * 1e9 / cfg.rate.max(1.0),
            dead: false,
            want_write: false,
        });
    }
    // Fills and count-based runs end when done; their duration is only a safety bound.
    let fill = cfg.mode == Mode::Fill || cfg.ops > 0;
    let warm = if fill { 0.0 } else { cfg.warmup };
    let start = Instant::now();
    let mstart = start + Duration::from_secs_f64(warm);
    let end = mstart
        + Duration::from_secs_f64(if fill {
            cfg.duration.max(600.0)
        } else {
            cfg.duration
        });
    let interval_ns = cfg.conns as f64 * 1e9 / cfg.rate.max(1e-9);
    let results = std::thread::scope(|sc| -> Res<Vec<Stats>> {
        let mut handles = Vec::new();
        for (t, conns) in per_thread.into_iter().enumerate() {
            let mut poll = Poll::new().map_err(|e| e.to_string())?;
            let mut conns = conns;
            for (i, c) in conns.iter_mut().enumerate() {
                poll.registry()
                    .register(&mut c.sock, Token(i), Interest::READABLE)
                    .map_err(|e| e.to_string())?;
            }
            let w = Worker {
                plan,
                conns,
                rng: Rng(cfg.seed.wrapping_mul(0x1000_0001).wrapping_add(t as u64)),
                st: Stats::default(),
                hist: Hist::new(),
                start,
                mstart,
                end,
                scratch: Vec::new(),
                interval_ns,
                registry: poll.registry().try_clone().map_err(|e| e.to_string())?,
            };
            handles.push(sc.spawn(move || w.run(&mut poll)));
        }
        if !fill {
            std::thread::sleep(mstart.saturating_duration_since(Instant::now()));
            on_measure(true);
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            on_measure(false);
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "worker thread panicked".to_string()))
            .collect()
    })?;
    let mut st = Stats::default();
    for r in results {
        st.merge(r);
    }
    st.elapsed = if fill {
        start.elapsed().as_secs_f64()
    } else {
        cfg.duration
    };
    st.offered = cfg.rate;
    Ok(st)
}

// ---------------------------------------------------------------------------------------
// Reporting.
// ---------------------------------------------------------------------------------------

struct Summary {
    ops_s: f64,
    keys_s: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn summarize(st: &Stats) -> Summary {
    let e = st.elapsed.max(1e-9);
    let h = st.hist.as_ref();
    let p = |q: f64| h.map_or(0.0, |h| h.pct_us(q));
    Summary {
        ops_s: st.ops() as f64 / e,
        keys_s: st.keys as f64 / e,
        p50: p(50.0),
        p90: p(90.0),
        p99: p(99.0),
        p999: p(99.9),
        max: h.map_or(0.0, |h| h.max as f64 / 1000.0),
    }
}

fn report(cfg: &Cfg, st: &Stats, label: &str) {
    let s = summarize(st);
    let q = cfg.quiet_batch > 0;
    println!(
        "{label}: servers={} conns={} pipeline={} threads={} keys/items={} value={}..{} {}",
        cfg.servers.join(","),
        cfg.conns,
        cfg.pipeline,
        cfg.threads,
        if cfg.mode == Mode::Fill {
            cfg.items
        } else {
            cfg.keys
        },
        cfg.value.min,
        cfg.value.max,
        if cfg.rate > 0.0 {
            format!("rate={:.0}/s", cfg.rate)
        } else {
            "closed-loop".into()
        }
    );
    println!(
        "  {:<12} {:>14.0}   ({:.1} s measured)",
        "ops/s", s.ops_s, st.elapsed
    );
    if q {
        println!(
            "  {:<12} {:>14.0}   (GETKQ batches of {})",
            "keys/s", s.keys_s, cfg.quiet_batch
        );
    }
    println!(
        "  {:<12} {:>14}   sets {}   hits {}   misses {}",
        "gets",
        st.gets + st.keys,
        st.sets,
        st.hits,
        st.misses
    );
    let lookups = st.hits + st.misses;
    if lookups > 0 {
        println!(
            "  {:<12} {:>14.4}",
            "hit ratio",
            st.hits as f64 / lookups as f64
        );
    }
    println!("  {:<12} {:>14}", "errors", st.errors);
    println!(
        "  latency µs   p50 {:.1}   p90 {:.1}   p99 {:.1}   p99.9 {:.1}   max {:.1}",
        s.p50, s.p90, s.p99, s.p999, s.max
    );
    let mut j = String::new();
    let _ = write!(
        j,
        "{{\"label\":\"{label}\",\"ops_per_sec\":{:.1},\"keys_per_sec\":{:.1},\"gets\":{},\"sets\":{},\"hits\":{},\"misses\":{},\"errors\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"conns\":{},\"pipeline\":{},\"quiet_batch\":{},\"rate\":{:.0},\"seconds\":{:.2}}}",
        s.ops_s, s.keys_s, st.gets + st.keys, st.sets, st.hits, st.misses, st.errors, s.p50, s.p90, s.p99, s.p999, s.max,
        cfg.conns, cfg.pipeline, cfg.quiet_batch, cfg.rate, st.elapsed
    );
    println!("{j}");
}

/// Prints errors loudly; true when there were any.
fn shout_errors(st: &Stats, what: &str) -> bool {
    if st.errors == 0 {
        return false;
    }
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!(
        "!!! {what}: {} ERRORS — the numbers above are NOT valid",
        st.errors
    );
    for s in &st.samples {
        eprintln!("!!!   {s}");
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    true
}

fn fill_cfg(cfg: &Cfg, items: u64) -> Cfg {
    Cfg {
        mode: Mode::Fill,
        items,
        pipeline: 64,
        conns: cfg.conns.min(8),
        quiet_batch: 0,
        rate: 0.0,
        ..cfg.clone()
    }
}

/// `run`, `fill` and `hits` from the command line.
fn cmd_run(cfg: Cfg) -> Res<i32> {
    if let Some(cpu) = cfg.client_cpu {
        pin_current_thread(cpu);
    }
    let mut bad = false;
    if cfg.prefill && cfg.mode != Mode::Fill {
        let plan = Plan::new(fill_cfg(&cfg, cfg.keys))?;
        let st = run_phase(&plan, &mut |_| {})?;
        println!("prefill: {} keys in {:.2} s", st.sets, st.elapsed);
        bad |= shout_errors(&st, "prefill");
    }
    let plan = Plan::new(cfg)?;
    let st = run_phase(&plan, &mut |_| {})?;
    let label = match plan.cfg.mode {
        Mode::Fill => "fill",
        Mode::Hits => "hits",
        Mode::Mixed => "run",
    };
    report(&plan.cfg, &st, label);
    bad |= shout_errors(&st, label);
    Ok(if bad { 2 } else { 0 })
}

// ---------------------------------------------------------------------------------------
// `ring`: which server owns a key, and how even the ring is.
// ---------------------------------------------------------------------------------------

fn cmd_ring(cfg: &Cfg, balance: Option<usize>, keys: &[String]) -> Res<i32> {
    if let Some(n) = balance {
        let servers: Vec<(String, u16)> = (0..n)
            .map(|i| ("127.0.0.1".to_string(), 11211 + i as u16))
            .collect();
        let ring = Ring::new(&servers, cfg.ring_mode);
        let total = 1_000_000u32;
        let mut counts = vec![0u64; n];
        for id in 0..total {
            counts[ring.owner(&key_string(&cfg.key_prefix, id))] += 1;
        }
        let mean = total as f64 / n as f64;
        let (max, min) = (
            *counts.iter().max().unwrap_or(&0),
            *counts.iter().min().unwrap_or(&0),
        );
        for (i, c) in counts.iter().enumerate() {
            println!("127.0.0.1:{}\t{c}\t{:.4}", 11211 + i, *c as f64 / mean);
        }
        println!(
            "{{\"servers\":{n},\"keys\":{total},\"mode\":\"{:?}\",\"max_over_mean\":{:.4},\"min_over_mean\":{:.4}}}",
            cfg.ring_mode,
            max as f64 / mean,
            min as f64 / mean
        );
        return Ok(0);
    }
    if cfg.servers.is_empty() {
        return Err("ring: give --server HOST:PORT (repeatable) and keys, or --balance N".into());
    }
    let named: Vec<(String, u16)> = cfg
        .servers
        .iter()
        .map(|s| split_host_port(s))
        .collect::<Res<_>>()?;
    let ring = Ring::new(&named, cfg.ring_mode);
    let mut input = String::new();
    let keys: Vec<&str> = if keys.len() == 1 && keys[0] == "-" {
        io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| e.to_string())?;
        input.lines().collect()
    } else {
        keys.iter().map(String::as_str).collect()
    };
    // Buffered, and a closed pipe (`| head`) just ends the listing.
    let mut out = io::BufWriter::new(io::stdout().lock());
    for k in keys {
        let owner = &cfg.servers[ring.owner(k.as_bytes())];
        if writeln!(out, "{k}\t{owner}").is_err() {
            return Ok(0);
        }
    }
    let _ = out.flush();
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// Servers we start for `compare`: spawn pinned, wait, sample /proc, read STAT, kill.
// ---------------------------------------------------------------------------------------

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    cmdline: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn start_server(name: &'static str, path: &str, cpu: usize, mb: u64) -> Res<Server> {
    let port = free_port()?;
    let mut args: Vec<String> = vec!["-c".into(), cpu.to_string(), path.into()];
    if name == "memcached" {
        args.extend(["-t", "1"].map(String::from));
    }
    args.extend(["-m".into(), mb.to_string(), "-p".into(), port.to_string()]);
    if name == "memcached" {
        args.extend(["-U", "0", "-u", "root", "-l", "127.0.0.1"].map(String::from));
    }
    let cmdline = format!("taskset {}", args.join(" "));
    let log = std::env::temp_dir().join(format!("pincache-bench-{name}-{port}.log"));
    let f = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new("taskset")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .map_err(|e| format!("{cmdline}: {e}"))?;
    let mut srv = Server {
        name,
        child,
        port,
        cmdline,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(srv);
        }
        if let Ok(Some(status)) = srv.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before accepting; log: {}",
                srv.cmdline,
                log.display()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not accept within 10 s; log: {}",
                srv.cmdline,
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (tick(11) + tick(12)) / hz // fields 14 and 15, counted after "pid (comm)"
}

/// A line of /proc/PID/status in bytes (VmRSS, VmHWM).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One value from the binary STAT command (e.g. `curr_items`).
fn binary_stat(port: u16, name: &str) -> Res<u64> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        StdTcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = Vec::new();
    put_header(&mut req, OP_STAT, 0, 0, 0, 7);
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut found = None;
    loop {
        let mut hb = [0u8; HEADER_LEN];
        s.read_exact(&mut hb).map_err(|e| format!("STAT: {e}"))?;
        let h = parse_header(&hb);
        let mut body = vec![0u8; h.body];
        s.read_exact(&mut body).map_err(|e| format!("STAT: {e}"))?;
        if h.magic != RES_MAGIC || h.op != OP_STAT || h.status != 0 || h.key_len + h.extras > h.body
        {
            return Err(format!(
                "STAT: bad response op 0x{:02x} status {}",
                h.op, h.status
            ));
        }
        if h.key_len == 0 {
            return found.ok_or(format!("STAT has no {name}"));
        }
        let key = &body[h.extras..h.extras + h.key_len];
        if key == name.as_bytes() {
            let v = String::from_utf8_lossy(&body[h.extras + h.key_len..]).to_string();
            found = Some(num(name, v.trim())?);
        }
    }
}

// ---------------------------------------------------------------------------------------
// `compare`: pincache vs memcached, same core, alternating A B A B A B.
// ---------------------------------------------------------------------------------------

struct Sample {
    value: f64,
    extra: String,
    server_cpu: f64,
    bench_cpu: f64,
    lat: [f64; 3],
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn bench_cmdline(c: &Cfg, port: u16) -> String {
    let mut s = format!(
        "taskset -c {} pincache-bench run --server 127.0.0.1:{port} --conns {} --pipeline {} --keys {} --value-size {} --get-ratio {} --duration {} --warmup {}",
        c.client_cpu.unwrap_or(1), c.conns, c.pipeline, c.keys, c.value.min, c.get_ratio, c.duration, c.warmup
    );
    if c.quiet_batch > 0 {
        let _ = write!(s, " --quiet-batch {}", c.quiet_batch);
    }
    if c.rate > 0.0 {
        let _ = write!(s, " --rate {:.0}", c.rate);
    }
    s
}

/// Runs a throughput workload against a running server, sampling CPU over the window.
fn measure(cfg: &Cfg, srv: &Server, errors: &mut u64) -> Res<Sample> {
    let c = Cfg {
        servers: vec![format!("127.0.0.1:{}", srv.port)],
        ..cfg.clone()
    };
    let plan = Plan::new(c)?;
    let pid = srv.child.id().to_string();
    let (mut s0, mut b0, mut t0) = (0.0, 0.0, Instant::now());
    let (mut scpu, mut bcpu) = (0.0, 0.0);
    let st = run_phase(&plan, &mut |opening| {
        if opening {
            (s0, b0, t0) = (cpu_seconds(&pid), cpu_seconds("self"), Instant::now());
        } else {
            let wall = t0.elapsed().as_secs_f64().max(1e-9);
            scpu = (cpu_seconds(&pid) - s0) / wall * 100.0;
            bcpu = (cpu_seconds("self") - b0) / wall * 100.0;
        }
    })?;
    if shout_errors(&st, srv.name) {
        *errors += st.errors;
    }
    let s = summarize(&st);
    let value = if cfg.quiet_batch > 0 {
        s.keys_s
    } else {
        s.ops_s
    };
    Ok(Sample {
        value,
        extra: String::new(),
        server_cpu: scpu,
        bench_cpu: bcpu,
        lat: [s.p50, s.p99, s.p999],
    })
}

/// Server CPU time per operation: the figure for workloads where the bench, not
/// the server, sets the pace (large values, which the bench checks byte by byte).
fn server_us_per_op(s: &Sample) -> f64 {
    s.server_cpu / 100.0 / s.value.max(1e-9) * 1e6
}

fn cmd_compare(flags: &[(String, String)]) -> Res<i32> {
    let mut base = Cfg {
        client_cpu: Some(1),
        ..Cfg::default()
    };
    let (mut pc, mut mc) = (None, None);
    let (mut rounds, mut server_cpu) = (3usize, 0usize);
    let mut mo = MemOpts {
        mem_mb: 1024,
        bound_mb: 64,
        hits_mb: 64,
        item_size: 100,
    };
    let mut workloads = "p1,p16,quiet,latency,large".to_string();
    for (k, v) in flags {
        let f = format!("--{k}");
        match k.as_str() {
            "pincache" => pc = Some(v.clone()),
            "memcached" => mc = Some(v.clone()),
            "rounds" => rounds = num(&f, v)?,
            "workloads" => workloads = v.clone(),
            "server-cpu" => server_cpu = num(&f, v)?,
            "memory-mb" => mo.mem_mb = num(&f, v)?,
            "bound-mb" => mo.bound_mb = num(&f, v)?,
            "hits-mb" => mo.hits_mb = num(&f, v)?,
            "item-size" => mo.item_size = num(&f, v)?,
            _ if apply_flag(&mut base, k, v)? => {}
            _ => return Err(format!("compare: unknown flag --{k}")),
        }
    }
    let pc = pc.ok_or("compare: --pincache PATH is required")?;
    let mc = mc.or_else(|| {
        std::path::Path::new("/usr/bin/memcached")
            .exists()
            .then(|| "/usr/bin/memcached".into())
    });
    pin_current_thread(base.client_cpu.unwrap_or(1));
    let mut kinds: Vec<(&'static str, String)> = vec![("pincache", pc)];
    if let Some(m) = mc {
        kinds.push(("memcached", m));
    }
    let mut wl: Vec<String> = workloads.split(',').map(|s| s.trim().to_string()).collect();
    if wl.iter().any(|w| w == "latency") && !wl.iter().any(|w| w == "p1") {
        wl.insert(0, "p1".into()); // the latency rates are fractions of memcached's p1
    }
    let mut rows: Vec<String> = Vec::new();
    let mut errors = 0u64;
    let mut p1_max: Vec<f64> = vec![0.0; kinds.len()];
    let throughput = ["p1", "p16", "quiet", "latency", "large"];
    let mut servers: Vec<Server> = Vec::new();
    if wl.iter().any(|w| throughput.contains(&w.as_str())) {
        for (name, path) in &kinds {
            let srv = start_server(name, path, server_cpu, 1024)?;
            let plan = Plan::new(fill_cfg(
                &Cfg {
                    servers: vec![format!("127.0.0.1:{}", srv.port)],
                    ..base.clone()
                },
                base.keys,
            ))?;
            let st = run_phase(&plan, &mut |_| {})?;
            if shout_errors(&st, "prefill") {
                errors += st.errors;
            }
            println!("started {}  (prefilled {} keys)", srv.cmdline, st.sets);
            servers.push(srv);
        }
    }
    for w in &wl {
        let mut variants: Vec<(String, Cfg)> = Vec::new();
        let p1 = Cfg {
            conns: 50,
            pipeline: 1,
            get_ratio: 0.9,
            quiet_batch: 0,
            rate: 0.0,
            ..base.clone()
        };
        match w.as_str() {
            "p1" => variants.push(("p1".into(), p1)),
            "p16" => variants.push(("p16".into(), Cfg { pipeline: 16, ..p1 })),
            "quiet" => variants.push((
                "quiet".into(),
                Cfg {
                    quiet_batch: 100,
                    ..p1
                },
            )),
            "latency" => {
                let refmax = *p1_max.last().unwrap_or(&0.0);
                for frac in [0.5, 0.8] {
                    // Up to 16 in flight so sends are not held back by the client.
                    let c = Cfg {
                        rate: refmax * frac,
                        pipeline: 16,
                        ..p1.clone()
                    };
                    variants.push((format!("latency@{:.0}%", frac * 100.0), c));
                }
            }
            "large" => {
                // Its own keys, so the 32-byte keyspace of the others stays as it was.
                let c = Cfg {
                    keys: 2_000,
                    value: ValueSpec {
                        min: 100_000,
                        max: 100_000,
                    },
                    key_prefix: "large:".into(),
                    ..p1
                };
                for srv in &servers {
                    let fill = Cfg {
                        servers: vec![format!("127.0.0.1:{}", srv.port)],
                        ..c.clone()
                    };
                    let st = run_phase(&Plan::new(fill_cfg(&fill, c.keys))?, &mut |_| {})?;
                    if shout_errors(&st, "prefill") {
                        errors += st.errors;
                    }
                }
                variants.push(("large".into(), c));
            }
            "memory" | "bound" | "hits" => {
                let r = compare_memory(w, &kinds, &base, rounds, server_cpu, &mo, &mut errors)?;
                rows.extend(r);
                continue;
            }
            _ => return Err(format!("unknown workload {w:?}")),
        }
        for (label, c) in variants {
            println!("\n== {label} ==");
            for srv in &servers {
                println!("  server: {}", srv.cmdline);
                println!("  bench:  {}", bench_cmdline(&c, srv.port));
            }
            let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
            for round in 0..rounds {
                for (i, srv) in servers.iter().enumerate() {
                    let s = measure(&c, srv, &mut errors)?;
                    println!(
                        "  round {} {:<9} {:>12.0} {}   p50/p99/p99.9 µs {:.1}/{:.1}/{:.1}   server CPU {:.0}%  bench CPU {:.0}%",
                        round + 1, srv.name, s.value, if c.quiet_batch > 0 { "keys/s" } else { "ops/s " },
                        s.lat[0], s.lat[1], s.lat[2], s.server_cpu, s.bench_cpu
                    );
                    samples[i].push(s);
                }
            }
            let med = |i: usize, f: &dyn Fn(&Sample) -> f64| {
                median(&mut samples[i].iter().map(f).collect::<Vec<_>>())
            };
            let figure = if c.quiet_batch > 0 { "keys/s" } else { "ops/s" };
            let mut cells = Vec::new();
            for (i, max) in p1_max.iter_mut().enumerate() {
                let v = med(i, &|s| s.value);
                if label == "p1" {
                    *max = v;
                }
                let large = label == "large";
                cells.push(if large {
                    format!("{v:.0} ops/s, {:.1} µs", med(i, &server_us_per_op))
                } else if c.rate > 0.0 {
                    format!(
                        "{:.0} / {:.0} / {:.0}",
                        med(i, &|s| s.lat[0]),
                        med(i, &|s| s.lat[1]),
                        med(i, &|s| s.lat[2])
                    )
                } else {
                    format!("{v:.0}")
                });
            }
            let ratio = if kinds.len() == 2 {
                if label == "large" {
                    format!(
                        "{:.2} (server µs/op)",
                        med(0, &server_us_per_op) / med(1, &server_us_per_op).max(1e-9)
                    )
                } else if c.rate > 0.0 {
                    format!(
                        "{:.2} (p99)",
                        med(0, &|s| s.lat[1]) / med(1, &|s| s.lat[1]).max(1e-9)
                    )
                } else {
                    format!(
                        "{:.2}",
                        med(0, &|s| s.value) / med(1, &|s| s.value).max(1e-9)
                    )
                }
            } else {
                "-".into()
            };
            let cpu = |f: &dyn Fn(&Sample) -> f64| {
                (0..kinds.len())
                    .map(|i| format!("{:.0}%", med(i, f)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let fig = if label == "large" {
                "ops/s, server CPU µs per op (100 KB values)".to_string()
            } else if c.rate > 0.0 {
                format!("p50/p99/p99.9 µs at {:.0}/s", c.rate)
            } else {
                figure.to_string()
            };
            let row = format!(
                "| {label} | {fig} | {} | {ratio} | {} | {} |",
                cells.join(" | "),
                cpu(&|s| s.server_cpu),
                cpu(&|s| s.bench_cpu)
            );
            println!("  median: {row}");
            if kinds.len() == 2 {
                // The spread says how far one run's ratio can be trusted.
                let figure = |s: &Sample| {
                    if label == "large" {
                        server_us_per_op(s)
                    } else if c.rate > 0.0 {
                        s.lat[1]
                    } else {
                        s.value
                    }
                };
                let per_round: Vec<String> = samples[0]
                    .iter()
                    .zip(&samples[1])
                    .map(|(a, b)| format!("{:.2}", figure(a) / figure(b).max(1e-9)))
                    .collect();
                println!("  ratio per round: {}", per_round.join(" "));
            }
            rows.push(row);
        }
    }
    drop(servers);
    let names: Vec<&str> = kinds.iter().map(|k| k.0).collect();
    println!(
        "\n| workload | figure | {} | ratio {} | server CPU ({}) | bench CPU |",
        names.join(" | "),
        names.join("/"),
        names.join(" / ")
    );
    println!("|---|---|{}---|---|---|", "---|".repeat(names.len()));
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\nmedians of {rounds} rounds, servers pinned to CPU {server_cpu}, bench to CPU {}.",
        base.client_cpu.unwrap_or(1)
    );
    if errors > 0 {
        eprintln!("\n!!! compare saw {errors} ERRORS: the table is NOT valid !!!");
        return Ok(2);
    }
    Ok(0)
}

/// `memory`, `bound`, `hits`: a fresh server per round, since they measure the store itself.
/// Sizes for `memory`, `bound` and `hits` (`--memory-mb --bound-mb --hits-mb --item-size`).
struct MemOpts {
    mem_mb: u64,
    bound_mb: u64,
    hits_mb: u64,
    item_size: usize,
}

fn compare_memory(
    w: &str,
    kinds: &[(&'static str, String)],
    base: &Cfg,
    rounds: usize,
    cpu: usize,
    mo: &MemOpts,
    errors: &mut u64,
) -> Res<Vec<String>> {
    println!("\n== {w} ==");
    let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (name, path)) in kinds.iter().enumerate() {
            let mb = match w {
                "memory" => mo.mem_mb,
                "bound" => mo.bound_mb,
                _ => mo.hits_mb,
            };
            let srv = start_server(name, path, cpu, mb)?;
            let server = vec![format!("127.0.0.1:{}", srv.port)];
            let pid = srv.child.id();
            let rss0 = proc_status_bytes(pid, "VmRSS");
            let (value, extra, st) = match w {
                "memory" => {
                    let c = Cfg {
                        servers: server,
                        value: ValueSpec {
                            min: mo.item_size,
                            max: mo.item_size,
                        },
                        ..fill_cfg(base, base.items)
                    };
                    let st = run_phase(&Plan::new(c)?, &mut |_| {})?;
                    let rss1 = proc_status_bytes(pid, "VmRSS");
                    let items = binary_stat(srv.port, "curr_items")?;
                    let per = (rss1 as f64 - rss0 as f64) / st.sets.max(1) as f64;
                    (
                        per,
                        format!(
                            "{} sets, curr_items {items}, RSS {} -> {} MiB",
                            st.sets,
                            rss0 >> 20,
                            rss1 >> 20
                        ),
                        st,
                    )
                }
                "bound" => {
                    let c = Cfg {
                        servers: server,
                        value: ValueSpec {
                            min: 10,
                            max: 100_000,
                        },
                        fill_bytes: (4 * mo.bound_mb) << 20,
                        ..fill_cfg(base, 0)
                    };
                    let st = run_phase(&Plan::new(c)?, &mut |_| {})?;
                    let hwm = proc_status_bytes(pid, "VmHWM");
                    let items = binary_stat(srv.port, "curr_items")?;
                    let ratio = hwm as f64 / (mo.bound_mb << 20) as f64;
                    (
                        ratio,
                        format!(
                            "{} sets, peak RSS {} MiB, items kept {items}",
                            st.sets,
                            hwm >> 20
                        ),
                        st,
                    )
                }
                _ => {
                    // Key space 4x what fits in -m at the raw size of key + value.
                    let vlen = mo.item_size;
                    let keys =
                        4 * (mo.hits_mb << 20) / (vlen as u64 + base.key_prefix.len() as u64 + 10);
                    let zipf = if base.zipf > 0.0 { base.zipf } else { 0.99 };
                    let c = Cfg {
                        servers: server,
                        mode: Mode::Hits,
                        keys,
                        zipf,
                        conns: 8,
                        pipeline: 8,
                        value: ValueSpec {
                            min: vlen,
                            max: vlen,
                        },
                        // Count-based, so a slower server is not judged on a colder cache.
                        warmup_ops: keys,
                        ops: keys / 2,
                        ..base.clone()
                    };
                    let st = run_phase(&Plan::new(c)?, &mut |_| {})?;
                    let ratio = st.hits as f64 / (st.hits + st.misses).max(1) as f64;
                    (
                        ratio,
                        format!("{keys} keys, Zipf {zipf}, {} gets", st.hits + st.misses),
                        st,
                    )
                }
            };
            if shout_errors(&st, name) {
                *errors += st.errors;
            }
            println!(
                "  round {} {:<9} {:>10.4}   {extra}   [{}]",
                round + 1,
                name,
                value,
                srv.cmdline
            );
            samples[i].push(Sample {
                value,
                extra,
                server_cpu: 0.0,
                bench_cpu: 0.0,
                lat: [0.0; 3],
            });
        }
    }
    let meds: Vec<f64> = samples
        .iter()
        .map(|s| median(&mut s.iter().map(|x| x.value).collect::<Vec<_>>()))
        .collect();
    let fig = match w {
        "memory" => "(RSS after - before) / item, bytes",
        "bound" => "peak RSS / -m",
        _ => "hit ratio",
    };
    let ratio = if meds.len() == 2 {
        format!("{:.2}", meds[0] / meds[1].max(1e-12))
    } else {
        "-".into()
    };
    let cells: Vec<String> = meds.iter().map(|m| format!("{m:.3}")).collect();
    let notes: Vec<String> = samples
        .iter()
        .filter_map(|s| s.last().map(|x| x.extra.clone()))
        .collect();
    println!("  notes: {}", notes.join(" | "));
    Ok(vec![format!(
        "| {w} | {fig} | {} | {ratio} | - | - |",
        cells.join(" | ")
    )])
}

// ---------------------------------------------------------------------------------------

fn usage() -> &'static str {
    "usage: pincache-bench [run|fill|hits|ring|compare] [flags]   (see the //! header of src/bin/pincache-bench.rs)
  run:     --server HOST:PORT (repeatable) --conns 50 --pipeline 1 --quiet-batch 0 --keys 100000
           --value-size 32 (or MIN..MAX) --get-ratio 0.9 --zipf S --prefill --duration 5 --warmup 1
           --threads 1 --rate OPS_PER_SEC --key-prefix key: --ring-mode ketama|ketama-md5|ketama-weighted
           --client-cpu N --seed N
  fill:    --items 1000000 --value-size 100 (keys key:%010d), pipelined; or --fill-bytes B
  hits:    --keys N --zipf 0.99: gets with set-on-miss, reports the hit ratio
  any:     --ops N --warmup-ops W: count-based instead of timed (checked, W not counted)
  ring:    --server A --server B KEY... (or - for stdin) | --balance N   [--ring-mode M]
  compare: --pincache PATH [--memcached PATH] [--rounds 3] [--workloads p1,p16,quiet,latency,large,memory,bound,hits]
           [--server-cpu 0 --client-cpu 1] [--duration 5] [--memory-mb 1024 --bound-mb 64 --hits-mb 64]
           [--items 1000000 --item-size 100] (memory: --items sets of --item-size bytes)"
}

fn real_main() -> Res<i32> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let sub = match args.first().map(String::as_str) {
        Some(s @ ("run" | "fill" | "hits" | "ring" | "compare")) => {
            let s = s.to_string();
            args.remove(0);
            s
        }
        Some("-h" | "--help" | "help") | None => {
            println!("{}", usage());
            return Ok(0);
        }
        _ if args
            .iter()
            .any(|a| a == "--print-ring-owner" || a.starts_with("--ring-balance")) =>
        {
            "ring".into()
        }
        _ => "run".into(),
    };
    let (flags, pos) = split_args(&args, &["prefill", "print-ring-owner"])?;
    if sub == "compare" {
        return cmd_compare(&flags);
    }
    let mut cfg = Cfg::default();
    let mut balance = None;
    match sub.as_str() {
        "fill" => {
            cfg.mode = Mode::Fill;
            cfg.value = ValueSpec { min: 100, max: 100 };
            cfg.conns = 4;
            cfg.pipeline = 64;
        }
        "hits" => {
            cfg.mode = Mode::Hits;
            cfg.zipf = 0.99;
            cfg.value = ValueSpec { min: 100, max: 100 };
        }
        _ => {}
    }
    for (k, v) in &flags {
        match k.as_str() {
            "balance" | "ring-balance" => balance = Some(num::<usize>("--balance", v)?),
            "print-ring-owner" => {}
            _ if apply_flag(&mut cfg, k, v)? => {}
            _ => return Err(format!("unknown flag --{k}\n{}", usage())),
        }
    }
    if sub == "ring" {
        return cmd_ring(&cfg, balance, &pos);
    }
    if !pos.is_empty() {
        return Err(format!("unexpected argument {:?}\n{}", pos[0], usage()));
    }
    cmd_run(cfg)
}

fn main() {
    env_logger::init();
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pincache-bench: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_matches_rfc1321_vectors() {
        assert_eq!(hex(&md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        let long =
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(hex(&md5(long)), "57edf4a22be3c955ac49da2e2107b67a");
    }

    #[test]
    fn histogram_percentiles_are_within_one_percent() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p99 = h.pct_us(99.0);
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.01, "{p99}");
        assert!((h.pct_us(50.0) - 50_000.0).abs() / 50_000.0 < 0.01);
    }

    #[test]
    fn zipf_rank_one_is_twice_rank_two_at_s1() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng(7);
        let mut c = [0u64; 3];
        for _ in 0..400_000 {
            let k = z.sample(&mut rng) as usize;
            if k < 3 {
                c[k] += 1;
            }
        }
        let r = c[0] as f64 / c[1] as f64;
        assert!((r - 2.0).abs() < 0.1, "{r}");
    }
}
