//! Namespaces, processes and commands for the benchmark, with guards that
//! remove what they made on `Drop` (also after a panic, and after Ctrl-C,
//! which only sets a flag that the run checks between measurements).

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

static STOP: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set a flag instead of killing us, so every guard
/// still runs its `Drop`. Load tools are in their own process groups, so
/// the terminal's SIGINT does not reach them either; they end by their
/// own time bound or when their guard kills them.
pub fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Fails once Ctrl-C was pressed; called between measurements.
pub fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// A unique name for this process: `dnb<pid>x<n><suffix>`.
pub fn unique(suffix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("dnb{}x{n}{suffix}", std::process::id())
}

/// A named network namespace (`ip netns add`), deleted on drop with every
/// process still in it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(suffix: &str) -> anyhow::Result<Netns> {
        let name = unique(suffix);
        ok(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        ok(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        dnet_sandbox::kill_in_netns(&self.path());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command to completion; fails with its output if it fails.
pub fn ok(cmd: &mut Command) -> anyhow::Result<()> {
    output(cmd).map(|_| ())
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `nsenter --net=NETNS [taskset -c CPU] PROGRAM ARGS...`
pub fn in_netns(netns: &Path, cpu: Option<usize>, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display()));
    if let Some(cpu) = cpu {
        c.args(["taskset", "-c", &cpu.to_string()]);
    }
    c.arg(program).args(args);
    c
}

/// Runs a load tool and waits at most `limit` for it (each tool also has its
/// own duration); kills it past that.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> anyhow::Result<Output> {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let pid = child.id() as i32;
    let start = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if start.elapsed() > limit {
            // SAFETY: signalling the process group of a child we started.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = waiter.join();
            bail!("{what} ran past {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("waiting for {what}"))??;
    Ok(out)
}

/// Background processes (servers), each in its own process group, killed
/// on drop.
#[derive(Default)]
pub struct Procs(Vec<Child>);

impl Procs {
    pub fn spawn(&mut self, mut cmd: Command) -> anyhow::Result<()> {
        let c = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        self.0.push(c);
        Ok(())
    }

    pub fn kill_all(&mut self) {
        for mut c in self.0.drain(..) {
            // SAFETY: signalling the process group of a child we started.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Sets sysctls inside a namespace (`sysctl -w` through nsenter).
pub fn sysctl_in(netns: &Path, settings: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["-q", "-w"];
    args.extend(settings);
    ok(&mut in_netns(netns, None, "sysctl", &args))
}

/// Settings of a namespace whose processes open many short connections:
/// a wide ephemeral range and reuse of TIME_WAIT ports after a second.
pub fn client_sysctls(netns: &Path) -> anyhow::Result<()> {
    sysctl_in(
        netns,
        &[
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
        ],
    )
}

/// Empties the conntrack table of a namespace (where there is one), so
/// every measurement starts from the same table.
pub fn conntrack_flush(netns: &Path) {
    let _ = in_netns(netns, None, "conntrack", &["-F"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits until `f` is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
