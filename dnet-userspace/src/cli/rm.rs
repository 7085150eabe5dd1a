//! `dnet rm [-f] NAME...`.

use std::process::ExitCode;

use crate::api::client::{Client, segment};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kill a running container's processes first.
    #[arg(short = 'f', long)]
    force: bool,
    /// Container names or ids.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(args: &Args, client: &Client) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for name in &args.containers {
        let path = format!("/v1/containers/{}?force={}", segment(name), args.force);
        match client.delete(&path).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}
