//! `dnet network rm NAME...`.

use std::process::ExitCode;

use crate::api::client::{Client, segment};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Network names or ids.
    #[arg(required = true)]
    networks: Vec<String>,
}

pub async fn run(args: &Args, client: &Client) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for n in &args.networks {
        match client.delete(&format!("/v1/networks/{}", segment(n))).await {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}
