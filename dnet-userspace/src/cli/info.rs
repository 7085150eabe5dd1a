//! `dnet info`.

use std::process::ExitCode;

use super::{Format, print_json, table::Table};
use crate::api::{Info, client::Client};

pub async fn run(client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    let i: Info = client.get("/v1/info").await?;
    if format == Format::Json {
        print_json(&i)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Version:     {}", i.version);
    println!("Daemon pid:  {}", i.pid);
    match (&i.uplink, i.uplink_addr) {
        (Some(u), Some(a)) => println!("Uplink:      {u} ({a})"),
        (Some(u), None) => println!("Uplink:      {u}"),
        _ => println!("Uplink:      none"),
    }
    println!("State:       {}", i.state_dir.display());
    println!("bpffs:       {}", i.bpffs.display());
    println!("Networks:    {}", i.networks);
    println!("Containers:  {}", i.containers);
    if i.pending_removals > 0 {
        println!(
            "Removals:    {} finishing in the background, {} attaches waiting for them",
            i.pending_removals, i.removal_waits
        );
    }
    println!("\nPrograms:");
    let mut t = Table::new(&["  NAME", "ID", "TAG", "ATTACHED AT"]);
    for p in &i.programs {
        t.row(vec![
            format!("  {}", p.name),
            p.id.to_string(),
            p.tag.clone(),
            p.attach.clone(),
        ]);
    }
    t.print();
    println!("\nMaps:");
    let mut t = Table::new(&["  NAME", "ID", "MAX ENTRIES", "PINNED AT"]);
    for m in &i.maps {
        t.row(vec![
            format!("  {}", m.name),
            m.id.to_string(),
            m.max_entries.to_string(),
            m.pinned
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}
