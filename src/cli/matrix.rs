//! `seamwatch matrix check [FILE]`: validate a responsibility matrix (errors
//! with line numbers), summarize it, and warn when its last review is older
//! than 90 days.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::matrix::{Domain, Matrix, Side};

#[derive(Debug, Subcommand)]
pub enum MatrixCommand {
    /// Validate a matrix file (default: config/responsibility.toml, or the built-in one).
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    pub file: Option<PathBuf>,
}

pub fn run(command: MatrixCommand) -> anyhow::Result<ExitCode> {
    let MatrixCommand::Check(args) = command;
    let default = PathBuf::from("config/responsibility.toml");
    let (name, matrix) = match args.file.as_ref().or(default.exists().then_some(&default)) {
        Some(path) => (path.display().to_string(), Matrix::load(path)),
        None => ("built-in matrix".to_owned(), Ok(Matrix::builtin())),
    };
    let matrix = match matrix {
        Ok(matrix) => matrix,
        Err(err) => {
            println!("error: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    let services = matrix.services().count();
    let customer_owned: usize = matrix
        .services()
        .map(|(_, s)| {
            Domain::ALL
                .iter()
                .filter(|d| s.owners.get(d) == Some(&Side::Customer))
                .count()
        })
        .sum();
    println!(
        "{name}: valid. {services} services ({customer_owned} customer-owned service/domain pairs), {} data-tier rules, {} owner rules, {} change paths, {} identity links, {} compliance boundaries, {} connection points",
        matrix.tiers.len(),
        matrix.owners.len(),
        matrix.change_paths.len(),
        matrix.identity_links.len(),
        matrix.compliance_boundaries.len(),
        matrix.connection_points.len()
    );
    let today = chrono::Utc::now().date_naive();
    for warning in matrix.check(today) {
        println!("warning: {}", warning.0);
    }
    Ok(ExitCode::SUCCESS)
}
