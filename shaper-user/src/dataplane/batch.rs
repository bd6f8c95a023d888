//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_LOOKUP_BATCH` (kernel 5.6, commit aa2e93b8e58e), which
//! aya 0.14 does not wrap: one syscall writes or reads thousands of entries, where one
//! `BPF_MAP_UPDATE_ELEM` each costs ~1.7 µs, and aya's iterators spend one or two syscalls per
//! entry. Used for large subscriber loads, and to read the pinned subscriber tables back at a
//! restart.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::Map;

/// `enum bpf_cmd` values of `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_UPDATE_BATCH`
/// (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries per `BPF_MAP_LOOKUP_BATCH` call.
const LOOKUP_CHUNK: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One `bpf(cmd, attr)` call of the batch family; the kernel updates `attr.count` to the
/// number of entries it handled, also on error.
///
/// # Safety
/// `attr` must point at buffers the command may read or write: `count` keys and values of
/// the map's key and value sizes, and batch positions the kernel can read and write.
unsafe fn batch_call(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller vouches for the buffers `attr` points at; `attr` itself is a live,
    // writable `union bpf_attr` prefix of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Writes `keys[i] -> values[i]` into a hash map or an array (keys `u32` indexes). Returns how many were written before an
/// error (all of them on success).
pub fn update<K: aya::Pod, V: aya::Pod>(
    map: &Map,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, std::io::Error)> {
    assert_eq!(keys.len(), values.len());
    let data = match map {
        Map::HashMap(d) | Map::Array(d) => d,
        _ => {
            return Err((
                0,
                std::io::Error::other("batch update wants a hash map or an array"),
            ));
        }
    };
    let fd = data.fd().as_fd().as_raw_fd();
    let mut done = 0usize;
    // The kernel caps one call by its own limits; chunks keep each call bounded.
    for (kc, vc) in keys.chunks(65536).zip(values.chunks(65536)) {
        let mut attr = BatchAttr {
            keys: kc.as_ptr() as u64,
            values: vc.as_ptr() as u64,
            count: kc.len() as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at live key/value arrays of `count` Pod elements each, sized as
        // the map's key and value (the caller's types are the map's ABI types).
        if let Err(e) = unsafe { batch_call(BPF_MAP_UPDATE_BATCH, &mut attr) } {
            return Err((done + attr.count as usize, e));
        }
        done += kc.len();
    }
    Ok(())
}

/// Every entry of a hash map or an array (keys `u32` indexes, every index present), in the
/// kernel's order, a few thousand per syscall. Not atomic across calls: entries written
/// meanwhile may or may not be seen, as with iteration.
pub fn lookup_all<K: aya::Pod, V: aya::Pod>(map: &Map) -> std::io::Result<Vec<(K, V)>> {
    let data = match map {
        Map::HashMap(d) | Map::Array(d) => d,
        _ => {
            return Err(std::io::Error::other(
                "batch lookup wants a hash map or an array",
            ));
        }
    };
    let fd = data.fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
    let mut chunk = LOOKUP_CHUNK;
    // The position between calls: a bucket number (hash) or the next key (array), both at
    // most 4 bytes here (`u32` array keys); 8 give room.
    let (mut pos_in, mut pos_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut keys: Vec<K> = Vec::with_capacity(chunk);
        let mut vals: Vec<V> = Vec::with_capacity(chunk);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw mut pos_in as u64 },
            out_batch: &raw mut pos_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: u32::try_from(chunk).expect("chunk fits u32"),
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: keys/vals have room for `count` elements of the map's key and value types
        // (the caller's types are the map's ABI types); the batch positions are live u64s.
        let err = unsafe { batch_call(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        let got = attr.count as usize;
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            // A hash bucket with more entries than `count`: nothing was copied; ask for more.
            Some(libc::ENOSPC) if got == 0 && chunk < 1 << 20 => {
                chunk *= 4;
                continue;
            }
            None | Some(libc::ENOENT) => {}
            Some(_) => return Err(err.expect("an error")),
        }
        assert!(
            got <= chunk,
            "the kernel reported more entries than asked for"
        );
        // SAFETY: the kernel wrote `got` keys and values (Pod: any bytes are valid).
        unsafe {
            keys.set_len(got);
            vals.set_len(got);
        }
        out.extend(keys.into_iter().zip(vals));
        if err.is_some() {
            // ENOENT: that was the last of them.
            return Ok(out);
        }
        pos_in = pos_out;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::maps::{Array, HashMap, MapData};

    /// A standalone map of type `T` as an untyped `Map`, through a bpffs pin removed at once
    /// (aya keeps a typed map's fd to itself). Needs root (CAP_BPF).
    fn untyped(pin: impl FnOnce(&std::path::Path)) -> Map {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        crate::dataplane::ensure_bpffs().unwrap();
        let path = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/shaper-ut-batch-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        pin(&path);
        let data = MapData::from_pin(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        Map::from_map_data(data).unwrap()
    }

    /// Batch lookup returns what aya's per-entry iteration returns: a hash map of 20,000
    /// entries (more than two calls' worth), an empty one, and an array.
    #[test]
    fn lookup_all_reads_every_entry() {
        let n = 20_000u32;
        let mut map = untyped(|p| {
            HashMap::<MapData, u32, u64>::create(n, 0)
                .expect("create (needs root)")
                .pin(p)
                .unwrap();
        });
        {
            let keys: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect();
            let vals: Vec<u64> = keys.iter().map(|k| u64::from(*k) << 8).collect();
            update(&map, &keys, &vals).unwrap();
        }
        let mut got: Vec<(u32, u64)> = lookup_all(&map).unwrap();
        got.sort_unstable();
        let mut want: Vec<(u32, u64)> = HashMap::<_, u32, u64>::try_from(&mut map)
            .unwrap()
            .iter()
            .map(Result::unwrap)
            .collect();
        want.sort_unstable();
        assert_eq!(got.len(), n as usize);
        assert_eq!(got, want);
        assert!(got.iter().all(|(k, v)| *v == u64::from(*k) << 8));

        let empty = untyped(|p| {
            HashMap::<MapData, u32, u64>::create(16, 0)
                .unwrap()
                .pin(p)
                .unwrap();
        });
        assert!(lookup_all::<u32, u64>(&empty).unwrap().is_empty());

        let mut arr = untyped(|p| {
            Array::<MapData, u64>::create(10_000, 0)
                .unwrap()
                .pin(p)
                .unwrap();
        });
        {
            let mut a: Array<_, u64> = Array::try_from(&mut arr).unwrap();
            a.set(0, 5, 0).unwrap();
            a.set(9_999, 7, 0).unwrap();
        }
        let got: Vec<(u32, u64)> = lookup_all(&arr).unwrap();
        assert_eq!(got.len(), 10_000);
        assert!(got.iter().enumerate().all(|(i, (k, _))| *k as usize == i));
        assert_eq!((got[0].1, got[9_999].1, got[5].1), (5, 7, 0));
    }
}
