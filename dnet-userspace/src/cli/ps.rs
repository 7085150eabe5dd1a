//! `dnet ps`.

use std::process::ExitCode;

use super::{Format, print_json, short, table::Table};
use crate::api::{ContainerView, Status, client::Client};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only ids.
    #[arg(short = 'q', long)]
    quiet: bool,
}

pub async fn run(args: &Args, client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    let cs: Vec<ContainerView> = client.get("/v1/containers").await?;
    if format == Format::Json {
        print_json(&cs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.quiet {
        for c in &cs {
            println!("{}", short(&c.id));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "CONTAINER ID",
        "NAME",
        "STATUS",
        "NETWORKS",
        "PORTS",
        "COMMAND",
    ]);
    for c in &cs {
        let status = match (&c.status, c.exit_code) {
            (Status::Running, _) => "running".to_owned(),
            (Status::Exited, Some(code)) => format!("exited ({code})"),
            (Status::Exited, None) => "exited".to_owned(),
            (Status::Attached, _) => "attached".to_owned(),
        };
        let nets: Vec<String> = c
            .networks
            .iter()
            .map(|n| match (n.ip, n.ip6) {
                (Some(ip), Some(ip6)) => format!("{}:{ip}+{ip6}", n.network),
                (Some(ip), None) => format!("{}:{ip}", n.network),
                (None, _) => n.network.clone(),
            })
            .collect();
        let ports: Vec<String> = c.ports.iter().map(ToString::to_string).collect();
        t.row(vec![
            short(&c.id).to_owned(),
            c.name.clone(),
            status,
            nets.join(","),
            ports.join(","),
            c.command.join(" "),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}
