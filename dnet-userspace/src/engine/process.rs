//! Container processes: starting a detached command inside a namespace,
//! telling whether a recorded process still lives, and killing what runs in
//! a namespace.

use std::{
    fs,
    os::{
        fd::AsFd as _,
        unix::{fs::OpenOptionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::Stdio,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::{
    error::{Error, Result},
    model::Process,
    netns,
};

/// Start time of a live (not zombie) process, in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state); start time is field 22.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

/// The recorded process is still the one running under its pid.
pub fn alive(p: &Process) -> bool {
    start_time(p.pid) == Some(p.start_time)
}

/// The environment a detached command starts with: nothing of the
/// daemon's own (its variables may hold secrets or steer the daemon).
const CLEAN_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
];

/// Where the cgroup v2 hierarchy is mounted, if it is.
fn cgroup2_root() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // "... mountpoint options - fstype source superopts"
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// This daemon's folder of container cgroups: `dnet/ns<inode>` under the
/// root of the cgroup v2 hierarchy, named after the daemon's network
/// namespace (one daemon per namespace: see the daemon's lock), outside the
/// daemon's own cgroup (a `systemctl restart` of the daemon's unit kills
/// what is in its cgroup, not the containers). Whoever removes a daemon's
/// namespace can find and remove its cgroups by that name.
pub fn instance_cgroup() -> Option<PathBuf> {
    let (_, ino) = netns::identity(Path::new("/proc/self/ns/net")).ok()?;
    Some(cgroup2_root()?.join("dnet").join(format!("ns{ino}")))
}

/// The cgroup of container `id`, in [`instance_cgroup`].
pub fn cgroup_path(id: &str) -> Option<PathBuf> {
    Some(instance_cgroup()?.join(id))
}

/// Makes the container's cgroup and opens its `cgroup.procs` for the child
/// to join. Without a cgroup v2 hierarchy the command stays in the daemon's
/// cgroup (logged).
fn open_cgroup(id: &str) -> Result<Option<fs::File>> {
    let Some(dir) = cgroup_path(id) else {
        tracing::warn!(
            id,
            "no cgroup v2 hierarchy: the command shares the daemon's cgroup"
        );
        return Ok(None);
    };
    fs::create_dir_all(&dir).map_err(Error::io(format!("create cgroup {}", dir.display())))?;
    let procs = dir.join("cgroup.procs");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(Error::io(format!("open {}", procs.display())))?;
    Ok(Some(f))
}

/// Kills what is left in the cgroup at `dir` and removes it once empty.
/// `cgroup.kill` (Linux 5.14) kills the whole group at once, forks
/// included; a killed process leaves its cgroup a moment later, so the
/// removal waits, asynchronously and bounded (1 s).
async fn remove_cgroup_dir(dir: &Path) -> bool {
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => {
                if fs::write(dir.join("cgroup.kill"), "1").is_err() {
                    // Before 5.14: one process at a time.
                    if let Ok(pids) = fs::read_to_string(dir.join("cgroup.procs")) {
                        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    tracing::warn!(cgroup = %dir.display(), "cannot remove a container's cgroup");
    false
}

/// Removes container `id`'s cgroup, killing what is left in it.
pub async fn remove_cgroup(id: &str) {
    if let Some(dir) = cgroup_path(id) {
        remove_cgroup_dir(&dir).await;
    }
}

/// Removes the cgroups of this daemon's folder that belong to no container
/// in `live` (a daemon killed between a container's end and its cleanup
/// leaves them), then the folder itself when nothing is left in it.
pub async fn collect_cgroups(live: &std::collections::HashSet<String>) {
    let Some(dir) = instance_cgroup() else { return };
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && !live.contains(&name) {
            tracing::info!(cgroup = %e.path().display(), "removing a cgroup dnet no longer uses");
            remove_cgroup_dir(&e.path()).await;
        }
    }
    let _ = fs::remove_dir(&dir);
}

/// Starts `command` of container `id` inside the namespace at `netns_path`,
/// in a session and a cgroup of its own, with a clean environment, output
/// appended to `log` (mode 0600). Returns the running child.
pub fn spawn(
    id: &str,
    netns_path: &Path,
    ns: Option<&crate::mntns::NsPaths>,
    command: &[String],
    log: &Path,
) -> Result<tokio::process::Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::Invalid("no command to run".into()))?;
    let entry = crate::mntns::Entry::open(netns_path, ns)?;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(Error::io(format!("open {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(Error::io(format!("open {}", log.display())))?;
    let cgroup = open_cgroup(id)?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(CLEAN_ENV.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: between fork and exec the closure only makes plain syscalls
    // on fds and strings made before the fork (write to cgroup.procs,
    // setns, chdir, setsid); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &cgroup {
                // "0" is the writing process itself.
                nix::unistd::write(procs.as_fd(), b"0")?;
            }
            entry.enter()?;
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot start {program:?}: {e}")));
    if child.is_err() {
        // Nothing joined it: an empty cgroup goes at once.
        if let Some(dir) = cgroup_path(id) {
            let _ = fs::remove_dir(dir);
        }
    }
    child
}

/// Sends SIGKILL to the recorded process if it is still the same one.
pub fn kill(p: &Process) {
    if alive(p) {
        let _ = nix::sys::signal::kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
    }
}

/// Kills every process whose network namespace is the one at `netns_path`.
pub fn kill_all_in(netns_path: &Path) {
    let Ok((dev, ino)) = netns::identity(netns_path) else {
        return;
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        if netns::identity(&e.path().join("ns/net")).ok() == Some((dev, ino)) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_tells_processes_apart_whatever_their_name() {
        let me = std::process::id();
        let t = start_time(me).expect("own stat");
        // A command whose name holds ") " and spaces, as /proc/PID/stat
        // shows it in parentheses: fields are read after the last ')'.
        let dir = std::env::temp_dir().join(format!("dnet-start-time-{me}"));
        fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("a) (b c");
        fs::copy("/bin/sleep", &odd).unwrap();
        let mut child = std::process::Command::new(&odd).arg("30").spawn().unwrap();
        let c = start_time(child.id()).expect("the child's stat");
        // Started after this test process, by the same clock (a misread
        // field would not be a tick count of this boot).
        let boot_ticks = {
            let up: f64 = fs::read_to_string("/proc/uptime")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            (up * hz) as u64 + 1
        };
        assert!(t <= c && c <= boot_ticks, "{t} <= {c} <= {boot_ticks}");
        let p = Process {
            pid: child.id(),
            start_time: c,
            command: vec![],
            exit_code: None,
            log: "/dev/null".into(),
        };
        assert!(alive(&p));
        // The same pid with another start time is another process.
        assert!(!alive(&Process {
            start_time: c + 1,
            ..p.clone()
        }));
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert!(!alive(&p), "a reaped process is not alive");
        assert_eq!(start_time(me), Some(t), "stable");
    }
}
