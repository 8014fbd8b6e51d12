//! The throughput workloads of `compare` (p1, p16, quiet, latency, large, sizes): what
//! each runs and which figure it reports.

use super::server::Server;
use super::{median, Sample};
use crate::cli::{Cfg, Res};
use crate::report::shout_errors;
use crate::worker::run_phase;
use crate::workload::{Plan, ValueSpec};

/// Which number of a sample a workload is judged by.
#[derive(Clone, Copy)]
pub enum Figure {
    Ops,
    Keys,
    /// ops/s, but judged by the server's CPU time per operation (the bench may be the
    /// limit with large values).
    ServerUs,
    /// p50/p99/p99.9 at an offered rate; judged by p99.
    Latency(f64),
}

impl Figure {
    pub fn value(self, s: &Sample) -> f64 {
        match self {
            Figure::Ops | Figure::Keys => s.value,
            Figure::ServerUs => s.server_us_per_op(),
            Figure::Latency(_) => s.lat[1],
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Figure::Keys => "keys/s",
            _ => "ops/s ",
        }
    }

    pub fn name(self) -> String {
        match self {
            Figure::Ops => "ops/s".into(),
            Figure::Keys => "keys/s".into(),
            Figure::ServerUs => "ops/s, server CPU µs per op".into(),
            Figure::Latency(rate) => format!("p50/p99/p99.9 µs at {rate:.0}/s"),
        }
    }

    pub fn ratio_note(self) -> &'static str {
        match self {
            Figure::ServerUs => " (server µs/op)",
            Figure::Latency(_) => " (p99)",
            _ => "",
        }
    }

    /// One server's cell in the table: the medians of its rounds.
    pub fn cell(self, samples: &[Sample]) -> String {
        let med =
            |f: &dyn Fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
        match self {
            Figure::Ops | Figure::Keys => format!("{:.0}", med(&|s| s.value)),
            Figure::ServerUs => format!(
                "{:.0} ops/s, {:.1} µs",
                med(&|s| s.value),
                med(&|s| s.server_us_per_op())
            ),
            Figure::Latency(_) => format!(
                "{:.0} / {:.0} / {:.0}",
                med(&|s| s.lat[0]),
                med(&|s| s.lat[1]),
                med(&|s| s.lat[2])
            ),
        }
    }
}

/// One measured configuration of a workload.
pub struct Variant {
    pub label: String,
    pub cfg: Cfg,
    pub figure: Figure,
}

/// Whether workload `w` runs against the long-lived, prefilled servers.
pub fn needs_running_servers(w: &str) -> bool {
    ["p1", "p16", "quiet", "latency", "large", "sizes"].contains(&w)
}

/// Writes every key of `cfg`'s key space once on `srv`; returns the number of sets.
pub fn prefill(cfg: &Cfg, srv: &Server, errors: &mut u64) -> Res<u64> {
    let c = Cfg {
        servers: vec![format!("127.0.0.1:{}", srv.port)],
        ..cfg.clone()
    };
    let st = run_phase(&Plan::new(crate::fill_cfg(&c, c.keys))?, &mut |_| {})?;
    if shout_errors(&st, "prefill") {
        *errors += st.errors;
    }
    Ok(st.sets)
}

/// `p1` with values of `size` bytes on a key space of its own (prefix `s{size}:`), at
/// most about 100 MB of values per server, prefilled on every server.
fn sized(p1: &Cfg, size: usize, servers: &[Server], errors: &mut u64) -> Res<Cfg> {
    let c = Cfg {
        keys: (100_000_000 / size.max(1) as u64).clamp(1_000, p1.keys),
        value: ValueSpec {
            min: size,
            max: size,
        },
        key_prefix: format!("s{size}:"),
        ..p1.clone()
    };
    for srv in servers {
        prefill(&c, srv, errors)?;
    }
    Ok(c)
}

/// The value-size sweep: 90% GET at each size, then 100 KB SET-only (20 connections, as
/// clients that write large values are fewer) and GET-only.
fn sizes(p1: &Cfg, servers: &[Server], errors: &mut u64) -> Res<Vec<Variant>> {
    let mut out = Vec::new();
    for (label, size) in [
        ("32B", 32),
        ("1KB", 1_000),
        ("4KB", 4_000),
        ("16KB", 16_000),
        ("100KB", 100_000),
    ] {
        let cfg = sized(p1, size, servers, errors)?;
        out.push(Variant {
            label: format!("sizes {label} 90% get"),
            cfg,
            figure: Figure::ServerUs,
        });
    }
    let big = sized(p1, 100_000, &[], errors)?;
    let set_only = Cfg {
        get_ratio: 0.0,
        conns: 20,
        ..big.clone()
    };
    out.push(Variant {
        label: "sizes 100KB set only".into(),
        cfg: set_only,
        figure: Figure::ServerUs,
    });
    let get_only = Cfg {
        get_ratio: 1.0,
        ..big
    };
    out.push(Variant {
        label: "sizes 100KB get only".into(),
        cfg: get_only,
        figure: Figure::ServerUs,
    });
    Ok(out)
}

/// The variants of throughput workload `w`; `p1_max` is memcached's measured `p1`.
pub fn variants(
    w: &str,
    base: &Cfg,
    p1_max: f64,
    servers: &[Server],
    errors: &mut u64,
) -> Res<Vec<Variant>> {
    let p1 = Cfg {
        conns: 50,
        pipeline: 1,
        get_ratio: 0.9,
        quiet_batch: 0,
        rate: 0.0,
        ..base.clone()
    };
    let one = |label: &str, cfg: Cfg, figure| {
        vec![Variant {
            label: label.into(),
            cfg,
            figure,
        }]
    };
    Ok(match w {
        "p1" => one("p1", p1, Figure::Ops),
        "p16" => one("p16", Cfg { pipeline: 16, ..p1 }, Figure::Ops),
        "quiet" => one(
            "quiet",
            Cfg {
                quiet_batch: 100,
                ..p1
            },
            Figure::Keys,
        ),
        "latency" => [0.5, 0.8]
            .iter()
            .map(|frac| {
                // Up to 16 in flight so sends are not held back by the client.
                let cfg = Cfg {
                    rate: p1_max * frac,
                    pipeline: 16,
                    ..p1.clone()
                };
                let figure = Figure::Latency(cfg.rate);
                Variant {
                    label: format!("latency@{:.0}%", frac * 100.0),
                    cfg,
                    figure,
                }
            })
            .collect(),
        "large" => {
            // Its own keys, so the 32-byte key space of the others stays as it was.
            let c = Cfg {
                keys: 2_000,
                key_prefix: "large:".into(),
                ..sized(&p1, 100_000, &[], errors)?
            };
            for srv in servers {
                prefill(&c, srv, errors)?;
            }
            one("large", c, Figure::ServerUs)
        }
        "sizes" => sizes(&p1, servers, errors)?,
        _ => return Err(format!("unknown workload {w:?}")),
    })
}
