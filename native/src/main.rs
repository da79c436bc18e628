//! The `camlime` binary: parse arguments, run, map errors to one line on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = camlime::commands::Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match camlime::commands::run(cli, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("camlime: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
