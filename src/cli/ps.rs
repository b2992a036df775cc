//! `driftwatch ps CONTAINER`: the processes of a container on this node,
//! where their executables come from, where they came from (the container's
//! own tree or an exec session) and their sockets. Read from /proc directly
//! (no agent needed); exit 0, or 2 on error.

use super::{Output, Target};
use crate::respond::processes::{self, ProcessList, Socket};
use std::{fmt::Write as _, process::ExitCode};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// table or json [default: table on a terminal, json otherwise].
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Output>,
}

pub fn run(a: Args) -> ExitCode {
    let endpoint = match a.target.runtime_endpoint.as_deref().map(crate::enrich::cri::parse_endpoint).transpose() {
        Ok(e) => e,
        Err(e) => return super::error_exit(&format!("--runtime-endpoint: {e}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::error_exit(&format!("starting the runtime: {e}")),
    };
    let resolved = match rt.block_on(crate::respond::target::resolve(&a.target.container, endpoint)) {
        Ok(r) => r,
        Err(e) => return super::error_exit(&e),
    };
    let list = match processes::list(&resolved.id) {
        Ok(l) => l,
        Err(e) => return super::error_exit(&e),
    };
    match Output::or_default(a.output) {
        Output::Json => match serde_json::to_string_pretty(&list) {
            Ok(s) => println!("{s}"),
            Err(e) => return super::error_exit(&e),
        },
        Output::Table => print!("{}", table(&list)),
    }
    ExitCode::SUCCESS
}

/// Longest command shown in the table (the JSON has all of it).
const COMMAND_WIDTH: usize = 80;

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

fn socket_line(s: &Socket) -> String {
    if s.is_listening() {
        format!("listen {} {}", s.protocol, s.local)
    } else {
        format!("{} {} -> {} {}", s.protocol, s.local, s.remote, s.state)
    }
}

/// The table: one row per process, its sockets indented below it.
pub fn table(l: &ProcessList) -> String {
    let header = ["PID", "PPID", "USER", "STARTED", "ORIGIN", "SOURCE", "EXECUTABLE", "COMMAND"];
    let rows: Vec<[String; 8]> = l
        .processes
        .iter()
        .map(|p| {
            [
                p.pid.to_string(),
                p.parent_pid.to_string(),
                p.user_name.clone().unwrap_or_else(|| p.uid.to_string()),
                // 2024-05-01T10:00:00.123456789Z -> 2024-05-01 10:00:00
                p.start_time.get(..19).unwrap_or(&p.start_time).replacen('T', " ", 1),
                p.origin.as_str().to_string(),
                p.exe_source.to_string(),
                p.exe_path.clone(),
                cut(&p.command_line, COMMAND_WIDTH),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = width[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = format!("container {} ({} processes)\n", l.container_id, l.processes.len());
    out.push_str(&line(&header));
    let indent = width[..2].iter().sum::<usize>() + 4;
    for (r, p) in rows.iter().zip(&l.processes) {
        out.push_str(&line(&r.each_ref().map(String::as_str)));
        for s in p.listening.iter().chain(&p.connections) {
            let _ = writeln!(out, "{:indent$}{}", "", socket_line(s));
        }
    }
    for ns in &l.network_namespaces {
        if ns.host_network {
            let _ = writeln!(
                out,
                "\nnetwork namespace {}: the node's own (host network); only the processes' sockets are shown",
                ns.inode
            );
            continue;
        }
        let others: Vec<&Socket> = ns.listening.iter().chain(&ns.connections).collect();
        if others.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\nnetwork namespace {}: sockets no listed process holds", ns.inode);
        for s in others {
            let _ = writeln!(out, "  {}", socket_line(s));
        }
    }
    if !l.truncated.is_empty() {
        let _ = writeln!(out, "\n(truncated: {}; bounds reached)", l.truncated.join(", "));
    }
    out
}
