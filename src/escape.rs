//! Names from the kernel (paths, argv, comm, cgroup names) are bytes, not
//! UTF-8; findings are JSON text. This is how one becomes the other without
//! losing anything: `bad\xff\xfe` and `bad\xfe\xff` must not print alike.
//!
//! The rule (also in the README, "Names that are not UTF-8"):
//! - a name that is valid UTF-8 is kept byte for byte (the common case: one
//!   validation, no copy beyond the `String` itself);
//! - otherwise each byte that is not part of a valid UTF-8 sequence becomes
//!   `\xHH` (two lowercase hex digits), each literal backslash becomes `\\`,
//!   everything else is kept, and the finding marks the name with a
//!   `..._escaped: true` key. Marked text decodes back to the exact bytes
//!   ([`unescape`]); unmarked text is the bytes.
//!
//! Why `\xHH`: it is how Go (`%q`, `strconv.Quote`), Python (`backslashreplace`)
//! and systemd unit names write a raw byte, so Falco and Tetragon users (Go
//! tooling) read it at a glance. auditd's hex of the whole field is also
//! lossless, but one bad byte would make a whole path unreadable and break
//! prefix matching on its valid part. Escaping the backslash only in marked
//! names keeps every valid name unchanged, and marked names reversible.

use std::{borrow::Cow, fmt::Write as _, path::Path};

/// The longest prefix of `s` of at most `max` bytes that ends at a
/// character boundary: text cut to a field or a message without splitting a
/// character.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `bytes` as text, and whether it had to be escaped: a `String`, inline
/// text (`crate::event::Text`) or a shared `Arc<str>`, as the caller keeps it.
pub fn lossless<T: for<'a> From<&'a str> + From<String>>(bytes: &[u8]) -> (T, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.into(), false),
        Err(_) => (escaped(bytes).into(), true),
    }
}

/// Like [`lossless`], reusing the allocation of valid UTF-8.
pub fn lossless_vec(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (escaped(e.as_bytes()), true),
    }
}

/// The escaped form of `bytes`, whatever they are: for lists judged as one
/// (argv), where every item is escaped once one item must be, so that one
/// mark holds for each.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        let mut parts = chunk.valid().split('\\');
        out.push_str(parts.next().unwrap_or_default());
        for p in parts {
            out.push_str("\\\\");
            out.push_str(p);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The bytes escaped text stands for; `None` when `text` is not in the
/// escaped form (a lone backslash, a bad hex digit).
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The bytes of a name held as text with its mark. Marked text that does not
/// decode (it cannot come from [`escaped`]) is taken as it is.
pub fn raw(text: &str, escaped: bool) -> Cow<'_, [u8]> {
    match escaped.then(|| unescape(text)).flatten() {
        Some(bytes) => Cow::Owned(bytes),
        None => Cow::Borrowed(text.as_bytes()),
    }
}

/// A marked name as the filesystem path it names (to open what the kernel saw).
pub fn path(text: &str, escaped: bool) -> Cow<'_, Path> {
    use std::{
        ffi::{OsStr, OsString},
        os::unix::ffi::{OsStrExt, OsStringExt},
    };
    match raw(text, escaped) {
        Cow::Borrowed(b) => Cow::Borrowed(Path::new(OsStr::from_bytes(b))),
        Cow::Owned(b) => Cow::Owned(OsString::from_vec(b).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("aé", 2), "a", "é is two bytes: not split");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn the_issue_names_differ_and_say_so() {
        let (a, ea) = lossless::<String>(b"bad\xff\xfe");
        let (b, eb) = lossless::<String>(b"bad\xfe\xff");
        assert_eq!((a.as_str(), ea), ("bad\\xff\\xfe", true));
        assert_eq!((b.as_str(), eb), ("bad\\xfe\\xff", true));
        assert_ne!(a, b);
    }

    #[test]
    fn valid_utf8_is_untouched() {
        for s in ["", "/usr/bin/python3", "/tmp/caf\u{e9}", "\u{1f600}", "C:\\x41\\", "a\\\\b", "tab\there"] {
            assert_eq!(lossless::<String>(s.as_bytes()), (s.to_string(), false), "{s:?}");
            assert_eq!(lossless_vec(s.as_bytes().to_vec()), (s.to_string(), false), "{s:?}");
        }
        // The fast path keeps the allocation it was given.
        let v = b"/etc/hosts".to_vec();
        let ptr = v.as_ptr();
        assert_eq!(lossless_vec(v).0.as_ptr(), ptr);
    }

    #[test]
    fn backslashes_of_escaped_names_are_escaped() {
        // A literal "\xff" (4 characters) next to a real 0xff byte: both stay apart.
        let (t, e) = lossless::<String>(b"lit\\xff raw\xff");
        assert!(e);
        assert_eq!(t, "lit\\\\xff raw\\xff");
        assert_eq!(unescape(&t).unwrap(), b"lit\\xff raw\xff");
        // A cut multi-byte character (the kernel's 15-byte comm) is escaped bytes.
        assert_eq!(lossless::<String>("ab\u{e9}".as_bytes().split_last().unwrap().1).0, "ab\\xc3");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for bad in ["\\", "a\\q", "\\x", "\\xf", "\\xzz", "\\xFF"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
        assert_eq!(raw("a\\q", true).as_ref(), b"a\\q");
        assert_eq!(raw("a\\x41", false).as_ref(), b"a\\x41");
        assert_eq!(raw("a\\x41", true).as_ref(), b"aA");
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(path("/tmp/bad\\xff", true).as_os_str().as_bytes(), b"/tmp/bad\xff");
        assert_eq!(path("/tmp/bad\\xff", false).as_os_str().as_bytes(), b"/tmp/bad\\xff");
    }

    #[test]
    fn every_byte_string_round_trips() {
        // Deterministic pseudo-random byte strings, biased towards the
        // interesting bytes (backslash, 'x', hex digits, UTF-8 lead and
        // continuation bytes).
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pool = [b'\\', b'x', b'f', b'0', b'/', 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0xff, 0xfe, 0x80];
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 { r as u8 >> 1 } else { pool[(r >> 8) as usize % pool.len()] }
                })
                .collect();
            let (text, esc) = lossless::<String>(&bytes);
            assert_eq!(esc, std::str::from_utf8(&bytes).is_err(), "{bytes:x?}");
            assert_eq!(raw(&text, esc).as_ref(), &bytes[..], "{bytes:x?} -> {text}");
            assert_eq!(escaped(&bytes).is_empty(), bytes.is_empty());
            assert_eq!(unescape(&escaped(&bytes)).as_deref(), Some(&bytes[..]), "{bytes:x?}");
            // Injective: two different byte strings never give the same (text, mark).
            if let Some(prev) = seen.insert((text.clone(), esc), bytes.clone()) {
                assert_eq!(prev, bytes, "{text} stands for two names");
            }
        }
    }
}
