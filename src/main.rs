//! The `pincache` binary: parse flags, start logging, run the server.

use std::process::ExitCode;

use pincache::config::{parse_args, usage, Command};
use pincache::server::{log_start, Server};

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("pincache {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let level = match config.verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();

    if let Some(cpu) = config.cpu {
        if let Err(e) = pincache::server::pin_to_cpu(cpu) {
            eprintln!("pincache: --cpu: {e}");
            return ExitCode::from(2);
        }
    }
    let mut server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("pincache: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    log_start(&server, &config);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pincache: {e}");
            ExitCode::from(1)
        }
    }
}
