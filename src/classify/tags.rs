//! Tags of every rule, in one table keyed by rule name: the finding's
//! `driftwatch.tags`, Falco's `tags`, and the `mitre` label of the
//! Alertmanager push. Tags look like Falco's: a domain (`process`,
//! `filesystem`, `network`, `software_mgmt`, `k8s`), MITRE ATT&CK tactics
//! (`mitre_<tactic>`) and technique ids (`T1105`, `T1574.006`), and NIST SP
//! 800-53 controls (`NIST_800-53_SI-7`) where a rule is evidence for one.
//!
//! Why each mapping (technique ids only; https://attack.mitre.org/techniques/<id>):
//! - dropped binary or script: T1105 Ingress Tool Transfer (it was brought in
//!   after the image was built); scripts also T1059 (interpreter).
//! - memfd: T1620 Reflective Code Loading (runs from memory, no file).
//! - deleted executable: T1070.004 File Deletion (the file was removed to hide).
//! - tmpfs: T1105 plus defense evasion (nothing reaches the disk).
//! - volume: T1080 Taint Shared Content (a volume other pods or the node share).
//! - a drifted process's children: T1059 (what the dropped tool goes on to run).
//! - shells: T1059.004 Unix Shell; a terminal shell also T1609 Container
//!   Administration Command (kubectl exec).
//! - package managers and their databases: T1105 (tools installed at run time).
//! - listeners: T1571 Non-Standard Port (a bind shell, a C2 listener); new
//!   destinations: T1071 Application Layer Protocol (C2 or exfiltration).
//! - file writes: T1543 Create or Modify System Process and T1098 Account
//!   Manipulation (the usual targets under /etc: units, passwd, sudoers),
//!   T1565.001 Stored Data Manipulation for the rest.
//! - deletes T1070.004; renames and links T1036 Masquerading; mode and owner
//!   changes T1222.002 Linux File Permissions Modification; new directories
//!   T1074.001 Local Data Staging.
//! - LD_PRELOAD and friends: T1574.006 Dynamic Linker Hijacking.
//! - a mutable tag: T1195.002 Compromise Software Supply Chain (whoever can
//!   push the tag chooses what runs); another digest than pinned or approved:
//!   T1525 Implant Internal Image; ephemeral containers: T1609 and T1610
//!   Deploy Container.
//! - a dropped shared object mapped executable: T1129 Shared Modules and
//!   T1574.006 (preloaded or dlopen'ed into an image program); the loader
//!   running a dropped program: T1105 with defense evasion (no exec of it).
//! - environment changed: T1574 Hijack Execution Flow (NODE_OPTIONS, BASH_ENV,
//!   proxies: the variables steer what a trusted program runs or reaches).
//! - mounted Secret/ConfigMap changed: T1565.001 (the data a pod trusts).
//! - runtime parameters changed: T1496 Resource Hijacking (limits raised
//!   under a running container).

/// `(rule name, tags)`; rules not listed have no tags (a test forbids that).
const TAGS: &[(&str, &[&str])] = &[
    (
        "exec_new_binary",
        &["container", "process", "mitre_execution", "mitre_command_and_control", "T1105", "NIST_800-53_SI-7"],
    ),
    (
        "exec_new_script",
        &["container", "process", "mitre_execution", "mitre_command_and_control", "T1105", "T1059", "NIST_800-53_SI-7"],
    ),
    ("exec_fileless_memfd", &["container", "process", "mitre_defense_evasion", "T1620", "NIST_800-53_SI-7"]),
    ("exec_fileless_deleted", &["container", "process", "mitre_defense_evasion", "T1070.004", "NIST_800-53_SI-7"]),
    (
        "exec_from_tmpfs",
        &["container", "process", "mitre_command_and_control", "mitre_defense_evasion", "T1105", "NIST_800-53_SI-7"],
    ),
    ("exec_from_volume", &["container", "process", "mitre_lateral_movement", "T1080", "NIST_800-53_SI-7"]),
    ("exec_by_drifted_process", &["container", "process", "mitre_execution", "T1059"]),
    ("shell_in_container", &["container", "process", "shell", "mitre_execution", "T1059.004", "NIST_800-53_CM-7"]),
    (
        "terminal_shell_in_container",
        &["container", "process", "shell", "mitre_execution", "T1059.004", "T1609", "NIST_800-53_CM-7"],
    ),
    (
        "package_manager_exec",
        &["container", "process", "software_mgmt", "mitre_command_and_control", "T1105", "NIST_800-53_CM-7"],
    ),
    (
        "package_database_write",
        &["container", "filesystem", "software_mgmt", "mitre_command_and_control", "T1105", "NIST_800-53_SI-7"],
    ),
    ("network_new_listener", &["container", "network", "mitre_command_and_control", "T1571", "NIST_800-53_CM-7"]),
    ("network_new_destination", &["container", "network", "mitre_command_and_control", "T1071", "NIST_800-53_SC-7"]),
    (
        "file_written",
        &[
            "container",
            "filesystem",
            "mitre_persistence",
            "mitre_impact",
            "T1543",
            "T1098",
            "T1565.001",
            "NIST_800-53_SI-7",
        ],
    ),
    ("file_deleted", &["container", "filesystem", "mitre_defense_evasion", "T1070.004", "NIST_800-53_SI-7"]),
    ("file_directory_created", &["container", "filesystem", "mitre_collection", "T1074.001"]),
    ("file_renamed", &["container", "filesystem", "mitre_defense_evasion", "T1036", "NIST_800-53_SI-7"]),
    ("file_mode_changed", &["container", "filesystem", "mitre_defense_evasion", "T1222.002", "NIST_800-53_SI-7"]),
    ("file_owner_changed", &["container", "filesystem", "mitre_defense_evasion", "T1222.002", "NIST_800-53_SI-7"]),
    ("file_linked", &["container", "filesystem", "mitre_defense_evasion", "T1036"]),
    ("file_symlinked", &["container", "filesystem", "mitre_defense_evasion", "T1036"]),
    (
        "loader_injection_env",
        &[
            "container",
            "process",
            "mitre_persistence",
            "mitre_privilege_escalation",
            "mitre_defense_evasion",
            "T1574.006",
        ],
    ),
    ("image_mutable_tag", &["container", "k8s", "mitre_initial_access", "T1195.002", "NIST_800-53_CM-2"]),
    ("image_digest_mismatch", &["container", "k8s", "mitre_persistence", "T1525", "NIST_800-53_SI-7"]),
    ("image_digest_not_approved", &["container", "k8s", "mitre_persistence", "T1525", "NIST_800-53_CM-7"]),
    ("ephemeral_container_added", &["container", "k8s", "mitre_execution", "T1609", "T1610"]),
    (
        "exec_new_library",
        &["container", "process", "mitre_execution", "mitre_defense_evasion", "T1129", "T1574.006", "NIST_800-53_SI-7"],
    ),
    (
        "exec_via_loader",
        &["container", "process", "mitre_execution", "mitre_defense_evasion", "T1105", "NIST_800-53_SI-7"],
    ),
    (
        "environment_changed",
        &["container", "process", "mitre_persistence", "mitre_defense_evasion", "T1574", "NIST_800-53_CM-6"],
    ),
    ("mounted_config_changed", &["container", "k8s", "mitre_impact", "T1565.001", "NIST_800-53_CM-6"]),
    ("runtime_parameters_changed", &["container", "k8s", "mitre_impact", "T1496", "NIST_800-53_CM-6"]),
];

/// The tags of rule `name` (empty for a rule the table does not know).
pub fn of(name: &str) -> &'static [&'static str] {
    TAGS.iter().find(|(n, _)| *n == name).map_or(&[], |(_, t)| t)
}

/// Whether `tag` is an ATT&CK technique id (`T1105`, `T1574.006`).
pub fn is_technique(tag: &str) -> bool {
    let b = tag.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b {
        [b'T', rest @ ..] if rest.len() == 4 => digits(rest),
        [b'T', rest @ ..] if rest.len() == 8 => digits(&rest[..4]) && rest[4] == b'.' && digits(&rest[5..]),
        _ => false,
    }
}

/// The ATT&CK technique ids of rule `name`, comma-separated (the `mitre` alert label).
pub fn techniques(name: &str) -> String {
    of(name).iter().filter(|t| is_technique(t)).copied().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::rules::ALL;

    const TACTICS: [&str; 14] = [
        "reconnaissance",
        "resource_development",
        "initial_access",
        "execution",
        "persistence",
        "privilege_escalation",
        "defense_evasion",
        "credential_access",
        "discovery",
        "lateral_movement",
        "collection",
        "command_and_control",
        "exfiltration",
        "impact",
    ];
    const DOMAINS: [&str; 7] = ["container", "process", "shell", "filesystem", "network", "software_mgmt", "k8s"];

    #[test]
    fn every_rule_has_a_tactic_and_a_technique() {
        for r in ALL.iter() {
            let t = of(r.name);
            assert!(t.iter().any(|t| t.starts_with("mitre_")), "{}: no ATT&CK tactic in {t:?}", r.name);
            assert!(t.iter().any(|t| is_technique(t)), "{}: no ATT&CK technique in {t:?}", r.name);
            assert!(!techniques(r.name).is_empty());
        }
    }

    #[test]
    fn tags_are_well_formed_and_the_table_names_only_rules() {
        for (i, (name, tags)) in TAGS.iter().enumerate() {
            assert!(crate::classify::rules::by_name(name).is_some(), "{name}: not a rule");
            assert!(TAGS[i + 1..].iter().all(|(n, _)| n != name), "{name} twice");
            for (j, t) in tags.iter().enumerate() {
                let ok = is_technique(t)
                    || t.strip_prefix("mitre_").is_some_and(|x| TACTICS.contains(&x))
                    || t.strip_prefix("NIST_800-53_").is_some_and(|c| c.len() >= 4 && c.as_bytes()[2] == b'-')
                    || DOMAINS.contains(t);
                assert!(ok, "{name}: tag {t:?} is none of technique, tactic, control, domain");
                assert!(!tags[j + 1..].contains(t), "{name}: {t} twice");
            }
        }
    }

    #[test]
    fn technique_ids() {
        assert!(is_technique("T1105") && is_technique("T1574.006"));
        for bad in ["T110", "T11050", "T1574.06", "t1105", "TA0002", "mitre_execution"] {
            assert!(!is_technique(bad), "{bad}");
        }
        assert_eq!(techniques("exec_new_script"), "T1105,T1059");
        assert_eq!(of("no_such_rule"), &[] as &[&str]);
    }
}
