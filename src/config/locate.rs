//! Where in the user's YAML a config error is: a path of keys and indices
//! ([`Seg`]), its dotted name, and its line and column ([`locate`]); plus the
//! wording helpers the checks share.

/// The index of the first entry that repeats an earlier one.
pub(super) fn repeated<T: PartialEq>(list: &[T]) -> Option<usize> {
    (1..list.len()).find(|&i| list[..i].contains(&list[i]))
}

/// Says serde's type expectations in the user's words: no Rust type names
/// (`expected struct Sensor`, `expected u16`, `as u128`).
pub(super) fn humanize(message: &str) -> String {
    let mut m = message.to_string();
    if let Some(i) = m.find("expected struct ") {
        m.replace_range(i.., "expected a mapping of keys");
    }
    for (rust, words) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text"),
    ] {
        if let Some(rest) = m.strip_suffix(rust) {
            m = format!("{rest}{words}");
        }
    }
    // A number too big for any integer: serde_yaml_ng says "`N` as u128, expected any YAML value".
    if let Some(i) = m.find(" as u128") {
        m = format!("{}: too large", &m[..i]);
    }
    m
}

/// One step into the config tree: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Self {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

impl Seg {
    /// The steps of a serde_path_to_error path up to the first one that is
    /// not a string key or an index (not addressable in the user's text).
    pub(super) fn path_of(p: &serde_path_to_error::Path) -> Vec<Seg> {
        use serde_path_to_error::Segment;
        p.iter()
            .map_while(|s| match s {
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect()
    }

    /// `rules.shell.names[1]`: how errors name a field.
    pub(super) fn dotted(path: &[Seg]) -> String {
        let mut s = String::new();
        for seg in path {
            match seg {
                Seg::Key(k) if s.is_empty() => s.push_str(k),
                Seg::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

/// What [`locate`] points at when the path ends with a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum At {
    Value,
    Key,
}

/// 1-based line and column of the value at `path` in the YAML `text` (or of its
/// last key, with [`At::Key`]); None when `text` does not contain the path.
///
/// Walks the text with serde_yaml_ng's own deserializer and fails on purpose at
/// the target: the deserializer stamps the position of the event it is on onto
/// the error. Exact whatever the layout (flow style, quotes, comments, the same
/// key name in several sections), unlike a search of the text.
pub(super) fn locate(text: &str, path: &[Seg], at: At) -> Option<(usize, usize)> {
    use serde::de::DeserializeSeed;
    let found = std::cell::Cell::new(false);
    let err = Walk { path, at, found: &found }.deserialize(serde_yaml_ng::Deserializer::from_str(text)).err()?;
    let l = err.location().filter(|_| found.get())?;
    Some((l.line(), l.column()))
}

/// 1-based line and column where a second YAML document starts in `text`
/// (`---` after a first one): serde_yaml_ng refuses such a file with an error
/// that has no position.
pub(super) fn second_document(text: &str) -> Option<(usize, usize)> {
    use serde::de::DeserializeSeed;
    let doc = serde_yaml_ng::Deserializer::from_str(text).nth(1)?;
    let found = std::cell::Cell::new(false);
    let err = Walk { path: &[], at: At::Value, found: &found }.deserialize(doc).err()?;
    err.location().map(|l| (l.line(), l.column()))
}

/// Follows `path` into a YAML document. Never returns Ok: at the target it sets
/// `found` and fails there; anywhere else it fails without setting it.
struct Walk<'a> {
    path: &'a [Seg],
    at: At,
    found: &'a std::cell::Cell<bool>,
}

fn not_found<E: serde::de::Error>() -> E {
    E::custom("path not in the document")
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            self.found.set(true);
            return d.deserialize_any(Reject);
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping or sequence")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.path.split_first() else { return Err(not_found()) };
        let key = KeyIs { want, at_key: rest.is_empty() && self.at == At::Key, found: self.found };
        while let Some(hit) = map.next_key_seed(key)? {
            if hit {
                return map.next_value_seed(Walk { path: rest, ..self });
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Err(not_found())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((&Seg::Index(i), rest)) = self.path.split_first() else { return Err(not_found()) };
        for _ in 0..i {
            if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                return Err(not_found());
            }
        }
        seq.next_element_seed(Walk { path: rest, ..self })?;
        Err(not_found())
    }
}

/// Rejects whatever it is given; the deserializer adds the value's position.
struct Reject;

impl serde::de::Visitor<'_> for Reject {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("nothing (locating a config path)")
    }
}

/// Whether a map key is `want`; with `at_key`, a match fails at the key instead.
#[derive(Clone, Copy)]
struct KeyIs<'a> {
    want: &'a str,
    at_key: bool,
    found: &'a std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map key")
    }
    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<bool, E> {
        if k != self.want {
            return Ok(false);
        }
        if self.at_key {
            self.found.set(true);
            return Err(E::custom("found"));
        }
        Ok(true)
    }
    // Config paths only have string keys; other scalar keys are skipped.
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}
