//! Authentication (`-S`/`-Y`), with credentials from a file of `user:password`
//! lines: binary SASL PLAIN (memcached uses Cyrus SASL for this; PLAIN is the
//! mechanism binary-protocol clients use), and memcached's text login, a `set`
//! whose data is `<user> <password>`.

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
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
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

/// memcached's text login (`try_read_command_asciiauth`): until a connection
/// has logged in, each line must be `set <key> <flags> <exptime> <bytes>` whose
/// data is `<user> <password>`; anything else is refused and nothing runs. The
/// connection stays open either way. Returns the bytes consumed, or `None`
/// when more input is needed (`Some(need)` in `Err`).
pub fn text_login(
    sasl: &Sasl,
    input: &[u8],
    stats: &mut Stats,
    session: &mut Session,
    out: &mut Vec<u8>,
) -> Result<usize, Option<usize>> {
    use crate::protocol::text::encoder::line;
    use crate::protocol::text::parser::{split_line, strtoull, tokenize};
    let (text, len) = split_line(input).map_err(|_| None)?;
    let tokens = tokenize(text);
    let t = tokens.first();
    let size = match (t.len() >= 5, t.first().copied()) {
        (true, Some(b"set")) => strtoull(t[4]).map(|n| n as u32 as usize),
        _ => None,
    };
    let Some(size) = size else {
        line(out, "CLIENT_ERROR unauthenticated");
        return Ok(len);
    };
    let total = len + size + 2;
    if input.len() < total {
        return Err(Some(total));
    }
    if &input[total - 2..total] != b"\r\n" {
        line(out, "CLIENT_ERROR bad command line termination");
        return Ok(total);
    }
    let tokens = tokenize(&input[len..total - 2]);
    let t = tokens.first();
    stats.auth_cmds += 1;
    if t.len() < 2 {
        line(out, "CLIENT_ERROR bad authentication token format");
    } else if sasl.check(t[0], t[1]) {
        session.authenticated = true;
        line(out, "STORED");
    } else {
        stats.auth_errors += 1;
        line(out, "CLIENT_ERROR authentication failure");
    }
    Ok(total)
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
