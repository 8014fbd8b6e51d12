//! SASL PLAIN (`-S`, issue 5): the raw protocol, checked against pincache and against
//! memcached's own SASL (Cyrus SASL with a sasldb made by `saslpasswd2`), and a real
//! client (python-binary-memcached) logging in with a username and password.
//!
//! memcached's side needs `memcached` and `saslpasswd2` (Debian: `apt-get install -y
//! memcached sasl2-bin libsasl2-modules`); the client needs python-binary-memcached
//! (python3-binary-memcached, or pip). A missing one fails the test, naming the package,
//! unless `PINCACHE_SKIP_PEERS=1` (see tests/common/peers.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{get, noop, op, set, status, Client, Request, Server};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret pass:word";
/// Where python-binary-memcached comes from.
const BMEMCACHED_PACKAGE: &str =
    "the Debian package python3-binary-memcached (or pip's python-binary-memcached)";

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pincache-sasl-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// pincache with `-S --sasl-pwdb FILE`, the file holding `USER:PASSWORD` and another user.
fn pincache_with_sasl() -> (Server, TempDir) {
    let dir = TempDir::new("pincache");
    let pwdb = dir.path().join("pwdb");
    std::fs::write(
        &pwdb,
        format!("# users\nbob:bobs-password\n{USER}:{PASSWORD}\n"),
    )
    .unwrap();
    let server = Server::pincache(&["-S", "--sasl-pwdb", pwdb.to_str().unwrap()]);
    (server, dir)
}

/// memcached with `-S`, its Cyrus SASL configured (SASL_CONF_PATH) for PLAIN against a
/// sasldb holding `USER:PASSWORD`. `None` after a loud message when a tool is missing.
fn memcached_with_sasl() -> Option<(Server, TempDir)> {
    for (tool, hint) in [
        ("memcached", "the Debian package memcached"),
        (
            "saslpasswd2",
            "the Debian packages sasl2-bin and libsasl2-modules",
        ),
    ] {
        if !common::on_path(tool) {
            common::missing_tool(tool, hint);
            return None;
        }
    }
    let dir = TempDir::new("memcached");
    let sasldb = dir.path().join("sasldb2");
    std::fs::write(
        dir.path().join("memcached.conf"),
        format!("mech_list: plain\nsasldb_path: {}\n", sasldb.display()),
    )
    .unwrap();
    for (user, password) in [(USER, PASSWORD), ("bob", "bobs-password")] {
        let mut child = Command::new("saslpasswd2")
            .args(["-a", "memcached", "-c", "-p", "-f"])
            .arg(&sasldb)
            .arg(user)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run saslpasswd2");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "saslpasswd2 failed");
    }
    let conf = dir.path().to_path_buf();
    let root = common::running_as_root();
    let server = Server::custom("memcached", |port| {
        let mut cmd = Command::new("memcached");
        cmd.args([
            "-B",
            "binary",
            "-S",
            "-t",
            "1",
            "-U",
            "0",
            "-l",
            "127.0.0.1",
        ]);
        cmd.args(["-p", &port.to_string()]);
        if root {
            cmd.args(["-u", "root"]);
        }
        cmd.env("SASL_CONF_PATH", &conf);
        cmd
    });
    Some((server, dir))
}

fn plain(user: &str, password: &str) -> Request {
    Request::new(op::SASL_AUTH)
        .key("PLAIN")
        .value(format!("\0{user}\0{password}"))
}

/// Log in on `c`; panics unless it succeeds.
#[track_caller]
fn login(c: &mut Client) {
    let r = c.call(&plain(USER, PASSWORD));
    r.expect(op::SASL_AUTH, status::OK);
    assert_eq!(r.value, b"Authenticated");
}

/// The raw-protocol checks, the same for pincache and memcached.
fn raw_protocol(server: &Server) {
    // The mechanism list is space-separated and offers PLAIN, before any login.
    let mut c = server.connect();
    let r = c.call(&Request::new(op::SASL_LIST_MECHS));
    r.expect(op::SASL_LIST_MECHS, status::OK);
    let mechs = String::from_utf8_lossy(&r.value).into_owned();
    assert!(
        mechs.split(' ').any(|m| m == "PLAIN"),
        "mechanisms {mechs:?} lack PLAIN"
    );
    // VERSION is allowed before login (memcached's list: the SASL commands and VERSION).
    c.call(&Request::new(op::VERSION))
        .expect(op::VERSION, status::OK);

    // Any other command before login: 0x0020, then the connection is closed.
    for req in [
        get(op::GET, "k"),
        set("sasl:unauth", "stolen"),
        Request::new(op::SETQ)
            .key("sasl:unauth")
            .value("stolen")
            .extras(common::store_extras(0, 0)),
        get(op::GETQ, "k"),
        noop(),
        Request::new(op::STAT),
        Request::new(op::FLUSH),
    ] {
        let mut c = server.connect();
        let r = c.call(&req.clone().opaque(0x5a5a));
        r.expect(req.opcode, status::AUTH_ERROR);
        assert_eq!(r.value, b"Auth failure.", "{}", req.describe());
        assert_eq!(r.opaque, 0x5a5a);
        c.expect_closed();
    }

    // Failed logins: 0x0020 and the connection stays open for another try.
    let mut c = server.connect();
    for (what, req) in [
        ("wrong password", plain(USER, "wrong")),
        ("empty password", plain(USER, "")),
        ("unknown user", plain("mallory", PASSWORD)),
        ("another user's password", plain(USER, "bobs-password")),
        (
            "no NUL separators",
            Request::new(op::SASL_AUTH).key("PLAIN").value(USER),
        ),
        (
            "unknown mechanism",
            Request::new(op::SASL_AUTH)
                .key("CRAM-MD5")
                .value("alice 0123456789abcdef"),
        ),
    ] {
        let r = c.call(&req);
        assert!(
            r.opcode == op::SASL_AUTH && r.status == status::AUTH_ERROR,
            "{what}: {}",
            r.describe()
        );
    }
    // Still not logged in.
    let mut probe = server.connect();
    probe
        .call(&get(op::GET, "k"))
        .expect(op::GET, status::AUTH_ERROR);
    probe.expect_closed();

    // The right password on the same connection: logged in, and everything works.
    login(&mut c);
    c.call(&set("sasl:k", "v")).expect(op::SET, status::OK);
    let r = c.call(&get(op::GET, "sasl:k"));
    r.expect(op::GET, status::OK);
    assert_eq!(r.value, b"v");
    // Nothing the refused commands sent was stored.
    c.call(&get(op::GET, "sasl:unauth"))
        .expect(op::GET, status::KEY_NOT_FOUND);
    assert!(c.until_noop().is_empty());

    // Logging in is per connection.
    let mut other = server.connect();
    other
        .call(&get(op::GET, "sasl:k"))
        .expect(op::GET, status::AUTH_ERROR);
    other.expect_closed();
    let mut other = server.connect();
    login(&mut other);
    assert_eq!(other.call(&get(op::GET, "sasl:k")).value, b"v");
    // The other user in the file can log in too.
    let mut bob = server.connect();
    bob.call(&plain("bob", "bobs-password"))
        .expect(op::SASL_AUTH, status::OK);
    assert_eq!(bob.call(&get(op::GET, "sasl:k")).value, b"v");
}

#[test]
fn raw_protocol_pincache() {
    let (server, _dir) = pincache_with_sasl();
    raw_protocol(&server);
}

#[test]
fn raw_protocol_memcached() {
    if let Some((server, _dir)) = memcached_with_sasl() {
        raw_protocol(&server);
    }
}

/// Credentials from the `MEMCACHED_SASL_PWDB` environment variable, as memcached's
/// `--enable-sasl-pwdb` builds read them.
#[test]
fn pwdb_from_the_environment() {
    let dir = TempDir::new("env");
    let pwdb = dir.path().join("pwdb");
    std::fs::write(&pwdb, format!("{USER}:{PASSWORD}\n")).unwrap();
    let server = Server::pincache_env(&["-S"], &[("MEMCACHED_SASL_PWDB", pwdb.to_str().unwrap())]);
    let mut c = server.connect();
    c.call(&plain(USER, "nope"))
        .expect(op::SASL_AUTH, status::AUTH_ERROR);
    login(&mut c);
    c.call(&set("k", "v")).expect(op::SET, status::OK);
}

/// A connection that has logged in is a normal connection: stats count the attempts.
#[test]
fn auth_stats_count_attempts_and_failures() {
    let (server, _dir) = pincache_with_sasl();
    let mut c = server.connect();
    c.call(&plain(USER, "wrong"))
        .expect(op::SASL_AUTH, status::AUTH_ERROR);
    login(&mut c);
    let cmds = c.stat_u64("auth_cmds");
    let errors = c.stat_u64("auth_errors");
    assert!(cmds >= 2, "auth_cmds {cmds}");
    assert!(errors >= 1, "auth_errors {errors}");
}

/// Run tests/clients/sasl_bmemcached.py against `server`; `false` if it was skipped.
fn python_client(server: &Server) -> bool {
    let Some(python) = common::python_with("bmemcached", BMEMCACHED_PACKAGE) else {
        return false;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/sasl_bmemcached.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("127.0.0.1:{}", server.port))
        .args([USER, PASSWORD])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        // The script could not import bmemcached after all.
        common::missing_tool("python-binary-memcached", BMEMCACHED_PACKAGE);
        return false;
    }
    assert!(
        out.status.success(),
        "bmemcached against {}: {}\nstdout: {stdout}\nstderr: {stderr}",
        server.name,
        out.status
    );
    eprintln!("bmemcached against {}: {}", server.name, stdout.trim());
    true
}

#[test]
fn python_binary_memcached_logs_in_to_pincache() {
    let (server, _dir) = pincache_with_sasl();
    python_client(&server);
}

#[test]
fn python_binary_memcached_logs_in_to_memcached() {
    if let Some((server, _dir)) = memcached_with_sasl() {
        python_client(&server);
    }
}

/// Found by fuzzing: an over-size SET is refused before its value is read, and that
/// path must check the login too, or an anonymous client could delete any key.
#[test]
fn unauthenticated_oversized_set_deletes_nothing() {
    let (server, _dir) = pincache_with_sasl();
    let mut admin = server.connect();
    login(&mut admin);
    admin
        .call(&set("sasl:keep", "precious"))
        .expect(op::SET, status::OK);
    let mut c = server.connect();
    let mut big = set("sasl:keep", "");
    big.body_len_override = Some(8 + 9 + (2 << 20));
    c.send(&big);
    let r = c.recv();
    r.expect(op::SET, status::AUTH_ERROR);
    c.expect_closed();
    let r = admin.call(&get(op::GET, "sasl:keep"));
    r.expect(op::GET, status::OK);
    assert_eq!(r.value, b"precious");
}
