//! `dnet network inspect NAME...`: JSON, as `docker network inspect`.

use std::process::ExitCode;

use crate::{
    api::{
        NetworkView,
        client::{Client, segment},
    },
    cli::print_json,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Network names or ids.
    #[arg(required = true)]
    networks: Vec<String>,
}

pub async fn run(args: &Args, client: &Client) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    for n in &args.networks {
        let v: NetworkView = client.get(&format!("/v1/networks/{}", segment(n))).await?;
        out.push(v);
    }
    print_json(&out)?;
    Ok(ExitCode::SUCCESS)
}
