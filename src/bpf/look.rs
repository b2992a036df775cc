//! The events thread's side of the kernel's wake gate: when it looked at the
//! ring buffer (`struct dw_reader` in map `reader`, read by `emit_submit` in
//! ebpf/helpers/emit.h).
//!
//! In a storm the reader used to be woken up to twice per wake interval: by
//! its own timer one interval after a look, and by the kernel's gated wakeup
//! for the first record after the interval, which often came just after the
//! reader had gone back to sleep (~135 wakeups a second at 10 ms). With the
//! look written here, records within an interval of it wake nobody and the
//! reader's timer looks at them one interval after the previous look: one
//! wakeup per interval, with the same latency bound.
//!
//! Written through a shared mapping of the map (`BPF_F_MMAPABLE`): a store,
//! not a syscall, per look.

use crate::abi::dw_reader;
use aya::maps::{Map, MapData};
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// The mapped `reader` map.
pub struct Look {
    at: NonNull<u64>,
    len: usize,
    _map: MapData,
}

// SAFETY: the mapping is owned by this value (unmapped on drop, the map kept
// alive until then); every access is an atomic store.
unsafe impl Send for Look {}

impl Look {
    /// Maps the `reader` array map taken from the sensor object.
    pub fn new(map: Map) -> Result<Self, String> {
        let Map::Array(data) = map else {
            return Err("not an array map".into());
        };
        // SAFETY: sysconf has no preconditions.
        let len = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize;
        debug_assert!(size_of::<dw_reader>() <= len);
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's value area; checked
        // below; the kernel refuses maps created without BPF_F_MMAPABLE.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let at = NonNull::new(p.cast::<u64>()).ok_or("mmap returned null")?;
        Ok(Self { at, len, _map: data })
    }

    /// Says the reader looked at `boot_ns` (`crate::clock::boot_ns`): records
    /// submitted within a wake interval of it do not wake the reader. Zero:
    /// no look promised, the next record past the gate wakes it.
    pub fn set(&self, boot_ns: u64) {
        // SAFETY: `at` points at dw_reader.look_ns (offset 0 of element 0),
        // 8-byte aligned (page-aligned mapping), valid while `self` lives.
        unsafe { AtomicU64::from_ptr(self.at.as_ptr()) }.store(boot_ns, Ordering::Relaxed);
    }
}

impl Drop for Look {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of `len` bytes, unmapped once.
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    /// `Look::set` writes at offset 0 of the mapping: the layout it assumes.
    #[test]
    fn reader_layout() {
        assert_eq!(size_of::<crate::abi::dw_reader>(), 8);
        assert_eq!(align_of::<crate::abi::dw_reader>(), 8);
        assert_eq!(offset_of!(crate::abi::dw_reader, look_ns), 0);
    }
}
