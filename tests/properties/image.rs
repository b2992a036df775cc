//! `enrich::image`: references built from the `distribution/reference` grammar
//! parse into the parts they were built from, normalised the way Docker and
//! containerd normalise them; anything else is rejected, never mis-parsed.

use crate::hex;
use driftwatch::enrich::image::{DEFAULT_REGISTRY, ImageRef, digest_of_image_ref, parse_digest};
use proptest::prelude::*;

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component() -> impl Strategy<Value = String> {
    let alnum = || proptest::string::string_regex("[a-z0-9]{1,6}").unwrap();
    let sep = proptest::sample::select(&[".", "_", "__", "-", "--", "---"][..]);
    (alnum(), proptest::collection::vec((sep, alnum()), 0..3))
        .prop_map(|(head, rest)| rest.into_iter().fold(head, |s, (sep, a)| s + sep + &a))
}

/// A registry host: DNS labels (any case) with a dot, `localhost`, an IPv4 or
/// bracketed IPv6 address; each maybe with a port.
fn registry() -> impl Strategy<Value = String> {
    let label = || proptest::string::string_regex("[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?").unwrap();
    let host = prop_oneof![
        (label(), proptest::collection::vec(label(), 1..3)).prop_map(|(h, rest)| format!("{h}.{}", rest.join("."))),
        Just("localhost".to_string()),
        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        any::<[u16; 8]>().prop_map(|a| format!("[{}]", std::net::Ipv6Addr::from(a))),
        Just("docker.io".to_string()),
        Just("index.docker.io".to_string()),
    ];
    (host, proptest::option::of(any::<u16>())).prop_map(|(h, port)| match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    })
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn tag() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}").unwrap(),
        proptest::string::string_regex("[A-Za-z0-9_][A-Za-z0-9_.-]{127}").unwrap(),
    ]
}

fn digest() -> impl Strategy<Value = String> {
    prop_oneof![4 => hex(64).prop_map(|h| format!("sha256:{h}")), 1 => hex(128).prop_map(|h| format!("sha512:{h}"))]
}

/// A reference as written, and the parts it must parse into.
#[derive(Debug, Clone)]
struct Built {
    text: String,
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Docker's reading of `[registry/]path`: the first component is a registry
/// when it has a `.` or `:`, is `localhost`, or has an uppercase letter
/// (`splitDockerDomain` in distribution/reference); `index.docker.io` is
/// `docker.io`; Docker Hub's one-component names are in `library/`.
fn docker_split(name: &str) -> (String, String) {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first => {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    };
    let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY } else { registry };
    let path =
        if registry == DEFAULT_REGISTRY && !path.contains('/') { format!("library/{path}") } else { path.into() };
    (registry.to_string(), path)
}

/// `host[:port]` of the grammar: DNS labels (`[a-zA-Z0-9]` at both ends,
/// dashes inside) or a bracketed IPv6 address.
fn is_host(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => (h, Some(p)),
        _ => (r, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.split('.').all(label),
    };
    port_ok && host_ok
}

fn reference() -> impl Strategy<Value = Built> {
    (
        proptest::option::of(registry()),
        proptest::collection::vec(component(), 1..4),
        proptest::option::of(tag()),
        proptest::option::of(digest()),
    )
        .prop_filter_map("not a name Docker reads as a repository", |(reg, path, tag, digest)| {
            let name = match &reg {
                Some(r) => format!("{r}/{}", path.join("/")),
                None => path.join("/"),
            };
            let (registry, repository) = docker_split(&name);
            // Without a registry the first component must not read as one, or
            // the reference is another than the one meant (that reading has its
            // own property below).
            if reg.is_none() && registry != DEFAULT_REGISTRY {
                return None;
            }
            // A bare 64-hex name is an image id, not a reference.
            if reg.is_none() && path.len() == 1 && tag.is_none() && digest.is_none() && path[0].len() == 64 {
                return None;
            }
            if registry.len() + 1 + repository.len() > 255 {
                return None;
            }
            let mut text = name;
            if let Some(t) = &tag {
                text = format!("{text}:{t}");
            }
            if let Some(d) = &digest {
                text = format!("{text}@{d}");
            }
            Some(Built { text, registry, repository, tag, digest })
        })
}

/// One change that makes a valid reference invalid, and what it breaks.
fn breakage() -> impl Strategy<Value = (usize, String)> {
    (
        0usize..15,
        prop_oneof![
            proptest::string::string_regex("[A-Z]").unwrap(),
            proptest::string::string_regex("[ \t\n\u{0}]").unwrap(),
            proptest::string::string_regex("[^a-zA-Z0-9._:/@\\[\\]-]").unwrap(),
        ],
    )
}

fn broken(b: &Built, (how, ch): &(usize, String)) -> Option<String> {
    let name = b.text.split(['@']).next().unwrap_or_default();
    let (name, tag) = match (&b.tag, name.rsplit_once(':')) {
        (Some(_), Some((n, _))) => (n.to_string(), b.tag.clone()),
        _ => (name.to_string(), None),
    };
    let with = |name: &str, tag: Option<&str>, digest: Option<&str>| {
        let mut s = name.to_string();
        if let Some(t) = tag {
            s = format!("{s}:{t}");
        }
        if let Some(d) = digest {
            s = format!("{s}@{d}");
        }
        s
    };
    let (t, d) = (tag.as_deref(), b.digest.as_deref());
    // Uppercase is fine at the end of a tag.
    if *how >= 14 && t.is_some() && d.is_none() && ch.bytes().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    Some(match how {
        0 => with(&format!("{name}/"), t, d), // trailing '/'
        1 => name.contains('/').then(|| with(&name.replacen('/', "//", 1), t, d))?, // empty component
        2 => with(&name, Some(""), d),        // empty tag
        3 => with(&name, Some(&format!(".{}", t.unwrap_or("x"))), d), // tag starting with '.'
        4 => with(&name, Some(&format!("-{}", t.unwrap_or("x"))), d), // tag starting with '-'
        5 => with(&name, Some(&"t".repeat(129)), d), // tag too long
        6 => with(&name, t, Some(&format!("sha256:{}", "a".repeat(63)))), // short digest
        7 => with(&name, t, Some(&format!("sha256:{}", "A".repeat(64)))), // uppercase digest
        8 => with(&name, t, Some(&format!("md5:{}", "a".repeat(32)))), // unknown algorithm
        9 => with(&format!("{name}{ch}"), t, d), // a bad character
        10 => with(&format!("{name}..x"), t, d), // separator ".."
        11 => with(&format!("{name}___x"), t, d), // separator "___"
        12 => with(&format!("{name}-"), t, d), // ends with a separator
        13 => with(&name, t, Some("")),       // '@' and nothing
        _ => format!("{}{ch}", b.text),       // a bad character at the end
    })
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any text: no panic; whatever parses is canonical (its Display parses
    /// back to the same reference) and within the grammar's limits.
    #[test]
    fn any_text_parses_safely(s in crate::text_from(
        &["/", ":", "@", ".", "-", "_", "__", "a", "b1", "Z", "localhost", "docker.io", "index.docker.io",
          "[::1]", "[", "]", "5000", "sha256:", "sha512:", "0123456789abcdef", "é", " ", "\0"],
        120,
    )) {
        if let Ok(r) = ImageRef::parse(&s) {
            let shown = r.to_string();
            let again = ImageRef::parse(&shown);
            prop_assert_eq!(again.as_ref(), Ok(&r), "{} -> {}", s, shown);
            prop_assert!(!r.registry.is_empty() && !r.repository.is_empty());
            prop_assert!(r.name().len() <= 255);
            prop_assert!(r.tag.as_ref().is_none_or(|t| !t.is_empty() && t.len() <= 128));
            prop_assert!(r.digest.as_deref().is_none_or(|d| parse_digest(d).is_ok()));
            prop_assert!(!shown.chars().any(char::is_whitespace));
        }
        let _ = digest_of_image_ref(&s);
    }

    /// Generated references parse into the parts they were built from, with
    /// Docker's normalisation (docker.io, library/).
    #[test]
    fn references_parse_into_their_parts(b in reference()) {
        let r = ImageRef::parse(&b.text).map_err(|e| TestCaseError::fail(format!("{}: {e}", b.text)))?;
        prop_assert_eq!(&r.registry, &b.registry, "{}", b.text);
        prop_assert_eq!(&r.repository, &b.repository, "{}", b.text);
        prop_assert_eq!(&r.tag, &b.tag, "{}", b.text);
        prop_assert_eq!(&r.digest, &b.digest, "{}", b.text);
        prop_assert_eq!(r.name(), format!("{}/{}", b.registry, b.repository));
        prop_assert_eq!(r.is_pinned(), b.digest.is_some());
        match (&b.tag, &b.digest) {
            (Some(t), _) => prop_assert_eq!(r.tags(), vec![t.clone()]),
            (None, None) => prop_assert_eq!(r.tags(), vec!["latest".to_string()]),
            (None, Some(_)) => prop_assert!(r.tags().is_empty()),
        }
        if let Some(d) = &b.digest {
            let repo_digest = r.repo_digest().expect("pinned");
            prop_assert_eq!(digest_of_image_ref(&repo_digest), Some(d.as_str()));
        }
        prop_assert_eq!(ImageRef::parse(&r.to_string()), Ok(r));
    }

    /// Docker's split of the first component (registry or Docker Hub
    /// namespace), whatever that component looks like.
    #[test]
    fn the_registry_is_told_apart_the_way_docker_does(
        first in prop_oneof![
            component(),
            proptest::string::string_regex("[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?").unwrap(),
            registry(),
        ],
        rest in proptest::collection::vec(component(), 1..3),
        tag in proptest::option::of(tag()),
    ) {
        let name = std::iter::once(first).chain(rest).collect::<Vec<_>>().join("/");
        let text = match &tag { Some(t) => format!("{name}:{t}"), None => name.clone() };
        let (registry, repository) = docker_split(&name);
        // Docker's own second check: the repository path is lowercase.
        prop_assume!(repository.to_lowercase() == repository);
        prop_assume!(registry.len() + 1 + repository.len() <= 255);
        prop_assume!(!(name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())));
        match ImageRef::parse(&text) {
            Ok(r) => prop_assert_eq!(
                (r.registry.as_str(), r.repository.as_str()),
                (registry.as_str(), repository.as_str()),
                "{}",
                text
            ),
            // What Docker takes for a registry must then be a host name.
            Err(e) => prop_assert!(!is_host(&registry), "{}: {}", text, e),
        }
    }

    /// A valid reference with one thing broken is rejected, with the input in
    /// the error.
    #[test]
    fn broken_references_are_rejected(b in reference(), how in breakage()) {
        let Some(text) = broken(&b, &how) else { return Ok(()) };
        match ImageRef::parse(&text) {
            Ok(r) => prop_assert!(false, "{:?} (from {:?}) parsed as {:?}", text, b.text, r),
            Err(e) => {
                prop_assert!(e.to_string().starts_with("invalid image reference"));
                prop_assert!(text.starts_with(&e.input), "{:?} / {:?}", e.input, text);
            }
        }
    }
}
