//! Checking each response against the request it answers: one function per case.

use std::time::Instant;

use super::{Kind, Worker};
use crate::cli::Mode;
use crate::wire::{
    key_is, key_string, Header, ITEM_FLAGS, OP_GET, OP_GETKQ, OP_NOOP, OP_SET, STATUS_KEY_ENOENT,
    STATUS_OK,
};

type Check = Result<(), String>;

impl Worker<'_> {
    /// Checks the value part of a hit: flags, length and bytes must be what we set.
    fn check_value(&self, id: u32, h: &Header, body: &[u8]) -> Check {
        if h.extras != 4 || h.key_len + h.extras > body.len() {
            return Err(format!(
                "hit with extras={} key={} body={}",
                h.extras, h.key_len, h.body
            ));
        }
        let flags = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let value = &body[4 + h.key_len..];
        let values = &self.plan.values;
        if flags != ITEM_FLAGS || !values.matches(value, id) {
            return Err(format!(
                "wrong value for {}: flags 0x{flags:08x}, {} bytes (want {})",
                String::from_utf8_lossy(&key_string(&self.plan.cfg.key_prefix, id)),
                value.len(),
                values.len(id)
            ));
        }
        Ok(())
    }

    /// One GETKQ hit inside a quiet batch: in order, the key asked for, its value.
    fn on_batch_key(&mut self, ci: usize, h: &Header, body: &[u8], first: u32, n: u32) -> Check {
        let idx = h.opaque.wrapping_sub(first);
        let c = &self.conns[ci];
        if idx >= n || c.batch_last.is_some_and(|l| idx <= l) || h.status != STATUS_OK {
            return Err(format!(
                "GETKQ opaque {idx} / status {} out of order in batch",
                h.status
            ));
        }
        let kid = c.batch_ids[idx as usize];
        let key = &body[h.extras..h.extras + h.key_len];
        let c = &mut self.conns[ci];
        c.batch_last = Some(idx);
        c.batch_hits += 1;
        if !key_is(key, self.plan.cfg.key_prefix.as_bytes(), kid) {
            return Err(format!(
                "GETKQ returned key {:?}",
                String::from_utf8_lossy(key)
            ));
        }
        self.check_value(kid, h, body)
    }

    /// The NOOP that closes a quiet batch: the batch's keys are counted here.
    fn on_batch_end(&mut self, ci: usize, h: &Header, first: u32, n: u32, counted: bool) -> Check {
        self.end_batch(ci, n, counted);
        if h.op != OP_NOOP || h.opaque != first.wrapping_add(n) || h.status != 0 || h.body != 0 {
            return Err(format!(
                "batch end: op 0x{:02x} status {} body {}",
                h.op, h.status, h.body
            ));
        }
        Ok(())
    }

    /// Closes a batch of `n` keys on connection `ci`: its hits and misses are counted.
    pub(super) fn end_batch(&mut self, ci: usize, n: u32, counted: bool) {
        let c = &mut self.conns[ci];
        let hits = c.batch_hits as u64;
        c.batch_hits = 0;
        c.batch_last = None;
        c.batch_ids.drain(..n as usize);
        if counted {
            self.st.batches += 1;
            self.st.keys += n as u64;
            self.st.hits += hits;
            self.st.misses += n as u64 - hits;
        }
    }

    /// Whether the answer to `p`, arriving `now`, counts (inside the measured window).
    pub(super) fn counts(&self, p: &super::Pending, now: Instant) -> bool {
        !p.warm && (self.finite() || (now <= self.end && p.t0 >= self.mstart))
    }

    /// The request at the front of connection `ci` is answered: pop it, record latency.
    pub(super) fn complete(&mut self, ci: usize, now: Instant, counted: bool) {
        if let Some(p) = self.conns[ci].pending.pop_front() {
            if counted {
                let ns = now.saturating_duration_since(p.t0).as_nanos() as u64;
                self.hist.record(ns);
            }
        }
    }

    /// A GET's answer: a miss (which `hits` mode follows with a SET) or a checked hit.
    fn on_get(&mut self, ci: usize, h: &Header, body: &[u8], id: u32, counted: bool) -> Check {
        if h.op != OP_GET {
            return Err(format!("op 0x{:02x} answering a GET", h.op));
        }
        if counted {
            self.st.gets += 1;
        }
        match h.status {
            STATUS_KEY_ENOENT => {
                if self.plan.cfg.mode == Mode::Hits {
                    self.conns[ci].todo_sets.push_back(id);
                }
                self.st.misses += u64::from(counted);
                if h.extras != 0 {
                    return Err("miss with extras".into());
                }
                Ok(())
            }
            STATUS_OK => {
                self.st.hits += u64::from(counted);
                if h.key_len != 0 {
                    return Err("GET hit carries a key".into());
                }
                self.check_value(id, h, body)
            }
            _ => Err(unexpected(h, body)),
        }
    }

    /// A SET's answer: stored, with an empty body.
    fn on_set(&mut self, h: &Header, body: &[u8], counted: bool) -> Check {
        if h.op != OP_SET {
            return Err(format!("op 0x{:02x} answering a SET", h.op));
        }
        if h.status != STATUS_OK || h.body != 0 {
            return Err(unexpected(h, body));
        }
        self.st.sets += u64::from(counted);
        Ok(())
    }

    /// One whole response on connection `ci`: checked against the oldest request.
    pub(super) fn response(&mut self, ci: usize, h: &Header, body: &[u8]) {
        let now = Instant::now();
        let Some(front) = self.conns[ci].pending.front() else {
            self.conns[ci].dead = true;
            return self.st.error(format!(
                "unexpected response op 0x{:02x}: nothing pending",
                h.op
            ));
        };
        let (opaque, kind, id) = (front.opaque, front.kind, front.id);
        let counted = self.counts(front, now);
        if h.key_len + h.extras > h.body {
            self.conns[ci].dead = true;
            return self.st.error(format!(
                "lengths: key {} + extras {} > body {}",
                h.key_len, h.extras, h.body
            ));
        }
        let in_batch = matches!(kind, Kind::Batch(_)) && h.op == OP_GETKQ;
        let res = match kind {
            Kind::Batch(n) if in_batch => self.on_batch_key(ci, h, body, opaque, n),
            Kind::Batch(n) => self.on_batch_end(ci, h, opaque, n, counted),
            _ if h.opaque != opaque => {
                Err(format!("opaque {} where {opaque} was expected", h.opaque))
            }
            Kind::Get => self.on_get(ci, h, body, id, counted),
            Kind::Set => self.on_set(h, body, counted),
        };
        if let Err(m) = res {
            let s = &self.plan.cfg.servers[self.conns[ci].server];
            self.st.error(format!("{s}: {m}"));
        }
        if !in_batch {
            self.complete(ci, now, counted);
        }
    }
}

/// An answer no request of ours should get, with the server's error text.
fn unexpected(h: &Header, body: &[u8]) -> String {
    format!(
        "op 0x{:02x} status 0x{:04x} body {} ({})",
        h.op,
        h.status,
        h.body,
        String::from_utf8_lossy(&body[h.extras + h.key_len..])
    )
}
