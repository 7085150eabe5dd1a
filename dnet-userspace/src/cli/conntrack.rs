//! `dnet conntrack ls | flush`: the datapath's NAT flows.

use std::process::ExitCode;

use super::{Format, print_json, table::Table};
use crate::api::{FlowView, client::Client};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the flows: protocol, original and translated tuples, state, age
    /// and expiry.
    #[command(alias = "list")]
    Ls,
    /// Empty the table (flows under way start over, or break).
    Flush,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Flushed {
    entries: usize,
}

pub async fn run(cmd: &Command, client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Ls => {
            let flows: Vec<FlowView> = client.get("/v1/conntrack").await?;
            if format == Format::Json {
                print_json(&flows)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(&[
                "PROTO",
                "KIND",
                "ORIGINAL",
                "TRANSLATED",
                "STATE",
                "AGE",
                "EXPIRES IN",
            ]);
            for f in &flows {
                t.row(vec![
                    f.proto.clone(),
                    f.kind.clone(),
                    format!("{} -> {}", f.original.src, f.original.dst),
                    format!("{} -> {}", f.translated.src, f.translated.dst),
                    serde_json::to_value(f.state)?
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    format!("{}s", f.age_secs),
                    format!("{}s", f.expires_in_secs),
                ]);
            }
            t.print();
        }
        Command::Flush => {
            let r: Flushed = client.delete_json("/v1/conntrack").await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Table => println!("{} entries removed", r.entries),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
