//! SASL PLAIN authentication (`-S`), with credentials from a file of
//! `user:password` lines. memcached uses Cyrus SASL for this; PLAIN is the
//! mechanism binary-protocol clients (pylibmc, bmemcached, memjs, spymemcached) use.

use std::io;
use std::path::Path;

use super::dispatch::Session;
use super::stats::Stats;
use crate::protocol::{Opcode, Request, Status};

/// The mechanisms SASL_LIST_MECHS offers.
pub const MECHANISMS: &[u8] = b"PLAIN";

/// The credentials a server accepts.
pub struct Sasl {
    users: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Sasl {
    /// Reads `user:password` lines; blank lines and `#` comments are skipped.
    pub fn from_file(path: &Path) -> io::Result<Sasl> {
        let text = std::fs::read(path)?;
        Ok(Sasl::from_lines(&text))
    }

    pub fn from_lines(text: &[u8]) -> Sasl {
        let users = text
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty() && line[0] != b'#')
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                Some((line[..colon].to_vec(), line[colon + 1..].to_vec()))
            })
            .collect();
        Sasl { users }
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether `user` has `password`; compares every entry in full so the time
    /// taken does not depend on where a mismatch is.
    fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let mut found = false;
        for (u, p) in &self.users {
            found |= constant_time_eq(u, user) & constant_time_eq(p, password);
        }
        found
    }

    /// Answers SASL_LIST_MECHS, SASL_AUTH and SASL_STEP.
    pub fn answer(
        &self,
        request: &Request<'_>,
        stats: &mut Stats,
        session: &mut Session,
        out: &mut Vec<u8>,
    ) -> Status {
        match request.command {
            Opcode::SaslListMechs => {
                request.reply().ok(out, 0, MECHANISMS);
                Status::NoError
            }
            Opcode::SaslAuth if request.key == b"PLAIN" => {
                stats.auth_cmds += 1;
                // PLAIN: authzid NUL authcid NUL password.
                let mut parts = request.value.splitn(3, |&b| b == 0);
                let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
                match (user, password) {
                    (Some(user), Some(password)) if self.check(user, password) => {
                        session.authenticated = true;
                        request.reply().ok(out, 0, b"Authenticated");
                        Status::NoError
                    }
                    _ => {
                        stats.auth_errors += 1;
                        request.reply().error(out, Status::AuthError);
                        Status::AuthError
                    }
                }
            }
            // An unknown mechanism, or a step PLAIN never takes.
            _ => {
                stats.auth_cmds += 1;
                stats.auth_errors += 1;
                request.reply().error(out, Status::AuthError);
                Status::AuthError
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_password_lines() {
        let sasl = Sasl::from_lines(b"# comment\nalice:secret\r\n\nbob:pa:ss\n");
        assert_eq!(sasl.user_count(), 2);
        assert!(sasl.check(b"alice", b"secret"));
        assert!(sasl.check(b"bob", b"pa:ss"));
        assert!(!sasl.check(b"alice", b"wrong"));
        assert!(!sasl.check(b"carol", b""));
    }
}
