//! Making sure the daemon's pin folder is on a bpffs.

use std::{fs, io, path::Path};

use nix::{mount::MsFlags, sys::statfs::BPF_FS_MAGIC};

use super::DatapathError;

fn on_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Checks, changing nothing, that `dir` can hold pins: it is (or sits
/// below the first existing folder on its path that is) on a bpffs. The one
/// exception is the standard `/sys/fs/bpf`, which [`ensure_mounted`] mounts
/// when missing (as systemd does); nothing is mounted over another folder.
pub fn check(dir: &Path) -> Result<(), DatapathError> {
    let refuse = |why: String| DatapathError::Io {
        op: "pin in",
        path: dir.to_owned(),
        source: io::Error::other(why),
    };
    if !dir.is_absolute() {
        return Err(refuse("expected an absolute path".into()));
    }
    let std_root = Path::new("/sys/fs/bpf");
    let mut at = dir;
    while !at.exists() {
        at = at.parent().unwrap_or(Path::new("/"));
    }
    if on_bpffs(at) || (at == std_root && dir.starts_with(std_root)) {
        return Ok(());
    }
    Err(refuse(format!(
        "{} is not on a bpffs (mount one with `mount -t bpf bpf DIR`, or use a folder under /sys/fs/bpf)",
        at.display()
    )))
}

/// Creates `dir` on a bpffs. When it is under `/sys/fs/bpf` and that is not
/// mounted (a fresh machine), bpffs is mounted there, as systemd would;
/// elsewhere `dir` must already sit on a bpffs.
pub fn ensure_mounted(dir: &Path) -> Result<(), DatapathError> {
    let std_root = Path::new("/sys/fs/bpf");
    let mount_at = |at: &Path| -> Result<(), DatapathError> {
        nix::mount::mount(Some("bpf"), at, Some("bpf"), MsFlags::empty(), None::<&str>).map_err(
            |e| DatapathError::Io {
                op: "mount bpffs at",
                path: at.to_owned(),
                source: io::Error::from(e),
            },
        )
    };
    if dir.starts_with(std_root) && std_root.is_dir() && !on_bpffs(std_root) {
        mount_at(std_root)?;
    }
    fs::create_dir_all(dir).map_err(|source| DatapathError::Io {
        op: "create",
        path: dir.to_owned(),
        source,
    })?;
    if !on_bpffs(dir) {
        // Never mounted over an arbitrary folder (it would hide what is
        // there); the daemon checks this before it makes anything.
        return Err(DatapathError::Io {
            op: "pin in",
            path: dir.to_owned(),
            source: io::Error::other("not on a bpffs"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_go_on_a_bpffs_only() {
        assert!(check(Path::new("/tmp/dnet-not-bpffs/x")).is_err());
        assert!(check(Path::new("relative")).is_err());
        check(Path::new("/sys/fs/bpf/dnet-unit-test/x")).unwrap();
    }
}
