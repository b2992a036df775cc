//! Container image references: `[registry[:port]/]repository[:tag][@algo:hex]`.
//!
//! Parsed the way Docker / containerd normalise them (the `distribution/reference`
//! grammar), because that is what the runtime pulled and what a user will search
//! their registry for:
//! - The first path component is a registry only if it looks like a host: it has a
//!   `.` or a `:port`, is `localhost`, or has an uppercase letter. Otherwise
//!   (`busybox`, `shop/api`) the registry is `docker.io`, and single-component
//!   Docker Hub names get `library/`. `index.docker.io` is the same registry as
//!   `docker.io`.
//! - A tag is the part after the last `:` that follows the last `/`, so
//!   `localhost:5000/app` has a port but no tag.
//! - A digest follows `@`; both `name@sha256:…` and `name:tag@sha256:…` are valid.
//!   The runtime runs the digest, so the tag of a pinned reference is informative only.
//!
//! The result maps onto the OpenTelemetry container attributes:
//! [`ImageRef::name`] -> `container.image.name`, [`ImageRef::tags`] ->
//! `container.image.tags`, [`ImageRef::repo_digest`] -> `container.image.repo_digests`.

use std::fmt;

/// Registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub namespace of single-component names (`busybox` -> `library/busybox`).
const OFFICIAL_NAMESPACE: &str = "library";
/// Longest `registry/repository` the grammar allows.
const NAME_MAX: usize = 255;
/// Longest tag the grammar allows.
const TAG_MAX: usize = 128;

/// A parsed and normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `registry.local:5000`, `[::1]:5000`, `localhost`.
    pub registry: String,
    /// Path in the registry, with Docker Hub's `library/` added: `library/busybox`.
    pub repository: String,
    /// Tag as written; `None` when the reference has none (see [`ImageRef::tags`]).
    pub tag: Option<String>,
    /// `sha256:<64 hex>` or `sha512:<128 hex>`.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ImageRefError {
    /// The rejected input (cut to 300 bytes so a hostile value cannot flood a log).
    pub input: String,
    /// What is wrong, for humans.
    pub reason: String,
}

impl ImageRefError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        ImageRefError { input: crate::escape::cut(input, 300).to_owned(), reason: reason.into() }
    }
}

impl ImageRef {
    /// Parses a reference as found in a pod spec or a CRI `ImageSpec.image`.
    pub fn parse(input: &str) -> Result<ImageRef, ImageRefError> {
        let err = |reason: String| ImageRefError::new(input, reason);
        if input.is_empty() {
            return Err(err("empty".into()));
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(format!("contains whitespace or control character {c:?}")));
        }
        // A bare image id is not a reference; say so instead of reading `sha256` as a
        // Docker Hub repository with a 64-character tag.
        if parse_digest(input).is_ok() || is_hex(input, 64) {
            return Err(err("this is an image id (digest), not a reference: it names no repository".into()));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let d = parse_digest(d).map_err(|r| err(format!("digest {d:?}: {r}")))?;
                (rest, Some(d.to_owned()))
            }
            None => (input, None),
        };
        if rest.is_empty() {
            return Err(err("no repository before '@'".into()));
        }

        // The tag separator is the last ':' after the last '/'; an earlier ':' is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = (&rest[..last_slash + i], &rest[last_slash + i + 1..]);
                validate_tag(t).map_err(|r| err(format!("tag {t:?}: {r}")))?;
                (n, Some(t.to_owned()))
            }
            None => (rest, None),
        };

        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => {
                validate_registry(first).map_err(|r| err(format!("registry {first:?}: {r}")))?;
                (first, path)
            }
            _ => (DEFAULT_REGISTRY, name),
        };
        if path.is_empty() {
            return Err(err("empty repository".into()));
        }
        for comp in path.split('/') {
            validate_path_component(comp).map_err(|r| err(format!("repository component {comp:?}: {r}")))?;
        }
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY } else { registry };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_owned()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(err(format!("name longer than {NAME_MAX} characters")));
        }
        Ok(ImageRef { registry: registry.to_owned(), repository, tag, digest })
    }

    /// `container.image.name`: fully qualified, without tag or digest
    /// (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `container.image.tags`. A reference with neither tag nor digest means `latest`
    /// (that is what the runtime pulls); a digest-only reference has no tag.
    pub fn tags(&self) -> Vec<String> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => vec![t.clone()],
            (None, None) => vec!["latest".to_owned()],
            (None, Some(_)) => Vec::new(),
        }
    }

    /// `sha256:…` when the reference carries a digest.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `name@digest` (`container.image.repo_digests` element) when pinned.
    pub fn repo_digest(&self) -> Option<String> {
        self.digest.as_ref().map(|d| format!("{}@{d}", self.name()))
    }

    /// Pinned to content: the runtime runs exactly this digest whatever the tag says.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }
}

/// Canonical form: `docker.io/library/busybox:1.36@sha256:…`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// Validates `sha256:<64 lowercase hex>` / `sha512:<128 lowercase hex>` and returns it.
/// Other algorithms are rejected: no runtime produces them, so one is a corrupt value.
pub fn parse_digest(s: &str) -> Result<&str, String> {
    let Some((algo, hex)) = s.split_once(':') else {
        return Err("expected <algorithm>:<hex>".into());
    };
    let want = match algo {
        "sha256" => 64,
        "sha512" => 128,
        "" => return Err("empty algorithm".into()),
        other => return Err(format!("unsupported algorithm {other:?} (sha256 or sha512)")),
    };
    if !is_hex(hex, want) {
        return Err(format!("{algo} needs exactly {want} lowercase hex characters, got {:?}", hex));
    }
    Ok(s)
}

/// The digest in a CRI `imageRef`, which runtimes report either as a repo digest
/// (`docker.io/library/busybox@sha256:…`) or as a bare image id (`sha256:…`).
pub fn digest_of_image_ref(image_ref: &str) -> Option<&str> {
    let d = image_ref.rsplit_once('@').map_or(image_ref, |(_, d)| d);
    parse_digest(d).ok()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's rule (`splitDockerDomain`): a `.` or `:`, `localhost`, or an
/// uppercase letter (repository paths are lowercase, host names need not be).
fn looks_like_registry(first: &str) -> bool {
    first.contains(['.', ':', '[']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty".into());
    }
    if t.len() > TAG_MAX {
        return Err(format!("longer than {TAG_MAX} characters"));
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = t.as_bytes();
    if !word(bytes[0]) {
        return Err("must start with a letter, digit or '_'".into());
    }
    if let Some(c) = t.chars().find(|&c| !(c.is_ascii() && (word(c as u8) || c == '.' || c == '-'))) {
        return Err(format!("character {c:?} not allowed (letters, digits, '_', '.', '-')"));
    }
    Ok(())
}

/// `host[:port]` where host is DNS labels or a bracketed IPv6 address.
fn validate_registry(r: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = r.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unterminated '[' of an IPv6 address")?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or("expected ':port' after ']'")?)),
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("empty host".into());
        }
        for label in host.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-';
            if !ok {
                return Err(format!("host label {label:?} is not a DNS label"));
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err())
    {
        return Err(format!("port {port:?} is not a number 0-65535"));
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn validate_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("empty (double or trailing '/')".into());
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lowercase".into());
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("must start and end with a lowercase letter or digit".into());
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: exactly ".", "_", "__", or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(format!("separator {sep:?} not allowed ('.', '_', '__' or dashes)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:4f6e2c3d1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d";

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn check(s: &str, registry: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) {
        let r = p(s);
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref(), r.digest.as_deref()),
            (registry, repository, tag, digest),
            "{s:?}"
        );
    }

    fn bad(s: &str, needle: &str) {
        match ImageRef::parse(s) {
            Ok(r) => panic!("{s:?} parsed as {r:?}, expected an error mentioning {needle:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{s:?}: error {msg:?} does not mention {needle:?}");
                assert!(msg.starts_with("invalid image reference"), "{msg}");
            }
        }
    }

    #[test]
    fn docker_hub_defaults() {
        check("busybox", "docker.io", "library/busybox", None, None);
        check("busybox:1.36", "docker.io", "library/busybox", Some("1.36"), None);
        check("shop/api:v2", "docker.io", "shop/api", Some("v2"), None);
        check("docker.io/busybox", "docker.io", "library/busybox", None, None);
        check("docker.io/library/busybox:latest", "docker.io", "library/busybox", Some("latest"), None);
        check("index.docker.io/busybox", "docker.io", "library/busybox", None, None);
        check("index.docker.io/shop/api", "docker.io", "shop/api", None, None);
        // Deep paths stay as written.
        check("a/b/c/d", "docker.io", "a/b/c/d", None, None);
    }

    #[test]
    fn registries_hosts_and_ports() {
        check("ghcr.io/org/app:1.0", "ghcr.io", "org/app", Some("1.0"), None);
        check("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", Some("3.9"), None);
        check("localhost/driftwatch-test:1", "localhost", "driftwatch-test", Some("1"), None);
        check("localhost:5000/app", "localhost:5000", "app", None, None);
        check("localhost:5000/app:5001", "localhost:5000", "app", Some("5001"), None);
        check("registry.local:5000/team/app:v1", "registry.local:5000", "team/app", Some("v1"), None);
        check("10.0.0.1:5000/app", "10.0.0.1:5000", "app", None, None);
        check("[::1]:5000/app:tag", "[::1]:5000", "app", Some("tag"), None);
        check("[fe80::1]/app", "[fe80::1]", "app", None, None);
        check("my-registry.example.com/app", "my-registry.example.com", "app", None, None);
        // No '.', ':' and not localhost: a Docker Hub namespace, not a host.
        check("myregistry/app", "docker.io", "myregistry/app", None, None);
        // Found by tests/properties (image): an uppercase letter makes it a host,
        // as in Docker and containerd (a repository path is lowercase).
        check("MyRegistry/app:1", "MyRegistry", "app", Some("1"), None);
        check("Registry/team/app", "Registry", "team/app", None, None);
        bad("registry/App", "must be lowercase");
    }

    #[test]
    fn localhost_port_is_fixed_by_registry_rule() {
        // Docker's own reading: with no '/', `localhost:5000` is name `localhost`, tag `5000`.
        let r = p("localhost:5000/app");
        assert_eq!(r.registry, "localhost:5000");
        let r = p("localhost:5000");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/localhost", Some("5000"))
        );
    }

    #[test]
    fn digests() {
        check(&format!("busybox@{D}"), "docker.io", "library/busybox", None, Some(D));
        check(&format!("busybox:1.36@{D}"), "docker.io", "library/busybox", Some("1.36"), Some(D));
        check(&format!("registry.local:5000/a/b:t@{D}"), "registry.local:5000", "a/b", Some("t"), Some(D));
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        check(&format!("x/y@{sha512}"), "docker.io", "x/y", None, Some(&sha512));
    }

    #[test]
    fn otel_fields() {
        let r = p("shop/api");
        assert_eq!(r.name(), "docker.io/shop/api");
        assert_eq!(r.tags(), vec!["latest"]);
        assert_eq!(r.digest(), None);
        assert!(!r.is_pinned());
        assert_eq!(r.repo_digest(), None);

        let r = p(&format!("shop/api@{D}"));
        assert_eq!(r.name(), "docker.io/shop/api");
        assert!(r.tags().is_empty());
        assert_eq!(r.digest(), Some(D));
        assert!(r.is_pinned());
        assert_eq!(r.repo_digest().unwrap(), format!("docker.io/shop/api@{D}"));

        let r = p(&format!("ghcr.io/x/api:v3@{D}"));
        assert_eq!(r.tags(), vec!["v3"]);
        assert!(r.is_pinned());
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        for s in
            ["busybox", "busybox:1.36", &format!("ghcr.io/a/b:c@{D}"), "[::1]:5000/app", "localhost:5000/x@sha256:"]
        {
            let Ok(r) = ImageRef::parse(s) else { continue };
            let shown = r.to_string();
            assert_eq!(p(&shown), r, "{s:?} -> {shown:?}");
        }
        assert_eq!(p("busybox:1.36").to_string(), "docker.io/library/busybox:1.36");
        assert_eq!("busybox".parse::<ImageRef>().unwrap().to_string(), "docker.io/library/busybox");
    }

    #[test]
    fn tag_grammar() {
        check("a:_x", "docker.io", "library/a", Some("_x"), None);
        check("a:V1.2-rc_3", "docker.io", "library/a", Some("V1.2-rc_3"), None);
        check(&format!("a:{}", "t".repeat(128)), "docker.io", "library/a", Some(&"t".repeat(128)), None);
        bad(&format!("a:{}", "t".repeat(129)), "longer than 128");
        bad("a:", "tag \"\": empty");
        bad("a:-x", "must start");
        bad("a:.x", "must start");
        bad("a:x+y", "'+' not allowed");
        bad("a:xé", "not allowed");
    }

    #[test]
    fn bad_input_has_clear_errors() {
        bad("", "empty");
        bad(" busybox", "whitespace");
        bad("busy box", "whitespace");
        bad("busybox\n", "control");
        bad("Busybox", "must be lowercase");
        bad("shop/API", "must be lowercase");
        bad("shop//api", "double or trailing");
        bad("shop/api/", "double or trailing");
        bad("/api", "empty");
        bad("-api", "must start and end");
        bad("api-", "must start and end");
        bad("a..b", "separator \"..\"");
        bad("a___b", "separator \"___\"");
        bad("a.-b", "separator \".-\"");
        bad("@sha256:abc", "digest");
        bad(&format!("@{D}"), "no repository");
        bad("busybox@", "digest \"\"");
        bad("busybox@sha256:abc", "exactly 64");
        bad(&format!("busybox@{}", D.to_uppercase().replace("SHA256", "sha256")), "lowercase hex");
        bad(&format!("busybox@md5:{}", "a".repeat(32)), "unsupported algorithm");
        bad(&format!("busybox@{D}@{D}"), "digest");
        bad(&format!("busybox@{D}:tag"), "digest");
        bad("registry.local:99999/app", "port \"99999\"");
        bad("registry.local:/app", "port \"\"");
        bad("registry.local:5x/app", "port \"5x\"");
        bad("bad_host.io/app", "DNS label");
        bad("-bad.io/app", "DNS label");
        bad("a..io/app", "DNS label");
        bad("[::1/app", "unterminated");
        bad("[zz::1]:5000/app", "not an IPv6");
        bad("[::1]5000/app", "':port'");
        bad(D, "image id");
        bad(&D[7..], "image id");
        bad(&format!("registry.io/{}", "a".repeat(250)), "longer than 255");
    }

    #[test]
    fn error_input_is_cut() {
        let long = format!("{}é{}", "A".repeat(299), "x".repeat(5000));
        let e = ImageRef::parse(&long).unwrap_err();
        assert!(e.input.len() <= 300);
        assert!(e.to_string().contains("lowercase"));
    }

    #[test]
    fn image_ref_digest() {
        assert_eq!(digest_of_image_ref(D), Some(D));
        assert_eq!(digest_of_image_ref(&format!("docker.io/library/busybox@{D}")), Some(D));
        assert_eq!(digest_of_image_ref(&format!("localhost:5000/a@{D}")), Some(D));
        assert_eq!(digest_of_image_ref("busybox:1.36"), None);
        assert_eq!(digest_of_image_ref(""), None);
        assert_eq!(digest_of_image_ref("x@sha256:short"), None);
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        // A cheap deterministic fuzz over the grammar's alphabet.
        let alphabet: Vec<char> = "ab1:/@.-_[]Z é\u{0}sha256".chars().collect();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let s: String = (0..len).map(|i| alphabet[((x >> (i % 50)) as usize + i * 7) % alphabet.len()]).collect();
            if let Ok(r) = ImageRef::parse(&s) {
                assert_eq!(p(&r.to_string()), r, "{s:?}");
            }
        }
    }
}
