//! Reading a whole hash map in a few system calls (`BPF_MAP_LOOKUP_BATCH`,
//! Linux 5.6+), which aya 0.14 does not offer: a walk with
//! `get_next_key` + `lookup` costs two system calls per entry, and the
//! conntrack table is read whole on every container removal.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

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

/// Every entry of the hash map behind `fd`, `chunk` at a time.
///
/// # Safety
///
/// `K` and `V` must be the map's key and value types: plain data (every
/// bit pattern valid) of exactly the map's key and value sizes, or the
/// kernel writes past the buffers or leaves invalid values in them.
pub unsafe fn lookup_all<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    chunk: usize,
) -> io::Result<Vec<(K, V)>> {
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk];
    let mut out = Vec::new();
    // Hash maps use a bucket number as the batch cursor.
    let mut cursor: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &cursor as *const u32 as u64
            },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` points at buffers of `chunk` keys and values of
        // the map's sizes, and at two u32 cursors, all alive for the call;
        // the kernel writes at most `count` entries and the cursor.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let n = (attr.count as usize).min(chunk);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        if r < 0 {
            let e = io::Error::last_os_error();
            // ENOENT: the walk is over (the last batch may hold entries).
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(out);
            }
            return Err(e);
        }
        cursor = next;
        first = false;
    }
}
