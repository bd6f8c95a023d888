//! The class array (`shaper_classes`, created `BPF_F_MMAPABLE`) mapped into this process.
//!
//! Changing a class used to cost two syscalls per class (`bpf_map_lookup_elem` to keep the
//! policer state `tat`, then `bpf_map_update_elem`), and a packet's `tat` update between the
//! two was lost. Through the mapping a change is plain stores into the memory the programs
//! read, and `tat`, which the kernel advances with compare-and-swap, is never written back.
//!
//! Every access is an atomic load or store of one aligned 8-byte word: the kernel reads the
//! fields without a lock (as it did under the syscall update), and an aligned word store is
//! never torn. An entry is 8 words; the word holding `flags` (and with it the VALID bit) is
//! stored last when a class is written and first when it is cleared. (The order matters
//! little: a class is created before any subscriber or rule uses it and deleted after the last
//! one stopped, and those are syscalls, full barriers.)

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::abi::ClassEntry;

/// 8-byte words per class. The kernel lays out the values of an mmapable array contiguously
/// from offset 0, each `value_size` rounded up to 8 bytes apart: exactly 64 here.
const WORDS: usize = size_of::<ClassEntry>() / 8;
const _: () = assert!(size_of::<ClassEntry>() == 64);
/// The word of `tat`: the kernel's, never written here except by [`ClassArray::clear`].
const TAT: usize = std::mem::offset_of!(ClassEntry, tat) / 8;
const _: () = assert!(std::mem::offset_of!(ClassEntry, tat).is_multiple_of(8));
/// The word holding `flags` (with `skb_priority`, `mtu` and `dscp`).
const FLAGS: usize = std::mem::offset_of!(ClassEntry, flags) / 8;
const _: () = assert!(FLAGS != TAT);

fn to_words(e: &ClassEntry) -> [u64; WORDS] {
    // SAFETY: ClassEntry is repr(C), 64 bytes of integer fields with no implicit padding (the
    // ABI test checks every offset against the C header), so all its bytes are initialised
    // and any 64 bytes read as [u64; 8]; transmute checks the sizes.
    unsafe { std::mem::transmute::<ClassEntry, [u64; WORDS]>(*e) }
}

fn from_words(w: [u64; WORDS]) -> ClassEntry {
    // SAFETY: as in `to_words`: every bit pattern is a valid ClassEntry (integers only).
    unsafe { std::mem::transmute::<[u64; WORDS], ClassEntry>(w) }
}

/// A read-write, shared mapping of the whole class array, unmapped on drop. The mapping holds
/// its own reference to the map, so it stays valid whatever happens to the fd it came from.
pub struct ClassArray {
    base: NonNull<AtomicU64>,
    entries: u32,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, not tied to a thread, and every access through
// it is atomic, so it may be moved to and used from any thread.
unsafe impl Send for ClassArray {}
// SAFETY: as above: `&self` only ever performs atomic loads and stores.
unsafe impl Sync for ClassArray {}

impl std::fmt::Debug for ClassArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassArray")
            .field("entries", &self.entries)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ClassArray {
    /// Maps the `entries` classes of the array map `fd` (which must have been created with
    /// `BPF_F_MMAPABLE` and `max_entries == entries`; the kernel refuses a longer mapping).
    pub fn map(fd: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("sysconf(_SC_PAGESIZE) failed"))?;
        let bytes = entries as usize * size_of::<ClassEntry>();
        if bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the class array has no entries",
            ));
        }
        let len = bytes.div_ceil(page) * page;
        // SAFETY: a fresh mapping (no address hint) of a valid fd; nothing else is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        Ok(Self { base, entries, len })
    }

    /// How many classes the mapping holds.
    #[must_use]
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The 8 words of class `id`, `None` outside the array.
    fn words(&self, id: u32) -> Option<&[AtomicU64]> {
        if id >= self.entries {
            return None;
        }
        // SAFETY: the mapping is page-aligned (so 8-byte aligned), readable and writable for
        // `len >= entries * 64` bytes, and lives as long as `self`; AtomicU64 has the size
        // and layout of u64, and all access to the memory (ours and the kernel's) is by
        // aligned word, so shared references to atomics over it are sound.
        let all = unsafe {
            std::slice::from_raw_parts(self.base.as_ptr(), self.entries as usize * WORDS)
        };
        let at = id as usize * WORDS;
        Some(&all[at..at + WORDS])
    }

    /// Class `id` as the kernel sees it now, `tat` included.
    #[must_use]
    pub fn read(&self, id: u32) -> Option<ClassEntry> {
        let w = self.words(id)?;
        Some(from_words(std::array::from_fn(|i| {
            w[i].load(Ordering::Acquire)
        })))
    }

    /// The policer state of class `id`.
    #[must_use]
    pub fn tat(&self, id: u32) -> Option<u64> {
        Some(self.words(id)?[TAT].load(Ordering::Relaxed))
    }

    /// Writes every field of `e` into class `id` except `tat`, which stays the kernel's: the
    /// bucket keeps its state across a change. The word with `flags` goes last. Returns
    /// `None` (writing nothing) when `id` is outside the array.
    pub fn write_config(&self, id: u32, e: &ClassEntry) -> Option<()> {
        let w = self.words(id)?;
        let new = to_words(e);
        for (i, (word, v)) in w.iter().zip(new).enumerate() {
            if i != TAT && i != FLAGS {
                word.store(v, Ordering::Relaxed);
            }
        }
        w[FLAGS].store(new[FLAGS], Ordering::Release);
        Some(())
    }

    /// Zeroes class `id`, `tat` included, so that a reused id starts with a full bucket. The
    /// word with `flags` (VALID) goes first. `None` when `id` is outside the array.
    pub fn clear(&self, id: u32) -> Option<()> {
        let w = self.words(id)?;
        w[FLAGS].store(0, Ordering::Release);
        for word in w {
            word.store(0, Ordering::Relaxed);
        }
        Some(())
    }
}

impl Drop for ClassArray {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are exactly the mapping made in `map`, and no reference
        // into it outlives `self` (every borrow is tied to `&self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_tat_and_flags_have_their_own() {
        let e = ClassEntry {
            ns_per_byte_q16: 1,
            burst_ns: 2,
            tat: 3,
            skb_priority: 4,
            mtu: 5,
            dscp: 6,
            flags: 7,
            rate_bps: 8,
            burst_bytes: 9,
            pad0: 10,
            pad1: [11, 12],
        };
        let w = to_words(&e);
        assert_eq!(from_words(w), e);
        assert_eq!(w[TAT], 3);
        assert_eq!((TAT, FLAGS), (2, 3));
    }

    /// A standalone array of `n` classes created with `flags`, as a map (its fd is reached
    /// through `MapData`: aya keeps a typed map's fd to itself). Passes through a bpffs pin,
    /// removed at once.
    fn standalone(n: u32, flags: u32) -> aya::maps::Map {
        use aya::maps::{Array, Map, MapData};
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        crate::dataplane::ensure_bpffs().unwrap();
        let path = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/shaper-ut-mmap-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Array::<MapData, ClassEntry>::create(n, flags)
            .expect("create (needs root)")
            .pin(&path)
            .unwrap();
        let data = MapData::from_pin(&path);
        std::fs::remove_file(&path).unwrap();
        Map::from_map_data(data.unwrap()).unwrap()
    }

    fn fd_of(m: &aya::maps::Map) -> BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        match m {
            aya::maps::Map::Array(d) => d.fd().as_fd(),
            _ => panic!("an array"),
        }
    }

    /// The layout the mapping assumes (entry `i` at `64 * i`, from offset 0), checked against
    /// the syscall view of a standalone mmapable array whose length is not a page multiple.
    /// Needs root (CAP_BPF).
    #[test]
    fn mapping_is_the_array_the_syscalls_see() {
        use aya::maps::Array;
        let n = 100; // 6400 bytes: the mapping is two pages, the last one partly used
        let mut map = standalone(n, crate::abi::BPF_F_MMAPABLE);
        let m = ClassArray::map(fd_of(&map), n).unwrap();
        let mut arr: Array<_, ClassEntry> = Array::try_from(&mut map).unwrap();
        let e = |x: u64| ClassEntry {
            ns_per_byte_q16: x,
            burst_ns: x + 1,
            tat: x + 2,
            flags: 1,
            rate_bps: x + 3,
            ..Default::default()
        };
        // tat set through a syscall (standing in for the kernel), config through the mapping.
        arr.set(99, e(0), 0).unwrap();
        arr.set(7, ClassEntry { tat: 777, ..e(0) }, 0).unwrap();
        m.write_config(7, &e(70)).unwrap();
        m.write_config(99, &e(990)).unwrap();
        assert_eq!(arr.get(&7, 0).unwrap(), ClassEntry { tat: 777, ..e(70) });
        assert_eq!(arr.get(&99, 0).unwrap(), ClassEntry { tat: 2, ..e(990) });
        assert_eq!(m.read(7), Some(ClassEntry { tat: 777, ..e(70) }));
        assert_eq!(m.tat(7), Some(777));
        assert_eq!(arr.get(&6, 0).unwrap(), ClassEntry::default());
        assert_eq!(arr.get(&8, 0).unwrap(), ClassEntry::default());
        m.clear(7).unwrap();
        assert_eq!(arr.get(&7, 0).unwrap(), ClassEntry::default());
        // Out of range: refused, nothing written.
        assert!(m.write_config(n, &e(1)).is_none());
        assert!(m.read(n).is_none() && m.tat(u32::MAX).is_none() && m.clear(n).is_none());
        // The mapping outlives the map's fd (it holds its own reference to the map).
        drop(map);
        m.write_config(3, &e(30)).unwrap();
        assert_eq!(m.read(3), Some(ClassEntry { tat: 0, ..e(30) }));
    }

    #[test]
    fn a_map_without_the_flag_is_not_mapped() {
        let n = 100;
        let map = standalone(n, 0);
        let err = ClassArray::map(fd_of(&map), n).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        // Nor is one longer than the array.
        let map = standalone(n, crate::abi::BPF_F_MMAPABLE);
        let err = ClassArray::map(fd_of(&map), 1000).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }
}
