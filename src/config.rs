//! Command-line flags with memcached's spellings, their defaults, and validation
//! that names the offending flag. Every flag is one row of `FLAGS`: its spellings, its
//! value, its help line and how it sets `Config`; usage, parsing and the README's flags
//! table all come from that row.

use std::fmt;
use std::path::PathBuf;

/// Default item size limit (memcached's `-I 1m`).
pub const ITEM_SIZE_MAX_DEFAULT: usize = 1 << 20;
/// Smallest `-I` memcached accepts.
pub const ITEM_SIZE_MAX_MIN: usize = 1024;
/// Default listen backlog (memcached's `-b 1024`); mio's own bind would use 128.
pub const LISTEN_BACKLOG_DEFAULT: u32 = 1024;
/// Largest `-b`: listen(2) takes an int, and the kernel caps it at net.core.somaxconn.
pub const LISTEN_BACKLOG_MAX: u32 = i32::MAX as u32;
/// Largest `-I`: segments must hold one item, and 128 MiB is memcached's cap too.
pub const ITEM_SIZE_MAX_MAX: usize = 128 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
    pub listen: String,
    pub unix_socket: Option<PathBuf>,
    pub unix_mask: u32,
    pub memory_limit_mb: usize,
    pub conn_limit: usize,
    /// listen(2) backlog: connections the kernel queues before we accept them.
    pub listen_backlog: u32,
    pub item_size_max: usize,
    pub sasl: bool,
    pub sasl_pwdb: Option<PathBuf>,
    pub idle_timeout_secs: u64,
    pub cpu: Option<usize>,
    pub verbosity: u8,
    /// `-e`: the arena is a shared mapping of this file, kept across a clean stop.
    pub memory_file: Option<PathBuf>,
    /// `--verify-restore`: check a restored store's consistency before serving.
    pub verify_restore: bool,
    /// `-L`: transparent huge pages for the item memory.
    pub large_pages: bool,
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
            listen_backlog: LISTEN_BACKLOG_DEFAULT,
            item_size_max: ITEM_SIZE_MAX_DEFAULT,
            sasl: false,
            sasl_pwdb: None,
            idle_timeout_secs: 0,
            cpu: None,
            verbosity: 0,
            memory_file: None,
            verify_restore: false,
            large_pages: false,
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

impl std::error::Error for ConfigError {}

/// Sets a `Config` field from the flag as spelled and its value.
type Setter = fn(&mut Config, &str, &str) -> Result<(), ConfigError>;

/// What a flag does when it is given.
pub enum Action {
    /// Takes a value (the next argument, `--flag=value` or `-fVALUE`).
    Value(Setter),
    /// Takes no value; called with the flag as spelled.
    Switch(fn(&mut Config, &str)),
    Help,
    Version,
}

/// One command-line flag.
pub struct Flag {
    /// Every accepted spelling, the short (memcached's) one first.
    pub names: &'static [&'static str],
    /// How the value is shown in the usage text; `None` for a switch.
    pub value: Option<&'static str>,
    /// One line for `--help` and the README.
    pub help: &'static str,
    pub action: Action,
}

/// Every flag pincache accepts, in the order `--help` lists them.
pub const FLAGS: &[Flag] = &[
    Flag {
        names: &["-p", "--port"],
        value: Some("<num>"),
        help: "TCP port to listen on (default 11211; 0 = any free port)",
        action: Action::Value(|c, flag, v| {
            c.port = number(flag, v)?;
            Ok(())
        }),
    },
    Flag {
        names: &["-l", "--listen"],
        value: Some("<addr>"),
        help: "address to listen on (default 127.0.0.1; 0.0.0.0 opens it)",
        action: Action::Value(|c, _, v| {
            c.listen = v.to_string();
            Ok(())
        }),
    },
    Flag {
        names: &["-s", "--unix-socket"],
        value: Some("<path>"),
        help: "listen on a unix socket instead of TCP",
        action: Action::Value(|c, _, v| {
            c.unix_socket = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    Flag {
        names: &["-a", "--unix-mask"],
        value: Some("<mask>"),
        help: "permissions of the unix socket, octal (default 0700)",
        action: Action::Value(set_unix_mask),
    },
    Flag {
        names: &["-m", "--memory-limit"],
        value: Some("<mb>"),
        help: "item memory in megabytes, index included (default 64)",
        action: Action::Value(|c, flag, v| {
            c.memory_limit_mb = at_least_one(flag, v, "must be at least 1 (megabyte)")?;
            Ok(())
        }),
    },
    Flag {
        names: &["-e", "--memory-file"],
        value: Some("<path>"),
        help: "keep items in this file (tmpfs, e.g. /dev/shm/pincache-0); a clean stop keeps them for the next start",
        action: Action::Value(|c, _, v| {
            c.memory_file = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    Flag {
        names: &["--verify-restore"],
        value: None,
        help: "with -e: check the restored items' consistency before serving; start cold if it fails",
        action: Action::Switch(|c, _| c.verify_restore = true),
    },
    Flag {
        names: &["-L", "--enable-largepages"],
        value: None,
        help: "try to use large memory pages (if available): 2 MB transparent huge pages for the item memory",
        action: Action::Switch(|c, _| c.large_pages = true),
    },
    Flag {
        names: &["-c", "--conn-limit"],
        value: Some("<num>"),
        help: "most simultaneous connections (default 1024)",
        action: Action::Value(|c, flag, v| {
            c.conn_limit = at_least_one(flag, v, "must be at least 1")?;
            Ok(())
        }),
    },
    Flag {
        names: &["-b", "--listen-backlog"],
        value: Some("<num>"),
        help: "listen backlog: connections queued until accepted (default 1024)",
        action: Action::Value(|c, flag, v| {
            let n = at_least_one(flag, v, "must be at least 1")?;
            c.listen_backlog = u32::try_from(n)
                .ok()
                .filter(|n| *n <= LISTEN_BACKLOG_MAX)
                .ok_or_else(|| error(flag, format!("must be at most {LISTEN_BACKLOG_MAX}")))?;
            Ok(())
        }),
    },
    Flag {
        names: &["-I", "--max-item-size"],
        value: Some("<size>"),
        help: "largest item, e.g. 1m, 512k (default 1m, at most 128m)",
        action: Action::Value(set_item_size_max),
    },
    Flag {
        names: &["-t", "--threads"],
        value: Some("<num>"),
        help: "only 1: pincache is one thread; run one process per core",
        action: Action::Value(|_, flag, v| {
            match number::<usize>(flag, v)? {
            1 => Ok(()),
            _ => Err(error(
                flag,
                "pincache is single-threaded: only 1 is accepted; run one process per core (see README)",
            )),
        }
        }),
    },
    Flag {
        names: &["-U", "--udp-port"],
        value: Some("<num>"),
        help: "only 0: UDP is not served",
        action: Action::Value(|_, flag, v| match number::<u16>(flag, v)? {
            0 => Ok(()),
            _ => Err(error(flag, "UDP is not served: only 0 is accepted")),
        }),
    },
    Flag {
        names: &["-S", "--enable-sasl"],
        value: None,
        help: "require SASL PLAIN authentication",
        action: Action::Switch(|c, _| c.sasl = true),
    },
    Flag {
        names: &["--sasl-pwdb"],
        value: Some("<path>"),
        help: "user:password lines (or MEMCACHED_SASL_PWDB)",
        action: Action::Value(|c, _, v| {
            c.sasl_pwdb = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    Flag {
        names: &["-Y", "--auth-file"],
        value: Some("<path>"),
        help: "user:password lines; turns authentication on (text and binary)",
        action: Action::Value(|c, _, v| {
            c.sasl = true;
            c.sasl_pwdb = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    Flag {
        names: &["--idle-timeout"],
        value: Some("<secs>"),
        help: "close connections idle this long (default 0 = never)",
        action: Action::Value(|c, flag, v| {
            c.idle_timeout_secs = number(flag, v)?;
            Ok(())
        }),
    },
    Flag {
        names: &["-o", "--extended"],
        value: Some("idle_timeout=<secs>"),
        help: "memcached's spelling of --idle-timeout",
        action: Action::Value(set_extended),
    },
    Flag {
        names: &["--cpu"],
        value: Some("<core>"),
        help: "pin the process to this CPU core",
        action: Action::Value(|c, flag, v| {
            c.cpu = Some(number(flag, v)?);
            Ok(())
        }),
    },
    Flag {
        names: &["-v", "-vv", "-vvv", "--verbose"],
        value: None,
        help: "log more (RUST_LOG also works)",
        action: Action::Switch(|c, flag| {
            // "-vv" is two steps, as memcached counts them; "--verbose" is one.
            let steps = if flag.starts_with("--") {
                1
            } else {
                flag.len() - 1
            };
            c.verbosity = c.verbosity.saturating_add(steps as u8);
        }),
    },
    Flag {
        names: &["-h", "--help"],
        value: None,
        help: "this text",
        action: Action::Help,
    },
    Flag {
        names: &["-V", "--version"],
        value: None,
        help: "print the version",
        action: Action::Version,
    },
];

/// The `--help` text, built from `FLAGS`.
pub fn usage() -> String {
    let mut text = String::from(
        "pincache: a memcached-compatible cache server (binary protocol), one thread per process\n\n\
         Usage: pincache [OPTIONS]\n\n",
    );
    for flag in FLAGS {
        let spelled = flag_synopsis(flag);
        // Help starts in column 30; a longer synopsis gets its own line.
        if spelled.len() <= 26 {
            text.push_str(&format!("  {spelled:<28}{}\n", flag.help));
        } else {
            text.push_str(&format!("  {spelled}\n{:30}{}\n", "", flag.help));
        }
    }
    text
}

/// How a flag is shown: its spellings, then its value, e.g. "-p, --port <num>". Flags
/// with no short form are indented so the long forms line up.
pub fn flag_synopsis(flag: &Flag) -> String {
    let indent = if flag.names[0].starts_with("--") {
        "    "
    } else {
        ""
    };
    let names = flag.names.join(", ");
    match flag.value {
        Some(value) => format!("{indent}{names} {value}"),
        None => format!("{indent}{names}"),
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

/// A count that must not be zero (`-m`, `-c`).
fn at_least_one(flag: &str, value: &str, reason: &str) -> Result<usize, ConfigError> {
    match number(flag, value)? {
        0 => Err(error(flag, reason)),
        n => Ok(n),
    }
}

fn set_unix_mask(config: &mut Config, flag: &str, value: &str) -> Result<(), ConfigError> {
    config.unix_mask = u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| error(flag, format!("'{value}' is not an octal mask")))?;
    Ok(())
}

fn set_item_size_max(config: &mut Config, flag: &str, value: &str) -> Result<(), ConfigError> {
    config.item_size_max = parse_size(flag, value)?;
    if config.item_size_max < ITEM_SIZE_MAX_MIN {
        return Err(error(flag, "must be at least 1k"));
    }
    if config.item_size_max > ITEM_SIZE_MAX_MAX {
        return Err(error(flag, "must be at most 128m"));
    }
    Ok(())
}

/// memcached's `-o name=value,...`; only `idle_timeout` means something here.
fn set_extended(config: &mut Config, flag: &str, value: &str) -> Result<(), ConfigError> {
    for option in value.split(',') {
        match option.split_once('=') {
            Some(("idle_timeout", secs)) => {
                config.idle_timeout_secs = number("-o idle_timeout", secs)?
            }
            _ => {
                return Err(error(
                    flag,
                    format!("unsupported option '{option}' (only idle_timeout)"),
                ))
            }
        }
    }
    Ok(())
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

fn find(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|flag| flag.names.contains(&name))
}

/// Parses the arguments after the program name.
pub fn parse_args<I, S>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = Config::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        // Accept "--flag=value" and "-pVALUE" as well as "--flag value".
        let (name, inline) = split_flag(&arg);
        let Some(flag) = find(&name) else {
            return Err(error(&arg, "unknown flag (see --help)"));
        };
        match &flag.action {
            Action::Help => return Ok(Command::Help),
            Action::Version => return Ok(Command::Version),
            Action::Switch(set) => set(&mut config, &name),
            Action::Value(set) => {
                let value = match inline {
                    Some(v) => v,
                    None => args.next().ok_or_else(|| error(&name, "needs a value"))?,
                };
                set(&mut config, &name, &value)?;
            }
        }
    }
    check(&mut config)?;
    Ok(Command::Run(config))
}

/// Rules between flags, checked once every flag is read.
fn check(config: &mut Config) -> Result<(), ConfigError> {
    if config.item_size_max > config.memory_limit_bytes() / 2 {
        return Err(error(
            "-I",
            "cannot be more than half of the memory limit (-m)",
        ));
    }
    if config.verify_restore && config.memory_file.is_none() {
        return Err(error(
            "--verify-restore",
            "checks what -e (--memory-file) restores: give -e too",
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
    Ok(())
}

/// Splits "--flag=value" and "-pVALUE" into flag and inline value.
fn split_flag(arg: &str) -> (String, Option<String>) {
    if let Some(rest) = arg.strip_prefix("--") {
        if let Some((flag, value)) = rest.split_once('=') {
            return (format!("--{flag}"), Some(value.to_string()));
        }
        return (arg.to_string(), None);
    }
    let takes_value = |short: &str| find(short).is_some_and(|flag| flag.value.is_some());
    if arg.len() > 2 && arg.is_char_boundary(2) && takes_value(&arg[..2]) {
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
    fn listen_backlog_defaults_to_memcacheds_1024_and_takes_b() {
        assert_eq!(run(&[]).unwrap().listen_backlog, 1024);
        assert_eq!(run(&["-b", "4096"]).unwrap().listen_backlog, 4096);
        assert_eq!(run(&["--listen-backlog=16"]).unwrap().listen_backlog, 16);
        assert_eq!(run(&["-b", "0"]).unwrap_err().flag, "-b");
        assert_eq!(run(&["-b", "2147483648"]).unwrap_err().flag, "-b");
    }

    #[test]
    fn verify_restore_needs_a_memory_file() {
        assert!(!run(&["-e", "/dev/shm/x"]).unwrap().verify_restore);
        assert!(
            run(&["-e", "/dev/shm/x", "--verify-restore"])
                .unwrap()
                .verify_restore
        );
        assert_eq!(
            run(&["--verify-restore"]).unwrap_err().flag,
            "--verify-restore"
        );
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_args(["-h"]).unwrap(), Command::Help);
        assert_eq!(parse_args(["--version"]).unwrap(), Command::Version);
    }

    #[test]
    fn verbosity_counts_the_vs() {
        assert_eq!(run(&["-v"]).unwrap().verbosity, 1);
        assert_eq!(run(&["-vvv", "--verbose"]).unwrap().verbosity, 4);
    }

    #[test]
    fn every_flag_is_in_the_usage_once() {
        let text = usage();
        let mut seen = std::collections::HashSet::new();
        for flag in FLAGS {
            for name in flag.names {
                assert!(seen.insert(*name), "{name} is in two rows");
            }
            assert!(text.contains(&flag_synopsis(flag)), "{:?}", flag.names);
            assert!(text.contains(flag.help), "{:?}", flag.names);
        }
    }

    #[test]
    fn only_value_flags_take_an_attached_value() {
        // "-p1" is "-p 1"; "-S1" is not "-S" with a value.
        assert_eq!(run(&["-p1"]).unwrap().port, 1);
        assert_eq!(run(&["-S1"]).unwrap_err().flag, "-S1");
        // Not a char boundary at byte 2: an unknown flag, not a panic.
        assert_eq!(run(&["-é"]).unwrap_err().flag, "-é");
        assert_eq!(run(&["-p"]).unwrap_err().reason, "needs a value");
    }

    #[test]
    fn errors_are_std_errors() {
        let err: Box<dyn std::error::Error> = Box::new(run(&["-c", "0"]).unwrap_err());
        assert_eq!(err.to_string(), "pincache: -c: must be at least 1");
    }

    /// The README's flags table and `FLAGS` name the same flags: every spelling of every
    /// flag is in the table, and every flag in the table parses.
    #[test]
    fn readme_flags_table_matches_the_table() {
        let readme = include_str!("../README.md");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("## Flags"))
            .take_while(|l| !l.starts_with("## ") || l.starts_with("## Flags"))
            .filter(|l| l.starts_with("| `"))
            .collect();
        let text = table.join("\n");
        for flag in FLAGS {
            for name in flag.names {
                let listed =
                    text.contains(&format!("`{name}`")) || text.contains(&format!("`{name} "));
                assert!(listed, "{name} is not in the README's flags table");
            }
        }
        for line in &table {
            let first_column = line.split('|').nth(1).unwrap_or("");
            for spelled in first_column.split('`').skip(1).step_by(2) {
                let name = spelled.split([' ', '=']).next().unwrap_or("");
                assert!(
                    find(name).is_some(),
                    "README lists {name}, which FLAGS does not have"
                );
            }
        }
    }
}
