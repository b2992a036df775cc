//! Kernel timestamps (CLOCK_BOOTTIME ns) to wall-clock time.

use time::OffsetDateTime;

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_BOOTTIME now, in ns: the clock of the kernel's `bpf_ktime_get_boot_ns`.
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME).max(0) as u64
}

/// Converts boot-time nanoseconds to wall-clock time. The offset is taken once;
/// it only moves when the wall clock is stepped, which is rare and harmless here.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    offset_ns: i128,
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

impl BootClock {
    pub fn new() -> Self {
        Self { offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME) }
    }

    pub fn wall(&self, boot_ns: u64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.offset_ns + boot_ns as i128)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// [`rfc3339`] of [`Self::wall`]`(boot_ns)`. A finding's time: a storm's
    /// findings share their second, so its date and time of day are kept
    /// (per thread) and only the nine fractional digits are written (the
    /// calendar arithmetic was ~550 instructions a finding).
    pub fn rfc3339(&self, boot_ns: u64) -> Rfc3339 {
        thread_local! {
            static LAST: std::cell::Cell<(i64, Rfc3339)> = const { std::cell::Cell::new((i64::MIN, Rfc3339(*b"0000-00-00T00:00:00.000000000Z"))) };
        }
        // Nanoseconds since the epoch fit an i64 until 2262.
        let Ok(ns) = i64::try_from(self.offset_ns + boot_ns as i128) else { return rfc3339(self.wall(boot_ns)) };
        let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32);
        let (last_secs, mut t) = LAST.get();
        if secs != last_secs {
            t = rfc3339(self.wall(boot_ns));
            LAST.set((secs, t));
            return t;
        }
        put_digits(&mut t.0[20..29], nanos);
        t
    }

    /// Nanoseconds elapsed since a kernel timestamp.
    pub fn since_ns(boot_ns: u64) -> u64 {
        (clock_ns(libc::CLOCK_BOOTTIME) - boot_ns as i128).max(0) as u64
    }
}

/// RFC 3339 in UTC with all nine fractional digits, so lines sort as text.
/// Written digit by digit: it runs once per finding, and `format!` with nine
/// width-padded arguments was 6% of a finding's userspace cost.
pub fn rfc3339(t: OffsetDateTime) -> Rfc3339 {
    let t = t.to_offset(time::UtcOffset::UTC);
    // Years outside 0..=9999 cannot come from a kernel timestamp; clamp
    // rather than print a malformed date.
    let year = t.year().clamp(0, 9999) as u32;
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut b[0..4], year);
    put_digits(&mut b[5..7], u8::from(t.month()).into());
    put_digits(&mut b[8..10], t.day().into());
    put_digits(&mut b[11..13], t.hour().into());
    put_digits(&mut b[14..16], t.minute().into());
    put_digits(&mut b[17..19], t.second().into());
    put_digits(&mut b[20..29], t.nanosecond());
    Rfc3339(b)
}

/// `v`'s last `to.len()` decimal digits, zero-padded, into `to`.
fn put_digits(to: &mut [u8], mut v: u32) {
    for d in to.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// A time as [`rfc3339`] writes it, held inline: a finding's `time` without
/// a heap allocation. Reads as the `str` it is (ASCII digits and separators).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rfc3339([u8; 30]);

impl std::ops::Deref for Rfc3339 {
    type Target = str;
    fn deref(&self) -> &str {
        // SAFETY: only ASCII is ever stored (`rfc3339` writes digits and
        // separators, `from_str` checks the shape): always UTF-8. Checked
        // again here, it cost every JSON line ~170 instructions.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq<&str> for Rfc3339 {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl PartialEq<String> for Rfc3339 {
    fn eq(&self, other: &String) -> bool {
        **self == **other
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl std::str::FromStr for Rfc3339 {
    type Err = String;
    /// Text in exactly [`rfc3339`]'s shape (`2026-01-02T03:04:05.000000006Z`).
    fn from_str(s: &str) -> Result<Self, String> {
        let b: [u8; 30] = s.as_bytes().try_into().map_err(|_| format!("{s:?} is not a 30-byte RFC 3339 time"))?;
        let shape = b"0000-00-00T00:00:00.000000000Z";
        let ok = b.iter().zip(shape).all(|(c, p)| if *p == b'0' { c.is_ascii_digit() } else { c == p });
        ok.then_some(Self(b))
            .ok_or_else(|| format!("{s:?} is not in the form {}", std::str::from_utf8(shape).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_moves_forward() {
        let (a, b) = (boot_ns(), boot_ns());
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn a_findings_time_is_written_as_from_the_calendar() {
        let c = BootClock::new();
        // Within a second, across seconds, days and years, and back again.
        let day = 86_400_000_000_000u64;
        let start = 3 * day - 1_500;
        for step in [1u64, 999, 333_333_333, 1_000_000_000, day / 3, 365 * day + 7] {
            for i in 0..12u64 {
                let ns = start + (i % 7) * step + i;
                assert_eq!(c.rfc3339(ns), rfc3339(c.wall(ns)), "{ns}");
            }
        }
    }

    #[test]
    fn boot_zero_is_in_the_past() {
        let c = BootClock::new();
        let now = OffsetDateTime::now_utc();
        let boot = c.wall(0);
        assert!(boot <= now);
        let s = rfc3339(c.wall(1_500_000_123));
        assert!(s.ends_with('Z'), "{s}");
        let fixed = rfc3339(OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_000_000_500).unwrap());
        assert_eq!(fixed, "2023-11-14T22:13:20.000000500Z");
        // Every field at its widest and narrowest, against the time crate's own formatting.
        for ns in [0i128, 951_782_399_999_999_999, 1_000_000_000, 4_102_444_799_123_456_789] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(ns).unwrap();
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond()
            );
            assert_eq!(rfc3339(t), want);
            assert_eq!(want.parse::<Rfc3339>(), Ok(rfc3339(t)));
        }
        assert_eq!(serde_json::to_string(&fixed).unwrap(), "\"2023-11-14T22:13:20.000000500Z\"");
        for bad in
            ["", "2023-11-14T22:13:20.000000500", "2023-11-14 22:13:20.000000500Z", "2023-11-14T22:13:20.00000050xZ"]
        {
            assert!(bad.parse::<Rfc3339>().is_err(), "{bad:?}");
        }
    }
}
