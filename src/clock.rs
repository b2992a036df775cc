//! Kernel timestamps (CLOCK_BOOTTIME ns) to wall-clock time.

use time::OffsetDateTime;

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
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

    /// Nanoseconds elapsed since a kernel timestamp.
    pub fn since_ns(boot_ns: u64) -> u64 {
        (clock_ns(libc::CLOCK_BOOTTIME) - boot_ns as i128).max(0) as u64
    }
}

/// RFC 3339 in UTC with all nine fractional digits, so lines sort as text.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
