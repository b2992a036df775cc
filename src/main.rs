//! driftwatch command line. The agent lives in the library (src/agent.rs).

use clap::{Parser, Subcommand};
use driftwatch::{agent, config, config::Config};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "driftwatch", version, about = "Detects container drift on this node with eBPF")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the eBPF sensor and stream findings as JSON lines on stdout (needs root or CAP_BPF+CAP_PERFMON).
    Run {
        /// YAML config merged over the embedded defaults (see `driftwatch default-config`).
        #[arg(long, short = 'c', env = "DRIFTWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Address for /metrics, /healthz and /readyz [default: 0.0.0.0:8789, or metrics_addr from the config].
        #[arg(long, env = "DRIFTWATCH_METRICS_ADDR")]
        metrics_addr: Option<SocketAddr>,
        /// Address of a second listener for /healthz and /readyz only (the kubelet's probes) [default: off; config health_addr].
        #[arg(long, env = "DRIFTWATCH_HEALTH_ADDR")]
        health_addr: Option<SocketAddr>,
        /// CRI socket for pod metadata (containerd, CRI-O) [default: auto-detect; config runtime.endpoint].
        #[arg(long, env = "DRIFTWATCH_RUNTIME_ENDPOINT")]
        runtime_endpoint: Option<String>,
        /// Kernel BTF file, for kernels without /sys/kernel/btf/vmlinux (e.g. from BTFHub).
        #[arg(long, env = "DRIFTWATCH_BTF")]
        btf: Option<PathBuf>,
        /// Send every container exec to userspace, not only suspicious ones (for benchmarks and debugging).
        #[arg(long, hide = true)]
        emit_all_execs: bool,
    },
    /// Validate a config file and print the effective configuration's errors, if any.
    CheckConfig {
        /// The YAML file to check.
        config: PathBuf,
        /// Do not read the CA, certificate, key, token and password files it names (checking it off the node).
        #[arg(long)]
        no_file_checks: bool,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
}

fn main() -> ExitCode {
    // An empty DRIFTWATCH_* variable (an unset Helm value) means unset, not "".
    driftwatch::config::forget_empty_env("DRIFTWATCH_");
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run { .. }) {
        drop(driftwatch::telemetry::init(None));
    }
    match cli.cmd {
        Cmd::DefaultConfig => {
            print!("{}", driftwatch::config::DEFAULT_YAML);
            ExitCode::SUCCESS
        }
        Cmd::CheckConfig { config: path, no_file_checks: skip } => {
            match Config::load_with(&path, config::FileChecks::skip_if(skip)) {
                Ok(_) => {
                    eprintln!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Cmd::Run { config, metrics_addr, health_addr, runtime_endpoint, btf, emit_all_execs } => {
            let mut cfg = match config.as_deref().map(Config::load).unwrap_or_else(|| Ok(Config::default())) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(a) = metrics_addr {
                cfg.metrics_addr = a;
            }
            cfg.health_addr = health_addr.or(cfg.health_addr);
            if let Some(e) = runtime_endpoint {
                if let Err(msg) = driftwatch::enrich::cri::parse_endpoint(&e) {
                    return fail(&format!("--runtime-endpoint: {msg}"));
                }
                cfg.runtime.endpoint = e;
            }
            match agent::run_blocking(cfg, agent::Options { emit_all_execs, btf, config_path: config }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

/// One clear line on stderr, non-zero exit.
fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("driftwatch: error: {e}");
    ExitCode::FAILURE
}
