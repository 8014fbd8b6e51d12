//! `memory`, `bound`, `hits`: a fresh server per round, since they measure the store
//! itself (RSS from /proc/PID/status, items from the binary STAT command).

use super::server::{binary_stat, start_server, Server};
use super::{median, Sample};
use crate::cli::{Cfg, Mode, Res};
use crate::report::shout_errors;
use crate::worker::{run_phase, Stats};
use crate::workload::{Plan, ValueSpec};
use pincache_bench::procfs::proc_status_bytes;

/// Sizes for `memory`, `bound` and `hits` (`--memory-mb --bound-mb --hits-mb --item-size`).
pub struct MemOpts {
    pub mem_mb: u64,
    pub bound_mb: u64,
    pub hits_mb: u64,
    pub item_size: usize,
}

impl Default for MemOpts {
    fn default() -> MemOpts {
        MemOpts {
            mem_mb: 1024,
            bound_mb: 64,
            hits_mb: 64,
            item_size: 100,
        }
    }
}

/// What one round measured: the figure, a note, the phase's counts.
type Measured = (f64, String, Stats);

fn fixed(size: usize) -> ValueSpec {
    ValueSpec {
        min: size,
        max: size,
    }
}

/// `--items` sets of `--item-size` bytes: (RSS after - RSS before) per item.
fn memory_round(srv: &Server, base: &Cfg, mo: &MemOpts) -> Res<Measured> {
    let pid = srv.child.id();
    let rss0 = proc_status_bytes(pid, "VmRSS");
    let c = Cfg {
        servers: vec![format!("127.0.0.1:{}", srv.port)],
        value: fixed(mo.item_size),
        ..crate::fill_cfg(base, base.items)
    };
    let st = run_phase(&Plan::new(c)?, &mut |_| {})?;
    let rss1 = proc_status_bytes(pid, "VmRSS");
    let items = binary_stat(srv.port, "curr_items")?;
    let per = (rss1 as f64 - rss0 as f64) / st.sets.max(1) as f64;
    let note = format!(
        "{} sets, curr_items {items}, RSS {} -> {} MiB",
        st.sets,
        rss0 >> 20,
        rss1 >> 20
    );
    Ok((per, note, st))
}

/// 4x `-m` of values of 10 B..100 KB: peak RSS over `-m`.
fn bound_round(srv: &Server, base: &Cfg, mo: &MemOpts) -> Res<Measured> {
    let c = Cfg {
        servers: vec![format!("127.0.0.1:{}", srv.port)],
        value: ValueSpec {
            min: 10,
            max: 100_000,
        },
        fill_bytes: (4 * mo.bound_mb) << 20,
        ..crate::fill_cfg(base, 0)
    };
    let st = run_phase(&Plan::new(c)?, &mut |_| {})?;
    let hwm = proc_status_bytes(srv.child.id(), "VmHWM");
    let items = binary_stat(srv.port, "curr_items")?;
    let ratio = hwm as f64 / (mo.bound_mb << 20) as f64;
    let note = format!(
        "{} sets, peak RSS {} MiB, items kept {items}",
        st.sets,
        hwm >> 20
    );
    Ok((ratio, note, st))
}

/// Zipf gets with set-on-miss over a key space 4x what fits: the hit ratio.
fn hits_round(srv: &Server, base: &Cfg, mo: &MemOpts) -> Res<Measured> {
    // Key space 4x what fits in -m at the raw size of key + value.
    let vlen = mo.item_size;
    let keys = 4 * (mo.hits_mb << 20) / (vlen as u64 + base.key_prefix.len() as u64 + 10);
    let zipf = if base.zipf > 0.0 { base.zipf } else { 0.99 };
    let c = Cfg {
        servers: vec![format!("127.0.0.1:{}", srv.port)],
        mode: Mode::Hits,
        keys,
        zipf,
        conns: 8,
        pipeline: 8,
        value: fixed(vlen),
        // Count-based, so a slower server is not judged on a colder cache.
        warmup_ops: keys,
        ops: keys / 2,
        ..base.clone()
    };
    let st = run_phase(&Plan::new(c)?, &mut |_| {})?;
    let ratio = st.hits as f64 / (st.hits + st.misses).max(1) as f64;
    let note = format!("{keys} keys, Zipf {zipf}, {} gets", st.hits + st.misses);
    Ok((ratio, note, st))
}

/// Runs `w` for `rounds` rounds (`spec` = rounds, server CPU), alternating the servers.
pub fn compare_memory(
    w: &str,
    kinds: &[(&'static str, String)],
    base: &Cfg,
    spec: (usize, usize),
    mo: &MemOpts,
    errors: &mut u64,
) -> Res<Vec<String>> {
    println!("\n== {w} ==");
    let (rounds, cpu) = spec;
    let mb = match w {
        "memory" => mo.mem_mb,
        "bound" => mo.bound_mb,
        _ => mo.hits_mb,
    };
    let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (name, path)) in kinds.iter().enumerate() {
            let srv = start_server(name, path, cpu, mb, &[])?;
            let (value, extra, st) = match w {
                "memory" => memory_round(&srv, base, mo)?,
                "bound" => bound_round(&srv, base, mo)?,
                _ => hits_round(&srv, base, mo)?,
            };
            if shout_errors(&st, name) {
                *errors += st.errors;
            }
            let r = round + 1;
            println!(
                "  round {r} {name:<9} {value:>10.4}   {extra}   [{}]",
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
    Ok(vec![memory_row(w, &samples)])
}

/// The table row: medians per server and their ratio.
fn memory_row(w: &str, samples: &[Vec<Sample>]) -> String {
    let meds: Vec<f64> = samples
        .iter()
        .map(|s| median(&mut s.iter().map(|x| x.value).collect::<Vec<_>>()))
        .collect();
    let fig = match w {
        "memory" => "(RSS after - before) / item, bytes",
        "bound" => "peak RSS / -m",
        _ => "hit ratio",
    };
    let ratio = match meds.as_slice() {
        [a, b] => format!("{:.2}", a / b.max(1e-12)),
        _ => "-".into(),
    };
    let cells: Vec<String> = meds.iter().map(|m| format!("{m:.3}")).collect();
    let notes: Vec<String> = samples
        .iter()
        .filter_map(|s| s.last().map(|x| x.extra.clone()))
        .collect();
    println!("  notes: {}", notes.join(" | "));
    format!("| {w} | {fig} | {} | {ratio} | - | - |", cells.join(" | "))
}
