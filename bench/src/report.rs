//! Printing results: a human table and one JSON line per run, and loud errors.

use std::fmt::Write as _;

use crate::cli::{Cfg, Mode};
use crate::worker::Stats;

/// The figures of one phase.
pub struct Summary {
    pub ops_s: f64,
    pub keys_s: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Throughput and latency percentiles of a phase.
pub fn summarize(st: &Stats) -> Summary {
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

/// Prints a run as a table and one JSON line.
pub fn report(cfg: &Cfg, st: &Stats, label: &str) {
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
        "  {:<12} {:>14.0}   ({:.1} s measured, bench CPU {:.0}%{})",
        "ops/s",
        s.ops_s,
        st.elapsed,
        st.bench_cpu,
        bench_warning(st.bench_cpu)
    );
    if q {
        println!(
            "  {:<12} {:>14.0}   ({} batches of {})",
            "keys/s",
            s.keys_s,
            match cfg.proto {
                crate::text::Proto::Binary => "GETKQ + NOOP",
                crate::text::Proto::Text => "`get k1 .. kN`",
                crate::text::Proto::Meta => "`mg k k f v q` + `mn`",
            },
            cfg.quiet_batch
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
        "{{\"label\":\"{label}\",\"ops_per_sec\":{:.1},\"keys_per_sec\":{:.1},\"gets\":{},\"sets\":{},\"hits\":{},\"misses\":{},\"errors\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"conns\":{},\"pipeline\":{},\"quiet_batch\":{},\"protocol\":\"{}\",\"rate\":{:.0},\"seconds\":{:.2},\"bench_cpu_pct\":{:.1}}}",
        s.ops_s, s.keys_s, st.gets + st.keys, st.sets, st.hits, st.misses, st.errors, s.p50, s.p90, s.p99, s.p999, s.max,
        cfg.conns, cfg.pipeline, cfg.quiet_batch, cfg.proto.name(), cfg.rate, st.elapsed, st.bench_cpu
    );
    println!("{j}");
}

/// Above this much of its core the bench, not the server, may set the pace.
pub const BENCH_CPU_WARN: f64 = 90.0;

/// A warning to print beside a figure taken while the bench was above `BENCH_CPU_WARN`.
pub fn bench_warning(cpu: f64) -> &'static str {
    if cpu > BENCH_CPU_WARN {
        "  WARNING: bench above 90% of its core, the figure may measure the bench"
    } else {
        ""
    }
}

/// Prints errors loudly; true when there were any.
pub fn shout_errors(st: &Stats, what: &str) -> bool {
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
