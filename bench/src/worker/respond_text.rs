//! Checking text and meta protocol answers against the requests they answer.

use std::time::Instant;

use super::{Kind, Worker};
use crate::cli::Mode;
use crate::text::{next_answer, Answer, Proto};
use crate::wire::{key_string, ITEM_FLAGS};

type Check = Result<(), String>;

/// The key id in `key` if it is `prefix` and ten digits.
fn key_id(key: &[u8], prefix: &[u8]) -> Option<u32> {
    let digits = key.strip_prefix(prefix)?;
    if digits.len() != 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Worker<'_> {
    /// Takes every whole answer out of the input buffer.
    pub(super) fn parse_text(&mut self, ci: usize) {
        loop {
            let c = &mut self.conns[ci];
            if c.dead || c.in_start == c.in_end {
                return;
            }
            let (s, e) = (c.in_start, c.in_end);
            let buf = std::mem::take(&mut c.inb);
            let used = match next_answer(&buf[s..e]) {
                None => None,
                Some(Err(m)) => {
                    self.conns[ci].dead = true;
                    self.st.error(m);
                    None
                }
                Some(Ok((answer, used))) => {
                    self.text_answer(ci, answer);
                    Some(used)
                }
            };
            let c = &mut self.conns[ci];
            c.inb = buf;
            let Some(used) = used else { return };
            c.in_start += used;
            if c.in_start == c.in_end {
                c.in_start = 0;
                c.in_end = 0;
            }
        }
    }

    /// Flags, key (when the answer names one) and bytes must be what we set for `id`.
    fn check_text_value(
        &self,
        id: u32,
        key: Option<&[u8]>,
        flags: Option<u32>,
        data: &[u8],
    ) -> Check {
        let prefix = self.plan.cfg.key_prefix.as_bytes();
        let want_key = key.is_none_or(|k| key_id(k, prefix) == Some(id));
        if flags != Some(ITEM_FLAGS) || !want_key || !self.plan.values.matches(data, id) {
            return Err(format!(
                "wrong value for {}: key {:?}, flags {flags:?}, {} bytes (want {})",
                String::from_utf8_lossy(&key_string(&self.plan.cfg.key_prefix, id)),
                key.map(String::from_utf8_lossy),
                data.len(),
                self.plan.values.len(id)
            ));
        }
        Ok(())
    }

    /// A GET is done: a hit if a value came, else a miss (`hits` mode then sets it).
    fn end_get(&mut self, ci: usize, id: u32, counted: bool) {
        let c = &mut self.conns[ci];
        let hit = c.batch_hits > 0;
        c.batch_hits = 0;
        if !hit && self.plan.cfg.mode == Mode::Hits {
            c.todo_sets.push_back(id);
        }
        if counted {
            self.st.gets += 1;
            self.st.hits += u64::from(hit);
            self.st.misses += u64::from(!hit);
        }
    }

    /// One value of a multi-get: the next requested key that it names, checked.
    fn batch_value(
        &mut self,
        ci: usize,
        key: Option<&[u8]>,
        flags: Option<u32>,
        data: &[u8],
    ) -> Check {
        let prefix = self.plan.cfg.key_prefix.as_bytes();
        let id = key
            .and_then(|k| key_id(k, prefix))
            .ok_or("multi-get value without our key")?;
        let c = &self.conns[ci];
        let from = c.batch_last.map_or(0, |l| l as usize + 1);
        // Hits come in request order with the misses left out.
        let Some(idx) = c.batch_ids.iter().skip(from).position(|&i| i == id) else {
            return Err(format!("multi-get value for key id {id} out of order"));
        };
        let c = &mut self.conns[ci];
        c.batch_last = Some((from + idx) as u32);
        c.batch_hits += 1;
        self.check_text_value(id, key, flags, data)
    }

    /// One answer unit on connection `ci`, against the oldest request.
    fn text_answer(&mut self, ci: usize, answer: Answer<'_>) {
        let now = Instant::now();
        let Some(front) = self.conns[ci].pending.front() else {
            self.conns[ci].dead = true;
            return self
                .st
                .error(format!("{} with nothing pending", answer.show()));
        };
        let (kind, id, counted) = (front.kind, front.id, self.counts(front, now));
        let meta = self.plan.cfg.proto == Proto::Meta;
        let (res, done) = match (kind, answer) {
            (Kind::Get, Answer::Value { key, flags, data }) => {
                self.conns[ci].batch_hits += 1;
                let res = self.check_text_value(id, key, flags, data);
                if meta {
                    self.end_get(ci, id, counted); // VA is the whole answer
                }
                (res, meta)
            }
            (Kind::Get, Answer::End) => {
                self.end_get(ci, id, counted);
                (Ok(()), true)
            }
            (Kind::Set, Answer::Stored) => {
                self.st.sets += u64::from(counted);
                (Ok(()), true)
            }
            (Kind::Batch(_), Answer::Value { key, flags, data }) => {
                (self.batch_value(ci, key, flags, data), false)
            }
            (Kind::Batch(n), Answer::End) => {
                self.end_batch(ci, n, counted);
                (Ok(()), true)
            }
            (Kind::Batch(n), other) => {
                self.end_batch(ci, n, false);
                (
                    Err(format!("unexpected answer {other:?} in a multi-get")),
                    true,
                )
            }
            (_, other) => (Err(format!("unexpected answer {}", other.show())), true),
        };
        if let Err(m) = res {
            let s = &self.plan.cfg.servers[self.conns[ci].server];
            self.st.error(format!("{s}: {m}"));
        }
        if done {
            self.complete(ci, now, counted);
        }
    }
}
