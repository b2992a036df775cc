//! `driftwatch diff` (issue 12): being built.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: super::Target,
}

pub fn run(_a: Args) -> ExitCode {
    super::error_exit(&"not built yet")
}
