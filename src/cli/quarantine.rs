//! `driftwatch quarantine list | apply CONTAINER | release CONTAINER`: node
//! quarantine through the running agent's admin API (the agent holds the
//! cgroup_skb programs). Exit 0 on success, 1 when releasing a container that
//! is not quarantined, 2 on any other error.

use super::{AdminClient, Output, Target};
use crate::{admin, config::AdminAddr};
use hyper::Method;
use serde_json::Value;
use std::{fmt::Write as _, io::Read, process::ExitCode};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// The containers this node's agent holds in quarantine.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Quarantine a container now: cut it off the network (but response.quarantine.allow).
    Apply {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        common: Common,
    },
    /// Lift a container's quarantine.
    Release {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Debug)]
pub struct Common {
    #[command(flatten)]
    pub admin: AdminClient,
    /// table or json [default: table on a terminal, json otherwise].
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Output>,
}

/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// Why the verb could not run, and its exit code.
struct Failed(u8, String);

pub fn run(a: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::error_exit(&format!("starting the runtime: {e}")),
    };
    match rt.block_on(run_async(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(code, msg)) => {
            eprintln!("driftwatch: {}{msg}", if code == 1 { "" } else { "error: " });
            ExitCode::from(code)
        }
    }
}

async fn run_async(a: Args) -> Result<(), Failed> {
    let fail = |m: String| Failed(2, m);
    let (method, what, target, common) = match a.cmd {
        Sub::List { common } => (Method::GET, "list", None, common),
        Sub::Apply { target, common } => (Method::POST, "apply", Some(target), common),
        Sub::Release { target, common } => (Method::DELETE, "release", Some(target), common),
    };
    let addr = match AdminAddr::parse(&common.admin.admin_addr) {
        Ok(Some(a)) => a,
        Ok(None) => return Err(fail("--admin-addr is off: there is no admin API to reach".into())),
        Err(e) => return Err(fail(format!("--admin-addr: {e}"))),
    };
    let token = match &common.admin.token_file {
        Some(path) => Some(read_token(path).map_err(fail)?),
        None if matches!(addr, AdminAddr::Tcp(_)) => {
            return Err(fail(format!("--admin-addr {addr} is TCP: give the bearer token with --token-file")));
        }
        None => None,
    };
    let path = match &target {
        None => "/v1/quarantine".to_string(),
        Some(t) => format!("/v1/containers/{}/quarantine", container_id(t).await.map_err(fail)?),
    };
    let (status, body) = admin::call(&addr, token.as_deref(), method, &path).await.map_err(|e| fail(e.to_string()))?;
    let message = body.get("error").and_then(Value::as_str).unwrap_or("").to_string();
    match status {
        200..=299 => {}
        409 if what == "release" => return Err(Failed(1, format!("{} is not quarantined: {message}", shown(&target)))),
        _ => return Err(fail(format!("the agent refused to {what}: {status}: {message}"))),
    }
    match Output::or_default(common.output) {
        Output::Json => println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default()),
        Output::Table => print!("{}", render(&body)),
    }
    Ok(())
}

fn shown(t: &Option<Target>) -> &str {
    t.as_ref().map_or("the container", |t| t.container.as_str())
}

/// The id the admin API takes: a hex id or prefix as given (the agent resolves
/// prefixes among its containers), a namespace/pod[/container] looked up here
/// through CRI.
async fn container_id(t: &Target) -> Result<String, String> {
    let spec = t.container.trim();
    if !spec.contains('/') {
        let id = spec.to_ascii_lowercase();
        admin::check_id(&id).map_err(|e| format!("{spec:?}: {}", e.message))?;
        return Ok(id);
    }
    let endpoint = t
        .runtime_endpoint
        .as_deref()
        .map(crate::enrich::cri::parse_endpoint)
        .transpose()
        .map_err(|e| format!("--runtime-endpoint: {e}"))?;
    crate::respond::target::resolve(spec, endpoint).await.map(|r| r.id).map_err(|e| e.to_string())
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE).read_to_string(&mut s))
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("--token-file {}: the file is empty", path.display()));
    }
    Ok(t.to_string())
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The agent's answer for people: a list of objects as a table (columns in
/// the order keys first appear), anything else as `key: value` lines.
pub fn render(v: &Value) -> String {
    let rows = match v {
        Value::Array(a) => Some(a),
        Value::Object(o) => {
            let arrays: Vec<&Vec<Value>> = o.values().filter_map(Value::as_array).collect();
            (arrays.len() == 1 && o.len() == 1).then(|| arrays[0])
        }
        _ => None,
    };
    let mut out = String::new();
    match rows {
        Some(rows) if rows.is_empty() => out.push_str("(none)\n"),
        Some(rows) => {
            let mut cols: Vec<&str> = Vec::new();
            for r in rows {
                for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !cols.contains(&k.as_str()) {
                        cols.push(k);
                    }
                }
            }
            if cols.is_empty() {
                rows.iter().for_each(|r| out.push_str(&format!("{}\n", cell(r))));
                return out;
            }
            let table: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| cell(&r[*c])).collect()).collect();
            let widths: Vec<usize> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| table.iter().map(|r| r[i].chars().count()).chain([c.len()]).max().unwrap_or(0))
                .collect();
            let head: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
            for r in std::iter::once(&head).chain(&table) {
                let mut line = String::new();
                for (c, w) in r.iter().zip(&widths) {
                    let _ = write!(line, "{c:<w$}  ");
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        None => match v.as_object() {
            Some(o) => o.iter().for_each(|(k, v)| out.push_str(&format!("{k}: {}\n", cell(v)))),
            None => out.push_str(&format!("{}\n", cell(v))),
        },
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_lists_and_objects() {
        let v = json!({"quarantined": [{"container.id": "abc", "since": "t1"}, {"container.id": "def", "k8s.pod.name": "p"}]});
        let t = render(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["CONTAINER.ID", "SINCE", "K8S.POD.NAME"]);
        assert!(lines[1].starts_with("abc") && lines[2].contains('p'), "{t}");
        assert_eq!(render(&json!({"quarantined": []})), "(none)\n");
        assert_eq!(render(&json!([])), "(none)\n");
        assert_eq!(
            render(&json!({"container.id": "abc", "quarantined": true})),
            "container.id: abc\nquarantined: true\n"
        );
    }
}
