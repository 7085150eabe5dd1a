//! `dnet network disconnect NET CONTAINER`.

use std::process::ExitCode;

use crate::api::{
    DisconnectRequest,
    client::{Client, segment},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Network name or id.
    network: String,
    /// Container name or id.
    container: String,
}

pub async fn run(args: &Args, client: &Client) -> anyhow::Result<ExitCode> {
    let req = DisconnectRequest {
        container: args.container.clone(),
    };
    client
        .post_empty(
            &format!("/v1/networks/{}/disconnect", segment(&args.network)),
            &req,
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}
