//! Every rule the agent can report, in one table: its name (the `rule` key and
//! label), kind, playbook step, and where its severity comes from. Judges
//! name rules by these constants; metrics pre-create one series per entry; the
//! README's rule table documents the same list.

use super::finding::{Kind, PlaybookStep};
use crate::config::{Rules, Severity};

/// Where a rule's severity comes from.
#[derive(Debug, Clone, Copy)]
pub enum SeverityFrom {
    /// Fixed by the rule: what it means does not depend on the workload.
    Fixed(Severity),
    /// The `severity` of its section of `rules:` in the config.
    Config(fn(&Rules) -> Severity),
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub kind: Kind,
    pub step: PlaybookStep,
    pub severity: SeverityFrom,
}

/// Rules are one table: the name identifies a rule.
impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Rule {
    pub fn severity(&self, rules: &Rules) -> Severity {
        match self.severity {
            SeverityFrom::Fixed(s) => s,
            SeverityFrom::Config(f) => f(rules),
        }
    }
}

const fn rule(name: &'static str, kind: Kind, step: PlaybookStep, severity: SeverityFrom) -> Rule {
    Rule { name, kind, step, severity }
}

fn binary(r: &Rules) -> Severity {
    r.binary.severity
}
fn shell(r: &Rules) -> Severity {
    r.shell.severity
}
fn package(r: &Rules) -> Severity {
    r.package.severity
}
fn network(r: &Rules) -> Severity {
    r.network.severity
}
fn file(r: &Rules) -> Severity {
    r.file.severity
}

use Kind as K;
use PlaybookStep as S;
use SeverityFrom::{Config as Cfg, Fixed};

pub const EXEC_NEW_BINARY: Rule = rule("exec_new_binary", K::Binary, S::Isolate, Cfg(binary));
pub const EXEC_NEW_SCRIPT: Rule = rule("exec_new_script", K::Binary, S::Isolate, Cfg(binary));
pub const EXEC_FILELESS_MEMFD: Rule = rule("exec_fileless_memfd", K::Binary, S::Isolate, Cfg(binary));
pub const EXEC_FILELESS_DELETED: Rule = rule("exec_fileless_deleted", K::Binary, S::Isolate, Cfg(binary));
pub const EXEC_FROM_TMPFS: Rule = rule("exec_from_tmpfs", K::Binary, S::Isolate, Cfg(binary));
pub const EXEC_FROM_VOLUME: Rule = rule("exec_from_volume", K::Binary, S::Isolate, Cfg(binary));
/// A dropped shared object mapped executable into a process (LD_PRELOAD, dlopen).
pub const EXEC_NEW_LIBRARY: Rule = rule("exec_new_library", K::Binary, S::Isolate, Cfg(binary));
/// The dynamic loader run as a command mapping a dropped program (`ld.so /tmp/payload`).
pub const EXEC_VIA_LOADER: Rule = rule("exec_via_loader", K::Binary, S::Isolate, Cfg(binary));
pub const EXEC_BY_DRIFTED_PROCESS: Rule =
    rule("exec_by_drifted_process", K::Binary, S::Investigate, Fixed(Severity::Warning));
pub const SHELL_IN_CONTAINER: Rule = rule("shell_in_container", K::Shell, S::Validate, Cfg(shell));
pub const TERMINAL_SHELL_IN_CONTAINER: Rule = rule("terminal_shell_in_container", K::Shell, S::Validate, Cfg(shell));
pub const PACKAGE_MANAGER_EXEC: Rule = rule("package_manager_exec", K::Package, S::Validate, Cfg(package));
pub const PACKAGE_DATABASE_WRITE: Rule = rule("package_database_write", K::Package, S::Validate, Cfg(package));
pub const NETWORK_NEW_LISTENER: Rule = rule("network_new_listener", K::Network, S::Validate, Cfg(network));
pub const NETWORK_NEW_DESTINATION: Rule = rule("network_new_destination", K::Network, S::Validate, Cfg(network));
pub const FILE_WRITTEN: Rule = rule("file_written", K::File, S::Investigate, Cfg(file));
pub const FILE_DELETED: Rule = rule("file_deleted", K::File, S::Investigate, Cfg(file));
pub const FILE_RENAMED: Rule = rule("file_renamed", K::File, S::Investigate, Cfg(file));
pub const FILE_MODE_CHANGED: Rule = rule("file_mode_changed", K::File, S::Investigate, Cfg(file));
pub const FILE_LINKED: Rule = rule("file_linked", K::File, S::Investigate, Cfg(file));
pub const FILE_SYMLINKED: Rule = rule("file_symlinked", K::File, S::Investigate, Cfg(file));
pub const FILE_OWNER_CHANGED: Rule = rule("file_owner_changed", K::File, S::Investigate, Cfg(file));
pub const FILE_DIRECTORY_CREATED: Rule = rule("file_directory_created", K::File, S::Investigate, Cfg(file));
pub const LOADER_INJECTION_ENV: Rule =
    rule("loader_injection_env", K::Config, S::Investigate, Fixed(Severity::Critical));
/// Config drift (`classify::config_drift`): severities fixed per rule, see there why.
pub const IMAGE_MUTABLE_TAG: Rule = rule("image_mutable_tag", K::Config, S::Remediate, Fixed(Severity::Info));
pub const IMAGE_DIGEST_MISMATCH: Rule =
    rule("image_digest_mismatch", K::Config, S::Validate, Fixed(Severity::Critical));
pub const IMAGE_DIGEST_NOT_APPROVED: Rule =
    rule("image_digest_not_approved", K::Config, S::Validate, Fixed(Severity::Warning));
pub const EPHEMERAL_CONTAINER_ADDED: Rule =
    rule("ephemeral_container_added", K::Config, S::Validate, Fixed(Severity::Warning));
/// Issue 16 (`classify::config_changes`): configuration changed under a running container.
pub const MOUNTED_CONFIG_CHANGED: Rule =
    rule("mounted_config_changed", K::Config, S::Validate, Fixed(Severity::Warning));
pub const RUNTIME_PARAMETERS_CHANGED: Rule =
    rule("runtime_parameters_changed", K::Config, S::Validate, Fixed(Severity::Info));
/// Warning; critical when a code-injection name is among the variables (see there).
pub const ENVIRONMENT_CHANGED: Rule = rule("environment_changed", K::Config, S::Investigate, Fixed(Severity::Warning));

/// Every rule, in the order of the README's table.
pub const ALL: [Rule; 31] = [
    EXEC_NEW_BINARY,
    EXEC_NEW_SCRIPT,
    EXEC_FILELESS_MEMFD,
    EXEC_FILELESS_DELETED,
    EXEC_FROM_TMPFS,
    EXEC_FROM_VOLUME,
    EXEC_NEW_LIBRARY,
    EXEC_VIA_LOADER,
    EXEC_BY_DRIFTED_PROCESS,
    PACKAGE_MANAGER_EXEC,
    SHELL_IN_CONTAINER,
    TERMINAL_SHELL_IN_CONTAINER,
    FILE_WRITTEN,
    FILE_DELETED,
    FILE_DIRECTORY_CREATED,
    FILE_RENAMED,
    FILE_MODE_CHANGED,
    FILE_OWNER_CHANGED,
    FILE_LINKED,
    FILE_SYMLINKED,
    PACKAGE_DATABASE_WRITE,
    NETWORK_NEW_LISTENER,
    NETWORK_NEW_DESTINATION,
    IMAGE_MUTABLE_TAG,
    IMAGE_DIGEST_MISMATCH,
    IMAGE_DIGEST_NOT_APPROVED,
    EPHEMERAL_CONTAINER_ADDED,
    LOADER_INJECTION_ENV,
    ENVIRONMENT_CHANGED,
    MOUNTED_CONFIG_CHANGED,
    RUNTIME_PARAMETERS_CHANGED,
];

/// The rule called `name`.
pub fn by_name(name: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        for (i, r) in ALL.iter().enumerate() {
            assert!(r.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", r.name);
            assert!(ALL[i + 1..].iter().all(|o| o.name != r.name), "{} twice", r.name);
            assert_eq!(by_name(r.name).map(|x| x.name), Some(r.name));
        }
    }

    #[test]
    fn severities_follow_the_config_or_the_rule() {
        let mut rules = crate::config::Config::default().rules;
        rules.shell.severity = Severity::Info;
        assert_eq!(SHELL_IN_CONTAINER.severity(&rules), Severity::Info);
        assert_eq!(EXEC_BY_DRIFTED_PROCESS.severity(&rules), Severity::Warning);
        assert_eq!(IMAGE_DIGEST_MISMATCH.severity(&rules), Severity::Critical);
    }
}
