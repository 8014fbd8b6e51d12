//! The peers the tests compare pincache with or drive it through (memcached,
//! memccapable, saslpasswd2, pylibmc, python-binary-memcached, pymemcache): finding them,
//! and what a missing one does.
//!
//! A missing peer fails the test with a message naming the package to install (`bash
//! .ci/test` installs them all). With `PINCACHE_SKIP_PEERS=1` the test skips the part that
//! needs the peer instead: it says so on the terminal (past libtest's output capture) and
//! appends its name to the file named by `PINCACHE_SKIP_LOG`, from which `.ci/test`
//! counts it as skipped rather than passed. See docs/testing.md.

use std::io::Write;
use std::process::{Command, Stdio};

/// The opt-out: set to 1 to skip what needs a missing peer instead of failing.
pub const SKIP_PEERS: &str = "PINCACHE_SKIP_PEERS";
/// A file each skipping test appends one line to: "BINARY TEST".
pub const SKIP_LOG: &str = "PINCACHE_SKIP_LOG";

/// Whether `name` is an executable found on `PATH`.
pub fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
}

/// Whether the opt-out is set.
pub fn skipping_peers() -> bool {
    std::env::var(SKIP_PEERS).is_ok_and(|v| v == "1")
}

/// A peer this test needs is missing. Fails the test naming `package`, unless
/// `PINCACHE_SKIP_PEERS=1`: then records the skip and returns, and the caller skips.
#[track_caller]
pub fn missing_tool(tool: &str, package: &str) {
    if !skipping_peers() {
        panic!(
            "`{tool}` is not installed: install {package} (`bash .ci/test` installs every \
             peer), or set {SKIP_PEERS}=1 to skip the tests that need it"
        );
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    let binary = test_binary();
    let line = format!("SKIPPED {binary} {test}: `{tool}` is not installed ({package})\n");
    // Straight to the stderr handle: eprintln! would be captured and shown only on failure.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        // One short O_APPEND write per line: lines from parallel tests do not interleave.
        let written = log.and_then(|mut f| f.write_all(format!("{binary} {test}\n").as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}

/// The running test binary's name without cargo's hash ("protocol-1a2b..." -> "protocol").
fn test_binary() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('-') {
        Some((stem, _hash)) => stem.to_string(),
        None => name,
    }
}

/// A python that can `import module`: `PINCACHE_PYTHON`, else `python3`, else
/// `/usr/bin/python3` (Debian's python3-* packages install there; a python3 earlier on
/// `PATH`, such as pyenv's, may not see them). `None` after `missing_tool`.
pub fn python_with(module: &str, package: &str) -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("PINCACHE_PYTHON").into_iter().collect();
    candidates.extend(["python3".to_string(), "/usr/bin/python3".to_string()]);
    let found = candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        missing_tool(&format!("{module} (python module)"), package);
    }
    found
}
