//! `stats conns` as memcached 1.6.18 answers it: lines for the listening socket,
//! then for each connection `<id>:addr`, `<id>:listen_addr`, `<id>:state` and
//! `<id>:secs_since_last_cmd`, ids being file descriptors as in memcached. The
//! event loop keeps this table beside its connection slab, under the same keys,
//! because the connection being served cannot see the others.

use std::time::Instant;

/// What a connection not being served waits for, as memcached names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Nothing sent yet: `conn_new_cmd`.
    New,
    /// Its next request: `conn_read`.
    Read,
    /// The rest of a value being read into its item: `conn_nread`.
    Nread,
}

impl ConnState {
    fn name(self) -> &'static str {
        match self {
            ConnState::New => "conn_new_cmd",
            ConnState::Read => "conn_read",
            ConnState::Nread => "conn_nread",
        }
    }
}

/// One connection as `stats conns` shows it.
#[derive(Debug)]
struct Entry {
    fd: i32,
    /// `tcp:IP:PORT`, `tcp6:[IP]:PORT` or `unix:PATH`.
    addr: String,
    last_cmd: Instant,
    state: ConnState,
}

#[derive(Debug)]
pub struct ConnTable {
    listener_fd: i32,
    listen_addr: String,
    started: Instant,
    /// Indexed by the connection's slab key.
    entries: Vec<Option<Entry>>,
    /// The key of the connection being served: memcached shows it parsing.
    current: Option<usize>,
}

impl ConnTable {
    /// `listen_addr` is memcached's form of the listening address (`tcp:...`
    /// or `unix:PATH`).
    pub fn new(listener_fd: i32, listen_addr: String, started: Instant) -> ConnTable {
        ConnTable {
            listener_fd,
            listen_addr,
            started,
            entries: Vec::new(),
            current: None,
        }
    }

    /// A connection accepted under slab key `key`; `peer` as the socket gave it.
    pub fn insert(&mut self, key: usize, fd: i32, peer: &str, now: Instant) {
        if self.entries.len() <= key {
            self.entries.resize_with(key + 1, || None);
        }
        let addr = if self.listen_addr.starts_with("unix:") {
            self.listen_addr.clone()
        } else if peer.starts_with('[') {
            format!("tcp6:{peer}")
        } else {
            format!("tcp:{peer}")
        };
        self.entries[key] = Some(Entry {
            fd,
            addr,
            last_cmd: now,
            state: ConnState::New,
        });
    }

    pub fn remove(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key) {
            *entry = None;
        }
    }

    /// The connection under `key` is being served now (or no one, `None`).
    pub fn serving(&mut self, key: Option<usize>, now: Instant) {
        self.current = key;
        if let Some(Some(entry)) = key.and_then(|k| self.entries.get_mut(k)) {
            entry.last_cmd = now;
        }
    }

    /// After serving `key`: what it waits for now.
    pub fn served(&mut self, key: usize, state: ConnState) {
        if let Some(Some(entry)) = self.entries.get_mut(key) {
            entry.state = state;
        }
        self.current = None;
    }

    /// Calls `stat(name, value)` for each line of `stats conns`, listener first.
    pub fn lines(&self, now: Instant, mut stat: impl FnMut(&str, &str)) {
        let secs = |since: Instant| now.saturating_duration_since(since).as_secs().to_string();
        let fd = self.listener_fd;
        stat(&format!("{fd}:addr"), &self.listen_addr);
        stat(&format!("{fd}:state"), "conn_listening");
        stat(&format!("{fd}:secs_since_last_cmd"), &secs(self.started));
        let mut live: Vec<(usize, &Entry)> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(key, e)| e.as_ref().map(|e| (key, e)))
            .collect();
        // memcached walks its connections by descriptor.
        live.sort_by_key(|(_, e)| e.fd);
        for (key, e) in live {
            let state = if self.current == Some(key) {
                "conn_parse_cmd"
            } else {
                e.state.name()
            };
            stat(&format!("{}:addr", e.fd), &e.addr);
            stat(&format!("{}:listen_addr", e.fd), &self.listen_addr);
            stat(&format!("{}:state", e.fd), state);
            stat(&format!("{}:secs_since_last_cmd", e.fd), &secs(e.last_cmd));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_for_the_listener_then_each_connection_by_descriptor() {
        let start = Instant::now();
        let mut table = ConnTable::new(7, "tcp:127.0.0.1:11211".into(), start);
        table.insert(1, 12, "127.0.0.1:5000", start);
        table.insert(0, 9, "[::1]:6000", start);
        table.insert(2, 14, "127.0.0.1:7000", start);
        table.remove(2);
        let later = start + Duration::from_secs(3);
        table.serving(Some(1), later);
        let mut lines = Vec::new();
        table.lines(later, |name, value| lines.push(format!("{name} {value}")));
        assert_eq!(
            lines,
            [
                "7:addr tcp:127.0.0.1:11211",
                "7:state conn_listening",
                "7:secs_since_last_cmd 3",
                "9:addr tcp6:[::1]:6000",
                "9:listen_addr tcp:127.0.0.1:11211",
                "9:state conn_new_cmd",
                "9:secs_since_last_cmd 3",
                "12:addr tcp:127.0.0.1:5000",
                "12:listen_addr tcp:127.0.0.1:11211",
                "12:state conn_parse_cmd",
                "12:secs_since_last_cmd 0",
            ]
        );
        table.served(1, ConnState::Read);
        table.served(0, ConnState::Nread);
        let mut states = Vec::new();
        table.lines(later, |name, value| {
            if name.ends_with(":state") {
                states.push(value.to_string());
            }
        });
        assert_eq!(states, ["conn_listening", "conn_nread", "conn_read"]);
    }
}
