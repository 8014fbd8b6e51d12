//! `storm` in `compare`: a fresh server per round (`-c` above the storm, the default
//! backlog), the storm against it, medians of connect time, overflows and probe p99.

use std::net::SocketAddr;

use super::median;
use super::server::start_server;
use crate::cli::Res;
use crate::storm::{describe, run_storm, StormResult, StormSpec};
use pincache_bench::procfs::raise_nofile;

/// Runs `rounds` storms per server kind, alternating; table rows.
pub fn compare_storm(
    kinds: &[(&'static str, String)],
    spec: StormSpec,
    rounds: usize,
    cpu: usize,
) -> Res<Vec<String>> {
    let n = spec.conns;
    println!(
        "\n== storm ({n} connections, probe every {} µs) ==",
        spec.probe_every.as_micros()
    );
    // Both ends of the storm, in this process and in the servers it starts.
    raise_nofile(2 * n as u64 + 512)?;
    let conn_limit = (n + 100).to_string();
    let mut results: Vec<Vec<StormResult>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (name, path)) in kinds.iter().enumerate() {
            let srv = start_server(name, path, cpu, 64, &["-c", &conn_limit])?;
            let addr = SocketAddr::from(([127, 0, 0, 1], srv.port));
            let r = run_storm(addr, spec)?;
            println!(
                "  round {} {name:<9} {}   [{}]",
                round + 1,
                describe(&r),
                srv.cmdline
            );
            if r.answered < n {
                return Err(format!("storm: {name} answered {} of {n}", r.answered));
            }
            results[i].push(r);
        }
    }
    let med = |f: &dyn Fn(&StormResult) -> f64| -> Vec<f64> {
        results
            .iter()
            .map(|rs| median(&mut rs.iter().map(f).collect::<Vec<_>>()))
            .collect()
    };
    let row = |label: &str, vals: Vec<f64>, cpu: &str| {
        let cells: Vec<String> = vals.iter().map(|v| format!("{v:.3}")).collect();
        let ratio = match vals.as_slice() {
            [a, b] if *b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(), // one server only, or nothing to divide by (no overflows)
        };
        format!(
            "| storm {n} | {label} | {} | {ratio} | - | {cpu} |",
            cells.join(" | ")
        )
    };
    let bench = med(&|r| r.bench_cpu)
        .iter()
        .map(|c| format!("{c:.0}%"))
        .collect::<Vec<_>>()
        .join(" / ");
    let overflows = |r: &StormResult| r.overflows.map_or(f64::NAN, |o| o as f64);
    Ok(vec![
        row("seconds until all connected", med(&|r| r.connect_s), &bench),
        row("seconds until all answered", med(&|r| r.answered_s), &bench),
        row("listen overflows", med(&overflows), &bench),
        row(
            "probe client p99 µs",
            med(&|r| r.probe.pct_us(99.0)),
            &bench,
        ),
    ])
}
