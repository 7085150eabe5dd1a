//! `dnet exec NAME -- CMD`: runs a command in a container's namespace.

use std::process::ExitCode;

use crate::api::{
    ContainerView,
    client::{Client, segment},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container name or id.
    container: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: &Args, client: &Client) -> anyhow::Result<ExitCode> {
    let c: ContainerView = client
        .get(&format!("/v1/containers/{}", segment(&args.container)))
        .await?;
    super::run::run_in(&c, &args.command).await
}
