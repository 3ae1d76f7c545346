//! The `seamwatch` binary: parses flags, sets up logging, runs the command and
//! turns its error into an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    seamwatch::cli::main()
}
