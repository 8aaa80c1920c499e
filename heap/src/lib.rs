//! The C allocator's free memory, and giving it back to the system.
//!
//! chatd allocates through glibc's malloc, which keeps what was freed in its arenas (one per
//! thread that allocated, up to eight per core) for reuse and returns to the system only the
//! top of the main heap. After a burst (a replay of a large backlog, a flood of messages) the
//! freed pages stay resident: RSS never came back after an attack. `malloc_trim(0)` walks every
//! arena and releases the whole free pages inside them (`MADV_DONTNEED`), which is what
//! [`release`] does; [`usage`] says how much the program really uses, to tell when that is
//! worth it. Elsewhere than glibc both do nothing: other allocators return memory themselves
//! or have no such call.
//!
//! This crate exists because the workspace forbids `unsafe`; these two FFI calls are the only
//! unsafe code chatd runs of its own.
#![warn(missing_docs)]

/// What the allocator holds, from glibc's `mallinfo2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in use by the program (in the arenas and in blocks of their own).
    pub in_use: usize,
    /// Bytes in free chunks of the arenas, whether or not their pages are still resident
    /// (a [`release`] gives the pages back but leaves the chunks free).
    pub free: usize,
}

/// What the allocator holds now; all zero off glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn usage() -> Usage {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value; glibc takes
    // each arena's lock while it counts.
    let info = unsafe { libc::mallinfo2() };
    Usage {
        in_use: info.uordblks.saturating_add(info.hblkhd),
        free: info.fordblks,
    }
}

/// What the allocator holds now; all zero off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn usage() -> Usage {
    Usage::default()
}

/// Gives the free memory the allocator holds back to the system; true when some was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() -> bool {
    // SAFETY: malloc_trim takes no pointers (0 is the padding to keep) and only rearranges
    // glibc's own free lists under each arena's lock; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Gives free memory back to the system; does nothing off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_counted_and_given_back() {
        // Many medium blocks (below the mmap threshold, so they live in an arena), all freed
        // but the last, which keeps the heap's top from being trimmed on its own.
        let before = usage();
        let blocks: Vec<Vec<u8>> = (0..2000).map(|i| vec![i as u8; 16 * 1024]).collect();
        let keep = vec![1u8; 16 * 1024];
        let full = usage();
        drop(blocks);
        let freed = usage();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(full.in_use >= before.in_use + 30 * 1024 * 1024, "{full:?}");
            assert!(freed.in_use < full.in_use - 30 * 1024 * 1024, "{freed:?}");
            assert!(freed.free >= 30 * 1024 * 1024, "{freed:?}");
            assert!(release(), "32 MB of free pages to give back");
        } else {
            assert_eq!(freed, Usage::default());
            assert!(!release());
        }
        drop(keep);
    }
}
