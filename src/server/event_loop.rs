//! The event loop: one mio `Poll` owning the listener, every connection (in a
//! slab) and the store. Each turn: handle readiness, then refresh the clock, do a
//! bounded slice of expiry work and close idle connections.

use std::io;
use std::net::ToSocketAddrs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::arrival::IN_PLACE_VALUE_BYTES;
use super::connection::{Connection, Liveness, Stream, READ_BUFFER_BYTES};
use super::conns::{ConnState, ConnTable};
use super::dispatch::{Context, Protocol};
use super::log_limit::LogLimit;
use super::sasl::Sasl;
use super::stats::{Settings, Stats};
use crate::config::Config;
use crate::protocol::{Limits, HEADER_LEN, MAX_KEY_LEN};
use crate::store::{Clock, Start, Store, StoreConfig};

const LISTENER: Token = Token(usize::MAX - 1);
/// Poll timeout while idle: how soon a signal, an idle timeout or a delayed
/// flush is noticed at the latest.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Items of expiry work per loop turn: well under a millisecond of work.
const EXPIRY_ITEMS_PER_TURN: usize = 2000;
/// Most connections accepted per loop turn; the rest are taken on the next turns, which
/// poll without waiting. Each accepted client is served in the next turn, so a turn of
/// a storm costs about this many accepts plus this many first requests: the batch sets
/// how long a connection already served waits, not how fast the queue drains (16 and 64
/// both took 3,000 connections in 0.1-0.15 s; 16 served a waiting client every 1-2 ms
/// under strace, 64 every ~6.5 ms).
const ACCEPTS_PER_TURN: usize = 16;
/// After running out of file descriptors, wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At shutdown, give clients this long to take their queued answers.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        // memcached's signal for "stop and keep the memory file"; here every
        // clean stop keeps it, so SIGUSR1 is one more way to stop.
        libc::signal(libc::SIGUSR1, handler as libc::sighandler_t);
        // A peer closing mid-write must be an error from write(), not a kill.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub struct Server {
    poll: Poll,
    listener: Listener,
    /// Where we listen, for the log and for tests that bind port 0.
    pub local_addr: String,
    conns: Slab<Connection>,
    store: Store,
    stats: Stats,
    settings: Settings,
    sasl: Option<Sasl>,
    limits: Limits,
    max_frame: usize,
    conn_limit: usize,
    idle_timeout: Option<Duration>,
    accept_paused_until: Option<Instant>,
    /// The listener may hold queued connections. Its readiness is edge-triggered, so this
    /// stays set until accept says WouldBlock, however many turns that takes.
    accept_ready: bool,
    log_limit: LogLimit,
    now: Instant,
    /// The one read buffer every connection is read into (see connection.rs).
    read_buffer: Vec<u8>,
    /// The output buffer a connection with nothing queued answers into (see
    /// `Connection::drive`); grown on demand, kept warm between connections.
    output_buffer: Vec<u8>,
    /// What `stats conns` lists, under the connections' slab keys.
    conn_table: ConnTable,
}

impl Server {
    /// Binds the listener and reserves the store; nothing is served until `run`.
    pub fn bind(config: &Config) -> io::Result<Server> {
        // Before the store is opened: with `-e` the restore removes the restart
        // record first, and a SIGTERM that killed the process during the restore
        // (it takes a second or so for a large cache) would lose the cache. Caught,
        // it lets the restore finish and `run` stop at once, writing the record.
        install_signal_handlers();
        let poll = Poll::new()?;
        let (mut listener, local_addr) = match &config.unix_socket {
            Some(path) => bind_unix(path, config.unix_mask, config.listen_backlog)?,
            None => {
                let addr = (config.listen.as_str(), config.port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
                let listener = TcpListener::bind(addr)?;
                set_backlog(listener.as_raw_fd(), config.listen_backlog)?;
                set_nodelay(listener.as_raw_fd())?;
                let local = listener.local_addr()?.to_string();
                (Listener::Tcp(listener), local)
            }
        };
        match &mut listener {
            Listener::Tcp(l) => poll.registry().register(l, LISTENER, Interest::READABLE)?,
            Listener::Unix(l) => poll.registry().register(l, LISTENER, Interest::READABLE)?,
        }
        let sasl = match (&config.sasl, &config.sasl_pwdb) {
            (true, Some(path)) => {
                let sasl = Sasl::from_file(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
                })?;
                info!(
                    "SASL on: {} users from {}",
                    sasl.user_count(),
                    path.display()
                );
                Some(sasl)
            }
            _ => None,
        };
        let store = open_store(config)?;
        let now = Instant::now();
        let conn_table = match &listener {
            Listener::Tcp(l) => {
                let family = if local_addr.starts_with('[') {
                    "tcp6"
                } else {
                    "tcp"
                };
                ConnTable::new(l.as_raw_fd(), format!("{family}:{local_addr}"), now)
            }
            Listener::Unix(l) => ConnTable::new(l.as_raw_fd(), format!("unix:{local_addr}"), now),
        };
        let port = match &listener {
            Listener::Tcp(l) => l.local_addr().map(|a| a.port()).unwrap_or(0),
            Listener::Unix(_) => 0,
        };
        Ok(Server {
            poll,
            listener,
            local_addr,
            conns: Slab::with_capacity(config.conn_limit.min(4096)),
            store,
            stats: Stats::default(),
            settings: Settings {
                started: now,
                port,
                config: config.clone(),
            },
            sasl,
            limits: Limits {
                max_value_len: config.item_size_max,
            },
            max_frame: HEADER_LEN + 20 + MAX_KEY_LEN + config.item_size_max,
            conn_limit: config.conn_limit,
            idle_timeout: (config.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(config.idle_timeout_secs)),
            accept_paused_until: None,
            accept_ready: false,
            log_limit: LogLimit::new(now),
            now,
            read_buffer: vec![0; READ_BUFFER_BYTES],
            output_buffer: Vec::new(),
            conn_table,
        })
    }

    /// Serves until SIGINT or SIGTERM, then sends what is queued and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_idle_check = Instant::now();
        while !SHUTDOWN.load(Ordering::Relaxed) {
            let accept_now = self.accept_ready && self.accept_paused_until.is_none();
            let timeout = if self.store.has_pending_work() || accept_now {
                Duration::ZERO
            } else {
                IDLE_POLL
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            // The listener first: a queued client waits one bounded batch of accepts,
            // not behind the reads and answers of every connection that is ready.
            if events.iter().any(|e| e.token() == LISTENER) {
                self.accept_ready = true;
            }
            if let Some(until) = self.accept_paused_until {
                if self.now >= until {
                    self.accept_paused_until = None;
                    self.accept_ready = true;
                }
            }
            if self.accept_ready && self.accept_paused_until.is_none() {
                self.accept();
            }
            for event in events.iter() {
                if event.token() != LISTENER {
                    self.drive(event.token().0, event.is_read_closed());
                }
            }
            self.store.tick(self.now);
            if self.store.has_due_work() {
                let slice_start = Instant::now();
                if self.store.run_due_work(EXPIRY_ITEMS_PER_TURN) > 0 {
                    let us = slice_start.elapsed().as_micros() as u64;
                    self.stats.expiry_slice_max_us = self.stats.expiry_slice_max_us.max(us);
                }
            }
            if self.now.duration_since(last_idle_check) >= Duration::from_secs(1) {
                last_idle_check = self.now;
                self.close_idle();
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Accepts up to `ACCEPTS_PER_TURN` queued connections; `accept_ready` stays set
    /// when the budget ran out first, so the rest are taken on the next turn.
    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let accepted = match &self.listener {
                // TCP_NODELAY comes from the listener (`set_nodelay`).
                Listener::Tcp(l) => l
                    .accept()
                    .map(|(s, addr)| (Stream::Tcp(s), addr.to_string())),
                Listener::Unix(l) => l
                    .accept()
                    .map(|(s, _)| (Stream::Unix(s), "unix".to_string())),
            };
            match accepted {
                Ok((stream, peer)) => self.add_connection(stream, peer),
                // A client that reset before we took it: the next one may be there.
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => return self.accept_failed(e),
            }
        }
    }

    /// Ends a batch of accepts on an error: drained, out of descriptors, or other.
    fn accept_failed(&mut self, e: io::Error) {
        // Until the next readiness edge, or the end of a pause.
        self.accept_ready = false;
        if e.kind() == io::ErrorKind::WouldBlock {
            return;
        }
        if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
            if self.log_limit.allow(self.now) {
                warn!("out of file descriptors ({e}); pausing accepts");
            }
            self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
        } else if self.log_limit.allow(self.now) {
            warn!("accept failed: {e}");
        }
    }

    fn add_connection(&mut self, mut stream: Stream, peer: String) {
        if self.conns.len() >= self.conn_limit {
            self.stats.rejected_connections += 1;
            if self.log_limit.allow(self.now) {
                warn!(
                    "connection limit {} reached: refusing {peer}",
                    self.conn_limit
                );
            }
            return; // dropping the stream closes it
        }
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key());
        // Edge-triggered, both directions, once: no epoll_ctl per backpressure
        // episode; a writable edge only comes after a write hit a full socket.
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register {peer}: {e}");
            return;
        }
        debug!("accepted {peer}");
        let fd = stream.as_raw_fd();
        self.conn_table.insert(entry.key(), fd, &peer, self.now);
        entry.insert(Connection::new(stream, peer, self.now));
        self.stats.curr_connections += 1;
        self.stats.total_connections += 1;
    }

    fn drive(&mut self, key: usize, peer_closed: bool) {
        let max_frame = self.max_frame;
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_active = now;
        self.conn_table.serving(Some(key), now);
        let mut ctx = Context {
            store: &mut self.store,
            stats: &mut self.stats,
            settings: &self.settings,
            sasl: self.sasl.as_ref(),
            limits: self.limits,
            log: &mut self.log_limit,
            conns: &self.conn_table,
            in_place_min: IN_PLACE_VALUE_BYTES,
        };
        let liveness = conn.drive(
            &mut ctx,
            &mut self.read_buffer,
            &mut self.output_buffer,
            max_frame,
            peer_closed,
        );
        let state = if conn.value_arriving() {
            ConnState::Nread
        } else if conn.session.protocol != Protocol::Unknown {
            ConnState::Read
        } else {
            ConnState::New
        };
        self.conn_table.served(key, state);
        if liveness == Liveness::Closed {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            conn.release(&mut self.store);
            let _ = self.poll.registry().deregister(conn.stream.source());
            debug!("closed {}", conn.peer);
            self.conn_table.remove(key);
            self.stats.curr_connections -= 1;
        }
    }

    fn close_idle(&mut self) {
        let Some(limit) = self.idle_timeout else {
            return;
        };
        let now = self.now;
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_active) >= limit)
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            if let Some(conn) = self.conns.get(key) {
                debug!("closing idle connection {}", conn.peer);
            }
            self.close(key);
        }
    }

    /// Stops accepting, gives clients a bounded time to take queued answers.
    fn shutdown(&mut self) {
        info!("shutting down: {} connections", self.conns.len());
        match &mut self.listener {
            Listener::Tcp(l) => {
                let _ = self.poll.registry().deregister(l);
            }
            Listener::Unix(l) => {
                let _ = self.poll.registry().deregister(l);
            }
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let mut events = Events::with_capacity(256);
        loop {
            let mut done = Vec::new();
            let mut ctx = Context {
                store: &mut self.store,
                stats: &mut self.stats,
                settings: &self.settings,
                sasl: self.sasl.as_ref(),
                limits: self.limits,
                log: &mut self.log_limit,
                conns: &self.conn_table,
                in_place_min: IN_PLACE_VALUE_BYTES,
            };
            for (key, conn) in self.conns.iter_mut() {
                if conn.flush(&mut ctx).is_err() || conn.pending_output() == 0 {
                    done.push(key);
                }
            }
            for key in done {
                self.close(key);
            }
            if self.conns.is_empty() || Instant::now() >= deadline {
                break;
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
        }
        if let Listener::Unix(_) = self.listener {
            if let Some(path) = &self.settings.config.unix_socket {
                let _ = std::fs::remove_file(path);
            }
        }
        // Values still arriving are given up: their items stay dead.
        for (_, conn) in self.conns.iter_mut() {
            conn.release(&mut self.store);
        }
        self.save_for_restart();
    }

    /// With `-e`, writes the restart record after the last answer went out.
    fn save_for_restart(&self) {
        let Some((path, _)) = self.store.memory_file() else {
            return;
        };
        let stats = self.store.stats();
        match self.store.save_for_restart() {
            Ok(Some(took)) => info!(
                "memory file {} kept for a warm restart: {} items, {} bytes (metadata written in {} us)",
                path.display(),
                stats.curr_items,
                stats.bytes,
                took.as_micros()
            ),
            Ok(None) => {}
            Err(e) => warn!(
                "memory file {}: cannot write the restart record ({e}); the next start will be cold",
                path.display()
            ),
        }
    }
}

/// The store: in anonymous memory, or with `-e` in the memory file, restored
/// from the last clean stop when that can be trusted.
fn open_store(config: &Config) -> io::Result<Store> {
    let store_config = StoreConfig {
        memory_limit: config.memory_limit_bytes(),
        item_size_max: config.item_size_max,
    };
    let Some(path) = &config.memory_file else {
        let store = Store::new(store_config, Clock::start())?;
        if config.large_pages {
            large_pages_anonymous(&store);
        }
        return Ok(store);
    };
    if config.large_pages {
        info!(
            "-L with -e: huge pages for {} come from its tmpfs mount (huge=within_size, see docs/deploy.md), not from pincache",
            path.display()
        );
    }
    let in_file =
        |e: io::Error| io::Error::new(e.kind(), format!("memory file {}: {e}", path.display()));
    let (store, start) = Store::with_memory_file(store_config, path).map_err(in_file)?;
    let (store, start) = if config.verify_restore {
        store.verify_restore(start).map_err(in_file)?
    } else {
        (store, start)
    };
    if let Some((_, false)) = store.memory_file() {
        warn!(
            "memory file {} is not on tmpfs: item writes go back to disk (writeback cost), and a clean stop waits for them",
            path.display()
        );
    }
    log_memory_file_start(path, start);
    Ok(store)
}

/// Where the kernel's transparent huge page switch is read.
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// `-L` without `-e`: asks for huge pages over the arena and says once what
/// came of it. THP `never` (or no THP at all) makes the advice a no-op: warned.
fn large_pages_anonymous(store: &Store) {
    let mode = std::fs::read_to_string(THP_ENABLED).ok();
    let selected = mode.as_deref().and_then(thp_selected);
    if let Err(e) = store.advise_huge_pages() {
        warn!("-L has no effect: madvise(MADV_HUGEPAGE) on the item memory failed: {e}");
        return;
    }
    match selected {
        Some("always" | "madvise") => info!(
            "-L: item memory aligned to 2 MB and advised MADV_HUGEPAGE (transparent huge pages: {})",
            selected.unwrap_or_default()
        ),
        Some(other) => warn!(
            "-L has no effect: {THP_ENABLED} is {other}; transparent huge pages are off"
        ),
        None => warn!("-L has no effect: {THP_ENABLED} cannot be read; no transparent huge pages"),
    }
}

/// The bracketed choice of a sysfs switch (`always [madvise] never` -> `madvise`).
fn thp_selected(line: &str) -> Option<&str> {
    let start = line.find('[')? + 1;
    let len = line[start..].find(']')?;
    Some(&line[start..start + len])
}

/// The start-up lines of `-e`: what came back (and, with `--verify-restore`,
/// that it was checked), or why the server starts cold.
fn log_memory_file_start(path: &std::path::Path, start: Start) {
    match start {
        Start::Restored {
            items,
            bytes,
            expired,
            micros,
            verified_micros,
        } => {
            info!(
                "warm restart from {}: {items} items, {bytes} bytes back in {:.3} s ({expired} expired while down)",
                path.display(),
                micros as f64 / 1e6
            );
            if let Some(us) = verified_micros {
                info!(
                    "memory file {}: restore verified in {:.3} s: index and segments agree ({items} items, {bytes} bytes)",
                    path.display(),
                    us as f64 / 1e6
                );
            }
        }
        Start::Cold { reason } => warn!("memory file {}: starting cold: {reason}", path.display()),
    }
}

/// Sets a listening socket's backlog. mio's bind listens with 128 (TCP) or the kernel's
/// maximum (unix); Linux lets listen(2) be called again on a listening socket to change
/// its queue length, so the socket mio bound gets memcached's `-b` without a hand-made
/// socket. A storm larger than the backlog overflows the queue and each dropped SYN
/// costs its client a one-second retransmit.
fn set_backlog(fd: RawFd, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: listen() on a descriptor we own; it only changes the socket's queue length.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets TCP_NODELAY on the listening socket, so that answers go out as soon as a
/// batch is done. Linux copies it to every socket accepted from it (memcached sets
/// it on its listener only, too): one system call fewer per accepted connection.
fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a descriptor we own; the kernel reads one c_int from a
    // live local of exactly the length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bind_unix(path: &std::path::Path, mask: u32, backlog: u32) -> io::Result<(Listener, String)> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only ever replace a socket, never a file a mistyped path points at.
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        // A live server answers a connect; a stale socket from a crash does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running server", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    set_backlog(listener.as_raw_fd(), backlog)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mask))?;
    Ok((Listener::Unix(listener), path.display().to_string()))
}

/// Logs where we listen, with the memory and item limits.
pub fn log_start(server: &Server, config: &Config) {
    info!(
        "pincache {} listening on {}, memory limit {} MB, item size limit {} bytes",
        super::stats::VERSION,
        server.local_addr,
        config.memory_limit_mb,
        config.item_size_max
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Connects to a fresh listener (TCP_NODELAY set on it or not) and accepts.
    fn accepted(nodelay: bool) -> mio::net::TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        if nodelay {
            set_nodelay(listener.as_raw_fd()).unwrap();
        }
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((s, _)) => return s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[test]
    fn sockets_accepted_from_the_listener_have_nodelay() {
        assert!(
            accepted(true).nodelay().unwrap(),
            "TCP_NODELAY not inherited"
        );
        // Without it on the listener they have not: the check above means something.
        assert!(!accepted(false).nodelay().unwrap());
    }
}
