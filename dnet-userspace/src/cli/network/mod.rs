//! `dnet network ...`: one file per subcommand.

mod connect;
mod create;
mod disconnect;
mod inspect;
mod ls;
mod rm;

use std::process::ExitCode;

use super::Format;
use crate::api::client::Client;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a network.
    Create(create::Args),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show a network in detail (JSON).
    Inspect(inspect::Args),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(rm::Args),
    /// Connect a container (or another runtime's namespace) to a network.
    Connect(connect::Args),
    /// Disconnect a container from a network.
    Disconnect(disconnect::Args),
}

pub async fn run(cmd: &Command, client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Create(a) => create::run(a, client, format).await,
        Command::Ls => ls::run(client, format).await,
        Command::Inspect(a) => inspect::run(a, client).await,
        Command::Rm(a) => rm::run(a, client).await,
        Command::Connect(a) => connect::run(a, client, format).await,
        Command::Disconnect(a) => disconnect::run(a, client).await,
    }
}
