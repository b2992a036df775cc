//! The config loader (`Config::from_yaml_with`): any text loads or fails with
//! an error that says where (a line, a field); a bad value of any known key is
//! reported under that key's dotted name; valid values are accepted across
//! their whole documented range and come back unchanged.
//!
//! Files named by the config are not read (`FileChecks::Skip`): these are
//! properties of the parser and its checks, not of this machine's files.

use driftwatch::config::{Config, ConfigError, DEFAULT_YAML, FileChecks};
use proptest::prelude::*;
use serde_yaml_ng::Value;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_with(text, "p.yaml", FileChecks::Skip)
}

/// Whether an error says where the problem is: a line, or the field.
fn says_where(e: &ConfigError) -> bool {
    match e {
        ConfigError::Read { .. } => false,
        ConfigError::Parse { location, message, .. } => {
            location.contains("line ") || message.split_once(": ").is_some_and(|(field, _)| is_dotted(field))
        }
        ConfigError::Invalid { field, .. } => !field.is_empty(),
    }
}

fn is_dotted(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|k| !k.is_empty() && !k.contains(' '))
}

/// Every key path of the default config, sections and leaves
/// (`["rules", "shell", "names"]`).
fn key_paths() -> Vec<Vec<String>> {
    fn walk(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Value::Mapping(m) = v {
            for (k, v) in m {
                at.push(k.as_str().expect("string keys").to_string());
                out.push(at.clone());
                walk(v, at, out);
                at.pop();
            }
        }
    }
    let v: Value = serde_yaml_ng::from_str(DEFAULT_YAML).expect("default YAML");
    let mut out = Vec::new();
    walk(&v, &mut Vec::new(), &mut out);
    out
}

/// `path` set to the YAML text `scalar`, as a block mapping.
fn nested(path: &[String], scalar: &str) -> String {
    let mut s = String::new();
    for (i, k) in path.iter().enumerate() {
        s.push_str(&"  ".repeat(i));
        s.push_str(k);
        s.push(':');
        if i + 1 == path.len() {
            s.push(' ');
            s.push_str(scalar);
        }
        s.push('\n');
    }
    s
}

/// A value to set a key to: YAML text written as is, or a string (quoted as
/// the YAML emitter quotes it).
#[derive(Debug, Clone)]
enum Scalar {
    Raw(String),
    Str(String),
}

/// A scalar: numbers of every size and sign, floats, booleans, nulls, empty
/// collections and strings, some of them shaped like the values the config takes.
fn scalar() -> impl Strategy<Value = Scalar> {
    let raw = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..33).prop_map(|b| (1u64 << b).to_string()),
        proptest::sample::select(
            &[
                "0",
                "-1",
                "1",
                "99999999999999999999",
                "-99999999999999999999",
                "1.5",
                "-0.0",
                ".inf",
                ".nan",
                "1e3",
                "0x10",
                "true",
                "false",
                "yes",
                "~",
                "null",
                "",
                "[]",
                "{}",
                "[1, a]",
                "{a: 1}",
                "''",
                "\"\"",
            ][..]
        )
        .prop_map(String::from),
    ];
    prop_oneof![
        raw.prop_map(Scalar::Raw),
        crate::text_from(
            &[
                "0.0.0.0:8789",
                "127.0.0.1:",
                "[::1]:9",
                "http://",
                "https://",
                "unix://",
                "/",
                "/tmp",
                "a",
                "sh",
                "auto",
                "grpc",
                "http/protobuf",
                "warning",
                "critical",
                "info",
                "sha256:",
                "busybox",
                ":",
                " ",
                "\n"
            ],
            30,
        )
        .prop_map(Scalar::Str),
    ]
}

/// Any YAML document: random text from YAML's own punctuation and the
/// config's keys, and random trees (known and unknown keys, any values).
fn yaml_text() -> impl Strategy<Value = String> {
    let keys = || {
        prop_oneof![
            proptest::sample::select(key_paths()).prop_map(|p| p.last().cloned().unwrap()),
            proptest::string::string_regex("[a-z_]{1,8}").unwrap(),
        ]
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        crate::text_from(&["/", "http://", "sh", "0.0.0.0:1", "sha256:"], 20).prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            proptest::collection::vec((keys(), inner), 0..5)
                .prop_map(|kv| Value::Mapping(kv.into_iter().map(|(k, v)| (Value::String(k), v)).collect())),
        ]
    });
    prop_oneof![
        tree.prop_map(|v| serde_yaml_ng::to_string(&v).unwrap_or_default()),
        crate::text_from(
            &[
                "\n",
                "  ",
                "- ",
                ": ",
                "[",
                "]",
                "{",
                "}",
                ",",
                "sensor",
                "rules",
                "shell",
                "names",
                "ringbuf_bytes",
                "otlp",
                "&a ",
                "*a",
                "<<",
                "!!str ",
                "!!binary ",
                "---\n",
                "...\n",
                "# c",
                "'",
                "\"",
                "?",
                "|",
                "5",
                "\t",
                "%YAML 1.2\n",
                "x"
            ],
            120,
        ),
    ]
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any text: no panic; it loads, or the error says where.
    #[test]
    fn any_yaml_loads_or_says_where(text in yaml_text()) {
        if let Err(e) = load(&text) {
            prop_assert!(says_where(&e), "{:?}\n--- error: {}\n--- text:\n{}", e, e, text);
        }
    }

    /// Any known key (a section or a leaf) set to any scalar: the config
    /// loads, or the error names that key (dotted) and its line.
    #[test]
    fn a_bad_value_is_reported_under_its_key(
        path in proptest::sample::select(key_paths()),
        value in scalar(),
    ) {
        let text = match &value {
            Scalar::Raw(raw) => nested(&path, raw),
            Scalar::Str(s) => {
                let mut doc = Value::Mapping(Default::default());
                set(&mut doc, &path.join("."), Value::String(s.clone()));
                serde_yaml_ng::to_string(&doc).expect("YAML")
            }
        };
        if let Err(e) = load(&text) {
            let msg = e.to_string();
            let dotted = path.join(".");
            prop_assert!(msg.contains(&dotted), "error does not name {}: {}\n--- text:\n{}", dotted, msg, text);
            prop_assert!(msg.contains("line "), "error has no line: {}\n--- text:\n{}", msg, text);
        }
    }
}

/// The default config, serialised again and loaded, is the default config.
#[test]
fn the_default_config_round_trips() {
    let v: Value = serde_yaml_ng::from_str(DEFAULT_YAML).expect("default YAML");
    let text = serde_yaml_ng::to_string(&v).expect("serialise");
    assert_eq!(load(&text).expect("reloads"), Config::default());
    assert_eq!(load(DEFAULT_YAML).expect("loads"), Config::default());
}

/// A bounded number of the config: its key, range, and where it lands.
type Bounded = (&'static str, u64, u64, fn(&Config) -> u64);

/// The bounded numbers, with the ranges their errors state.
const BOUNDS: &[Bounded] = &[
    ("sensor.drain_interval_ms", 1, 1000, |c| c.sensor.drain_interval_ms),
    ("runtime.metadata_wait_ms", 0, 60_000, |c| c.runtime.metadata_wait_ms),
    ("rules.file.events_per_sec", 1, 100_000, |c| c.rules.file.events_per_sec.into()),
    ("pipeline.queue_capacity", 16, 1 << 20, |c| c.pipeline.queue_capacity as u64),
    ("pipeline.sink_stall_timeout_ms", 100, 3_600_000, |c| c.pipeline.sink_stall_timeout_ms),
    ("pipeline.shutdown_timeout_ms", 100, 600_000, |c| c.pipeline.shutdown_timeout_ms),
    ("otlp.timeout_ms", 100, 600_000, |c| c.otlp.timeout_ms),
    ("otlp.max_queue_size", 1, 1 << 20, |c| c.otlp.max_queue_size as u64),
    ("otlp.max_batch_size", 1, 1 << 16, |c| c.otlp.max_batch_size as u64),
    ("otlp.batch_timeout_ms", 1, 600_000, |c| c.otlp.batch_timeout_ms),
    ("alertmanager.timeout_ms", 100, 600_000, |c| c.alertmanager.timeout_ms),
    ("alertmanager.group_window_ms", 10, 3_600_000, |c| c.alertmanager.group_window_ms),
    ("alertmanager.resolve_timeout_s", 1, 7 * 86_400, |c| c.alertmanager.resolve_timeout_s),
    ("alertmanager.queue_size", 1, 1 << 20, |c| c.alertmanager.queue_size as u64),
    ("alertmanager.max_retries", 0, 1000, |c| c.alertmanager.max_retries.into()),
    ("alertmanager.retry_initial_ms", 1, 600_000, |c| c.alertmanager.retry_initial_ms),
    ("alertmanager.retry_max_ms", 1, 3_600_000, |c| c.alertmanager.retry_max_ms),
];

/// `v` with `x` set at the dotted `key` (sections made as needed).
fn set(v: &mut Value, key: &str, x: Value) {
    let mut at = v;
    let keys: Vec<&str> = key.split('.').collect();
    for (i, k) in keys.iter().enumerate() {
        let Value::Mapping(m) = at else { unreachable!("sections are mappings") };
        let k = Value::String(k.to_string());
        if i + 1 == keys.len() {
            m.insert(k, x);
            return;
        }
        at = m.entry(k).or_insert_with(|| Value::Mapping(Default::default()));
    }
}

/// A value of a bounded number: either end, inside, one past either end, anything.
fn around((_, lo, hi, _): &Bounded) -> impl Strategy<Value = u64> + use<> {
    let (lo, hi) = (*lo, *hi);
    prop_oneof![Just(lo), Just(hi), lo..=hi, Just(lo.saturating_sub(1)), Just(hi + 1), hi + 1..=u32::MAX as u64,]
}

/// A program name the kernel can report: 1 to 15 bytes, no '/'.
/// Built, not filtered: rejecting most multi-byte draws ran proptest out of
/// local rejects (65,536 per run) in long runs.
fn program_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 1..15).prop_map(|v| {
        let mut s = String::new();
        for c in v.into_iter().map(|c| if c == '/' || c == '\0' { '_' } else { c }) {
            if s.len() + c.len_utf8() > 15 {
                break;
            }
            s.push(c);
        }
        s
    })
}

proptest! {
    #![proptest_config(crate::config())]

    /// Each bounded number: accepted, and loaded as given, exactly inside its
    /// range; outside it, an error naming the key, its line and the range.
    #[test]
    fn bounded_numbers_accept_exactly_their_range(
        (i, v) in (0..BOUNDS.len()).prop_flat_map(|i| (Just(i), around(&BOUNDS[i]))),
    ) {
        let (key, lo, hi, get) = BOUNDS[i];
        let mut doc = Value::Mapping(Default::default());
        set(&mut doc, key, Value::Number(v.into()));
        let text = serde_yaml_ng::to_string(&doc).unwrap();
        match load(&text) {
            Ok(c) => {
                prop_assert!((lo..=hi).contains(&v), "{} = {} accepted", key, v);
                prop_assert_eq!(get(&c), v);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!(lo..=hi).contains(&v), "{} = {} rejected: {}", key, v, msg);
                prop_assert!(msg.contains(key) && msg.contains("line "), "{}", msg);
                // The range, or (too big for the type) what the type holds.
                let between = msg.contains(&format!("between {lo} and {hi}"));
                let at_most = lo == 0 && msg.contains(&format!("at most {hi}"));
                prop_assert!(between || at_most || msg.contains("whole number"), "{}", msg);
            }
        }
    }

    /// `sensor.ringbuf_bytes`: exactly the powers of two from 256 KiB to 256 MiB.
    #[test]
    fn ringbuf_bytes_are_powers_of_two_in_range(v in prop_oneof![(0u32..32).prop_map(|b| 1u32 << b), any::<u32>()]) {
        let text = format!("sensor:\n  ringbuf_bytes: {v}\n");
        let ok = v.is_power_of_two() && (256 << 10..=256 << 20).contains(&v);
        match load(&text) {
            Ok(c) => prop_assert!(ok && c.sensor.ringbuf_bytes == v, "{} accepted", v),
            Err(e) => {
                prop_assert!(!ok, "{} rejected: {}", v, e);
                prop_assert!(e.to_string().contains("sensor.ringbuf_bytes") && e.to_string().contains("line 2"), "{}", e);
            }
        }
    }

    /// Many valid values at once (every bounded number, the name lists, the
    /// switches) load back exactly as written: the user's file merges over the
    /// defaults key by key and nothing else changes.
    #[test]
    fn valid_values_load_as_written(
        values in BOUNDS.iter().map(|b| (b.1..=b.2).boxed()).collect::<Vec<_>>(),
        shells in proptest::collection::hash_set(program_name(), 0..6),
        interpreters in proptest::collection::hash_set(program_name(), 0..6),
        switches in any::<[bool; 5]>(),
    ) {
        let mut doc = Value::Mapping(Default::default());
        for ((key, ..), v) in BOUNDS.iter().zip(&values) {
            set(&mut doc, key, Value::Number((*v).into()));
        }
        let list = |s: &std::collections::HashSet<String>| Value::Sequence(s.iter().cloned().map(Value::String).collect());
        set(&mut doc, "rules.shell.names", list(&shells));
        set(&mut doc, "rules.interpreters", list(&interpreters));
        for (key, on) in ["rules.binary.enabled", "rules.shell.enabled", "rules.file.enabled", "sensor.network", "sensor.files"]
            .iter()
            .zip(switches)
        {
            set(&mut doc, key, Value::Bool(on));
        }
        let text = serde_yaml_ng::to_string(&doc).unwrap();
        let c = load(&text).map_err(|e| TestCaseError::fail(format!("{e}\n--- text:\n{text}")))?;
        for ((key, _, _, get), v) in BOUNDS.iter().zip(&values) {
            prop_assert_eq!(get(&c), *v, "{}", key);
        }
        let sorted = |v: &[String]| { let mut v = v.to_vec(); v.sort(); v };
        prop_assert_eq!(sorted(&c.rules.shell.names), sorted(&shells.into_iter().collect::<Vec<_>>()));
        prop_assert_eq!(sorted(&c.rules.interpreters), sorted(&interpreters.into_iter().collect::<Vec<_>>()));
        prop_assert_eq!(
            [c.rules.binary.enabled, c.rules.shell.enabled, c.rules.file.enabled, c.sensor.network, c.sensor.files],
            switches
        );
        // Untouched keys keep their defaults.
        let d = Config::default();
        prop_assert_eq!((&c.rules.package, &c.rules.network, &c.metrics_addr), (&d.rules.package, &d.rules.network, &d.metrics_addr));
    }
}
