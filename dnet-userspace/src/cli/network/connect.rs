//! `dnet network connect NET CONTAINER` or `dnet network connect NET --netns PATH`.

use std::process::ExitCode;

use crate::{
    api::{
        ConnectRequest, ContainerView,
        client::{Client, segment},
    },
    cli::{Format, print_json},
};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["container", "netns"])))]
pub struct Args {
    /// Network name or id.
    network: String,
    /// Container name or id.
    container: Option<String>,
    /// An existing network namespace to attach instead (for example
    /// another runtime's container: /proc/PID/ns/net).
    #[arg(long)]
    netns: Option<String>,
    /// Name for the container made from --netns.
    #[arg(long, requires = "netns")]
    name: Option<String>,
    /// A fixed IPv4 address in the network's subnet.
    #[arg(long)]
    ip: Option<String>,
    /// A fixed IPv6 address in the network's IPv6 subnet (dual-stack).
    #[arg(long)]
    ip6: Option<String>,
    /// An extra name of the container in this network (repeatable).
    #[arg(long = "alias", value_name = "NAME")]
    aliases: Vec<String>,
}

pub async fn run(args: &Args, client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    let req = ConnectRequest {
        container: args.container.clone(),
        netns: args.netns.clone(),
        name: args.name.clone(),
        ip: args.ip.clone(),
        ip6: args.ip6.clone(),
        aliases: args.aliases.clone(),
    };
    let c: ContainerView = client
        .post(
            &format!("/v1/networks/{}/connect", segment(&args.network)),
            &req,
        )
        .await?;
    match format {
        Format::Json => print_json(&c)?,
        Format::Table => println!("{}", c.name),
    }
    Ok(ExitCode::SUCCESS)
}
