//! File contents: a sha256 within the hash limit, a byte-for-byte
//! comparison beyond it, and the first bytes that say "executable" (ELF or
//! `#!`) whatever the mode says.

use ring::digest;
use std::{
    fmt::Write as _,
    fs::File,
    io::{self, Read},
};

const CHUNK: usize = 64 << 10;

/// What reading a file told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `None` when the file is larger than the limit (or grew past it).
    pub sha256: Option<[u8; 32]>,
    /// Starts with an ELF or `#!` magic.
    pub exec_magic: bool,
}

fn exec_magic(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF") || head.starts_with(b"#!")
}

/// Reads `f`: its digest when `hash_limit` allows (`None`: only the first
/// bytes are read).
pub fn facts(f: &mut File, hash_limit: Option<u64>, buf: &mut Vec<u8>) -> io::Result<Facts> {
    buf.resize(CHUNK, 0);
    let Some(limit) = hash_limit else {
        let mut head = [0u8; 4];
        let mut got = 0;
        while got < head.len() {
            match f.read(&mut head[got..])? {
                0 => break,
                n => got += n,
            }
        }
        return Ok(Facts { sha256: None, exec_magic: exec_magic(&head[..got]) });
    };
    let mut ctx = digest::Context::new(&digest::SHA256);
    let (mut head, mut got, mut total) = ([0u8; 4], 0usize, 0u64);
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if got < head.len() {
            let k = n.min(head.len() - got);
            head[got..got + k].copy_from_slice(&buf[..k]);
            got += k;
        }
        total += n as u64;
        if total > limit {
            // Grew while read: no digest rather than an unbounded read.
            return Ok(Facts { sha256: None, exec_magic: exec_magic(&head[..got]) });
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(Facts { sha256: Some(out), exec_magic: exec_magic(&head[..got]) })
}

/// `a` and `b` hold the same bytes.
pub fn same_bytes(a: &mut File, b: &mut File, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.resize(2 * CHUNK, 0);
    let (ba, bb) = buf.split_at_mut(CHUNK);
    loop {
        let n = read_full(a, ba)?;
        let m = read_full(b, &mut bb[..n.max(1)])?;
        if n == 0 {
            return Ok(m == 0);
        }
        if m != n || ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Fills `buf` unless the file ends first; the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Lower-case hex of a digest (the diff's and the evidence manifest's sha256).
pub fn hex(d: &[u8]) -> String {
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_magic_and_comparison() {
        let dir = std::env::temp_dir().join(format!("dw-content-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &big).unwrap();
        std::fs::write(&b, &big).unwrap();
        let mut other = big.clone();
        other[150_000] ^= 1;
        std::fs::write(&c, &other).unwrap();
        let mut buf = Vec::new();
        let open = |p: &std::path::Path| File::open(p).unwrap();
        assert!(same_bytes(&mut open(&a), &mut open(&b), &mut buf).unwrap());
        assert!(!same_bytes(&mut open(&a), &mut open(&c), &mut buf).unwrap());
        std::fs::write(&c, &big[..1000]).unwrap();
        assert!(!same_bytes(&mut open(&a), &mut open(&c), &mut buf).unwrap(), "a prefix is not the same");
        assert!(!same_bytes(&mut open(&c), &mut open(&a), &mut buf).unwrap());

        std::fs::write(&a, b"abc").unwrap();
        let f = facts(&mut open(&a), Some(64), &mut buf).unwrap();
        assert_eq!(hex(&f.sha256.unwrap()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(!f.exec_magic);
        assert_eq!(facts(&mut open(&a), Some(2), &mut buf).unwrap().sha256, None, "over the limit");
        std::fs::write(&a, b"#!/bin/sh\n").unwrap();
        assert!(facts(&mut open(&a), None, &mut buf).unwrap().exec_magic);
        std::fs::write(&a, b"\x7fEL").unwrap();
        assert!(!facts(&mut open(&a), None, &mut buf).unwrap().exec_magic);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
