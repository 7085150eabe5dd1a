//! The NAT side of the engine: its configuration in the datapath, the
//! uplink program and socket hooks, the ports it reserves from the host,
//! and the conntrack table's upkeep.

use std::{path::PathBuf, time::Duration};

use dnet_common::{Config as DpConfig, addr::ipv4_be};

use super::{Inner, conntrack};
use crate::{error::Result, netns};

/// NAT and conntrack settings (`dnet daemon` flags).
#[derive(Clone, Debug)]
pub struct NatOptions {
    /// Source ports for translated flows, inclusive; reserved from the
    /// host's own ephemeral ports.
    pub ports: (u16, u16),
    /// Size of the conntrack map (entries; a flow takes two).
    pub ct_entries: u32,
    pub timeouts: conntrack::Timeouts,
    /// How often expired flows are collected.
    pub gc_interval: Duration,
}

impl Default for NatOptions {
    fn default() -> Self {
        NatOptions {
            ports: (49152, 60999),
            ct_entries: dnet_common::maps::CT_ENTRIES,
            timeouts: conntrack::Timeouts::default(),
            gc_interval: Duration::from_secs(5),
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted, if it is.
fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // "... mountpoint options - fstype source superopts"
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// Adds `lo-hi` to the namespace's reserved ports, keeping what is there.
fn reserve_ports(lo: u16, hi: u16) -> Result<()> {
    let key = "net/ipv4/ip_local_reserved_ports";
    let range = format!("{lo}-{hi}");
    let now = netns::sysctl_read(key)?;
    if now.split(',').any(|r| r.trim() == range) {
        return Ok(());
    }
    let new = if now.trim().is_empty() {
        range
    } else {
        format!("{},{range}", now.trim())
    };
    Ok(netns::sysctl(key, &new)?)
}

impl Inner {
    /// Writes the NAT configuration and attaches the uplink program and the
    /// socket hooks (each only if not already in place).
    pub(super) async fn setup_nat(&mut self) -> Result<()> {
        let opts = self.cfg.nat.clone();
        let cookie = netns::cookie()?;
        let mut cfg = DpConfig {
            nat_port_min: opts.ports.0,
            nat_port_max: opts.ports.1,
            netns_cookie: cookie,
            ..Default::default()
        };
        if let Some(u) = self.ctx.uplink.clone() {
            let addr = self
                .ctx
                .nl
                .addresses(Some(u.index))
                .await?
                .first()
                .map(|a| a.ip);
            match addr {
                Some(addr) => {
                    cfg.uplink_ifindex = u.index;
                    cfg.uplink_addr_be = ipv4_be(addr);
                    reserve_ports(opts.ports.0, opts.ports.1)?;
                    self.ctx.dp.attach_uplink(&u.name)?;
                    tracing::info!(uplink = %u.name, %addr, ports = ?opts.ports, "NAT to the uplink");
                }
                None => tracing::warn!(uplink = %u.name, "the uplink has no IPv4 address: no NAT"),
            }
        }
        // A restarted daemon leaves a matching config alone: a rewrite races
        // with the programs reading it.
        if self.ctx.dp.config().ok() != Some(cfg) {
            self.ctx.dp.set_config(&cfg)?;
        }
        match cgroup2_root() {
            Some(root) => self.ctx.dp.attach_sock_hooks(&root)?,
            None => tracing::warn!(
                "no cgroup v2 hierarchy: the host reaches published ports only through the uplink"
            ),
        }
        Ok(())
    }

    /// Removes flows idle beyond their timeout; returns how many entries.
    pub(super) fn collect_flows(&mut self) -> Result<usize> {
        let entries = self.ctx.dp.conntrack()?;
        let keys = conntrack::expired(&entries, conntrack::now_ns(), &self.cfg.nat.timeouts);
        // The datapath may have handed a key to a new flow since the read
        // (a closed TCP flow's port is reused at once): such keys stay.
        let created: std::collections::HashMap<_, _> =
            entries.iter().map(|(k, e)| (*k, e.created_ns)).collect();
        let judged: Vec<_> = keys.iter().map(|k| (*k, created[k])).collect();
        Ok(self.ctx.dp.ct_remove_if_created(&judged)?)
    }

    /// Removes the flows of a container's addresses.
    pub(super) fn forget_flows(&mut self, addrs: &[std::net::Ipv4Addr]) {
        let r = self
            .ctx
            .dp
            .conntrack()
            .map(|es| conntrack::keys_of(&es, addrs))
            .and_then(|keys| self.ctx.dp.ct_remove(&keys));
        if let Err(e) = r {
            tracing::warn!("removing flows: {e}");
        }
    }
}
