//! The servers `compare` starts: spawned pinned, waited for, sampled from /proc, asked for
//! STAT, killed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{num, Res};
use crate::wire::{parse_header, put_header, HEADER, OP_STAT, RESPONSE_MAGIC};

/// A server process started for a comparison.
pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub port: u16,
    pub cmdline: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Starts `path` pinned to `cpu` with `-m mb` and `extra` flags (both servers spell
/// `-c`, `-b` alike), and waits until it accepts.
pub fn start_server(
    name: &'static str,
    path: &str,
    cpu: usize,
    mb: u64,
    extra: &[&str],
) -> Res<Server> {
    let port = free_port()?;
    let mut args: Vec<String> = vec!["-c".into(), cpu.to_string(), path.into()];
    if name == "memcached" {
        args.extend(["-t", "1"].map(String::from));
    }
    args.extend(["-m".into(), mb.to_string(), "-p".into(), port.to_string()]);
    if name == "memcached" {
        args.extend(["-U", "0", "-u", "root", "-l", "127.0.0.1"].map(String::from));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let cmdline = format!("taskset {}", args.join(" "));
    let log = std::env::temp_dir().join(format!("pincache-bench-{name}-{port}.log"));
    let f = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new("taskset")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .map_err(|e| format!("{cmdline}: {e}"))?;
    let mut srv = Server {
        name,
        child,
        port,
        cmdline,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(srv);
        }
        if let Ok(Some(status)) = srv.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before accepting; log: {}",
                srv.cmdline,
                log.display()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not accept within 10 s; log: {}",
                srv.cmdline,
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One value from the binary STAT command (e.g. `curr_items`).
pub fn binary_stat(port: u16, name: &str) -> Res<u64> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = Vec::new();
    put_header(&mut req, OP_STAT, 0, 0, 0, 7);
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut found = None;
    loop {
        let mut hb = [0u8; HEADER];
        s.read_exact(&mut hb).map_err(|e| format!("STAT: {e}"))?;
        let h = parse_header(&hb);
        let mut body = vec![0u8; h.body];
        s.read_exact(&mut body).map_err(|e| format!("STAT: {e}"))?;
        if h.magic != RESPONSE_MAGIC
            || h.op != OP_STAT
            || h.status != 0
            || h.key_len + h.extras > h.body
        {
            return Err(format!(
                "STAT: bad response op 0x{:02x} status {}",
                h.op, h.status
            ));
        }
        if h.key_len == 0 {
            return found.ok_or(format!("STAT has no {name}"));
        }
        let key = &body[h.extras..h.extras + h.key_len];
        if key == name.as_bytes() {
            let v = String::from_utf8_lossy(&body[h.extras + h.key_len..]).to_string();
            found = Some(num(name, v.trim())?);
        }
    }
}
