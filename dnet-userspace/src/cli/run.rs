//! `dnet run`: a container without an image. The daemon makes the namespace
//! and its endpoint; the command runs in it, in the foreground (then the
//! container is removed) or detached under its name.

use std::{os::unix::process::CommandExt as _, process::ExitCode};

use anyhow::Context as _;

use super::EXIT_DNET_FAILED;
use crate::{
    api::{
        ContainerCreate, ContainerView,
        client::{Client, segment},
    },
    mntns,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container name (default: generated).
    #[arg(long)]
    name: Option<String>,
    /// Network to attach to.
    #[arg(long, default_value = "bridge")]
    network: String,
    /// A fixed IPv4 address in the network's subnet.
    #[arg(long)]
    ip: Option<String>,
    /// A fixed IPv6 address in the network's IPv6 subnet (dual-stack).
    #[arg(long)]
    ip6: Option<String>,
    /// Publish ports: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp], ranges allowed.
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// An upstream resolver of its own (repeatable): on a user-defined
    /// network the network's resolver forwards to it, elsewhere it is the
    /// nameserver of its resolv.conf.
    #[arg(long)]
    dns: Vec<String>,
    /// Its host name (default: its short id).
    #[arg(long)]
    hostname: Option<String>,
    /// Another name of the container in its network (repeatable).
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// Run in the background; print the container id.
    #[arg(short = 'd', long)]
    detach: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: &Args, client: &Client) -> anyhow::Result<ExitCode> {
    let req = ContainerCreate {
        name: args.name.clone(),
        network: Some(args.network.clone()),
        ip: args.ip.clone(),
        ip6: args.ip6.clone(),
        publish: args.publish.clone(),
        command: args.command.clone(),
        detach: args.detach,
        owner_pid: (!args.detach).then(std::process::id),
        aliases: args.network_alias.clone(),
        dns: args.dns.clone(),
        hostname: args.hostname.clone(),
    };
    let c: ContainerView = match client.post("/v1/containers", &req).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return Ok(ExitCode::from(EXIT_DNET_FAILED));
        }
    };
    if args.detach {
        println!("{}", c.id);
        return Ok(ExitCode::SUCCESS);
    }
    let code = run_in(&c, &args.command).await;
    if let Err(e) = client
        .delete(&format!("/v1/containers/{}?force=true", segment(&c.id)))
        .await
    {
        eprintln!("Warning: removing container {}: {e}", c.name);
    }
    code
}

/// Runs `command` inside container `c`'s namespaces (network, and its own
/// mount and UTS ones when it has them), passing SIGINT and SIGTERM on;
/// returns its exit code (128 + signal when killed, 127 when it cannot be
/// started).
pub async fn run_in(c: &ContainerView, command: &[String]) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};

    let (program, args) = command.split_first().context("no command")?;
    let ns = match (&c.mntns_path, &c.utsns_path) {
        (Some(mnt), Some(uts)) => Some(mntns::NsPaths {
            mnt: mnt.clone(),
            uts: uts.clone(),
        }),
        _ => None,
    };
    let entry = mntns::Entry::open(&c.netns_path, ns.as_ref())?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: between fork and exec the closure makes plain syscalls (setns,
    // chdir) on fds and strings made before the fork; it allocates nothing
    // and takes no lock.
    unsafe {
        cmd.pre_exec(move || entry.enter());
    }
    let mut child = match tokio::process::Command::from(cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: cannot run {program:?}: {e}");
            return Ok(ExitCode::from(127));
        }
    };
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            _ = int.recv() => forward(&child, nix::sys::signal::Signal::SIGINT),
            _ = term.recv() => forward(&child, nix::sys::signal::Signal::SIGTERM),
        }
    };
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code as u8))
}

fn forward(child: &tokio::process::Child, sig: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}
