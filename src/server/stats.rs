//! Counters the server keeps, and the `stats` groups written as memcached writes
//! them, one source for both protocols: in binary one packet per statistic closed
//! by a packet with empty key and value, in text `STAT name value` lines and `END`.

use std::fmt::Write as _;
use std::time::Instant;

use crate::config::Config;
use hashbrown::HashMap;

use super::dispatch::Context;
use crate::protocol::binary::encoder::Reply;
use crate::protocol::{text, Status};
use crate::store::Store;

/// The version string VERSION and `stat version` report. It leads with the memcached
/// release whose binary protocol we follow: libmemcached parses "major.minor.micro"
/// and refuses a server whose major version is 0.
pub const VERSION: &str = concat!("1.6.18-pincache-", env!("CARGO_PKG_VERSION"));

/// Per-process counters, named as memcached names them.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub curr_connections: u64,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub cmd_get: u64,
    pub cmd_set: u64,
    pub cmd_flush: u64,
    pub cmd_touch: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub delete_hits: u64,
    pub delete_misses: u64,
    pub incr_hits: u64,
    pub incr_misses: u64,
    pub decr_hits: u64,
    pub decr_misses: u64,
    pub cas_hits: u64,
    pub cas_misses: u64,
    pub cas_badval: u64,
    pub touch_hits: u64,
    pub touch_misses: u64,
    pub store_too_large: u64,
    pub store_no_memory: u64,
    pub auth_cmds: u64,
    pub auth_errors: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Connections stopped from parsing because their output was over the mark.
    pub conn_yields: u64,
    /// Malformed packets (bad magic, inconsistent lengths, unknown opcodes).
    pub protocol_errors: u64,
    /// Longest single slice of expiry work, in microseconds.
    pub expiry_slice_max_us: u64,
    /// Meta commands (`mg`, `ms`, ...), as memcached's `cmd_meta`.
    pub cmd_meta: u64,
    /// Storage commands whose value was read straight into its item.
    pub set_in_place: u64,
    /// Storage commands whose value was copied from a read buffer (once, or
    /// twice when it spanned reads and waited in the connection's buffer).
    pub set_buffered: u64,
    /// `stats detail`: per key-prefix counters while enabled.
    pub detail: Detail,
}

/// Keys are grouped by the part before this byte (memcached's default `-D`).
const PREFIX_DELIMITER: u8 = b':';
/// At most this many prefixes are tracked; a client inventing prefixes cannot
/// grow our memory without bound (memcached has no limit).
const DETAIL_PREFIXES_MAX: usize = 4096;

/// `stats detail on|off|dump`: gets, hits, sets and deletes per key prefix, in
/// the order prefixes were first seen.
#[derive(Clone, Debug, Default)]
pub struct Detail {
    pub enabled: bool,
    index: HashMap<Vec<u8>, usize>,
    prefixes: Vec<(Vec<u8>, [u64; 4])>,
}

const GETS: usize = 0;
const HITS: usize = 1;
const SETS: usize = 2;
const DELETES: usize = 3;

impl Detail {
    fn counts(&mut self, key: &[u8]) -> Option<&mut [u64; 4]> {
        let end = key.iter().position(|&b| b == PREFIX_DELIMITER)?;
        let prefix = &key[..end];
        let at = match self.index.get(prefix) {
            Some(&at) => at,
            None if self.prefixes.len() < DETAIL_PREFIXES_MAX => {
                self.index.insert(prefix.to_vec(), self.prefixes.len());
                self.prefixes.push((prefix.to_vec(), [0; 4]));
                self.prefixes.len() - 1
            }
            None => return None,
        };
        self.prefixes.get_mut(at).map(|(_, counts)| counts)
    }

    /// memcached's dump: one `PREFIX` line per prefix, then `END`.
    pub fn dump(&self, out: &mut Vec<u8>) {
        for (prefix, c) in &self.prefixes {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(prefix);
            let line = format!(
                " get {} hit {} set {} del {}\r\n",
                c[GETS], c[HITS], c[SETS], c[DELETES]
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"END\r\n");
    }
}

impl Stats {
    #[inline]
    pub fn detail_get(&mut self, key: &[u8], hit: bool) {
        if self.detail.enabled {
            if let Some(c) = self.detail.counts(key) {
                c[GETS] += 1;
                c[HITS] += u64::from(hit);
            }
        }
    }

    /// A storage command that reached the store: `cmd_set`, how its value was
    /// read (`set_in_place` or `set_buffered`) and the per-prefix detail.
    #[inline]
    pub fn count_set(&mut self, key: &[u8], in_place: bool) {
        self.cmd_set += 1;
        if in_place {
            self.set_in_place += 1;
        } else {
            self.set_buffered += 1;
        }
        self.detail_set(key);
    }

    #[inline]
    pub fn detail_set(&mut self, key: &[u8]) {
        if self.detail.enabled {
            if let Some(c) = self.detail.counts(key) {
                c[SETS] += 1;
            }
        }
    }

    #[inline]
    pub fn detail_delete(&mut self, key: &[u8]) {
        if self.detail.enabled {
            if let Some(c) = self.detail.counts(key) {
                c[DELETES] += 1;
            }
        }
    }
}

/// What the `stat` writer needs to know besides the counters.
pub struct Settings {
    pub started: Instant,
    /// The port actually bound (differs from `config.port` with `-p 0`; 0 on a unix socket).
    pub port: u16,
    pub config: Config,
}

/// How a stats group is written.
#[derive(Clone, Copy, Debug)]
pub enum StatFormat {
    /// One packet per statistic echoing this request, then an empty packet.
    Binary(Reply),
    /// `STAT name value` lines, then `END`.
    Text,
}

/// Writes the stats `group` (empty = general stats) into `out`. Returns
/// `KeyNotFound` for a group we do not have, having written nothing (memcached:
/// one error packet in binary, `ERROR` in text).
pub fn write_group(
    group: &[u8],
    format: StatFormat,
    ctx: &mut Context<'_>,
    out: &mut Vec<u8>,
) -> Status {
    let mut w = StatWriter {
        out,
        format,
        text: String::with_capacity(32),
    };
    let (stats, store, settings) = (&mut *ctx.stats, &mut *ctx.store, ctx.settings);
    match group {
        b"" => general(&mut w, stats, store, settings),
        b"settings" => settings_group(&mut w, stats, settings),
        b"items" => items_group(&mut w, stats, store),
        b"slabs" => slabs_group(&mut w, stats, store),
        // memcached keeps no size histogram unless started with it.
        b"sizes" => w.stat("sizes_status", "disabled"),
        // memcached serves `conns` in text only (binary: 0x0001).
        b"conns" if matches!(w.format, StatFormat::Text) => ctx
            .conns
            .lines(Instant::now(), |name, value| w.stat(name, value)),
        b"reset" => {
            reset(stats, store);
            match w.format {
                StatFormat::Binary(_) => w.end(),
                StatFormat::Text => w.out.extend_from_slice(b"RESET\r\n"),
            }
            return Status::NoError;
        }
        _ => return detail_group(group, &mut w, stats),
    }
    w.end();
    Status::NoError
}

/// Zeroes the counters memcached's `stats reset` zeroes.
pub fn reset(stats: &mut Stats, store: &mut Store) {
    let keep = Stats {
        curr_connections: stats.curr_connections,
        // memcached forgets the prefixes but stays in detail mode.
        detail: Detail {
            enabled: stats.detail.enabled,
            ..Detail::default()
        },
        ..Stats::default()
    };
    *stats = keep;
    store.reset_stats();
}

/// `detail on|off|dump` as the binary protocol spells it (one key with a
/// space); the text protocol answers these itself.
fn detail_group(group: &[u8], w: &mut StatWriter<'_>, stats: &mut Stats) -> Status {
    match group {
        b"detail on" => stats.detail.enabled = true,
        b"detail off" => stats.detail.enabled = false,
        b"detail dump" => {
            let mut dump = Vec::new();
            stats.detail.dump(&mut dump);
            if let StatFormat::Binary(reply) = w.format {
                reply.packet(w.out, Status::NoError, 0, &[], b"detailed", &dump);
            }
        }
        _ => return Status::KeyNotFound,
    }
    w.end();
    Status::NoError
}

struct StatWriter<'a> {
    out: &'a mut Vec<u8>,
    format: StatFormat,
    text: String,
}

impl StatWriter<'_> {
    fn stat(&mut self, name: &str, value: impl std::fmt::Display) {
        self.text.clear();
        // Writing into a String cannot fail.
        let _ = write!(self.text, "{value}");
        match self.format {
            StatFormat::Binary(reply) => reply.packet(
                self.out,
                Status::NoError,
                0,
                &[],
                name.as_bytes(),
                self.text.as_bytes(),
            ),
            StatFormat::Text => text::encoder::stat(self.out, name, self.text.as_bytes()),
        }
    }

    fn end(&mut self) {
        match self.format {
            StatFormat::Binary(reply) => reply.ok(self.out, 0, &[]),
            StatFormat::Text => self.out.extend_from_slice(b"END\r\n"),
        }
    }
}

fn rusage() -> (f64, f64) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

fn general(w: &mut StatWriter<'_>, s: &Stats, store: &Store, settings: &Settings) {
    let st = store.stats();
    let (user, system) = rusage();
    w.stat("pid", std::process::id());
    w.stat("uptime", settings.started.elapsed().as_secs());
    w.stat("time", store.clock().unix_now());
    w.stat("version", VERSION);
    w.stat("pointer_size", usize::BITS);
    w.stat("rusage_user", format_args!("{user:.6}"));
    w.stat("rusage_system", format_args!("{system:.6}"));
    w.stat("max_connections", settings.config.conn_limit);
    w.stat("curr_connections", s.curr_connections);
    w.stat("total_connections", s.total_connections);
    w.stat("rejected_connections", s.rejected_connections);
    w.stat("connection_structures", s.curr_connections);
    w.stat("cmd_get", s.cmd_get);
    w.stat("cmd_set", s.cmd_set);
    w.stat("cmd_flush", s.cmd_flush);
    w.stat("cmd_touch", s.cmd_touch);
    w.stat("cmd_meta", s.cmd_meta);
    w.stat("get_hits", s.get_hits);
    w.stat("get_misses", s.get_misses);
    w.stat("get_expired", st.get_expired);
    w.stat("get_flushed", st.get_flushed);
    w.stat("delete_misses", s.delete_misses);
    w.stat("delete_hits", s.delete_hits);
    w.stat("incr_misses", s.incr_misses);
    w.stat("incr_hits", s.incr_hits);
    w.stat("decr_misses", s.decr_misses);
    w.stat("decr_hits", s.decr_hits);
    w.stat("cas_misses", s.cas_misses);
    w.stat("cas_hits", s.cas_hits);
    w.stat("cas_badval", s.cas_badval);
    w.stat("touch_hits", s.touch_hits);
    w.stat("touch_misses", s.touch_misses);
    w.stat("store_too_large", s.store_too_large);
    w.stat("store_no_memory", s.store_no_memory);
    w.stat("auth_cmds", s.auth_cmds);
    w.stat("auth_errors", s.auth_errors);
    w.stat("bytes_read", s.bytes_read);
    w.stat("bytes_written", s.bytes_written);
    w.stat("limit_maxbytes", st.limit_maxbytes);
    w.stat("accepting_conns", 1);
    // We never stop listening (memcached does at -c); no allocation outside the
    // store can fail softly.
    w.stat("listen_disabled_num", 0);
    w.stat("time_in_listen_disabled_us", 0);
    w.stat("malloc_fails", 0);
    w.stat("threads", 1);
    w.stat("conn_yields", s.conn_yields);
    w.stat("set_in_place", s.set_in_place);
    w.stat("set_buffered", s.set_buffered);
    w.stat("hash_bytes", st.index_bytes);
    w.stat("bytes", st.bytes);
    w.stat("curr_items", st.curr_items);
    w.stat("total_items", st.total_items);
    w.stat("expired_unfetched", st.expired_unfetched);
    w.stat("evicted_unfetched", st.evicted_unfetched);
    w.stat("evictions", st.evictions);
    w.stat("reclaimed", st.reclaimed);
    w.stat("protocol_errors", s.protocol_errors);
    w.stat("expiry_slice_max_us", s.expiry_slice_max_us);
}

fn settings_group(w: &mut StatWriter<'_>, stats: &Stats, settings: &Settings) {
    let config = &settings.config;
    w.stat("maxbytes", config.memory_limit_bytes());
    w.stat("maxconns", config.conn_limit);
    w.stat("tcp_backlog", config.listen_backlog);
    w.stat("tcpport", settings.port);
    w.stat("udpport", 0);
    w.stat("verbosity", config.verbosity);
    w.stat("evictions", "on");
    // memcached prints a missing socket path as C's "NULL".
    match &config.unix_socket {
        Some(path) => w.stat("domain_socket", path.display()),
        None => w.stat("domain_socket", "NULL"),
    }
    w.stat("umask", format_args!("{:o}", config.unix_mask));
    w.stat("num_threads", 1);
    w.stat("stat_key_prefix", ":");
    w.stat(
        "detail_enabled",
        if stats.detail.enabled { "yes" } else { "no" },
    );
    w.stat("cas_enabled", "yes");
    w.stat("flush_enabled", "yes");
    w.stat("binding_protocol", "auto-negotiate");
    w.stat("auth_enabled_sasl", if config.sasl { "yes" } else { "no" });
    // One password file serves the binary and the text login.
    w.stat("auth_enabled_ascii", if config.sasl { "yes" } else { "no" });
    w.stat("item_size_max", config.item_size_max);
    // memcached's name for -e; it prints C's "NULL" when there is none.
    match &config.memory_file {
        Some(path) => w.stat("memory_file", path.display()),
        None => w.stat("memory_file", "NULL"),
    }
    w.stat("idle_timeout", config.idle_timeout_secs);
    match config.cpu {
        Some(cpu) => w.stat("cpu", cpu),
        None => w.stat("cpu", "none"),
    }
}

/// memcached reports per slab class; we have one store, reported as class 1.
/// Only the names whose values we know: memcached-tool's `display` reads
/// `number`, `age`, `evicted`, `evicted_time` and `outofmemory`. `age` is the
/// idle time of the least recently accessed item where eviction looks first
/// (`Store::oldest_item_age`), as memcached's is its LRU tail's.
fn items_group(w: &mut StatWriter<'_>, s: &Stats, store: &Store) {
    let st = store.stats();
    w.stat("items:1:number", st.curr_items);
    w.stat("items:1:age", store.oldest_item_age());
    w.stat("items:1:mem_requested", st.bytes);
    w.stat("items:1:evicted", st.evictions);
    w.stat("items:1:evicted_time", st.evicted_time);
    w.stat("items:1:outofmemory", s.store_no_memory);
    w.stat("items:1:reclaimed", st.reclaimed);
    w.stat("items:1:expired_unfetched", st.expired_unfetched);
    w.stat("items:1:evicted_unfetched", st.evicted_unfetched);
}

/// Our equivalent of memcached's slab classes: the segments, shown as class 1
/// whose chunks are segments (what memcached-tool's `display` and
/// memcached_exporter read), then our own segment counters.
fn slabs_group(w: &mut StatWriter<'_>, s: &Stats, store: &Store) {
    let st = store.stats();
    w.stat("1:chunk_size", st.segment_bytes);
    w.stat("1:chunks_per_page", 1);
    w.stat("1:total_pages", st.segments_used);
    w.stat("1:total_chunks", st.segments_total);
    w.stat("1:used_chunks", st.segments_used);
    w.stat("1:free_chunks", st.segments_free);
    w.stat("1:free_chunks_end", 0);
    w.stat("1:get_hits", s.get_hits);
    w.stat("1:cmd_set", s.cmd_set);
    w.stat("1:delete_hits", s.delete_hits);
    w.stat("1:incr_hits", s.incr_hits);
    w.stat("1:decr_hits", s.decr_hits);
    w.stat("1:cas_hits", s.cas_hits);
    w.stat("1:cas_badval", s.cas_badval);
    w.stat("1:touch_hits", s.touch_hits);
    w.stat("segment_size", st.segment_bytes);
    w.stat("segments_total", st.segments_total);
    w.stat("segments_used", st.segments_used);
    w.stat("segments_free", st.segments_free);
    w.stat("segments_compacted", st.segments_compacted);
    w.stat("segments_released", st.segments_released);
    w.stat("segments_expired", st.segments_expired);
    w.stat("items_kept_by_compaction", st.items_kept);
    w.stat("compaction_bytes_moved", st.bytes_moved);
    w.stat("segments_passed_over", st.segments_passed_over);
    w.stat("live_bytes", st.bytes);
    w.stat("dead_bytes", st.dead_bytes);
    w.stat("index_bytes", st.index_bytes);
    w.stat("active_slabs", 1);
    w.stat("total_malloced", st.segments_used * st.segment_bytes);
}
