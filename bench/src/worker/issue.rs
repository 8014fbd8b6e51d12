//! Choosing and encoding the next request of a connection.

use std::time::Instant;

use super::{Kind, Pending, Worker};
use crate::cli::Mode;
use crate::text::{self, Proto};
use crate::wire::{put_get, put_header, put_set, OP_GET, OP_GETKQ, OP_NOOP};

impl Worker<'_> {
    /// A key this connection's server owns, uniform or Zipf.
    pub(super) fn pick_key(&mut self, server: usize) -> u32 {
        let p = self.plan;
        for _ in 0..10_000 {
            let id = match &p.zipf {
                Some(z) => z.sample(&mut self.rng) as u32,
                None => self.rng.below(p.cfg.keys) as u32,
            };
            if p.owner.is_empty() || p.owner[id as usize] as usize == server {
                return id;
            }
        }
        0 // this server owns (almost) no keys: rare, harmless
    }

    /// The next key of a fill on connection `ci`, or None when its share is written.
    fn next_fill(&mut self, ci: usize) -> Option<u32> {
        let p = self.plan;
        let c = &mut self.conns[ci];
        let id = if p.owned.is_empty() {
            c.fill_next as u64
        } else {
            p.owned[c.server]
                .get(c.fill_next)
                .map_or(u64::MAX, |&i| i as u64)
        };
        if id >= p.fill_items {
            return None;
        }
        c.fill_next += c.fill_stride;
        Some(id as u32)
    }

    /// What connection `ci` sends next, or None when it has nothing left to send.
    fn choose(&mut self, ci: usize) -> Option<(Kind, u32)> {
        let cfg = &self.plan.cfg;
        let server = self.conns[ci].server;
        Some(match cfg.mode {
            Mode::Fill => (Kind::Set, self.next_fill(ci)?),
            Mode::Hits => match self.conns[ci].todo_sets.pop_front() {
                Some(id) => (Kind::Set, id),
                None => (Kind::Get, self.pick_key(server)),
            },
            Mode::Mixed if cfg.quiet_batch > 0 => (Kind::Batch(cfg.quiet_batch as u32), 0),
            Mode::Mixed => {
                let id = self.pick_key(server);
                let get = self.rng.unit() < cfg.get_ratio;
                (if get { Kind::Get } else { Kind::Set }, id)
            }
        })
    }

    /// The text or meta protocol spelling of `encode`.
    fn encode_text(&mut self, ci: usize, kind: Kind, id: u32, proto: Proto) {
        let p = self.plan;
        let prefix = p.cfg.key_prefix.as_bytes();
        match kind {
            Kind::Get => text::put_get(&mut self.conns[ci].out, proto, prefix, id),
            Kind::Set => {
                let out = &mut self.conns[ci].out;
                text::put_set(out, proto, prefix, id, p.values.len(id));
                p.values.put(out, id);
                text::put_set_end(out);
            }
            Kind::Batch(n) => {
                for _ in 0..n {
                    let id = self.pick_key(self.conns[ci].server);
                    self.conns[ci].batch_ids.push_back(id);
                }
                let c = &mut self.conns[ci];
                text::put_batch(&mut c.out, proto, prefix, c.batch_ids.make_contiguous());
            }
        }
    }

    /// Appends the request's bytes to connection `ci`'s output.
    fn encode(&mut self, ci: usize, kind: Kind, id: u32, opaque: u32) {
        let p = self.plan;
        if p.cfg.proto != Proto::Binary {
            return self.encode_text(ci, kind, id, p.cfg.proto);
        }
        let prefix = p.cfg.key_prefix.as_bytes();
        match kind {
            Kind::Get => put_get(&mut self.conns[ci].out, OP_GET, prefix, id, opaque),
            Kind::Set => {
                let out = &mut self.conns[ci].out;
                put_set(out, prefix, id, p.values.len(id), opaque);
                p.values.put(out, id);
            }
            Kind::Batch(n) => {
                for i in 0..n {
                    let id = self.pick_key(self.conns[ci].server);
                    let c = &mut self.conns[ci];
                    c.batch_ids.push_back(id);
                    put_get(&mut c.out, OP_GETKQ, prefix, id, opaque.wrapping_add(i));
                }
                let out = &mut self.conns[ci].out;
                put_header(out, OP_NOOP, 0, 0, 0, opaque.wrapping_add(n));
            }
        }
    }

    /// Queues one request (or quiet batch) on connection `ci`; false when nothing is left.
    pub(super) fn issue(&mut self, ci: usize, t0: Instant) -> bool {
        let cfg = &self.plan.cfg;
        let share = |n: u64| n.div_ceil(cfg.conns as u64);
        let sent = self.conns[ci].sent;
        if cfg.ops > 0 && sent >= share(cfg.ops) + share(cfg.warmup_ops) {
            return false;
        }
        let warm = cfg.ops > 0 && sent < share(cfg.warmup_ops);
        let Some((kind, id)) = self.choose(ci) else {
            return false;
        };
        let opaque = self.conns[ci].opaque;
        self.encode(ci, kind, id, opaque);
        let c = &mut self.conns[ci];
        c.opaque = opaque.wrapping_add(match kind {
            Kind::Batch(n) => n + 1,
            _ => 1,
        });
        c.pending.push_back(Pending {
            opaque,
            kind,
            id,
            t0,
            warm,
        });
        c.sent += 1;
        true
    }
}
