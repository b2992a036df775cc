//! glibc heap tuning. The agent's steady heap is a few MB, but loading the
//! sensor parses the kernel's BTF (tens of MB, freed at once) and a storm
//! fills queues: glibc keeps such freed memory in its arenas, one per thread
//! that ever allocated, so the agent's RSS stayed at its startup peak. Two
//! arenas and a trim after each burst give it back. A fixed mmap threshold
//! keeps large buffers (the parsed BTF's growing vectors) in their own
//! mappings: glibc grows them with mremap instead of copying, and frees them
//! to the kernel at once (measured on 6.18: startup peak 43 -> 34 MB, idle
//! RSS 38 -> 23.5 MB). The executable's startup pages are given back too,
//! once the sensor is loaded ([`release_code`]).

use std::time::Duration;

/// How often the heap is trimmed: a trim of a small heap costs well under a millisecond.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Allocations at least this large get their own mapping.
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Caps glibc's arenas and fixes its mmap threshold; call before any thread starts.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns freed heap memory to the kernel.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the allocator's own locks; safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives back the pages of the agent's own executable (`MADV_PAGEOUT`): once
/// the sensor is loaded, most of the code touched so far (configuration,
/// aya's loader, CO-RE) never runs again, yet stays resident, and the
/// kernel's fault-around maps 64 KiB of neighbours with every page that does
/// run. These are clean file pages: what runs again faults back in from the
/// page cache or the file. Returns the bytes advised (0 where the kernel has
/// no `MADV_PAGEOUT`, before 5.4). Measured on 6.18, the binary in the page
/// cache, idle and scraped: its resident pages 14.6 -> 6 MB right after
/// (10.9-11.7 MB after a storm), peak RSS 26.9-27.0 -> 23.8-23.9 MB.
pub fn release_code() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else { return 0 };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return 0 };
    let mut released = 0;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(_), Some(_), Some(_), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if std::path::Path::new(path) != exe {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
        // SAFETY: advice on our own mapping; PAGEOUT does not change its contents.
        if unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_PAGEOUT) } == 0 {
            released += b - a;
        }
    }
    released
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_executable_is_released_and_still_runs() {
        let released = super::release_code();
        assert!(released > 0, "this test binary's own mappings are advised");
        // Code paged out runs again (faulted back in).
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(super::release_code() > 0);
    }
}
