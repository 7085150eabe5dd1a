//! Real Docker (Debian's docker.io) inside a sandbox's host namespace, for
//! the scenario tests and the benchmark.
//!
//! dockerd is entered with `nsenter --net` (never `ip netns exec`, which
//! would hide bpffs and the cgroup mounts) and runs with its own data root,
//! exec root, pid file, socket, config file and cgroup parent, so its links
//! and iptables rules live in that namespace only. Images come from a
//! `docker import`ed busybox-static rootfs (no registry is reachable).
//! `Drop` removes the containers, stops the daemon and everything it
//! started, and the paths outside its folders it made.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{dnet_bin, pids_in_netns};

/// Paths outside its folders that dockerd (or its containerd) creates.
const STRAY_PATHS: &[&str] = &["/run/docker", "/run/containerd", "/etc/docker/key.json"];

/// One dockerd at a time in a process: each removes the machine paths it
/// made (`/run/docker`...) when it stops, which another would still use.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The `docker` client: Debian's, else the first on `PATH`.
pub fn docker_bin() -> Option<String> {
    if Path::new("/usr/bin/docker").is_file() {
        return Some("/usr/bin/docker".to_owned());
    }
    which("docker")
}

/// A command's path on `PATH`.
pub fn which(cmd: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}

/// Makes a busybox rootfs tarball in `dir` from Debian's busybox-static.
pub fn busybox_tar(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox-static is not installed")?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    // Not `busybox` itself: a link onto itself would loop.
    for applet in ["sh", "sleep", "ip", "cat", "ping", "nc", "ifconfig", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let tar = dir.join("rootfs.tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .context("tar")?;
    if !o.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(tar)
}

pub struct Dockerd {
    child: Option<Child>,
    /// The client socket.
    pub sock: PathBuf,
    /// Its folder (data, exec root, log), inside the sandbox's.
    pub dir: PathBuf,
    netns: PathBuf,
    cgroup: String,
    docker: String,
    made: Vec<PathBuf>,
    /// `docker version`'s server version.
    pub version: String,
    /// `nsenter`'s arguments: the namespace, dockerd and its flags.
    argv: Vec<String>,
    _turn: MutexGuard<'static, ()>,
}

/// This process's turn to run a dockerd, taken before anything makes the
/// machine paths dockerd would make (a plugin socket under
/// `/run/docker/plugins`): those that are missing now go when it stops.
pub struct Turn {
    made: Vec<PathBuf>,
    guard: MutexGuard<'static, ()>,
}

impl Turn {
    pub fn take() -> Turn {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let made = STRAY_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        Turn { made, guard }
    }

    /// Starts dockerd in the namespace at `netns`, its files under `dir`,
    /// its containers under the cgroup `/<name>-docker`, with `extra`
    /// flags; waits until it answers.
    pub fn start(
        self,
        netns: &Path,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<Dockerd> {
        Dockerd::start_in_turn(self, netns, dir, name, extra)
    }
}

impl Dockerd {
    /// [`Turn::start`] with a turn taken now.
    pub fn start(netns: &Path, dir: &Path, name: &str, extra: &[&str]) -> anyhow::Result<Dockerd> {
        Turn::take().start(netns, dir, name, extra)
    }

    fn start_in_turn(
        turn: Turn,
        netns: &Path,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<Dockerd> {
        let dockerd = which("dockerd").context("dockerd is not installed")?;
        let docker = docker_bin().context("no docker client")?;
        let Turn { made, guard: turn } = turn;
        let dir = dir.join("docker");
        std::fs::create_dir_all(&dir)?;
        let mut d = Dockerd {
            child: None,
            sock: dir.join("docker.sock"),
            dir: dir.clone(),
            netns: netns.to_owned(),
            cgroup: format!("{name}-docker"),
            docker,
            made,
            version: String::new(),
            argv: Vec::new(),
            _turn: turn,
        };
        // A config file of its own: the machine's /etc/docker/daemon.json
        // stays out, and the trust key goes to our folder, not /etc/docker.
        let config = dir.join("daemon.json");
        std::fs::write(
            &config,
            serde_json::json!({"deprecated-key-path": dir.join("key.json")}).to_string(),
        )?;
        let mut argv: Vec<String> = vec![
            format!("--net={}", netns.display()),
            dockerd,
            "--data-root".into(),
            dir.join("data").display().to_string(),
            "--exec-root".into(),
            dir.join("exec").display().to_string(),
            "--pidfile".into(),
            dir.join("docker.pid").display().to_string(),
            "-H".into(),
            format!("unix://{}", d.sock.display()),
            "--storage-driver".into(),
            "vfs".into(),
            "--cgroup-parent".into(),
            format!("/{}", d.cgroup),
            "--config-file".into(),
            config.display().to_string(),
            "--log-level".into(),
            "warn".into(),
        ];
        argv.extend(extra.iter().map(|a| a.to_string()));
        d.argv = argv;
        d.spawn()?;
        Ok(d)
    }

    /// Starts the daemon (`nsenter` + dockerd) and waits until it answers.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))?;
        let child = Command::new("nsenter")
            .args(&self.argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start dockerd")?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(Child::try_wait) {
                bail!("dockerd exited ({s}): {}", self.log_tail(8));
            }
            if let Ok(v) = self.cmd(&["version", "--format", "{{.Server.Version}}"]) {
                self.version = v.trim().to_owned();
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("dockerd did not answer within 60 s: {}", self.log_tail(8));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills dockerd and the containerd it runs with SIGKILL (the
    /// containers' shims and processes stay, as after a crash of the
    /// daemon) and starts it again on the same folders.
    pub fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        let containerd = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
        if let Some(pid) = containerd {
            // SAFETY: signalling a process by pid (the containerd of the
            // daemon we started, from its pid file).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let gone = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists()
                && gone.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.spawn()
    }

    /// `docker import`s a busybox rootfs as `image`.
    pub fn import_busybox(&self, image: &str) -> anyhow::Result<()> {
        let tar = busybox_tar(&self.dir)?;
        self.cmd(&["import", tar.to_str().context("utf-8 path")?, image])?;
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `docker -H unix://SOCK ARGS`, bounded to 10 minutes.
    pub fn output(&self, args: &[&str]) -> Output {
        let mut c = Command::new(&self.docker);
        c.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = c.spawn().expect("run docker");
        let pid = child.id() as i32;
        let waiter = std::thread::spawn(move || child.wait_with_output());
        let start = Instant::now();
        while !waiter.is_finished() {
            if start.elapsed() > Duration::from_secs(600) {
                // SAFETY: signalling the process group of a child we started.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        waiter
            .join()
            .expect("docker waiter")
            .expect("docker's output")
    }

    /// `docker ARGS`, which must succeed: its stdout, or an error.
    pub fn cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = self.output(args);
        if !o.status.success() {
            bail!(
                "docker {} failed ({}): {}{}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// A running container's pid.
    pub fn pid_of(&self, name: &str) -> anyhow::Result<u32> {
        let out = self.cmd(&["inspect", "-f", "{{.State.Pid}}", name])?;
        out.trim().parse().context("no pid")
    }

    /// Every process left in our cgroups, then the cgroups themselves.
    fn remove_cgroups(&self) {
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        // cgroup v2 (one tree) or v1 (one per controller).
        let tops = std::iter::once(PathBuf::from("/sys/fs/cgroup")).chain(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect::<Vec<_>>(),
        );
        for top in tops.map(|t| t.join(&self.cgroup)).filter(|t| t.is_dir()) {
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            for d in &dirs {
                for f in ["cgroup.procs", "tasks"] {
                    for pid in std::fs::read_to_string(d.join(f))
                        .unwrap_or_default()
                        .lines()
                    {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            // SAFETY: signalling a process by pid.
                            unsafe {
                                libc::kill(pid, libc::SIGKILL);
                            }
                        }
                    }
                }
            }
            // Deepest first.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                for _ in 0..50 {
                    if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_owned());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut d) = self.child.take() {
            if matches!(d.try_wait(), Ok(None)) {
                if let Ok(ids) = self.cmd(&["ps", "-aq"]) {
                    let ids: Vec<&str> = ids.split_whitespace().collect();
                    if !ids.is_empty() {
                        let mut a = vec!["rm", "-f"];
                        a.extend(ids);
                        let _ = self.cmd(&a);
                    }
                }
                // SAFETY: signalling our own child by pid.
                unsafe {
                    libc::kill(d.id() as i32, libc::SIGTERM);
                }
                let start = Instant::now();
                while matches!(d.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(20)
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = d.kill();
            }
            let _ = d.wait();
        }
        // containerd and its shims live in the namespace (a dnet daemon
        // there stays: its sandbox stops it); what is left in the
        // containers' cgroups goes too.
        let dnet = std::fs::canonicalize(dnet_bin()).ok();
        for pid in pids_in_netns(&self.netns) {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if exe.is_some() && exe == dnet {
                continue;
            }
            // SAFETY: signalling a process by pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        self.remove_cgroups();
        // Not while another live process's sandbox serves a driver there
        // (another run of the suites on this machine).
        let others = std::fs::read_dir("/run/docker/plugins")
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(crate::owner_pid)
                        .is_some_and(|p| {
                            p != std::process::id() && Path::new(&format!("/proc/{p}")).exists()
                        })
                })
            })
            .unwrap_or(false);
        for p in &self.made {
            if others && p.starts_with("/run/docker") {
                continue;
            }
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
