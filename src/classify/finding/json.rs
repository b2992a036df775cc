//! A finding's JSON line written by hand: the same bytes as its serde derive
//! (`json_line::append`, serde_json's compact form), at a fraction of the cost.
//!
//! Why: serde writes a flattened struct through a map serializer, one
//! dynamic call, key escape check and comma decision per entry; a finding has
//! ~40 entries and that machinery was the largest part of the agent's CPU per
//! finding (~30% under a shell storm, `perf`). Here each key is a constant
//! with its comma and quotes (`,"process.pid":`), copied as it is; values go
//! through the same string writer as `json_line`.
//!
//! Staying equal to the derive: every struct is destructured without `..`,
//! so a new field does not compile until it is written here, and the tests
//! compare both writers byte for byte on findings of every kind with every
//! optional key set, and on names that need escaping. Configuration drift
//! (a few findings per container's life, maps of hashes) and pod facts
//! (written once per container and copied, `SharedPodFacts`) keep serde.

use super::{Detail, ExecFacts, FileFacts, Finding, Kind, NetworkFacts, PlaybookStep, ProcessFacts, RecordFacts};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{
    classify::change_facts::EnvFacts,
    config::Severity,
    json_line::{self, write_str},
};

/// `,"<key>":`, the bytes before every value but the first.
macro_rules! key {
    ($k:literal) => {
        concat!(",\"", $k, "\":").as_bytes()
    };
}

#[inline]
fn str_entry(out: &mut Vec<u8>, key: &'static [u8], v: &str) {
    out.extend_from_slice(key);
    write_str(out, v);
}

#[inline]
fn opt_str_entry(out: &mut Vec<u8>, key: &'static [u8], v: Option<&str>) {
    if let Some(v) = v {
        str_entry(out, key, v);
    }
}

#[inline]
fn nonempty_str_entry(out: &mut Vec<u8>, key: &'static [u8], v: &str) {
    if !v.is_empty() {
        str_entry(out, key, v);
    }
}

#[inline]
fn int_entry(out: &mut Vec<u8>, key: &'static [u8], v: impl itoa::Integer) {
    out.extend_from_slice(key);
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[inline]
fn bool_entry(out: &mut Vec<u8>, key: &'static [u8], v: bool) {
    out.extend_from_slice(key);
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Present only when true (`skip_serializing_if = "is_false"`).
#[inline]
fn true_entry(out: &mut Vec<u8>, key: &'static [u8], v: bool) {
    if v {
        bool_entry(out, key, true);
    }
}

fn list_entry<S: AsRef<str>>(out: &mut Vec<u8>, key: &'static [u8], items: &[S]) {
    out.extend_from_slice(key);
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s.as_ref());
    }
    out.push(b']');
}

fn opt_list_entry<S: AsRef<str>>(out: &mut Vec<u8>, key: &'static [u8], items: Option<&[S]>) {
    if let Some(items) = items {
        list_entry(out, key, items);
    }
}

impl Finding {
    /// Appends this finding as one compact JSON object (no newline): byte for
    /// byte what serde_json writes for it. On error (only the serde-written
    /// parts can fail) `out` may hold part of it.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), json_line::Error> {
        let Finding {
            time,
            kind,
            rule,
            severity,
            playbook_step,
            tags,
            message,
            container_id,
            container_runtime,
            node_name,
            k8s,
            process,
            detail,
            record,
            redacted,
            approval,
            action,
            evidence_path,
            ktime_ns: _,
        } = self;
        // Most findings are 1.5-2 KB: one growth at most for the line.
        out.reserve(2048);
        out.extend_from_slice(b"{\"time\":");
        write_str(out, time);
        RuleHeader { kind: *kind, rule, severity: *severity, step: *playbook_step, tags }.write(out);
        str_entry(out, key!("message"), message.as_str());
        str_entry(out, key!("container.id"), container_id.as_str());
        str_entry(out, key!("container.runtime.name"), container_runtime);
        str_entry(out, key!("k8s.node.name"), node_name);
        match k8s.json_entries() {
            Some(entries) if !entries.is_empty() => {
                out.push(b',');
                out.extend_from_slice(entries.as_bytes());
            }
            Some(_) => {}
            None => json_line::append_entries(out, &**k8s)?,
        }
        if let Some(p) = process {
            p.write_entries(out);
        }
        match detail {
            Detail::Exec(e) => e.write_entries(out),
            Detail::File(f) => f.write_entries(out),
            Detail::Network(n) => n.write_entries(out),
            Detail::Config(c) => json_line::append_entries(out, &**c)?,
        }
        if let Some(r) = record {
            r.write_entries(out);
        }
        true_entry(out, key!("driftwatch.redacted"), *redacted);
        opt_str_entry(out, key!("driftwatch.approval"), approval.as_deref());
        opt_str_entry(out, key!("driftwatch.action"), *action);
        opt_str_entry(out, key!("driftwatch.evidence.path"), evidence_path.as_deref());
        out.push(b'}');
        Ok(())
    }
}

/// The keys a rule decides (`kind` to `driftwatch.tags`): the same bytes for
/// every finding of a rule at a severity, written once per thread and copied
/// (~1,000 instructions a finding, a third of them the tags).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RuleHeader<'a> {
    kind: Kind,
    rule: &'a str,
    severity: Severity,
    step: PlaybookStep,
    tags: &'a [&'a str],
}

/// Headers kept at most per thread: every rule at every severity is 93.
const HEADERS_MAX: usize = 128;

/// A header's identity: its strings by address and length (the rules'
/// constants), so a lookup compares no text. Equal texts at two addresses
/// are two entries with the same bytes.
type HeaderKey = (Kind, usize, usize, Severity, PlaybookStep, usize, usize);

/// The headers a thread keeps; counted in [`HEADERS_HELD`] while it lives.
#[derive(Default)]
struct Headers(rustc_hash::FxHashMap<HeaderKey, Box<[u8]>>);

impl Drop for Headers {
    fn drop(&mut self) {
        HEADERS_HELD.fetch_sub(self.0.len(), Ordering::Relaxed);
    }
}

/// Headers kept by every thread (`driftwatch_cache_entries{cache="finding_headers"}`).
static HEADERS_HELD: AtomicUsize = AtomicUsize::new(0);

/// Its `cache` label in `driftwatch_cache_entries`.
pub const HEADERS_CACHE: &str = "finding_headers";

/// Rule headers kept by every thread ([`HEADERS_CACHE`]).
pub fn headers_cached() -> usize {
    HEADERS_HELD.load(Ordering::Relaxed)
}

thread_local! {
    static HEADERS: std::cell::RefCell<Headers> = Default::default();
}

impl RuleHeader<'_> {
    fn key(&self) -> HeaderKey {
        let (r, t) = (self.rule.as_ptr() as usize, self.tags.as_ptr() as usize);
        (self.kind, r, self.rule.len(), self.severity, self.step, t, self.tags.len())
    }

    fn write(&self, out: &mut Vec<u8>) {
        let key = self.key();
        let copied = HEADERS.with(|h| {
            let mut h = h.try_borrow_mut().ok()?;
            if let Some(bytes) = h.0.get(&key) {
                out.extend_from_slice(bytes);
                return Some(());
            }
            if h.0.len() >= HEADERS_MAX {
                return None;
            }
            let mut bytes = Vec::with_capacity(256);
            self.write_fresh(&mut bytes);
            out.extend_from_slice(&bytes);
            h.0.insert(key, bytes.into_boxed_slice());
            HEADERS_HELD.fetch_add(1, Ordering::Relaxed);
            Some(())
        });
        if copied.is_none() {
            self.write_fresh(out);
        }
    }

    fn write_fresh(&self, out: &mut Vec<u8>) {
        str_entry(out, key!("kind"), self.kind.as_str());
        str_entry(out, key!("rule"), self.rule);
        str_entry(out, key!("severity"), self.severity.as_str());
        str_entry(out, key!("playbook_step"), self.step.as_str());
        list_entry(out, key!("driftwatch.tags"), self.tags);
    }
}

impl ProcessFacts {
    fn write_entries(&self, out: &mut Vec<u8>) {
        let ProcessFacts {
            pid,
            parent_pid,
            exe_path,
            exe_name,
            command_args,
            uid,
            gid,
            interactive,
            parent_name,
            origin,
        } = self;
        int_entry(out, key!("process.pid"), *pid);
        int_entry(out, key!("process.parent_pid"), *parent_pid);
        nonempty_str_entry(out, key!("process.executable.path"), exe_path);
        nonempty_str_entry(out, key!("process.executable.name"), exe_name);
        if !command_args.is_empty() {
            list_entry(out, key!("process.command_args"), command_args);
        }
        int_entry(out, key!("process.user.id"), *uid);
        int_entry(out, key!("process.group.id"), *gid);
        bool_entry(out, key!("process.interactive"), *interactive);
        nonempty_str_entry(out, key!("driftwatch.process.parent.name"), parent_name);
        str_entry(out, key!("driftwatch.process.origin"), origin.as_str());
    }
}

impl RecordFacts {
    fn write_entries(&self, out: &mut Vec<u8>) {
        let RecordFacts {
            cgroup_path,
            path_truncated,
            args_truncated,
            path_escaped,
            name_escaped,
            args_escaped,
            parent_name_escaped,
            script_path_escaped,
            cgroup_path_escaped,
        } = self;
        str_entry(out, key!("driftwatch.cgroup.path"), cgroup_path);
        true_entry(out, key!("driftwatch.exe.path_truncated"), *path_truncated);
        true_entry(out, key!("driftwatch.process.args_truncated"), *args_truncated);
        true_entry(out, key!("driftwatch.exe.path_escaped"), *path_escaped);
        true_entry(out, key!("driftwatch.exe.name_escaped"), *name_escaped);
        true_entry(out, key!("driftwatch.process.args_escaped"), *args_escaped);
        true_entry(out, key!("driftwatch.process.parent.name_escaped"), *parent_name_escaped);
        true_entry(out, key!("driftwatch.script.path_escaped"), *script_path_escaped);
        true_entry(out, key!("driftwatch.cgroup.path_escaped"), *cgroup_path_escaped);
    }
}

impl ExecFacts {
    fn write_entries(&self, out: &mut Vec<u8>) {
        let ExecFacts {
            exe_source,
            exe_inode,
            exe_origin,
            script_path,
            script_source,
            drifted_ancestor,
            shell,
            package_manager,
            env_loader_vars,
            mapped_path,
            mapped_by,
            mapped_path_truncated,
            mapped_path_escaped,
            env: EnvFacts { added, changed },
        } = self;
        str_entry(out, key!("driftwatch.exe.source"), exe_source);
        if *exe_inode != 0 {
            int_entry(out, key!("driftwatch.exe.inode"), *exe_inode);
        }
        opt_str_entry(out, key!("driftwatch.exe.origin"), *exe_origin);
        opt_str_entry(out, key!("driftwatch.script.path"), script_path.as_deref());
        opt_str_entry(out, key!("driftwatch.script.source"), *script_source);
        bool_entry(out, key!("driftwatch.lineage.drifted_ancestor"), *drifted_ancestor);
        opt_str_entry(out, key!("driftwatch.shell.name"), shell.as_deref());
        opt_str_entry(out, key!("driftwatch.package.manager"), package_manager.as_deref());
        opt_list_entry(out, key!("driftwatch.env.loader_vars"), env_loader_vars.as_deref());
        opt_str_entry(out, key!("driftwatch.mapped.path"), mapped_path.as_deref());
        opt_str_entry(out, key!("driftwatch.mapped.syscall"), *mapped_by);
        true_entry(out, key!("driftwatch.mapped.path_truncated"), *mapped_path_truncated);
        true_entry(out, key!("driftwatch.mapped.path_escaped"), *mapped_path_escaped);
        opt_list_entry(out, key!("driftwatch.env.added"), added.as_deref());
        opt_list_entry(out, key!("driftwatch.env.changed"), changed.as_deref());
    }
}

impl FileFacts {
    fn write_entries(&self, out: &mut Vec<u8>) {
        let FileFacts {
            drifted_ancestor,
            path,
            operation,
            path_truncated,
            path_escaped,
            target,
            target_truncated,
            target_escaped,
            location,
            origin,
            mode,
            owner,
        } = self;
        bool_entry(out, key!("driftwatch.lineage.drifted_ancestor"), *drifted_ancestor);
        str_entry(out, key!("file.path"), path);
        str_entry(out, key!("driftwatch.file.operation"), operation);
        true_entry(out, key!("driftwatch.file.path_truncated"), *path_truncated);
        true_entry(out, key!("driftwatch.file.path_escaped"), *path_escaped);
        opt_str_entry(out, key!("driftwatch.file.target_path"), target.as_deref());
        true_entry(out, key!("driftwatch.file.target_path_truncated"), *target_truncated);
        true_entry(out, key!("driftwatch.file.target_path_escaped"), *target_escaped);
        str_entry(out, key!("driftwatch.file.location"), location);
        opt_str_entry(out, key!("driftwatch.file.origin"), *origin);
        opt_str_entry(out, key!("driftwatch.file.mode"), mode.as_deref());
        opt_str_entry(out, key!("driftwatch.file.owner"), owner.as_deref());
    }
}

impl NetworkFacts {
    fn write_entries(&self, out: &mut Vec<u8>) {
        let NetworkFacts { drifted_ancestor, address, port, transport, network_type, direction, baseline_workload } =
            self;
        bool_entry(out, key!("driftwatch.lineage.drifted_ancestor"), *drifted_ancestor);
        str_entry(out, key!("server.address"), address);
        int_entry(out, key!("server.port"), *port);
        str_entry(out, key!("network.transport"), transport);
        str_entry(out, key!("network.type"), network_type);
        str_entry(out, key!("driftwatch.network.direction"), direction);
        str_entry(out, key!("driftwatch.baseline.workload"), baseline_workload);
    }
}

#[cfg(test)]
mod tests;
