//! `compare`: pincache against memcached on the same core, alternating A B A B A B, with
//! medians, ratios and both sides' CPU (from /proc) beside every figure, so a figure
//! where the bench itself was near 100% can be told apart.

mod memory;
mod server;
mod storm;
mod workloads;

use std::fmt::Write as _;
use std::time::Duration;

use crate::cli::{apply_flag, num, Cfg, Res};
use crate::report::{bench_warning, shout_errors, summarize, BENCH_CPU_WARN};
use crate::storm::{StormSpec, PROBE_EVERY};
use crate::worker::{pin_current_thread, run_phase};
use crate::workload::Plan;
use pincache_bench::procfs::CpuMeter;

use memory::{compare_memory, MemOpts};
use server::{start_server, Server};
use workloads::Variant;

/// One round's measurement of one server.
struct Sample {
    value: f64,
    extra: String,
    server_cpu: f64,
    bench_cpu: f64,
    lat: [f64; 3],
}

impl Sample {
    /// Server CPU time per operation, in µs: the figure for workloads where the bench,
    /// not the server, may set the pace (large values).
    fn server_us_per_op(&self) -> f64 {
        if self.value < 1.0 {
            return f64::NAN; // nothing measured: no figure rather than a huge one
        }
        self.server_cpu / 100.0 / self.value * 1e6
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// The `run` command line that reproduces one measurement by hand.
fn bench_cmdline(c: &Cfg, port: u16) -> String {
    let mut s = format!(
        "taskset -c {} pincache-bench run --server 127.0.0.1:{port} --conns {} --pipeline {} --keys {} --value-size {} --get-ratio {} --key-prefix {} --duration {} --warmup {}",
        c.client_cpu.unwrap_or(1), c.conns, c.pipeline, c.keys, c.value.min, c.get_ratio, c.key_prefix, c.duration, c.warmup
    );
    if c.quiet_batch > 0 {
        let _ = write!(s, " --quiet-batch {}", c.quiet_batch);
    }
    if c.rate > 0.0 {
        let _ = write!(s, " --rate {:.0}", c.rate);
    }
    if c.proto != crate::text::Proto::Binary {
        let _ = write!(s, " --protocol {}", c.proto.name());
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
    let mut meter = None;
    let mut scpu = 0.0;
    let st = run_phase(&plan, &mut |opening| {
        if opening {
            meter = Some(CpuMeter::start(&pid));
        } else if let Some(m) = &meter {
            scpu = m.percent();
        }
    })?;
    if shout_errors(&st, srv.name) {
        *errors += st.errors;
    }
    let s = summarize(&st);
    Ok(Sample {
        value: if cfg.quiet_batch > 0 {
            s.keys_s
        } else {
            s.ops_s
        },
        extra: String::new(),
        server_cpu: scpu,
        bench_cpu: st.bench_cpu,
        lat: [s.p50, s.p99, s.p999],
    })
}

/// Everything `compare` was asked to do.
struct Opts {
    base: Cfg,
    kinds: Vec<(&'static str, String)>,
    rounds: usize,
    server_cpu: usize,
    mem: MemOpts,
    workloads: Vec<String>,
    storm: StormSpec,
}

fn parse_opts(flags: &[(String, String)]) -> Res<Opts> {
    let mut base = Cfg {
        client_cpu: Some(1),
        ..Cfg::default()
    };
    let (mut pc, mut mc) = (None, None);
    let (mut rounds, mut server_cpu) = (3usize, 0usize);
    let mut mem = MemOpts::default();
    let mut storm = StormSpec {
        conns: 3_000,
        probe_every: PROBE_EVERY,
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
            "memory-mb" => mem.mem_mb = num(&f, v)?,
            "bound-mb" => mem.bound_mb = num(&f, v)?,
            "hits-mb" => mem.hits_mb = num(&f, v)?,
            "item-size" => mem.item_size = num(&f, v)?,
            "storm-conns" => storm.conns = num(&f, v)?,
            "probe-every-us" => storm.probe_every = Duration::from_micros(num(&f, v)?),
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
    let mut kinds: Vec<(&'static str, String)> = vec![("pincache", pc)];
    if let Some(m) = mc {
        kinds.push(("memcached", m));
    }
    let mut wl: Vec<String> = workloads.split(',').map(|s| s.trim().to_string()).collect();
    if wl.iter().any(|w| w == "latency") && !wl.iter().any(|w| w == "p1") {
        wl.insert(0, "p1".into()); // the latency rates are fractions of memcached's p1
    }
    Ok(Opts {
        base,
        kinds,
        rounds,
        server_cpu,
        mem,
        workloads: wl,
        storm,
    })
}

/// Starts one server of each kind, pinned, and prefills the `p1` key space.
fn start_prefilled(o: &Opts, errors: &mut u64) -> Res<Vec<Server>> {
    let mut servers = Vec::new();
    for (name, path) in &o.kinds {
        let srv = start_server(name, path, o.server_cpu, 1024, &[])?;
        let sets = workloads::prefill(&o.base, &srv, errors)?;
        println!("started {}  (prefilled {sets} keys)", srv.cmdline);
        servers.push(srv);
    }
    Ok(servers)
}

/// Medians of one figure per server.
fn medians(samples: &[Vec<Sample>], f: &dyn Fn(&Sample) -> f64) -> Vec<f64> {
    samples
        .iter()
        .map(|s| median(&mut s.iter().map(f).collect::<Vec<_>>()))
        .collect()
}

/// The table row of one variant from its rounds, with a warning when the bench was
/// above `BENCH_CPU_WARN` in any round (then the ratio is a lower bound).
fn variant_row(v: &Variant, samples: &[Vec<Sample>]) -> String {
    let fig = |s: &Sample| v.figure.value(s);
    let cells: Vec<String> = (0..samples.len())
        .map(|i| v.figure.cell(&samples[i]))
        .collect();
    let meds = medians(samples, &fig);
    let ratio = match meds.as_slice() {
        [a, b] => format!("{:.2}{}", a / b.max(1e-9), v.figure.ratio_note()),
        _ => "-".into(),
    };
    // Judged by CPU per op, but the ops/s ratio is the headline: print both.
    let ratio = match (v.figure, medians(samples, &|s| s.value).as_slice()) {
        (workloads::Figure::ServerUs, [a, b]) => format!("ops/s {:.2}, {ratio}", a / b.max(1e-9)),
        _ => ratio,
    };
    let cpu = |f: &dyn Fn(&Sample) -> f64| {
        medians(samples, f)
            .iter()
            .map(|m| format!("{m:.0}%"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let hot = samples
        .iter()
        .flatten()
        .any(|s| s.bench_cpu > BENCH_CPU_WARN);
    format!(
        "| {} | {} | {} | {ratio} | {} | {}{} |",
        v.label,
        v.figure.name(),
        cells.join(" | "),
        cpu(&|s| s.server_cpu),
        cpu(&|s| s.bench_cpu),
        if hot {
            " (bench > 90%: ratio is a lower bound)"
        } else {
            ""
        }
    )
}

/// Measures one variant on every server for every round, alternating the servers.
fn run_variant(
    v: &Variant,
    servers: &[Server],
    rounds: usize,
    errors: &mut u64,
) -> Res<(String, Vec<f64>)> {
    println!("\n== {} ==", v.label);
    for srv in servers {
        println!("  server: {}", srv.cmdline);
        println!("  bench:  {}", bench_cmdline(&v.cfg, srv.port));
    }
    let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, srv) in servers.iter().enumerate() {
            let s = measure(&v.cfg, srv, errors)?;
            let warn = bench_warning(s.bench_cpu);
            println!(
                "  round {} {:<9} {:>12.0} {}   p50/p99/p99.9 µs {:.1}/{:.1}/{:.1}   server CPU {:.0}% ({:.2} µs/op)  bench CPU {:.0}%{warn}",
                round + 1, srv.name, s.value, v.figure.unit(),
                s.lat[0], s.lat[1], s.lat[2], s.server_cpu, s.server_us_per_op(), s.bench_cpu
            );
            samples[i].push(s);
        }
    }
    let row = variant_row(v, &samples);
    println!("  median: {row}");
    if let [a, b] = samples.as_slice() {
        // The spread says how far one run's ratio can be trusted.
        let per_round: Vec<String> = a
            .iter()
            .zip(b)
            .map(|(x, y)| format!("{:.2}", v.figure.value(x) / v.figure.value(y).max(1e-9)))
            .collect();
        println!("  ratio per round: {}", per_round.join(" "));
    }
    Ok((row, medians(&samples, &|s| s.value)))
}

fn print_table(o: &Opts, rows: &[String]) {
    let names: Vec<&str> = o.kinds.iter().map(|k| k.0).collect();
    println!(
        "\n| workload | figure | {} | ratio {} | server CPU ({}) | bench CPU |",
        names.join(" | "),
        names.join("/"),
        names.join(" / ")
    );
    println!("|---|---|{}---|---|---|", "---|".repeat(names.len()));
    for r in rows {
        println!("{r}");
    }
    println!(
        "\nmedians of {} rounds, servers pinned to CPU {}, bench to CPU {}.",
        o.rounds,
        o.server_cpu,
        o.base.client_cpu.unwrap_or(1)
    );
}

/// `pincache-bench compare ...`
pub fn cmd_compare(flags: &[(String, String)]) -> Res<i32> {
    let o = parse_opts(flags)?;
    pin_current_thread(o.base.client_cpu.unwrap_or(1));
    let mut rows: Vec<String> = Vec::new();
    let mut errors = 0u64;
    let mut p1_max = 0.0;
    let mut servers: Vec<Server> = Vec::new();
    if o.workloads
        .iter()
        .any(|w| workloads::needs_running_servers(w))
    {
        servers = start_prefilled(&o, &mut errors)?;
    }
    for w in &o.workloads {
        match w.as_str() {
            "memory" | "bound" | "hits" => {
                let spec = (o.rounds, o.server_cpu);
                rows.extend(compare_memory(
                    w,
                    &o.kinds,
                    &o.base,
                    spec,
                    &o.mem,
                    &mut errors,
                )?);
                continue;
            }
            "storm" => {
                rows.extend(storm::compare_storm(
                    &o.kinds,
                    o.storm,
                    o.rounds,
                    o.server_cpu,
                )?);
                continue;
            }
            _ => {}
        }
        for mut v in workloads::variants(w, &o.base, p1_max, &servers, &mut errors)? {
            if v.cfg.proto != crate::text::Proto::Binary {
                // In text and meta a quiet batch is the 100-key multi-get.
                let what = if w == "quiet" {
                    "multiget"
                } else {
                    v.label.as_str()
                };
                v.label = format!("{} {what}", v.cfg.proto.name());
            }
            let (row, meds) = run_variant(&v, &servers, o.rounds, &mut errors)?;
            if w == "p1" {
                // memcached's p1 maximum (the last server) sets the latency rates.
                p1_max = meds.last().copied().unwrap_or(0.0);
            }
            rows.push(row);
        }
    }
    drop(servers);
    print_table(&o, &rows);
    if errors > 0 {
        eprintln!("\n!!! compare saw {errors} ERRORS: the table is NOT valid !!!");
        return Ok(2);
    }
    Ok(0)
}
