//! `driftwatch respond`: the Alertmanager webhook receiver (src/responder/).

use crate::responder::{self, config::RespondConfig};
use std::{path::PathBuf, process::ExitCode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on, host:port (e.g. 0.0.0.0:8790).
    #[arg(long, value_name = "ADDR", required_unless_present = "check_config")]
    pub listen: Option<String>,
    /// Validate this responder config file and exit (0: valid), e.g. a rendered Helm chart's.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "config"])]
    pub check_config: Option<PathBuf>,
    /// The responder's YAML config [default: dry-run, no steps].
    #[arg(long, env = "DRIFTWATCH_RESPOND_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    if let Some(path) = &a.check_config {
        return match RespondConfig::load(path) {
            Ok(_) => {
                eprintln!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => super::fail(&e),
        };
    }
    let listen = a.listen.unwrap_or_default();
    let cfg = match a.config.as_deref().map(RespondConfig::load).unwrap_or_else(|| Ok(RespondConfig::default())) {
        Ok(c) => c,
        Err(e) => return super::fail(&e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::fail(&format!("tokio runtime: {e}")),
    };
    match rt.block_on(responder::run(&listen, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
