//! Command-line flags with memcached's spellings, their defaults, and validation
//! that names the offending flag.

use std::fmt;
use std::path::PathBuf;

/// Default item size limit (memcached's `-I 1m`).
pub const ITEM_SIZE_MAX_DEFAULT: usize = 1 << 20;
/// Smallest `-I` memcached accepts.
pub const ITEM_SIZE_MAX_MIN: usize = 1024;
/// Largest `-I`: segments must hold one item, and 128 MiB is memcached's cap too.
pub const ITEM_SIZE_MAX_MAX: usize = 128 << 20;

pub const USAGE: &str = "\
pincache: a memcached-compatible cache server (binary protocol), one thread per process

Usage: pincache [OPTIONS]

  -p, --port <num>            TCP port to listen on (default 11211; 0 = any free port)
  -l, --listen <addr>         address to listen on (default 127.0.0.1; 0.0.0.0 opens it)
  -s, --unix-socket <path>    listen on a unix socket instead of TCP
  -a, --unix-mask <mask>      permissions of the unix socket, octal (default 0700)
  -m, --memory-limit <mb>     item memory in megabytes, index included (default 64)
  -c, --conn-limit <num>      most simultaneous connections (default 1024)
  -I, --max-item-size <size>  largest item, e.g. 1m, 512k (default 1m, at most 128m)
  -t, --threads <num>         only 1: pincache is one thread; run one process per core
  -U, --udp-port <num>        only 0: UDP is not served
  -S, --enable-sasl           require SASL PLAIN authentication
      --sasl-pwdb <path>      user:password lines (or MEMCACHED_SASL_PWDB)
      --idle-timeout <secs>   close connections idle this long (default 0 = never)
  -o idle_timeout=<secs>      the same, memcached's spelling
      --cpu <core>            pin the process to this CPU core
  -v, -vv, -vvv               log more (RUST_LOG also works)
  -h, --help                  this text
  -V, --version               print the version
";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
    pub listen: String,
    pub unix_socket: Option<PathBuf>,
    pub unix_mask: u32,
    pub memory_limit_mb: usize,
    pub conn_limit: usize,
    pub item_size_max: usize,
    pub sasl: bool,
    pub sasl_pwdb: Option<PathBuf>,
    pub idle_timeout_secs: u64,
    pub cpu: Option<usize>,
    pub verbosity: u8,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            port: 11211,
            listen: "127.0.0.1".to_string(),
            unix_socket: None,
            unix_mask: 0o700,
            memory_limit_mb: 64,
            conn_limit: 1024,
            item_size_max: ITEM_SIZE_MAX_DEFAULT,
            sasl: false,
            sasl_pwdb: None,
            idle_timeout_secs: 0,
            cpu: None,
            verbosity: 0,
        }
    }
}

impl Config {
    pub fn memory_limit_bytes(&self) -> usize {
        self.memory_limit_mb.saturating_mul(1 << 20)
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help,
    Version,
}

/// A flag that could not be accepted; printed as one line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub flag: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pincache: {}: {}", self.flag, self.reason)
    }
}

fn error(flag: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag: flag.to_string(),
        reason: reason.into(),
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| error(flag, format!("'{value}' is not a valid number")))
}

/// Parses a size with an optional k/m/g suffix (memcached's `-I` syntax).
pub fn parse_size(flag: &str, value: &str) -> Result<usize, ConfigError> {
    let lower = value.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1usize << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1 << 20),
        Some(b'g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    let n: usize = number(flag, digits)?;
    n.checked_mul(unit)
        .ok_or_else(|| error(flag, format!("'{value}' is too large")))
}

/// Parses the arguments after the program name.
pub fn parse_args<I, S>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = Config::default();
    let mut args = args.into_iter().map(Into::into).peekable();
    while let Some(arg) = args.next() {
        // Accept "--flag=value" and "-pVALUE" as well as "--flag value".
        let (flag, inline) = split_flag(&arg);
        let mut value = |name: &str| -> Result<String, ConfigError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().ok_or_else(|| error(name, "needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-p" | "--port" => config.port = number(&flag, &value(&flag)?)?,
            "-l" | "--listen" => config.listen = value(&flag)?,
            "-s" | "--unix-socket" => config.unix_socket = Some(PathBuf::from(value(&flag)?)),
            "-a" | "--unix-mask" => {
                let v = value(&flag)?;
                config.unix_mask = u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| error(&flag, format!("'{v}' is not an octal mask")))?;
            }
            "-m" | "--memory-limit" => {
                config.memory_limit_mb = number(&flag, &value(&flag)?)?;
                if config.memory_limit_mb == 0 {
                    return Err(error(&flag, "must be at least 1 (megabyte)"));
                }
            }
            "-c" | "--conn-limit" => {
                config.conn_limit = number(&flag, &value(&flag)?)?;
                if config.conn_limit == 0 {
                    return Err(error(&flag, "must be at least 1"));
                }
            }
            "-I" | "--max-item-size" => {
                let v = value(&flag)?;
                config.item_size_max = parse_size(&flag, &v)?;
                if config.item_size_max < ITEM_SIZE_MAX_MIN {
                    return Err(error(&flag, "must be at least 1k"));
                }
                if config.item_size_max > ITEM_SIZE_MAX_MAX {
                    return Err(error(&flag, "must be at most 128m"));
                }
            }
            "-t" | "--threads" => {
                let n: usize = number(&flag, &value(&flag)?)?;
                if n != 1 {
                    return Err(error(
                        &flag,
                        "pincache is single-threaded: only 1 is accepted; run one process per core (see README)",
                    ));
                }
            }
            "-U" | "--udp-port" => {
                let n: u16 = number(&flag, &value(&flag)?)?;
                if n != 0 {
                    return Err(error(&flag, "UDP is not served: only 0 is accepted"));
                }
            }
            "-S" | "--enable-sasl" => config.sasl = true,
            "--sasl-pwdb" => config.sasl_pwdb = Some(PathBuf::from(value(&flag)?)),
            "--idle-timeout" => config.idle_timeout_secs = number(&flag, &value(&flag)?)?,
            "-o" | "--extended" => {
                let v = value(&flag)?;
                for option in v.split(',') {
                    match option.split_once('=') {
                        Some(("idle_timeout", secs)) => {
                            config.idle_timeout_secs = number("-o idle_timeout", secs)?
                        }
                        _ => {
                            return Err(error(
                                &flag,
                                format!("unsupported option '{option}' (only idle_timeout)"),
                            ))
                        }
                    }
                }
            }
            "--cpu" => config.cpu = Some(number(&flag, &value(&flag)?)?),
            "-v" | "--verbose" => config.verbosity = config.verbosity.saturating_add(1),
            "-vv" => config.verbosity = config.verbosity.saturating_add(2),
            "-vvv" => config.verbosity = config.verbosity.saturating_add(3),
            _ => return Err(error(&arg, "unknown flag (see --help)")),
        }
    }
    if config.item_size_max > config.memory_limit_bytes() / 2 {
        return Err(error(
            "-I",
            "cannot be more than half of the memory limit (-m)",
        ));
    }
    if config.sasl && config.sasl_pwdb.is_none() {
        config.sasl_pwdb = std::env::var_os("MEMCACHED_SASL_PWDB").map(PathBuf::from);
        if config.sasl_pwdb.is_none() {
            return Err(error(
                "-S",
                "needs a password file: --sasl-pwdb PATH or MEMCACHED_SASL_PWDB",
            ));
        }
    }
    Ok(Command::Run(config))
}

/// Splits "--flag=value" and "-pVALUE" into flag and inline value.
fn split_flag(arg: &str) -> (String, Option<String>) {
    if let Some(rest) = arg.strip_prefix("--") {
        if let Some((flag, value)) = rest.split_once('=') {
            return (format!("--{flag}"), Some(value.to_string()));
        }
        return (arg.to_string(), None);
    }
    let takes_value = ["-p", "-l", "-s", "-a", "-m", "-c", "-I", "-t", "-U", "-o"];
    if arg.len() > 2 && takes_value.contains(&&arg[..2]) {
        return (arg[..2].to_string(), Some(arg[2..].to_string()));
    }
    (arg.to_string(), None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse_args(args.iter().copied())? {
            Command::Run(config) => Ok(config),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let config = run(&[]).unwrap();
        assert_eq!(config.port, 11211);
        assert_eq!(config.listen, "127.0.0.1");
        assert_eq!(config.memory_limit_mb, 64);
        assert_eq!(config.item_size_max, 1 << 20);
    }

    #[test]
    fn memcached_spellings() {
        let config = run(&[
            "-p", "22122", "-m", "128", "-c", "10", "-I", "2m", "-vv", "-U", "0", "-t", "1",
        ])
        .unwrap();
        assert_eq!(
            (
                config.port,
                config.memory_limit_mb,
                config.conn_limit,
                config.item_size_max,
                config.verbosity
            ),
            (22122, 128, 10, 2 << 20, 2)
        );
        let config = run(&["--port=1", "-p2", "-I", "512k"]).unwrap();
        assert_eq!((config.port, config.item_size_max), (2, 512 << 10));
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert_eq!(run(&["-p", "x"]).unwrap_err().flag, "-p");
        assert_eq!(run(&["-t", "4"]).unwrap_err().flag, "-t");
        assert_eq!(run(&["-U", "11211"]).unwrap_err().flag, "-U");
        assert_eq!(run(&["-I", "1g"]).unwrap_err().flag, "-I");
        assert_eq!(run(&["--bogus"]).unwrap_err().flag, "--bogus");
        assert!(run(&["-m", "1", "-I", "1m"]).is_err());
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_args(["-h"]).unwrap(), Command::Help);
        assert_eq!(parse_args(["--version"]).unwrap(), Command::Version);
    }
}
