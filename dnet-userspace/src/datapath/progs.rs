//! The maps a loaded program uses, by the program's id (aya reads a
//! program's info only from a program it holds or a pin).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`, up to its map ids (the kernel takes
/// a shorter struct and fills what fits).
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    ty: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a `#[repr(C)]` prefix of `union bpf_attr` for
    // `cmd`, alive for the call; any pointer in it is to a buffer the
    // caller keeps alive and sized as it says.
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

/// The ids of the maps program `id` uses.
pub(super) fn map_ids(id: u32) -> io::Result<Vec<u32>> {
    let mut a = GetFdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut a)?;
    // SAFETY: the kernel returned a new descriptor, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut ids = vec![0u32; 64];
    loop {
        let mut info = ProgInfoHead {
            nr_map_ids: ids.len() as u32,
            map_ids: ids.as_mut_ptr() as u64,
            ..Default::default()
        };
        let mut a = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: size_of::<ProgInfoHead>() as u32,
            info: &mut info as *mut ProgInfoHead as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
        let n = info.nr_map_ids as usize;
        if n <= ids.len() {
            ids.truncate(n);
            return Ok(ids);
        }
        ids = vec![0; n];
    }
}
