//! `cargo xtask run`: the daemon in a sandbox, in the foreground, with a few
//! commands to try from another terminal. Ctrl-C removes everything.
//! `--host` runs it on this machine's real network instead (explicit opt-in).

use std::{
    io::Write as _,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP};

use crate::{build, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Run `dnet daemon` on this machine's own network (changes it!).
    #[arg(long)]
    host: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Writes to stderr, ignoring failure: with `cargo xtask run | tee log`,
/// Ctrl-C ends `tee` too, and a write that fails must not stop the
/// cleanup (`eprintln!` would panic on the closed pipe).
fn say(msg: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().write_fmt(msg);
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    setup::run(root)?;
    let bin = build(root, false)?;
    let dnet = bin.join("dnet");
    if args.host {
        say(format_args!(
            "xtask: running dnet daemon on this machine's own network (Ctrl-C stops it)\n"
        ));
        let err = std::os::unix::process::CommandExt::exec(Command::new(&dnet).arg("daemon"));
        return Err(err.into());
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    // SIGHUP: the terminal went away.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    // SAFETY: plain setenv before any thread of ours reads the environment.
    unsafe {
        std::env::set_var("DNET_BIN", &dnet);
        std::env::set_var("CONNTEST_BIN", bin.join("conntest"));
    }
    crate::reap_stale();
    let sb = Sandbox::new();
    let ct = bin.join("conntest");
    let (d, c) = (dnet.display(), ct.display());
    let _ = writeln!(
        std::io::stdout(),
        "\ndnet is running in a sandbox: host namespace {h} (uplink eth0, {UPLINK_IP}), world namespace {w} ({WORLD_IP}).\n\
         Daemon log: {log}\n\
         In another terminal:\n\n\
         export DNET_SOCKET={sock}\n\
         {d} network ls\n\
         {d} run -d --name web -- {c} serve tcp 80\n\
         {d} run -- {c} tcp 172.17.0.2:80\n\
         {d} run -- ip addr show eth0\n\
         {d} ps\n\
         {d} stats\n\
         nsenter --net=/run/netns/{h} ping -c1 172.17.0.2\n\n\
         Ctrl-C here removes the sandbox and everything in it.",
        h = sb.host_ns,
        w = sb.world_ns,
        log = sb.log_path().display(),
        sock = sb.socket().display(),
    );
    let mut shown = 0;
    while !STOP.load(Ordering::SeqCst) {
        // Follow the daemon's log here.
        let log = std::fs::read_to_string(sb.log_path()).unwrap_or_default();
        if log.len() > shown {
            say(format_args!("{}", &log[shown..]));
            shown = log.len();
        }
        if sb
            .daemon_pid()
            .is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        {
            say(format_args!("xtask: the daemon exited\n"));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Cleanup first, then a word (which may go nowhere).
    drop(sb);
    say(format_args!("\nxtask: the sandbox is removed\n"));
    Ok(())
}
