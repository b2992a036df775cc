//! This node's name, as every output names it (`k8s.node.name`).

use std::sync::OnceLock;

/// `NODE_NAME` (set from `spec.nodeName` by the chart's downward API), else
/// the hostname, else `unknown`; trimmed, read once.
pub fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let env = std::env::var("NODE_NAME").ok();
        let host = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        pick(env.as_deref(), host().as_deref())
    })
}

fn pick(env: Option<&str>, hostname: Option<&str>) -> String {
    [env, hostname].into_iter().flatten().map(str::trim).find(|s| !s.is_empty()).unwrap_or("unknown").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_then_hostname_then_unknown() {
        assert_eq!(super::pick(Some(" node-1\n"), Some("host")), "node-1");
        assert_eq!(super::pick(Some("  "), Some("host\n")), "host");
        assert_eq!(super::pick(None, None), "unknown");
        assert!(!super::name().is_empty());
    }
}
