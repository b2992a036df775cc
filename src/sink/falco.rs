//! Findings in Falco's JSON output format, for what already parses Falco
//! events (falcosidekick and its outputs, SIEM parsers): `time`, `rule`,
//! `priority` (Falco's names), `output` (one readable line), `output_fields`,
//! `source` (`driftwatch`), `tags` and `hostname`.
//!
//! `output_fields` has Falco's field names where one exists (the table is in
//! the README, "Outputs"), then the finding's own keys beside
//! them, except three whose names or values Falco's event already carries:
//! `container.id` (Falco's is the 12-character id; the full one is
//! `container.full_id`), `time` (the event's `time`; `evt.time` in ns) and
//! `driftwatch.tags` (the event's `tags`).
//!
//! A finding is rendered once, whatever the number of sinks that want it
//! (src/sink/mod.rs): written as it goes, without an intermediate map.

use crate::{
    classify::{Detail, Finding},
    config::Severity,
};
use bytes::Bytes;
use serde::{
    Serialize, Serializer,
    ser::{Error as _, Impossible, SerializeMap},
};
use std::fmt::{self, Display};

/// The event's `source`.
pub const SOURCE: &str = "driftwatch";

/// Falco's names `output_fields` may carry (the README's mapping table).
pub const FIELDS: [&str; 21] = [
    "evt.time",
    "container.id",
    "container.full_id",
    "container.name",
    "container.image.repository",
    "container.image.tag",
    "container.image.digest",
    "k8s.ns.name",
    "k8s.pod.name",
    "proc.pid",
    "proc.ppid",
    "proc.exepath",
    "proc.name",
    "proc.cmdline",
    "proc.pname",
    "user.uid",
    "group.gid",
    "fd.name",
    "fd.sip",
    "fd.sport",
    "fd.l4proto",
];

/// The finding's keys left out of `output_fields`, as JSON strings (see the module docs).
const LEFT_OUT: [&[u8]; 3] = [b"\"container.id\"", b"\"time\"", b"\"driftwatch.tags\""];

/// Falco's priority of a severity: `critical` -> Critical, `warning` ->
/// Warning, `info` -> Informational (Falco's word for syslog's info).
pub fn priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::Warning => "Warning",
        Severity::Info => "Informational",
    }
}

/// One finding as a Falco event: a JSON object, no trailing newline.
pub fn render(f: &Finding) -> Bytes {
    let mut buf = Vec::with_capacity(2048);
    if serde_json::to_writer(&mut buf, &Event::of(f)).is_err() {
        buf.clear();
    }
    Bytes::from(buf)
}

#[derive(Serialize)]
struct Event<'a> {
    time: &'a str,
    rule: &'a str,
    priority: &'static str,
    #[serde(serialize_with = "display")]
    output: Output<'a>,
    output_fields: Fields<'a>,
    source: &'static str,
    tags: &'a [&'static str],
    hostname: &'a str,
}

impl<'a> Event<'a> {
    fn of(f: &'a Finding) -> Self {
        Event {
            time: &f.time,
            rule: f.rule,
            priority: priority(f.severity),
            output: Output(f),
            output_fields: Fields(f),
            source: SOURCE,
            tags: f.tags,
            hostname: &f.node_name,
        }
    }
}

/// Serializes a `Display` value as a string, written straight into the output.
fn display<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A `Display` value as a JSON string (in maps, where `serialize_with` is not available).
struct Text<T>(T);

impl<T: Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The first 12 characters of a container id, as Falco's `container.id`.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `HH:MM:SS.nnnnnnnnn` of the finding's RFC 3339 time (Falco's `output` starts with it).
fn clock_time(t: &str) -> &str {
    t.get(11..29).filter(|c| c.as_bytes().get(2) == Some(&b':')).unwrap_or(t)
}

/// Nanoseconds since the epoch of the finding's time (Falco's `evt.time`).
fn unix_ns(t: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos()).ok()
}

/// Falco's `proc.cmdline`: the process name, then the arguments after argv[0].
struct Cmdline<'a>(&'a str, &'a [crate::event::Text]);

impl Display for Cmdline<'_> {
    fn fmt(&self, w: &mut fmt::Formatter<'_>) -> fmt::Result {
        w.write_str(self.0)?;
        for a in self.1.iter().skip(1) {
            write!(w, " {a}")?;
        }
        Ok(())
    }
}

/// `host:port`, IPv6 hosts in brackets.
struct Endpoint<'a>(&'a str, u16);

impl Display for Endpoint<'_> {
    fn fmt(&self, w: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') { write!(w, "[{}]:{}", self.0, self.1) } else { write!(w, "{}:{}", self.0, self.1) }
    }
}

/// The readable line: `<time>: <Priority> <message> (<key facts>)`, as Falco writes its outputs.
struct Output<'a>(&'a Finding);

impl Display for Output<'_> {
    fn fmt(&self, w: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = self.0;
        let k = &f.k8s;
        write!(w, "{}: {} {} (rule={}", clock_time(&f.time), priority(f.severity), f.message, f.rule)?;
        write!(w, " container_id={}", short_id(&f.container_id))?;
        let facts = [
            ("container_name", k.container_name.as_deref()),
            ("k8s_ns", k.namespace.as_deref()),
            ("k8s_pod", k.pod_name.as_deref()),
            ("image", k.image_name.as_deref()),
            ("proc_exepath", f.process.as_ref().map(|p| p.exe_path.as_str()).filter(|s| !s.is_empty())),
        ];
        for (key, v) in facts {
            if let Some(v) = v {
                write!(w, " {key}={v}")?;
            }
        }
        if let Some(p) = &f.process {
            write!(w, " proc_pid={} user_uid={}", p.pid, p.uid)?;
        }
        w.write_str(")")
    }
}

/// `output_fields` (see the module docs).
struct Fields<'a>(&'a Finding);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let k = &f.k8s;
        let mut m = s.serialize_map(None)?;
        if let Some(ns) = unix_ns(&f.time) {
            m.serialize_entry("evt.time", &ns)?;
        }
        m.serialize_entry("container.id", short_id(&f.container_id))?;
        m.serialize_entry("container.full_id", &f.container_id)?;
        if let Some(v) = &k.container_name {
            m.serialize_entry("container.name", v)?;
        }
        if let Some(v) = &k.image_name {
            m.serialize_entry("container.image.repository", v)?;
        }
        if let Some(v) = k.image_tags.as_ref().and_then(|t| t.first()) {
            m.serialize_entry("container.image.tag", v)?;
        }
        let digest = k.image_repo_digests.as_ref().and_then(|d| d.iter().find_map(|r| r.split_once('@')));
        if let Some((_, d)) = digest {
            m.serialize_entry("container.image.digest", d)?;
        }
        if let Some(v) = &k.namespace {
            m.serialize_entry("k8s.ns.name", v)?;
        }
        // k8s.pod.name and k8s.pod.uid: the finding's own keys have Falco's names.
        if let Some(p) = &f.process {
            m.serialize_entry("proc.pid", &p.pid)?;
            m.serialize_entry("proc.ppid", &p.parent_pid)?;
            if !p.exe_path.is_empty() {
                m.serialize_entry("proc.exepath", &p.exe_path)?;
            }
            if !p.exe_name.is_empty() {
                m.serialize_entry("proc.name", &p.exe_name)?;
            }
            if !p.command_args.is_empty() {
                m.serialize_entry("proc.cmdline", &Text(Cmdline(&p.exe_name, &p.command_args)))?;
            }
            if !p.parent_name.is_empty() {
                m.serialize_entry("proc.pname", &p.parent_name)?;
            }
            m.serialize_entry("user.uid", &p.uid)?;
            m.serialize_entry("group.gid", &p.gid)?;
        }
        match &f.detail {
            Detail::File(x) => m.serialize_entry("fd.name", &x.path)?,
            Detail::Network(n) => {
                m.serialize_entry("fd.sip", &n.address)?;
                m.serialize_entry("fd.sport", &n.port)?;
                m.serialize_entry("fd.l4proto", n.transport)?;
                if n.direction == "listen" {
                    m.serialize_entry("fd.name", &Text(Endpoint(&n.address, n.port)))?;
                }
            }
            Detail::Exec(_) | Detail::Config(_) => {}
        }
        f.serialize(Rest(&mut m))?;
        m.end()
    }
}

/// Whether a finding key is one of [`LEFT_OUT`]: the key is written as JSON
/// into a small stack buffer (no allocation); a longer key is not one of them.
fn left_out<K: Serialize + ?Sized>(key: &K) -> bool {
    let mut buf = [0u8; 24];
    let mut w: &mut [u8] = &mut buf;
    if key.serialize(&mut serde_json::Serializer::new(&mut w)).is_err() {
        return false;
    }
    let n = 24 - w.len();
    LEFT_OUT.contains(&&buf[..n])
}

/// Writes the finding's keys into `output_fields`' map, less [`LEFT_OUT`]. A
/// `Finding` serializes as a map (its parts are flattened), so only maps are needed.
struct Rest<'m, M>(&'m mut M);

/// The entries of [`Rest`]; `skip` remembers a left-out key until its value.
struct RestMap<'m, M> {
    map: &'m mut M,
    skip: bool,
}

impl<M: SerializeMap> SerializeMap for RestMap<'_, M> {
    type Ok = ();
    type Error = M::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), M::Error> {
        self.skip = left_out(key);
        if self.skip { Ok(()) } else { self.map.serialize_key(key) }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), M::Error> {
        if self.skip { Ok(()) } else { self.map.serialize_value(value) }
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), M::Error> {
        if left_out(key) { Ok(()) } else { self.map.serialize_entry(key, value) }
    }

    fn end(self) -> Result<(), M::Error> {
        Ok(())
    }
}

/// Everything but a map is not what a `Finding` serializes as.
macro_rules! not_a_map {
    ($($f:ident($($t:ty),*)),* $(,)?) => {$(
        fn $f(self, $(_: $t),*) -> Result<(), M::Error> {
            Err(M::Error::custom("output_fields: a finding serializes as a map"))
        }
    )*};
}

impl<'m, M: SerializeMap> Serializer for Rest<'m, M> {
    type Ok = ();
    type Error = M::Error;
    type SerializeSeq = Impossible<(), M::Error>;
    type SerializeTuple = Impossible<(), M::Error>;
    type SerializeTupleStruct = Impossible<(), M::Error>;
    type SerializeTupleVariant = Impossible<(), M::Error>;
    type SerializeMap = RestMap<'m, M>;
    type SerializeStruct = Impossible<(), M::Error>;
    type SerializeStructVariant = Impossible<(), M::Error>;

    fn serialize_map(self, _len: Option<usize>) -> Result<RestMap<'m, M>, M::Error> {
        Ok(RestMap { map: self.0, skip: false })
    }

    not_a_map!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), M::Error> {
        v.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<(), M::Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), M::Error> {
        Err(M::Error::custom("output_fields: a finding serializes as a map"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, M::Error> {
        Err(M::Error::custom("output_fields: a finding serializes as a map"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, M::Error> {
        Err(M::Error::custom("output_fields: a finding serializes as a map"))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, M::Error> {
        Err(M::Error::custom("output_fields: a finding serializes as a map"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, M::Error> {
        Err(M::Error::custom("output_fields: a finding serializes as a map"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, M::Error> {
        Err(M::Error::custom("output_fields: a finding serializes as a map"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, M::Error> {
        Err(M::Error::custom("output_fields: a finding serializes as a map"))
    }
}

#[cfg(test)]
mod tests;
