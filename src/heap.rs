//! glibc heap tuning. The agent's steady heap is a few MB, but loading the
//! sensor parses the kernel's BTF (tens of MB, freed at once) and a storm
//! fills queues: glibc keeps such freed memory in its arenas, one per thread
//! that ever allocated, so the agent's RSS stayed at its startup peak. Two
//! arenas and a trim after each burst give it back. A fixed mmap threshold
//! keeps large buffers (the parsed BTF's growing vectors) in their own
//! mappings: glibc grows them with mremap instead of copying, and frees them
//! to the kernel at once (measured on 6.18: startup peak 43 -> 34 MB, idle
//! RSS 38 -> 23.5 MB).

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
