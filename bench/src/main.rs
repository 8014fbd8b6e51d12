//! pincache-bench: a load generator for memcached-compatible servers that speak the
//! binary protocol (pincache, memcached).
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
//! places it (`--ring-mode`, see `ring.rs`; pylibmc's docs say "ketama" implies md5; in
//! libmemcached 1.x it does not).
//!
//! `compare` pins the servers and this process to separate CPUs, alternates the servers
//! round by round and prints medians, ratios and both sides' %CPU (from /proc), so a
//! figure where the bench itself was at 100% can be told apart. `latency` offers 50% and
//! 80% of memcached's `p1` rate with up to 16 requests in flight per connection, so sends
//! are not held back by slow responses. `large` is `p1` with 100 KB values on its own
//! 2,000 keys; the bench is its bottleneck, so its figure is the server's CPU time per
//! request. `memory`, `bound` and `hits` start a fresh server per round (RSS from
//! /proc/PID/status, items from the binary STAT command).

mod cli;
mod compare;
mod histogram;
mod report;
mod storm;
mod text;
mod wire;
mod worker;
mod workload;

use std::io::{self, Read, Write};
use std::time::Duration;

use pincache_bench::ring::Ring;

use cli::{apply_flag, num, split_args, split_host_port, Cfg, Mode, Res};
use compare::cmd_compare;
use report::{report, shout_errors};
use wire::key_string;
use worker::{pin_current_thread, run_phase};
use workload::{Plan, ValueSpec};

/// The same key space written once, pipelined: prefills and `fill`.
pub fn fill_cfg(cfg: &Cfg, items: u64) -> Cfg {
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

/// `ring`: which server owns a key, and how even the ring is.
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

/// `storm` from the command line, against a running server.
fn cmd_storm(flags: &[(String, String)]) -> Res<i32> {
    let mut server = None;
    let mut spec = storm::StormSpec {
        conns: 3_000,
        probe_every: storm::PROBE_EVERY,
    };
    for (k, v) in flags {
        match k.as_str() {
            "server" => server = Some(v.clone()),
            "storm-conns" => spec.conns = num("--storm-conns", v)?,
            "probe-every-us" => {
                spec.probe_every = Duration::from_micros(num("--probe-every-us", v)?)
            }
            "client-cpu" => pin_current_thread(num("--client-cpu", v)?),
            _ => return Err(format!("storm: unknown flag --{k}")),
        }
    }
    let server = server.ok_or("storm: give --server HOST:PORT")?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&server)
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or(format!("{server}: no address"))?;
    let r = storm::run_storm(addr, spec)?;
    let conns = spec.conns;
    println!("storm {conns} against {server}: {}", storm::describe(&r));
    Ok(if r.answered == conns { 0 } else { 2 })
}

fn usage() -> &'static str {
    "usage: pincache-bench [run|fill|hits|ring|storm|compare] [flags]   (see the //! header of bench/src/main.rs)
  run:     --server HOST:PORT (repeatable) --conns 50 --pipeline 1 --quiet-batch 0 --keys 100000
           --value-size 32 (or MIN..MAX) --get-ratio 0.9 --zipf S --prefill --duration 5 --warmup 1
           --threads 1 --rate OPS_PER_SEC --key-prefix key: --ring-mode ketama|ketama-md5|ketama-weighted
           --client-cpu N --seed N --protocol binary|text|meta (quiet batches: `get k1..kN` / `mg k q`..`mn`)
  fill:    --items 1000000 --value-size 100 (keys key:%010d), pipelined; or --fill-bytes B
  hits:    --keys N --zipf 0.99: gets with set-on-miss, reports the hit ratio
  any:     --ops N --warmup-ops W: count-based instead of timed (checked, W not counted)
  ring:    --server A --server B KEY... (or - for stdin) | --balance N   [--ring-mode M]
  storm:   --server HOST:PORT --storm-conns 3000: that many connections at once, each sending a GET,
           while one client measures its GETs, one every --probe-every-us 500 at most (0: back to back)
           (run: every figure prints the bench's own CPU)
  compare: --pincache PATH [--memcached PATH] [--rounds 3]
           [--workloads p1,p16,quiet,latency,large,sizes,storm,memory,bound,hits] (default p1,p16,quiet,latency,large)
           [--server-cpu 0 --client-cpu 1] [--duration 5] [--memory-mb 1024 --bound-mb 64 --hits-mb 64]
           [--items 1000000 --item-size 100] (memory: --items sets of --item-size bytes) [--storm-conns 3000 --probe-every-us 500]"
}

fn real_main() -> Res<i32> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let sub = match args.first().map(String::as_str) {
        Some(s @ ("run" | "fill" | "hits" | "ring" | "storm" | "compare")) => {
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
    match sub.as_str() {
        "compare" => return cmd_compare(&flags),
        "storm" => return cmd_storm(&flags),
        _ => {}
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
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pincache-bench: {e}");
            std::process::exit(1);
        }
    }
}
