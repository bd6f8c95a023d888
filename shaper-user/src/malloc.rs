//! Heap settings for a long-running controller.
//!
//! glibc serves an allocation above its mmap threshold (128 KiB at start) with its own
//! mapping, returned to the kernel on free. But the threshold is dynamic: each time such a
//! mapping is freed, glibc raises the threshold to that size (up to 32 MiB), so the next
//! allocations of that size come from the main heap instead. The engine's tables grow by
//! doubling (one `Vec` and hash table per million events, tens of MiB each); after the first
//! growth their old buffers were freed inside the heap, below live data, where glibc cannot
//! give them back. Measured with one million pending events (`cargo bench -p shaper-user
//! --bench controller -- --part pending`): 340 bytes per event resident with the dynamic
//! threshold, 241 with it fixed (docs/PERFORMANCE.md). Which side of the threshold a buffer
//! landed on depended on the order of unrelated temporary allocations, so the figure moved
//! with changes elsewhere; a fixed threshold makes it depend on the data only.

/// The mmap threshold the controller runs with: glibc's own starting value, kept fixed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (setting it turns off the dynamic
/// adjustment, and the trim threshold's with it). Call once at start, before the controller
/// allocates; a no-op on other C libraries. Returns whether the setting took.
pub fn fix_mmap_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(bytes) = libc::c_int::try_from(MMAP_THRESHOLD) else {
            return false;
        };
        // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD with a value
        // below HEAP_MAX/2 (32 MiB on 64-bit) is accepted at any time, also with live
        // allocations.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_accepted() {
        assert!(fix_mmap_threshold());
        // Idempotent: a second call is accepted as well.
        assert!(fix_mmap_threshold());
    }
}
