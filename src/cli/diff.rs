//! `driftwatch diff CONTAINER`: the container's drift against its image,
//! read from the node's overlay directories (`respond::diff`), never from
//! inside the container. Exit 0: no drift, 1: drift, 2: error.

use super::{Output, error_exit};
use crate::{
    enrich::cri::parse_endpoint,
    respond::{
        diff::{DiffOptions, diff_container, render_table},
        target::resolve,
    },
};
use std::{io::Write, process::ExitCode};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: super::Target,
    /// table (the default on a terminal) or json (one object: container, pod, image, changes, summary).
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Output>,
    /// Regular files up to this size get a sha256; larger ones are compared byte for byte without one.
    /// Bytes, or with a K, M or G suffix (powers of 1024).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub hash_limit: u64,
}

/// `4096`, `64K`, `64M`, `1G` (also `64MiB`, `64MB`: all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{s:?}: expected bytes, or a number with K, M or G (e.g. 64M)")),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected bytes, or a number with K, M or G (e.g. 64M)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?}: too large"))
}

pub fn run(a: Args) -> ExitCode {
    let endpoint = match a.target.runtime_endpoint.as_deref().map(parse_endpoint).transpose() {
        Ok(e) => e,
        Err(msg) => return error_exit(&format!("--runtime-endpoint: {msg}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return error_exit(&format!("starting the async runtime: {e}")),
    };
    let found = match rt.block_on(resolve(&a.target.container, endpoint)) {
        Ok(r) => r,
        Err(e) => return error_exit(&e),
    };
    drop(rt);
    let opts = DiffOptions { hash_limit: a.hash_limit, ..Default::default() };
    let report = match diff_container(&found.id, found.pid, found.meta.as_deref(), &opts) {
        Ok(r) => r,
        Err(e) => return error_exit(&e),
    };
    let mut out = std::io::stdout().lock();
    let written = match Output::or_default(a.output) {
        Output::Table => render_table(&report, &mut out),
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from).and_then(|()| writeln!(out))
        }
    }
    .and_then(|()| out.flush());
    if let Err(e) = written {
        return error_exit(&format!("writing the report: {e}"));
    }
    if report.summary.drift { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "1.5M", "12T", "-1", "64 M x"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
