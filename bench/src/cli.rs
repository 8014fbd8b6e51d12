//! The command line: one `Cfg` per run, filled from `--flag value` pairs.

use pincache_bench::ring::RingMode;

use crate::text::Proto;
use crate::workload::ValueSpec;

/// Errors are messages for the user; the run stops with them.
pub type Res<T> = Result<T, String>;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Gets and sets (or quiet multi-get batches), for a fixed time.
    Mixed,
    /// Set every key once, `items` of them, then stop.
    Fill,
    /// Zipf gets; a miss is followed by a set of that key.
    Hits,
}

#[derive(Clone, Debug)]
pub struct Cfg {
    pub servers: Vec<String>,
    pub ring_mode: RingMode,
    pub mode: Mode,
    pub conns: usize,
    pub pipeline: usize,
    pub quiet_batch: usize,
    pub keys: u64,
    pub value: ValueSpec,
    pub get_ratio: f64,
    pub zipf: f64,
    pub prefill: bool,
    pub duration: f64,
    pub warmup: f64,
    pub threads: usize,
    pub rate: f64,
    pub key_prefix: String,
    pub items: u64,
    pub fill_bytes: u64,
    pub seed: u64,
    /// Count-based run: each connection issues its share of warmup_ops + ops, then stops.
    pub ops: u64,
    pub warmup_ops: u64,
    pub client_cpu: Option<usize>,
    /// The protocol the workload speaks (`--protocol binary|text|meta`).
    pub proto: Proto,
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
            proto: Proto::Binary,
        }
    }
}

pub fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Res<T> {
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

/// Splits `--flag value` / `--flag=value` pairs; bare words are returned as positionals.
pub type Flags = Vec<(String, String)>;

pub fn split_args(args: &[String], boolean: &[&str]) -> Res<(Flags, Vec<String>)> {
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

pub fn apply_flag(c: &mut Cfg, k: &str, v: &str) -> Res<bool> {
    let f = format!("--{k}");
    match k {
        "server" => c.servers.push(v.to_string()),
        "ring-mode" => c.ring_mode = RingMode::parse(v)?,
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
        "protocol" => c.proto = Proto::parse(v)?,
        _ => return Ok(false),
    }
    Ok(true)
}

pub fn validate(c: &Cfg) -> Res<()> {
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

pub fn split_host_port(s: &str) -> Res<(String, u16)> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or(format!("server {s:?}: expected HOST:PORT"))?;
    Ok((
        h.trim_matches(|c| c == '[' || c == ']').to_string(),
        num("--server", p)?,
    ))
}
