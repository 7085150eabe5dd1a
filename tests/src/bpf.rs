//! Read-only looks at BPF objects through the `bpf(2)` system call, for the
//! tests and the leak check: the contents of a pinned map, the program a
//! pinned link runs, and the programs attached to a cgroup. Nothing here
//! creates, changes or attaches anything: maps are opened read-only.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_F_RDONLY: u32 = 1 << 3;

/// Map types whose values hold one slot per possible CPU.
const PERCPU_TYPES: [u32; 3] = [5, 6, 10]; // PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
/// Map types whose every key exists (a zero value means "unused").
const ARRAY_TYPES: [u32; 2] = [2, 6]; // ARRAY, PERCPU_ARRAY

/// `bpf(cmd, attr)`; the return value, or the error.
///
/// # Safety
/// `attr` must be laid out as the kernel's `bpf_attr` for `cmd` (a prefix
/// of it, zero-filled beyond what is set), and every pointer in it must be
/// valid for what `cmd` does with it for the length of the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: the caller's contract; `attr` lives across the call and the
    // size passed is its own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens the object pinned at `path`, with `file_flags` (`BPF_F_RDONLY`
/// for a map; a link takes none).
fn obj_get(path: &Path, file_flags: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: the layout of BPF_OBJ_GET's attr; `c` outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr) }?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The first bytes of the object's `bpf_*_info` (map, link or program).
fn info(fd: &OwnedFd) -> io::Result<[u8; 256]> {
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut buf = [0u8; 256];
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    // SAFETY: the layout of BPF_OBJ_GET_INFO_BY_FD's attr; the kernel
    // writes at most `info_len` bytes into `buf`, which outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(buf)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Number of possible CPUs (the per-CPU value count).
fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let bad = |_| io::Error::new(io::ErrorKind::InvalidData, format!("cpus {s:?}"));
        let (a, b): (usize, usize) = (a.parse().map_err(bad)?, b.parse().map_err(bad)?);
        n += b - a + 1;
    }
    Ok(n)
}

/// Every entry of the map pinned at `path`, as (key, value) bytes, sorted
/// by key. An array's all-zero values are left out (unused slots).
pub fn map_entries(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    #[repr(C)]
    struct Elem {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value_or_next: u64,
        flags: u64,
    }
    let fd = obj_get(path, BPF_F_RDONLY)?;
    let i = info(&fd)?;
    // struct bpf_map_info { type, id, key_size, value_size, ... }
    let (kind, key_size, value_size) = (u32_at(&i, 0), u32_at(&i, 8), u32_at(&i, 12));
    let value_len = if PERCPU_TYPES.contains(&kind) {
        (value_size as usize).div_ceil(8) * 8 * possible_cpus()?
    } else {
        value_size as usize
    };
    let mut out = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    loop {
        let mut next = vec![0u8; key_size as usize];
        let mut attr = Elem {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.as_ref().map_or(0, |k| k.as_ptr() as u64),
            value_or_next: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the layout of BPF_MAP_GET_NEXT_KEY's attr; `key` (if any)
        // and `next` hold `key_size` bytes and outlive the call.
        match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        let mut value = vec![0u8; value_len];
        let mut attr = Elem {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            key: next.as_ptr() as u64,
            value_or_next: value.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the layout of BPF_MAP_LOOKUP_ELEM's attr; `next` holds
        // `key_size` bytes and `value` the value's size, both outlive the call.
        match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            // Gone between the two calls (an LRU eviction, a delete).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
            Ok(_) => {
                if !(ARRAY_TYPES.contains(&kind) && value.iter().all(|b| *b == 0)) {
                    out.push((next.clone(), value));
                }
            }
        }
        key = Some(next);
    }
    out.sort();
    Ok(out)
}

/// The map pinned at `path`, one `key => value` line (hex) per entry.
pub fn map_dump(path: &Path) -> io::Result<String> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Ok(map_entries(path)?
        .iter()
        .map(|(k, v)| format!("{} => {}", hex(k), hex(v)))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The id of the program that the link pinned at `path` runs; an error
/// for any other pinned object (a map, a program).
pub fn link_prog_id(path: &Path) -> io::Result<u32> {
    // Nothing is done through the descriptor but reading its fdinfo.
    let fd = obj_get(path, 0)?;
    // The kernel names what the descriptor holds in its fdinfo: a link
    // has `link_type:` and `prog_id:` lines.
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
    };
    match (field("link_type:"), field("prog_id:")) {
        (Some(_), Some(id)) => id
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("prog_id {id:?}"))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a link", path.display()),
        )),
    }
}

/// Cgroup attach types (`enum bpf_attach_type`) that a program can hold on
/// a cgroup, with their names, for [`cgroup_programs`].
pub const CGROUP_ATTACH_TYPES: &[(u32, &str)] = &[
    (0, "ingress"),
    (1, "egress"),
    (2, "sock_create"),
    (3, "sock_ops"),
    (6, "device"),
    (8, "bind4"),
    (9, "bind6"),
    (10, "connect4"),
    (11, "connect6"),
    (12, "post_bind4"),
    (13, "post_bind6"),
    (14, "sendmsg4"),
    (15, "sendmsg6"),
    (18, "sysctl"),
    (19, "recvmsg4"),
    (20, "recvmsg6"),
    (21, "getsockopt"),
    (22, "setsockopt"),
    (29, "getpeername4"),
    (30, "getpeername6"),
    (31, "getsockname4"),
    (32, "getsockname6"),
    (34, "sock_release"),
];

/// The programs attached directly to the cgroup at `dir` (not inherited),
/// as (attach type name, program id), sorted.
pub fn cgroup_programs(dir: &Path) -> io::Result<Vec<(&'static str, u32)>> {
    #[repr(C)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let cg = std::fs::File::open(dir)?;
    let mut out = Vec::new();
    for &(kind, name) in CGROUP_ATTACH_TYPES {
        let mut ids = vec![0u32; 256];
        let mut attr = Query {
            target_fd: cg.as_raw_fd() as u32,
            attach_type: kind,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            _pad: 0,
            prog_attach_flags: 0,
            link_ids: 0,
            link_attach_flags: 0,
            revision: 0,
        };
        // SAFETY: the layout of BPF_PROG_QUERY's attr; the kernel writes at
        // most `prog_cnt` ids into `ids`, which outlives the call.
        unsafe { bpf(BPF_PROG_QUERY, &mut attr) }.map_err(|e| {
            io::Error::new(e.kind(), format!("query {name} on {}: {e}", dir.display()))
        })?;
        let n = (attr.prog_cnt as usize).min(ids.len());
        out.extend(ids[..n].iter().map(|id| (name, *id)));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::possible_cpus;

    #[test]
    fn possible_cpus_reads_the_kernels_list() {
        let n = possible_cpus().unwrap();
        assert!(n >= std::thread::available_parallelism().unwrap().get());
    }
}
