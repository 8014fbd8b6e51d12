//! One phase of load: connect, spread the connections over worker threads, run them for
//! warm-up + duration (or until a fill is done), merge what they counted.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use super::{Conn, Stats, Worker, READ_CHUNK};
use crate::cli::Res;
use crate::histogram::Hist;
use crate::workload::{Plan, Rng};
use pincache_bench::procfs::CpuMeter;

fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = StdTcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(TcpStream::from_std(s))
}

/// Pins the calling thread (and the threads it spawns later) to one CPU.
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0, ..) affects this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Opens the phase's connections, round-robin over the servers and the threads.
fn open_conns(plan: &Plan) -> Res<Vec<Vec<Conn>>> {
    let cfg = &plan.cfg;
    let nserv = plan.addrs.len();
    let mut per_thread: Vec<Vec<Conn>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    let conns = cfg.conns.max(nserv);
    for g in 0..conns {
        let server = g % nserv;
        // A fill splits each server's keys among that server's connections.
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
            pending: VecDeque::with_capacity(cfg.pipeline),
            batch_ids: VecDeque::with_capacity(cfg.quiet_batch),
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
    Ok(per_thread)
}

/// Runs one phase and merges the workers' results. `on_measure` runs when the measured
/// window opens and closes, so the caller can sample CPU counters at the right moments.
pub fn run_phase(plan: &Plan, on_measure: &mut dyn FnMut(bool)) -> Res<Stats> {
    let cfg = &plan.cfg;
    let per_thread = open_conns(plan)?;
    // Fills and count-based runs end when done; their duration is only a safety bound.
    let finite = cfg.mode == crate::cli::Mode::Fill || cfg.ops > 0;
    let start = Instant::now();
    let mstart = start + Duration::from_secs_f64(if finite { 0.0 } else { cfg.warmup });
    let span = if finite {
        cfg.duration.max(600.0)
    } else {
        cfg.duration
    };
    let end = mstart + Duration::from_secs_f64(span);
    let interval_ns = cfg.conns as f64 * 1e9 / cfg.rate.max(1e-9);
    // The bench's own CPU over the measured window (the whole run when it is finite).
    let meter = &mut CpuMeter::start("self");
    let mut bench_cpu = 0.0;
    let results = std::thread::scope(|sc| -> Res<Vec<Stats>> {
        let mut handles = Vec::new();
        for (t, mut conns) in per_thread.into_iter().enumerate() {
            let mut poll = Poll::new().map_err(|e| e.to_string())?;
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
                interval_ns,
                registry: poll.registry().try_clone().map_err(|e| e.to_string())?,
            };
            handles.push(sc.spawn(move || w.run(&mut poll)));
        }
        if !finite {
            std::thread::sleep(mstart.saturating_duration_since(Instant::now()));
            on_measure(true);
            *meter = CpuMeter::start("self");
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            bench_cpu = meter.percent();
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
    st.elapsed = if finite {
        bench_cpu = meter.percent();
        start.elapsed().as_secs_f64()
    } else {
        cfg.duration
    };
    st.bench_cpu = bench_cpu;
    Ok(st)
}
