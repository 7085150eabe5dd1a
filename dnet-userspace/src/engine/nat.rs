//! The NAT side of the engine: its configuration in the datapath, the
//! uplink program and socket hooks, the ports it reserves from the host,
//! and the conntrack table's upkeep.

use std::{path::PathBuf, time::Duration};

use dnet_common::{Config as DpConfig, addr::ipv4_be};

use super::{Engine, Inner, conntrack, default_route_link};
use crate::{error::Result, netlink::Change, netns};

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
    /// The sources that may open flows to published ports from the world;
    /// empty: any.
    pub publish_from: Vec<ipnetwork::IpNetwork>,
    /// Most live flows a container may have opened (to the world, or to a
    /// published port of the host); 0: no limit.
    pub flows_per_endpoint: u32,
    /// Most NAT ports (flows) one container may hold towards one
    /// destination address, port and protocol; 0: no limit.
    pub ports_per_destination: u32,
}

impl NatOptions {
    /// The default `flows_per_endpoint` for a table of `ct_entries`: three
    /// quarters of its flows (at least one), so that one container may use
    /// most of the table but never all of it.
    pub fn default_flows_per_endpoint(ct_entries: u32) -> u32 {
        ((ct_entries / 2) as u64 * 3 / 4).max(1) as u32
    }

    /// The default `ports_per_destination` for a NAT port range: three
    /// quarters of it (8,886 of the default 11,848; at least one), so that
    /// a container flooding one resolver leaves the others a quarter of
    /// the ports towards it. A closed TCP flow gives its port's charge back
    /// at once, so the limit caps no connection rate.
    pub fn default_ports_per_destination((lo, hi): (u16, u16)) -> u32 {
        let size = (hi as u64).saturating_sub(lo as u64) + 1;
        (size * 3 / 4).max(1) as u32
    }
}

impl Default for NatOptions {
    fn default() -> Self {
        NatOptions {
            ports: (49152, 60999),
            ct_entries: dnet_common::maps::CT_ENTRIES,
            timeouts: conntrack::Timeouts::default(),
            gc_interval: Duration::from_secs(5),
            publish_from: Vec::new(),
            flows_per_endpoint: NatOptions::default_flows_per_endpoint(
                dnet_common::maps::CT_ENTRIES,
            ),
            ports_per_destination: NatOptions::default_ports_per_destination((49152, 60999)),
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

impl Engine {
    /// The translated flows.
    pub async fn conntrack(&self) -> Result<Vec<crate::api::FlowView>> {
        let inner = self.inner.lock().await;
        let entries = inner.ctx.dp.conntrack()?;
        let entries6 = inner.ctx.dp.conntrack6()?;
        let now = conntrack::now_ns();
        let t = inner.cfg.nat.timeouts;
        Ok(conntrack::flows(&entries)
            .iter()
            .map(|f| conntrack::view(f, now, &t))
            .chain(
                conntrack::flows(&entries6)
                    .iter()
                    .map(|f| conntrack::view(f, now, &t)),
            )
            .collect())
    }

    /// Empties the conntrack table; returns how many entries went.
    pub async fn flush_conntrack(&self) -> Result<usize> {
        let mut inner = self.inner.lock().await;
        let keys: Vec<_> = inner
            .ctx
            .dp
            .conntrack()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        inner.ctx.dp.ct_remove(&keys)?;
        let keys6: Vec<_> = inner
            .ctx
            .dp
            .conntrack6()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        inner.ctx.dp.ct_remove(&keys6)?;
        Ok(keys.len() + keys6.len())
    }
}

impl Inner {
    /// Writes the NAT configuration and attaches the uplink program and the
    /// socket hooks (each only if not already in place).
    pub(super) async fn setup_nat(&mut self) -> Result<()> {
        let any = [
            ipnetwork::IpNetwork::V4(
                ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::UNSPECIFIED, 0)
                    .expect("a valid prefix"),
            ),
            ipnetwork::IpNetwork::V6(
                ipnetwork::Ipv6Network::new(std::net::Ipv6Addr::UNSPECIFIED, 0)
                    .expect("a valid prefix"),
            ),
        ];
        let from = &self.cfg.nat.publish_from;
        let from = if from.is_empty() { &any[..] } else { from };
        self.ctx.dp.set_publish_from(from)?;
        self.follow_uplink().await?;
        match cgroup2_root() {
            Some(root) => self.ctx.dp.attach_sock_hooks(&root)?,
            None => tracing::warn!(
                "no cgroup v2 hierarchy: the host reaches published ports only through the uplink"
            ),
        }
        Ok(())
    }

    /// Brings the NAT configuration in line with the uplink as it is now:
    /// the link (`--uplink`, else the default route's), and its first IPv4
    /// address. Called at start and whenever netlink says the uplink may
    /// have changed (see `uplink_concerned`): a DHCP client renumbering
    /// it, the link made again (a new ifindex, which needs the uplink
    /// program), an address that comes only after the daemon. Without an
    /// address the datapath translates nothing, and drops what would go to
    /// the world (`no-nat-address`) rather than leave it to the host's
    /// kernel, which would route it out untranslated. Flows translated to
    /// an address the uplink no longer has go (as Linux's MASQUERADE does).
    pub(super) async fn follow_uplink(&mut self) -> Result<()> {
        let opts = self.cfg.nat.clone();
        let link = match &self.cfg.uplink {
            Some(name) => self.ctx.nl.link(name).await?,
            None => default_route_link(&self.ctx.nl).await?,
        };
        let addr = match &link {
            Some(l) => self
                .ctx
                .nl
                .addresses(Some(l.index))
                .await?
                .first()
                .map(|a| a.ip),
            None => None,
        };
        // NAT66 translates to the uplink's global IPv6 address (a unique
        // local one when it has no global one), if it has one.
        let addr6 = match &link {
            Some(l) => uplink_addr6(
                &self
                    .ctx
                    .nl
                    .addresses6(Some(l.index))
                    .await?
                    .into_iter()
                    .filter(|a| !a.dnet && a.stable)
                    .map(|a| a.ip)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        let mut cfg = DpConfig {
            nat_port_min: opts.ports.0,
            nat_port_max: opts.ports.1,
            netns_cookie: netns::cookie()?,
            ep_flow_limit: opts.flows_per_endpoint,
            dest_port_limit: opts.ports_per_destination,
            nr_cpus: crate::datapath::Datapath::quota_cpus(),
            ..Default::default()
        };
        if let (Some(l), Some(a)) = (&link, addr) {
            reserve_ports(opts.ports.0, opts.ports.1)?;
            // The program first: answers to the new address find it.
            self.ctx.dp.attach_uplink(&l.name)?;
            cfg.uplink_ifindex = l.index;
            cfg.uplink_addr_be = ipv4_be(a);
        }
        if let (Some(_), Some(a6)) = (&link, addr6) {
            cfg.uplink_addr6 = a6.octets();
        }
        let old = self.ctx.dp.config().ok();
        if self.ctx.uplink.as_ref().map(|l| (l.index, &l.name))
            != link.as_ref().map(|l| (l.index, &l.name))
        {
            match &link {
                Some(l) => tracing::info!(uplink = %l.name, index = l.index, mtu = l.mtu, "uplink"),
                None => {
                    tracing::warn!("no uplink: no default route and no --uplink, or it is gone")
                }
            }
        }
        self.ctx.uplink = link;
        // A matching config is left alone (a restarted daemon's, say): a
        // rewrite races with the programs reading it.
        if old == Some(cfg) {
            return Ok(());
        }
        self.ctx.dp.set_config(&cfg)?;
        match (&self.ctx.uplink, addr) {
            (Some(u), Some(addr)) => {
                tracing::info!(uplink = %u.name, %addr, ports = ?opts.ports, "NAT to the uplink")
            }
            (Some(u), None) => tracing::warn!(
                uplink = %u.name,
                "the uplink has no IPv4 address: no NAT, and traffic to the world is dropped until it has one"
            ),
            (None, _) => {}
        }
        if let (Some(u), Some(addr6)) = (&self.ctx.uplink, addr6) {
            tracing::info!(uplink = %u.name, %addr6, "NAT66 to the uplink");
        }
        if let Some(old) = old
            && old.uplink_addr_be != 0
            && old.uplink_addr_be != cfg.uplink_addr_be
        {
            let gone = dnet_common::addr::ipv4_from_be(old.uplink_addr_be);
            tracing::info!(address = %gone, "forgetting the flows translated to the uplink's old address");
            self.forget_flows(&[gone]);
        }
        if let Some(old) = old
            && old.uplink_addr6 != [0; 16]
            && old.uplink_addr6 != cfg.uplink_addr6
        {
            // Every entry that names it: NAT66 flows translated to it, flows
            // to ports published on it, and hairpin flows opened to it
            // (`hairpin6`), whose packets no longer reach the hairpin
            // program once the address is not the uplink's: kept, the next
            // one would take NAT66's way out of the uplink, translated
            // into the backend's address.
            let gone = std::net::Ipv6Addr::from(old.uplink_addr6);
            tracing::info!(address = %gone, "forgetting the NAT66 flows translated to the uplink's old IPv6 address");
            let r = self
                .ctx
                .dp
                .conntrack6()
                .map(|es| conntrack::keys_with(&es, old.uplink_addr6))
                .and_then(|keys| self.ctx.dp.ct_remove(&keys));
            if let Err(e) = r {
                tracing::warn!("removing NAT66 flows: {e}");
            }
        }
        Ok(())
    }

    /// A netlink change that may concern the uplink: its link (by name or
    /// index), its addresses, or the default route that picks it.
    pub(super) fn uplink_concerned(&self, c: &Change) -> bool {
        let up = self.ctx.uplink.as_ref();
        match c {
            Change::Link { index, name } => {
                up.is_some_and(|u| u.index == *index)
                    || (name.is_some() && name.as_deref() == self.cfg.uplink.as_deref())
            }
            Change::Address { index } => up.is_some_and(|u| u.index == *index),
            Change::DefaultRoute => self.cfg.uplink.is_none(),
        }
    }

    /// Removes flows idle beyond their timeout; returns how many entries.
    pub(super) fn collect_flows(&mut self) -> Result<usize> {
        let entries = self.ctx.dp.conntrack()?;
        let mut n = self.collect_expired(&entries)?;
        let entries6 = self.ctx.dp.conntrack6()?;
        n += self.collect_expired(&entries6)?;
        // Limit counters of containers and destinations with no flow left.
        self.ctx.dp.quota_sweep()?;
        Ok(n)
    }

    /// Removes the expired flows among `entries` (of one table).
    fn collect_expired<A: crate::datapath::Family>(
        &mut self,
        entries: &[(dnet_common::CtKeyOf<A>, dnet_common::CtEntryOf<A>)],
    ) -> Result<usize> {
        let keys = conntrack::expired(entries, conntrack::now_ns(), &self.cfg.nat.timeouts);
        // The datapath may have handed a key to a new flow since the read
        // (a closed TCP flow's port is reused at once): such keys stay.
        let created: std::collections::HashMap<_, _> =
            entries.iter().map(|(k, e)| (*k, e.created_ns)).collect();
        let judged: Vec<_> = keys.iter().map(|k| (*k, created[k])).collect();
        Ok(self.ctx.dp.ct_remove_if_created(&judged)?)
    }

    /// Removes the flows of a container's addresses (IPv4 and NAT66 ones).
    pub(super) fn forget_flows(&mut self, addrs: &[std::net::Ipv4Addr]) {
        let r = self
            .ctx
            .dp
            .conntrack()
            .map(|es| conntrack::keys_of(&es, addrs))
            .and_then(|keys| self.ctx.dp.ct_remove(&keys))
            .and_then(|()| self.ctx.dp.conntrack6())
            .map(|es| conntrack::keys_of(&es, addrs))
            .and_then(|keys| self.ctx.dp.ct_remove(&keys));
        if let Err(e) = r {
            tracing::warn!("removing flows: {e}");
        }
    }
}

/// The address NAT66 translates to among an uplink's IPv6 addresses: the
/// first global unicast one (`2000::/3`), else the first unique local one
/// (`fc00::/7`); never link-local, loopback or multicast.
pub(crate) fn uplink_addr6(addrs: &[std::net::Ipv6Addr]) -> Option<std::net::Ipv6Addr> {
    let global = |a: &std::net::Ipv6Addr| a.segments()[0] & 0xe000 == 0x2000;
    let ula = |a: &std::net::Ipv6Addr| a.segments()[0] & 0xfe00 == 0xfc00;
    addrs
        .iter()
        .find(|a| global(a))
        .or_else(|| addrs.iter().find(|a| ula(a)))
        .copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nat66_takes_a_global_address_before_a_unique_local_one() {
        let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        assert_eq!(
            super::uplink_addr6(&[a("fe80::1"), a("fd00::2"), a("2001:2::2")]),
            Some(a("2001:2::2"))
        );
        assert_eq!(
            super::uplink_addr6(&[a("fe80::1"), a("fd00::2")]),
            Some(a("fd00::2"))
        );
        assert_eq!(super::uplink_addr6(&[a("fe80::1"), a("::1")]), None);
    }
}
