//! `BPF_MAP_UPDATE_BATCH` (kernel 5.6, commit aa2e93b8e58e), which aya 0.14 does not wrap: one
//! syscall writes thousands of hash entries, where one `BPF_MAP_UPDATE_ELEM` each costs
//! ~1.7 µs. Used for large subscriber loads.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::Map;

/// `enum bpf_cmd` value of `BPF_MAP_UPDATE_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

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
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc != 0 {
            return Err((done + attr.count as usize, std::io::Error::last_os_error()));
        }
        done += kc.len();
    }
    Ok(())
}
