//! `pigeon`: the command-line client of the Pigeon broker.
//!
//! Everything lives in the [`cli`] module tree (one file per command
//! group); this file only hands over the process's exit code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
