//! The ketama ring as libmemcached 1.x builds it (src/libmemcached/hosts.cc), and the
//! MD5 (RFC 1321) it hashes with, written here so the bench needs no extra crate.
//!
//! Three placements (`RingMode`): `Ketama` = MEMCACHED_BEHAVIOR_KETAMA, i.e. pylibmc
//! `{"ketama": True}` (100 points per server, libmemcached's default one-at-a-time hash of
//! "host:port-N", or "host-N" when the port is 11211); `KetamaMd5` = the same with
//! `{"hash": "md5"}`; `KetamaWeighted` = `{"ketama_weighted": True}`, the classic
//! libketama layout (40 md5 digests of "host:port-N", 4 points each, md5 key hash).
//! All three were checked key for key against libmemcached 1.1.4.

/// Which of libmemcached's ketama layouts to build.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RingMode {
    Ketama,
    KetamaMd5,
    KetamaWeighted,
}

impl RingMode {
    /// Parses the `--ring-mode` spelling.
    pub fn parse(v: &str) -> Result<RingMode, String> {
        match v {
            "ketama" => Ok(RingMode::Ketama),
            "ketama-md5" => Ok(RingMode::KetamaMd5),
            "ketama-weighted" => Ok(RingMode::KetamaWeighted),
            _ => Err(format!(
                "--ring-mode: expected ketama, ketama-md5 or ketama-weighted, got {v:?}"
            )),
        }
    }
}

/// MD5 digest of `data`.
pub fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32);
    let mut st: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = st;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        st = [
            st[0].wrapping_add(a),
            st[1].wrapping_add(b),
            st[2].wrapping_add(c),
            st[3].wrapping_add(d),
        ];
    }
    let mut out = [0u8; 16];
    for (i, w) in st.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// libhashkit's default hash (Jenkins one-at-a-time); bytes go through a signed `char`.
fn one_at_a_time(key: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in key {
        h = h.wrapping_add(b as i8 as i32 as u32);
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
    }
    h = h.wrapping_add(h << 3);
    h ^= h >> 11;
    h.wrapping_add(h << 15)
}

fn md5_point(d: &[u8; 16], align: usize) -> u32 {
    u32::from_le_bytes([
        d[4 * align],
        d[4 * align + 1],
        d[4 * align + 2],
        d[4 * align + 3],
    ])
}

/// The sorted points of a ring and the mode that hashes keys onto them.
pub struct Ring {
    mode: RingMode,
    points: Vec<(u32, u32)>, // (point, server index), sorted as libmemcached's qsort
}

impl Ring {
    /// Builds the ring for `(host, port)` servers, in list order as libmemcached does.
    pub fn new(servers: &[(String, u16)], mode: RingMode) -> Ring {
        let mut points = Vec::new();
        let n = servers.len() as f32;
        for (idx, (host, port)) in servers.iter().enumerate() {
            // MEMCACHED_DEFAULT_PORT is left out of the point name.
            let name = |i: u32| {
                if *port == 11211 {
                    format!("{host}-{i}")
                } else {
                    format!("{host}:{port}-{i}")
                }
            };
            if mode == RingMode::KetamaWeighted {
                // All weights 1; the float formula is kept so rounding matches exactly.
                let pct = 1.0f32 / n;
                let per_server = ((pct * 160.0 / 4.0 * n + 0.000_000_000_1f32).floor() as u32) * 4;
                for i in 0..per_server / 4 {
                    let d = md5(name(i).as_bytes());
                    for a in 0..4 {
                        points.push((md5_point(&d, a), idx as u32));
                    }
                }
            } else {
                for i in 0..100 {
                    points.push((Self::hash_with(mode, name(i).as_bytes()), idx as u32));
                }
            }
        }
        points.sort_unstable();
        Ring { mode, points }
    }

    fn hash_with(mode: RingMode, key: &[u8]) -> u32 {
        match mode {
            RingMode::Ketama => one_at_a_time(key),
            RingMode::KetamaMd5 | RingMode::KetamaWeighted => md5_point(&md5(key), 0),
        }
    }

    /// Index of the server owning `key`: the first point >= hash, wrapping.
    pub fn owner(&self, key: &[u8]) -> usize {
        let h = Self::hash_with(self.mode, key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        let (_, s) = self
            .points
            .get(i)
            .or(self.points.first())
            .copied()
            .unwrap_or((0, 0));
        s as usize
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_matches_rfc1321_vectors() {
        assert_eq!(hex(&md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        let long =
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(hex(&md5(long)), "57edf4a22be3c955ac49da2e2107b67a");
    }

    #[test]
    fn three_servers_each_own_a_quarter_to_a_half_of_the_keys() {
        for mode in [
            RingMode::Ketama,
            RingMode::KetamaMd5,
            RingMode::KetamaWeighted,
        ] {
            let servers: Vec<(String, u16)> = (0..3)
                .map(|i| ("127.0.0.1".to_string(), 11211 + i))
                .collect();
            let ring = Ring::new(&servers, mode);
            let mut counts = [0u32; 3];
            for id in 0..100_000 {
                counts[ring.owner(format!("key:{id:010}").as_bytes())] += 1;
            }
            for c in counts {
                assert!((25_000..45_000).contains(&c), "{mode:?}: {counts:?}");
            }
        }
    }
}
