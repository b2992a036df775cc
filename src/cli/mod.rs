//! The command line: `run` (the agent), the investigator's verbs (`diff`,
//! `ps`, `quarantine`) and the config helpers. One file per verb family.

mod diff;
mod ps;
mod quarantine;
mod respond;

use crate::{agent, config, config::Config};
use clap::{Parser, Subcommand, ValueEnum};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "driftwatch", version, about = "Detects container drift on this node with eBPF")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--output`: a table for people (the default on a terminal), JSON for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Output {
    /// The choice made, else table on a terminal and JSON in a pipe.
    pub fn or_default(o: Option<Output>) -> Output {
        use std::io::IsTerminal;
        o.unwrap_or(if std::io::stdout().is_terminal() { Output::Table } else { Output::Json })
    }
}

/// How the investigator's verbs find a container: CRI for names, /proc for the rest.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// A container id or unique prefix, or namespace/pod[/container] (looked up through CRI).
    pub container: String,
    /// CRI socket, as for `run` [default: auto-detect].
    #[arg(long, env = "DRIFTWATCH_RUNTIME_ENDPOINT")]
    pub runtime_endpoint: Option<String>,
}

/// How the verbs that act through the agent reach its admin API.
#[derive(clap::Args, Clone, Debug)]
pub struct AdminClient {
    /// The agent's admin API: unix:///path or host:port.
    #[arg(long, env = "DRIFTWATCH_ADMIN_ADDR", default_value = "unix:///run/driftwatch/admin.sock")]
    pub admin_addr: String,
    /// File holding the bearer token (needed for a TCP admin_addr).
    #[arg(long, env = "DRIFTWATCH_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
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
        /// Admin API address (diff, ps, quarantine): unix:///path or host:port [default: config admin_addr].
        #[arg(long, env = "DRIFTWATCH_ADMIN_ADDR")]
        admin_addr: Option<String>,
        /// Kernel BTF file, for kernels without /sys/kernel/btf/vmlinux (e.g. from BTFHub).
        #[arg(long, env = "DRIFTWATCH_BTF")]
        btf: Option<PathBuf>,
        /// Send every container exec to userspace, not only suspicious ones (for benchmarks and debugging);
        /// those the kernel would have filtered wait for the reader's idle timer (up to
        /// sensor.idle_drain_interval_ms) or a half-full ring buffer.
        #[arg(long, hide = true)]
        emit_all_execs: bool,
    },
    /// A container's drift against its image: added, modified, metadata-only and deleted files (exit 0: none, 1: drift, 2: error).
    Diff(diff::Args),
    /// The processes of a container, where their executables come from, and their sockets.
    Ps(ps::Args),
    /// Node quarantine through the running agent: list, apply, release.
    Quarantine(quarantine::Args),
    /// Receive Alertmanager's webhook and carry out the playbook steps on pods (isolate, evict, label).
    Respond(respond::Args),
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

/// Runs the command line; the process's exit code.
pub fn main() -> ExitCode {
    // An empty DRIFTWATCH_* variable (an unset Helm value) means unset, not "".
    config::forget_empty_env("DRIFTWATCH_");
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run { .. }) {
        drop(crate::telemetry::init(None));
    }
    match cli.cmd {
        Cmd::DefaultConfig => {
            print!("{}", config::DEFAULT_YAML);
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
        Cmd::Diff(a) => diff::run(a),
        Cmd::Ps(a) => ps::run(a),
        Cmd::Quarantine(a) => quarantine::run(a),
        Cmd::Respond(a) => respond::run(a),
        Cmd::Run { config, metrics_addr, health_addr, runtime_endpoint, admin_addr, btf, emit_all_execs } => {
            let mut cfg = match config.as_deref().map(Config::load).unwrap_or_else(|| Ok(Config::default())) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(a) = metrics_addr {
                cfg.metrics_addr = a;
            }
            cfg.health_addr = health_addr.or(cfg.health_addr);
            if let Some(e) = runtime_endpoint {
                if let Err(msg) = crate::enrich::cri::parse_endpoint(&e) {
                    return fail(&format!("--runtime-endpoint: {msg}"));
                }
                cfg.runtime.endpoint = e;
            }
            if let Some(a) = admin_addr {
                match config::AdminAddr::parse(&a) {
                    Ok(Some(config::AdminAddr::Tcp(_))) if cfg.admin_token_file.is_empty() => {
                        return fail(&"--admin-addr: a TCP address needs admin_token_file in the config");
                    }
                    Ok(_) => cfg.admin_addr = a,
                    Err(e) => return fail(&format!("--admin-addr: {e}")),
                }
            }
            match agent::run_blocking(cfg, agent::Options { emit_all_execs, btf, config_path: config }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

/// One clear line on stderr, non-zero exit.
pub fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("driftwatch: error: {e}");
    ExitCode::FAILURE
}

/// Exit code 2 with one clear line: the investigator's verbs keep 1 for "drift found".
pub fn error_exit(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("driftwatch: error: {e}");
    ExitCode::from(2)
}
