//! The kernel's BTF cut down to what loading the sensor reads from it.
//!
//! aya parses every type of the BTF it is given: the kernel's is 5.5 MB and
//! ~130,000 types, about 15 MB of the agent's memory while parsed (most of
//! its startup peak). Loading the sensor reads few of them: the structs its
//! CO-RE relocations walk and the `btf_trace_*` typedefs of its `tp_btf`
//! programs. [`minimal`] keeps those and everything they reach without going
//! through a pointer (a field relocation walks members, arrays, typedefs and
//! modifiers, and only checks that a pointer is a pointer), replaces every
//! other type up to the last one kept by a nameless forward declaration, so
//! each type keeps its id (a `tp_btf` attach point is the kernel's id of its
//! typedef), and drops the rest and the strings nothing kept names.
//!
//! Type-based relocations (exists, size, target id) are cut-safe when their
//! local type is a struct, union, enum or int (possibly behind typedefs and
//! modifiers): the target's record is kept whole. One on a pointer or function
//! prototype would follow it into a placeholder, and `bpf_core_type_matches`
//! compares whole type graphs: for those (the object is checked) the full BTF
//! is used.

use std::collections::HashSet;

/// Why a BTF could not be cut down (the caller uses the full one).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MinError {
    #[error("{what}: not valid BTF ({why})")]
    Invalid { what: &'static str, why: &'static str },
    #[error("the object has no .BTF section")]
    NoObjectBtf,
    #[error("the object has a CO-RE relocation of kind {0} that may follow pointers")]
    TypeRelocation(u32),
}

const MAGIC: u16 = 0xeb9f;
const HDR: usize = 24;

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// Whether a CO-RE relocation of `kind` (libbpf's `bpf_core_relo_kind`) on
/// a local type of BTF kind `local` reads only what the cut keeps: 0-5 read
/// fields, 6 is the local id, 10-11 read enum values; 7-9 (target id, exists,
/// size) compare the type itself, which follows pointers and prototypes.
fn kind_is_cut_safe(kind: u32, local: u32) -> bool {
    match kind {
        0..=6 | 10 | 11 => true,
        7..=9 => !matches!(local, PTR | FUNC_PROTO),
        _ => false,
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// A parsed BTF blob: its type records (by id, from 1) and string table.
struct Types<'a> {
    /// Each type's record; `recs[0]` is id 1.
    recs: Vec<&'a [u8]>,
    strings: &'a [u8],
}

impl<'a> Types<'a> {
    fn parse(b: &'a [u8], what: &'static str) -> Result<Self, MinError> {
        let bad = |why| MinError::Invalid { what, why };
        if b.len() < HDR || u16::from_le_bytes([b[0], b[1]]) != MAGIC {
            return Err(bad("no BTF magic (only little-endian BTF is read)"));
        }
        let field = |i: usize| u32_at(b, 4 + 4 * i).map(|v| v as usize).ok_or(bad("short header"));
        let (hdr_len, type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            b.get(start..start.checked_add(len)?)
        };
        let types = section(type_off, type_len).ok_or(bad("type section out of bounds"))?;
        let strings = section(str_off, str_len).ok_or(bad("string section out of bounds"))?;
        let mut recs = Vec::with_capacity(types.len() / 16);
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or(bad("truncated type"))?;
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                INT | VAR | DECL_TAG => 4,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
                ENUM | FUNC_PROTO => 8 * vlen,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                _ => return Err(bad("unknown type kind")),
            };
            let rec = types.get(at..at + 12 + extra).ok_or(bad("truncated type"))?;
            recs.push(rec);
            at += rec.len();
        }
        Ok(Self { recs, strings })
    }

    fn rec(&self, id: u32) -> Option<&'a [u8]> {
        self.recs.get((id as usize).checked_sub(1)?).copied()
    }

    /// The BTF kind of `id` behind typedefs and modifiers (0 when unknown).
    fn resolved_kind(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            let Some(rec) = self.rec(id) else { return 0 };
            let kind = (u32_at(rec, 4).unwrap_or(0) >> 24) & 0x1f;
            match kind {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = u32_at(rec, 8).unwrap_or(0),
                _ => return kind,
            }
        }
        0
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// The types `rec` refers to without going through a pointer.
    fn refs(rec: &[u8], mut each: impl FnMut(u32)) {
        let info = u32_at(rec, 4).unwrap_or(0);
        let vlen = (info & 0xffff) as usize;
        let word = |off| u32_at(rec, off).unwrap_or(0);
        match (info >> 24) & 0x1f {
            TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | FUNC | VAR | DECL_TAG => each(word(8)),
            ARRAY => {
                each(word(12));
                each(word(16));
            }
            STRUCT | UNION => (0..vlen).for_each(|i| each(word(12 + 12 * i + 4))),
            FUNC_PROTO => {
                each(word(8));
                (0..vlen).for_each(|i| each(word(12 + 8 * i + 4)));
            }
            _ => {}
        }
    }
}

/// The names before a CO-RE flavor suffix (`task_struct___old` is `task_struct`).
fn flavorless(name: &[u8]) -> &[u8] {
    name.windows(3).position(|w| w == b"___").map_or(name, |i| &name[..i])
}

/// The (flavorless) names of the local types the object's CO-RE relocations
/// start from; an error when one of them may follow pointers in the target.
fn relocation_roots(object: &[u8]) -> Result<HashSet<Vec<u8>>, MinError> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(object).map_err(|_| MinError::Invalid { what: "object", why: "not ELF" })?;
    let section = |name| file.section_by_name(name).and_then(|s| s.data().ok());
    let btf = section(".BTF").ok_or(MinError::NoObjectBtf)?;
    let local = Types::parse(btf, "object .BTF")?;
    let mut roots = HashSet::new();
    let Some(ext) = section(".BTF.ext") else { return Ok(roots) };
    let bad = |why| MinError::Invalid { what: "object .BTF.ext", why };
    let hdr_len = u32_at(ext, 4).ok_or(bad("short header"))? as usize;
    if hdr_len < 32 {
        return Ok(roots); // no CO-RE relocation section
    }
    let (off, len) = (u32_at(ext, 24).ok_or(bad("short header"))?, u32_at(ext, 28).ok_or(bad("short header"))?);
    let start = hdr_len + off as usize;
    let relos = ext.get(start..start + len as usize).ok_or(bad("relocations out of bounds"))?;
    if relos.is_empty() {
        return Ok(roots);
    }
    let rec_size = u32_at(relos, 0).ok_or(bad("no record size"))? as usize;
    if rec_size < 16 {
        return Err(bad("record size under 16"));
    }
    let mut at = 4;
    while at < relos.len() {
        let n = u32_at(relos, at + 4).ok_or(bad("truncated section header"))? as usize;
        at += 8;
        for _ in 0..n {
            let rec = relos.get(at..at + rec_size).ok_or(bad("truncated record"))?;
            let (type_id, kind) = (u32_at(rec, 4).unwrap_or(0), u32_at(rec, 12).unwrap_or(0));
            let ty = local.rec(type_id).ok_or(bad("relocation of an unknown type"))?;
            if !kind_is_cut_safe(kind, local.resolved_kind(type_id)) {
                return Err(MinError::TypeRelocation(kind));
            }
            roots.insert(flavorless(local.name(u32_at(ty, 0).unwrap_or(0))).to_vec());
            at += rec_size;
        }
    }
    Ok(roots)
}

/// `vmlinux` cut down to what loading `object` reads, plus the typedefs named
/// in `extra` (`btf_trace_<tracepoint>` of each `tp_btf` program). Type ids are
/// those of `vmlinux` (see the module documentation).
pub fn minimal(vmlinux: &[u8], object: &[u8], extra: &[String]) -> Result<Vec<u8>, MinError> {
    let kernel = Types::parse(vmlinux, "kernel BTF")?;
    let mut roots = relocation_roots(object)?;
    roots.extend(extra.iter().map(|e| e.as_bytes().to_vec()));
    let n = kernel.recs.len();
    // Ids to keep: the named roots, then what they reach (not through pointers).
    let mut keep = vec![false; n + 1];
    let mut todo: Vec<u32> = Vec::new();
    for (i, rec) in kernel.recs.iter().enumerate() {
        let name = kernel.name(u32_at(rec, 0).unwrap_or(0));
        if !name.is_empty() && roots.contains(flavorless(name)) {
            keep[i + 1] = true;
            todo.push(i as u32 + 1);
        }
    }
    while let Some(id) = todo.pop() {
        let Some(rec) = kernel.rec(id) else { continue };
        Types::refs(rec, |to| {
            if let Some(k) = keep.get_mut(to as usize)
                && !*k
            {
                *k = true;
                todo.push(to);
            }
        });
    }
    let last = keep.iter().rposition(|&k| k).unwrap_or(0);
    let mut strings = vec![0u8];
    let mut types = Vec::with_capacity(last * 12);
    for (id, rec) in kernel.recs[..last].iter().enumerate() {
        if !keep[id + 1] {
            // A nameless forward declaration: 12 bytes, matches no name.
            types.extend_from_slice(&0u32.to_le_bytes());
            types.extend_from_slice(&(FWD << 24).to_le_bytes());
            types.extend_from_slice(&0u32.to_le_bytes());
            continue;
        }
        let at = types.len();
        types.extend_from_slice(rec);
        let mut rename = |off: usize| {
            let old = u32_at(&types, at + off).unwrap_or(0);
            let name = kernel.name(old);
            let new = if name.is_empty() {
                0
            } else {
                let new = strings.len() as u32;
                strings.extend_from_slice(name);
                strings.push(0);
                new
            };
            types[at + off..at + off + 4].copy_from_slice(&new.to_le_bytes());
        };
        rename(0);
        let info = u32_at(rec, 4).unwrap_or(0);
        let vlen = (info & 0xffff) as usize;
        match (info >> 24) & 0x1f {
            STRUCT | UNION | ENUM64 => (0..vlen).for_each(|i| rename(12 + 12 * i)),
            ENUM | FUNC_PROTO => (0..vlen).for_each(|i| rename(12 + 8 * i)),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(HDR + types.len() + strings.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[1, 0]); // version 1, no flags
    for v in [HDR, 0, types.len(), types.len(), strings.len()] {
        out.extend_from_slice(&(v as u32).to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_btf() -> Option<Vec<u8>> {
        std::fs::read("/sys/kernel/btf/vmlinux").ok()
    }

    fn extra() -> Vec<String> {
        super::super::tp_btf_typedefs()
    }

    /// The cut keeps every id, every kept type's bytes and names, and is much smaller.
    #[test]
    fn ids_names_and_members_survive_the_cut() {
        let Some(full) = kernel_btf() else { return eprintln!("skipped: no kernel BTF") };
        let min = minimal(&full, super::super::OBJECT, &extra()).expect("cut");
        assert!(min.len() * 3 < full.len(), "cut {} bytes of {}", min.len(), full.len());
        let (k, m) = (Types::parse(&full, "full").unwrap(), Types::parse(&min, "min").unwrap());
        let find = |t: &Types, name: &[u8], kind: u32| {
            t.recs
                .iter()
                .position(|r| t.name(u32_at(r, 0).unwrap()) == name && (u32_at(r, 4).unwrap() >> 24) & 0x1f == kind)
        };
        for tp in extra() {
            assert_eq!(find(&m, tp.as_bytes(), TYPEDEF), find(&k, tp.as_bytes(), TYPEDEF), "{tp}");
            assert!(find(&m, tp.as_bytes(), TYPEDEF).is_some(), "{tp} kept");
        }
        // A struct the sensor reads through an embedded struct (f_path.dentry).
        let (kf, mf) = (find(&k, b"file", STRUCT).unwrap(), find(&m, b"file", STRUCT).unwrap());
        assert_eq!(kf, mf);
        let members = |t: &Types, i: usize| -> Vec<(Vec<u8>, u32, u32)> {
            let r = t.recs[i];
            let vlen = (u32_at(r, 4).unwrap() & 0xffff) as usize;
            (0..vlen)
                .map(|j| {
                    let at = 12 + 12 * j;
                    (t.name(u32_at(r, at).unwrap()).to_vec(), u32_at(r, at + 4).unwrap(), u32_at(r, at + 8).unwrap())
                })
                .collect()
        };
        assert_eq!(members(&k, kf), members(&m, mf));
        // `path`, embedded in `file` (in an anonymous union on newer kernels), is kept whole.
        let (kp, mp) = (find(&k, b"path", STRUCT).expect("path"), find(&m, b"path", STRUCT).expect("path kept"));
        assert_eq!((kp, members(&k, kp)), (mp, members(&m, mp)));
        // aya parses it.
        aya::Btf::parse(&min, aya::Endianness::default()).expect("aya parses the cut BTF");
    }

    #[test]
    fn the_sensor_object_uses_only_cut_safe_relocations() {
        let roots = relocation_roots(super::super::OBJECT).expect("only cut-safe relocations");
        for name in [&b"task_struct"[..], b"linux_binprm", b"file"] {
            assert!(roots.contains(name), "{} is a relocation root", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn type_relocations_through_pointers_are_not_cut() {
        assert!(kind_is_cut_safe(9, STRUCT) && kind_is_cut_safe(8, ENUM) && kind_is_cut_safe(0, PTR));
        assert!(!kind_is_cut_safe(9, PTR) && !kind_is_cut_safe(8, FUNC_PROTO) && !kind_is_cut_safe(12, STRUCT));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let obj = super::super::OBJECT;
        assert!(matches!(minimal(b"", obj, &[]), Err(MinError::Invalid { .. })));
        assert!(matches!(minimal(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0], obj, &[]), Err(MinError::Invalid { .. })));
        let mut hdr = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, 100, 0, 0] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        assert!(matches!(minimal(&hdr, obj, &[]), Err(MinError::Invalid { why: "type section out of bounds", .. })));
        let mut empty = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, 0, 0, 0] {
            empty.extend_from_slice(&v.to_le_bytes());
        }
        assert!(matches!(minimal(&empty, b"not elf", &[]), Err(MinError::Invalid { what: "object", .. })));
        // Every truncation of a real BTF is an error or a valid cut, never a panic.
        if let Some(full) = kernel_btf() {
            for len in [25, 100, 1000, full.len() / 2] {
                let _ = minimal(&full[..len], obj, &[]);
            }
        }
    }
}
