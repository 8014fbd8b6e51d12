//! What the load is made of: random keys (uniform or Zipf), values that are a function of
//! their key (so every hit is checked), and the plan every worker shares (servers, which
//! key lives where).

use std::net::{SocketAddr, ToSocketAddrs};

use pincache_bench::ring::Ring;

use crate::cli::{split_host_port, validate, Cfg, Mode, Res};
use crate::wire::key_string;

/// splitmix64's finalizer: a cheap, well-mixed hash of a u64.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64: one add and one mix per number, plenty for picking keys.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// Zipf over ranks 1..=n by rejection-inversion (Hörmann & Derflinger 1996): O(1) per
/// sample and no O(n) table, valid for any exponent > 0.
pub struct Zipf {
    n: f64,
    s: f64,
    hx1: f64,
    hn: f64,
    cut: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
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
    pub fn sample(&self, rng: &mut Rng) -> u64 {
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

/// Value sizes: fixed, or log-uniform in [min, max] chosen by the key id (the `bound` mix).
#[derive(Clone, Copy, Debug)]
pub struct ValueSpec {
    pub min: usize,
    pub max: usize,
}

impl ValueSpec {
    /// The size of key `id`'s value.
    pub fn len(&self, id: u32) -> usize {
        if self.min >= self.max {
            return self.min;
        }
        let u = (mix64(id as u64 ^ 0x51ce) >> 11) as f64 / (1u64 << 53) as f64;
        let (lo, hi) = ((self.min as f64).ln(), (self.max as f64 + 1.0).ln());
        ((lo + u * (hi - lo)).exp() as usize).clamp(self.min, self.max)
    }
}

/// Distinct offsets into the template: neighbouring keys' values differ past the stamp.
const VALUE_OFFSETS: usize = 251;

/// Every value is a window of one random template, starting at an offset chosen by the
/// key id, with the id stamped over its first 4 bytes. Writing one is a copy and checking
/// one a compare (no per-byte arithmetic), yet a value returned for the wrong key, cut
/// short, or with any byte changed is still caught.
pub struct Values {
    spec: ValueSpec,
    template: Vec<u8>,
}

impl Values {
    pub fn new(spec: ValueSpec) -> Values {
        let mut template = Vec::with_capacity(spec.max + VALUE_OFFSETS + 8);
        let mut i = 0u64;
        while template.len() < spec.max + VALUE_OFFSETS {
            template.extend_from_slice(&mix64(0xba1e ^ i).to_le_bytes());
            i += 1;
        }
        Values { spec, template }
    }

    pub fn len(&self, id: u32) -> usize {
        self.spec.len(id)
    }

    /// Key `id`'s value as (bytes of the id stamp, the template window after it).
    fn parts(&self, id: u32) -> (usize, &[u8]) {
        let len = self.spec.len(id);
        let off = id as usize % VALUE_OFFSETS;
        let stamp = len.min(4);
        (stamp, &self.template[off + stamp..off + len])
    }

    /// Appends key `id`'s value.
    pub fn put(&self, out: &mut Vec<u8>, id: u32) {
        let (stamp, rest) = self.parts(id);
        out.extend_from_slice(&id.to_le_bytes()[..stamp]);
        out.extend_from_slice(rest);
    }

    /// True when `v` is exactly key `id`'s value.
    pub fn matches(&self, v: &[u8], id: u32) -> bool {
        let (stamp, rest) = self.parts(id);
        v.len() == stamp + rest.len()
            && v[..stamp] == id.to_le_bytes()[..stamp]
            && v[stamp..] == *rest
    }
}

/// What every worker shares: the config, and with several servers who owns which key.
pub struct Plan {
    pub cfg: Cfg,
    pub addrs: Vec<SocketAddr>,
    /// Per server, the key ids it owns (only with more than one server).
    pub owned: Vec<Vec<u32>>,
    pub owner: Vec<u16>,
    pub zipf: Option<Zipf>,
    /// Number of keys written by a fill.
    pub fill_items: u64,
    pub values: Values,
}

impl Plan {
    pub fn new(cfg: Cfg) -> Res<Plan> {
        validate(&cfg)?;
        let mut addrs = Vec::new();
        let mut named = Vec::new();
        for s in &cfg.servers {
            let a = s.to_socket_addrs().map_err(|e| format!("{s}: {e}"))?.next();
            addrs.push(a.ok_or(format!("{s}: no address"))?);
            named.push(split_host_port(s)?);
        }
        let fill_items = fill_items(&cfg);
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
            values: Values::new(cfg.value),
            cfg,
            addrs,
            owned,
            owner,
            zipf,
            fill_items,
        })
    }
}

/// How many keys a fill writes: enough for `--fill-bytes`, else `--items` or `--keys`.
fn fill_items(cfg: &Cfg) -> u64 {
    if cfg.fill_bytes > 0 {
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
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

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

    #[test]
    fn a_value_matches_its_own_key_only_and_every_byte_counts() {
        for spec in [(0, 0), (3, 3), (32, 32), (10, 100_000)] {
            let values = Values::new(ValueSpec {
                min: spec.0,
                max: spec.1,
            });
            for id in [0u32, 1, 250, 251, 99_999] {
                let mut v = Vec::new();
                values.put(&mut v, id);
                assert_eq!(v.len(), values.len(id));
                assert!(values.matches(&v, id));
                if v.len() >= 2 {
                    assert!(!values.matches(&v, id + 1), "{spec:?} {id}");
                    let last = v.len() - 1;
                    v[last] ^= 1;
                    assert!(!values.matches(&v, id));
                    v[last] ^= 1;
                    assert!(!values.matches(&v[..last], id));
                }
            }
        }
    }
}
