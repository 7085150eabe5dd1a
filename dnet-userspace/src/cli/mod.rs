//! The `dnet` command line: one file per command. Every command but
//! `daemon` talks to the daemon over its API socket.

mod cni;
mod conntrack;
mod daemon;
mod exec;
mod info;
mod network;
mod ps;
mod rm;
mod run;
mod stats;
mod table;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::client::{Client, ClientError};

/// dnet: Docker's network model with an eBPF datapath instead of docker0
/// and iptables.
#[derive(Debug, Parser)]
#[command(name = "dnet", version, about)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(
        long,
        global = true,
        env = "DNET_SOCKET",
        default_value = "/run/dnet/dnet.sock"
    )]
    pub socket: PathBuf,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (in the foreground).
    Daemon(daemon::Args),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::Command),
    /// Run a command in a new container (a network namespace, no image).
    Run(run::Args),
    /// List containers.
    Ps(ps::Args),
    /// Run a command inside a running container.
    Exec(exec::Args),
    /// Remove containers.
    Rm(rm::Args),
    /// Show the daemon, its uplink, programs and maps.
    Info,
    /// Show per-endpoint packets, bytes, translated packets and drops by reason.
    Stats,
    /// The datapath's connection tracking (NAT) table.
    #[command(subcommand)]
    Conntrack(conntrack::Command),
    /// Use dnet from CNI runtimes (podman, containerd, Kubernetes nodes).
    #[command(subcommand)]
    Cni(cni::Command),
}

/// Exit code when dnet itself fails (as `docker run`'s 125).
pub const EXIT_DNET_FAILED: u8 = 125;

pub fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as for other command-line tools.
    // SAFETY: resetting a signal disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Command::Daemon(args) = &cli.command {
        return daemon::run(args, &cli.socket);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_DNET_FAILED);
        }
    };
    let client = Client::new(&cli.socket);
    let r = rt.block_on(async {
        match &cli.command {
            Command::Daemon(_) => unreachable!("handled above"),
            Command::Network(cmd) => network::run(cmd, &client, cli.format).await,
            Command::Run(args) => run::run(args, &client).await,
            Command::Ps(args) => ps::run(args, &client, cli.format).await,
            Command::Exec(args) => exec::run(args, &client).await,
            Command::Rm(args) => rm::run(args, &client).await,
            Command::Info => info::run(&client, cli.format).await,
            Command::Stats => stats::run(&client, cli.format).await,
            Command::Conntrack(cmd) => conntrack::run(cmd, &client, cli.format).await,
            Command::Cni(cmd) => cni::run(cmd, &client, &cli.socket).await,
        }
    });
    match r {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Api { message, .. }) => eprintln!("Error: {message}"),
                _ => eprintln!("Error: {}", describe(&e)),
            }
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once (many errors
/// already include their source's text).
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The first 12 hex digits of an id, as Docker shows them.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
