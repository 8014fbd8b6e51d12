//! `storm`: N connections opened as fast as possible, each sending one GET, while one
//! already connected client keeps doing GETs and measures them. Reports how long the
//! storm took to connect and to be answered, the kernel's listen queue overflows over
//! that time (each one a client waiting a 1 s SYN retransmit), and the client's latency.
//!
//! The probe sends at most one GET per `probe_every` (default 500 µs). Back to back, it
//! costs the bench's core in proportion to how fast the server answers it, and takes
//! that time from the openers on the same core (they run at a lower priority): a server
//! that serves the probe three times as often then shows a slower storm, which measures
//! the bench. Paced, the probe's load is the same against every server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::Res;
use crate::histogram::Hist;
use crate::wire::{parse_header, put_get, put_set, HEADER, OP_GET};
use pincache_bench::procfs::{listen_overflows, raise_nofile, CpuMeter};

/// How many connections a storm opens, and how often its probe may send a GET.
#[derive(Clone, Copy, Debug)]
pub struct StormSpec {
    pub conns: usize,
    /// Zero: back to back.
    pub probe_every: Duration,
}

/// The probe's default pace: 2,000 GETs a second at most.
pub const PROBE_EVERY: Duration = Duration::from_micros(500);

/// Storm clients' answers must all arrive within this.
const STORM_BOUND: Duration = Duration::from_secs(30);
/// Threads opening the storm's connections.
const OPENERS: usize = 4;

/// What one storm measured.
pub struct StormResult {
    pub connect_s: f64,
    pub answered_s: f64,
    pub answered: usize,
    pub refused: usize,
    /// ListenOverflows delta (whole namespace); None when /proc/net/netstat is unreadable.
    pub overflows: Option<u64>,
    pub probe: Hist,
    pub bench_cpu: f64,
}

/// Sends `req` and reads one whole response; false on any failure.
fn round_trip(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> bool {
    let mut header = [0u8; HEADER];
    if s.write_all(req).is_err() || s.read_exact(&mut header).is_err() {
        return false;
    }
    buf.resize(parse_header(&header).body, 0);
    s.read_exact(buf).is_ok()
}

/// The measuring client: GETs one key, one every `every` at most, until `stop`,
/// recording each GET's latency while `measuring` is set.
fn probe(
    addr: SocketAddr,
    every: Duration,
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> Res<Hist> {
    set_nice(-10);
    let mut s = TcpStream::connect(addr).map_err(|e| format!("storm probe: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut set, mut get, mut buf) = (Vec::new(), Vec::new(), Vec::new());
    put_set(&mut set, b"storm-probe:", 0, 32, 1);
    set.extend_from_slice(&[b'v'; 32]);
    put_get(&mut get, OP_GET, b"storm-probe:", 0, 2);
    if !round_trip(&mut s, &set, &mut buf) {
        return Err("storm probe: SET failed".into());
    }
    let mut hist = Hist::new();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        if !round_trip(&mut s, &get, &mut buf) {
            return Err("storm probe: GET failed".into());
        }
        if measuring.load(Ordering::Relaxed) {
            hist.record(t0.elapsed().as_nanos() as u64);
        }
        pace(t0 + every);
    }
    Ok(hist)
}

/// Sleeps until `until` (at once when it has passed).
fn pace(until: Instant) {
    let left = until.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

/// Sets the calling thread's nice value (Linux's nice is per thread). Best effort: a
/// negative value needs privileges, and without them the probe just runs at nice 0.
fn set_nice(nice: libc::c_int) {
    // SAFETY: setpriority on the calling thread (who = 0) has no memory effects.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
}

/// The openers run at nice +10 and the probe at -10 when allowed, so neither the openers
/// nor other work on the bench's core delay the probe: its latency is the server's.
fn lower_priority() {
    set_nice(10);
}

/// Opens `n` connections from `OPENERS` threads, each sending one GET at once.
fn open_all(addr: SocketAddr, n: usize) -> Res<Vec<TcpStream>> {
    let per = n.div_ceil(OPENERS);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|t| {
                sc.spawn(move || -> Res<Vec<TcpStream>> {
                    lower_priority();
                    let mut mine = Vec::with_capacity(per);
                    let mut req = Vec::new();
                    for i in t * per..((t + 1) * per).min(n) {
                        let mut s = TcpStream::connect(addr)
                            .map_err(|e| format!("storm connect #{i}: {e}"))?;
                        let _ = s.set_nodelay(true);
                        req.clear();
                        put_get(&mut req, OP_GET, b"storm:", i as u32, i as u32);
                        // A refused client may be reset already: its read tells.
                        let _ = s.write_all(&req);
                        mine.push(s);
                    }
                    Ok(mine)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| "storm opener panicked".to_string())??,
            );
        }
        Ok(all)
    })
}

/// Whether a storm client got its answer (true) or was closed unanswered (false).
fn answered(s: &mut TcpStream, deadline: Instant) -> Res<bool> {
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    let mut header = [0u8; HEADER];
    match s.read_exact(&mut header) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(format!("storm client neither answered nor closed: {e}")),
    }
}

/// Opens the storm and waits for every answer: (connect s, answered s, answered, refused).
fn storm(addr: SocketAddr, n: usize, t0: Instant) -> Res<(f64, f64, usize, usize)> {
    let mut streams = open_all(addr, n)?;
    let connect_s = t0.elapsed().as_secs_f64();
    let mut ok = 0;
    for s in streams.iter_mut() {
        ok += usize::from(answered(s, t0 + STORM_BOUND)?);
    }
    Ok((
        connect_s,
        t0.elapsed().as_secs_f64(),
        ok,
        streams.len() - ok,
    ))
}

/// One storm against `addr`, measured.
pub fn run_storm(addr: SocketAddr, spec: StormSpec) -> Res<StormResult> {
    let n = spec.conns;
    raise_nofile(n as u64 + 256)?;
    let (measuring, stop) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|sc| {
        let prober = sc.spawn(|| probe(addr, spec.probe_every, &measuring, &stop));
        // Let the probe settle before the storm.
        std::thread::sleep(Duration::from_millis(200));
        let (meter, overflows0) = (CpuMeter::start("self"), listen_overflows());
        let t0 = Instant::now();
        measuring.store(true, Ordering::Relaxed);
        let result = storm(addr, n, t0);
        measuring.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let overflows = overflows0.zip(listen_overflows()).map(|(a, b)| b - a);
        let bench_cpu = meter.percent();
        let probe = prober
            .join()
            .map_err(|_| "storm probe panicked".to_string())??;
        let (connect_s, answered_s, answered, refused) = result?;
        Ok(StormResult {
            connect_s,
            answered_s,
            answered,
            refused,
            overflows,
            probe,
            bench_cpu,
        })
    })
}

/// Prints one storm's figures on one line.
pub fn describe(r: &StormResult) -> String {
    let overflows = r.overflows.map_or("?".to_string(), |o| o.to_string());
    format!(
        "connected in {:.3} s, answered in {:.3} s ({} answered, {} refused), listen overflows {overflows}, probe p50/p99/max µs {:.0}/{:.0}/{:.0} ({} GETs), bench CPU {:.0}%",
        r.connect_s,
        r.answered_s,
        r.answered,
        r.refused,
        r.probe.pct_us(50.0),
        r.probe.pct_us(99.0),
        r.probe.max as f64 / 1000.0,
        r.probe.total,
        r.bench_cpu
    )
}
