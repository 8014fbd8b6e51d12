//! What /proc says about a process (CPU time, memory) and about the kernel's TCP
//! counters (listen queue overflows), and the descriptor limit a storm needs. In the
//! library, so tests/storm.rs reads the same counters.

/// utime + stime of a process (`"self"` or a pid), all threads, in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (tick(11) + tick(12)) / hz // fields 14 and 15, counted after "pid (comm)"
}

/// A line of /proc/PID/status in bytes (VmRSS, VmHWM).
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// TcpExt ListenOverflows from /proc/net/netstat: connections dropped because a listen
/// queue was full, for the whole network namespace. None when unreadable.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// CPU use of a process over a window, in percent of one core.
pub struct CpuMeter {
    pid: String,
    cpu0: f64,
    t0: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: &str) -> CpuMeter {
        CpuMeter {
            pid: pid.to_string(),
            cpu0: cpu_seconds(pid),
            t0: std::time::Instant::now(),
        }
    }

    pub fn percent(&self) -> f64 {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        (cpu_seconds(&self.pid) - self.cpu0) / wall * 100.0
    }
}

/// Raises the soft descriptor limit (inherited by servers started later) to `want`.
pub fn raise_nofile(want: u64) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_cur.max(want.min(lim.rlim_max));
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if !ok || lim.rlim_cur < want {
        return Err(format!(
            "storm: need {want} descriptors, the limit is {} (ulimit -n)",
            lim.rlim_cur
        ));
    }
    Ok(())
}
