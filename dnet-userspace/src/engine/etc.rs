//! A container's own `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`,
//! written under `STATE_DIR/containers/ID/` and bound over the host's in
//! the container's mount namespace (`mntns`).
//!
//! resolv.conf names the resolver (the gateway) of the container's first
//! user-defined bridge network, with the host's `search` and `options` and
//! Docker's `ndots:0`; elsewhere (the default `bridge`, macvlan, `none`) it
//! names `--dns`, else the host's nameservers minus loopback ones
//! (unreachable from a container), else Docker's fallback. hosts holds the
//! container's own names with each of its addresses. Both are written again
//! when the container joins or leaves a network and when the host's
//! resolv.conf changes: as new files swapped in whole (`mntns::write_file`,
//! `mntns::replace`), never in place, where a reader in the container could
//! find them empty or half-written; unchanged text is not written.

use std::{
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use super::Inner;
use crate::{
    error::{Error, Result},
    mntns::{self, Bind, NsPaths},
    model::{Container, Netns},
};

/// Docker's nameservers when the host has none a container can reach.
const FALLBACK: [Ipv4Addr; 2] = [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];
/// The host's files a container gets its own of.
const RESOLV_CONF: &str = "/etc/resolv.conf";
const HOSTS: &str = "/etc/hosts";
const HOSTNAME: &str = "/etc/hostname";
/// systemd-resolved's folder: `nss-resolve` talks to a socket there.
const RESOLVED_DIR: &str = "/run/systemd/resolve";

/// The container's resolv.conf, from the host's (`host`).
///
/// `resolver6`: the same resolver's IPv6 address, listed after the IPv4 one
/// (as Docker does) for a container that is dual-stack on its network.
pub(super) fn resolv_conf(
    host: &str,
    resolver: Option<Ipv4Addr>,
    resolver6: Option<Ipv6Addr>,
    dns: &[Ipv4Addr],
) -> String {
    let mut search = None;
    let mut options: Vec<&str> = Vec::new();
    let mut servers: Vec<IpAddr> = Vec::new();
    for l in host.lines() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("search") | Some("domain") => search = Some(w.collect::<Vec<_>>().join(" ")),
            Some("options") => options.extend(w),
            Some("nameserver") => servers.extend(w.next().and_then(|a| a.parse::<IpAddr>().ok())),
            _ => {}
        }
    }
    let servers: Vec<IpAddr> = match (resolver, dns) {
        (Some(r), _) => [Some(r.into()), resolver6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect(),
        (None, [_, ..]) => dns.iter().map(|&a| a.into()).collect(),
        (None, []) => {
            // dnet containers have IPv4 only, and a loopback address is
            // the container's own.
            let v: Vec<IpAddr> = servers
                .into_iter()
                .filter(|a| a.is_ipv4() && !a.is_loopback())
                .take(3)
                .collect();
            if v.is_empty() {
                FALLBACK.iter().map(|&a| a.into()).collect()
            } else {
                v
            }
        }
    };
    if resolver.is_some() {
        // Docker's: a bare name goes to the resolver first.
        options.retain(|o| !o.starts_with("ndots:"));
        options.push("ndots:0");
    }
    let mut out = String::from("# Made by dnet for this container.\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if let Some(s) = search.filter(|s| !s.is_empty()) {
        out.push_str(&format!("search {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The container's /etc/hosts: localhost, and its own names with each of
/// its addresses, one line per network it is on (as Docker writes them on
/// `network connect` and takes them out on `disconnect`); a dual-stack
/// network's IPv6 address after its IPv4 one.
pub(super) fn hosts(hostname: &str, name: &str, ips: &[std::net::IpAddr]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for ip in ips {
        if hostname == name {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname} {name}\n"));
        }
    }
    out
}

/// A host name as Docker takes it: 1 to 63 letters, digits, '-' and '.',
/// starting with a letter or digit.
pub(super) fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.starts_with(|c: char| c.is_ascii_alphanumeric())
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(crate::invalid!(
            "invalid hostname {h:?}: 1 to 63 letters, digits, '-' or '.', starting with a letter or digit"
        ))
    }
}

/// The container's host name: `--hostname`, else its short id (Docker's).
pub(super) fn hostname_of(c: &Container) -> String {
    c.hostname
        .clone()
        .unwrap_or_else(|| c.id.get(..12).unwrap_or(&c.id).to_owned())
}

/// What is bound over the host's paths, in order, for the files in `dir`.
/// systemd-resolved's folder first: the host's /etc/resolv.conf may be a
/// link into it, which the next bind then follows into the container's
/// own copy.
pub(super) fn binds(dir: &Path) -> Vec<Bind> {
    let mut v = Vec::new();
    if Path::new(RESOLVED_DIR).is_dir() {
        v.push(Bind {
            source: dir.join("resolve"),
            target: RESOLVED_DIR.into(),
        });
    }
    for (file, target) in [
        ("resolv.conf", RESOLV_CONF),
        ("hosts", HOSTS),
        ("hostname", HOSTNAME),
    ] {
        v.push(Bind {
            source: dir.join(file),
            target: target.into(),
        });
    }
    v
}

/// (device, inode) of the host's files, following links: a change means
/// a file was renamed over one, which detaches the containers' binds.
pub(super) fn host_file_ids() -> Vec<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt as _;
    [RESOLV_CONF, HOSTS, HOSTNAME]
        .iter()
        .map(|p| fs::metadata(p).ok().map(|m| (m.dev(), m.ino())))
        .collect()
}

fn write(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(Error::io(format!("write {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(Error::io(format!("write {}", path.display())))
}

impl Inner {
    /// Binds the containers' own /etc files again when the host's changed
    /// (a file renamed over one detaches the bind in every namespace), and
    /// follows the host's resolv.conf: the resolver's upstreams and the
    /// containers' own resolv.conf.
    pub(super) fn follow_host_files(&mut self) {
        let now = host_file_ids();
        if now != self.host_files {
            self.host_files = now;
            self.rebind_container_files();
        }
        // A missing file reads as empty, as at start.
        let text = std::fs::read_to_string(&self.cfg.resolv_conf).unwrap_or_default();
        if text != self.host_resolv {
            tracing::info!(path = %self.cfg.resolv_conf.display(), "the host's resolv.conf changed");
            self.host_resolv = text;
            self.dns.host_resolv_conf(&self.host_resolv);
            for c in self.state.containers.values() {
                self.refresh_container_files(c);
            }
        }
    }

    /// The folder of a container's files.
    pub(super) fn etc_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("containers").join(id)
    }

    /// Where a container's mount and UTS namespaces are kept, if it has them
    /// (a container whose namespace dnet made).
    pub(super) fn ns_paths(&self, c: &Container) -> Option<NsPaths> {
        matches!(c.netns, Netns::Owned { .. })
            .then(|| NsPaths::new(&self.cfg.state_dir.join("mntns"), &c.id))
    }

    /// Writes `c`'s files and makes its mount and UTS namespaces.
    pub(super) fn make_container_ns(&self, c: &Container) -> Result<()> {
        let Some(paths) = self.ns_paths(c) else {
            return Ok(());
        };
        let dir = self.etc_dir(&c.id);
        let resolve = dir.join("resolve");
        fs::create_dir_all(&resolve).map_err(Error::io(format!("create {}", resolve.display())))?;
        self.write_container_files(c)?;
        let hostname = hostname_of(c);
        write(&dir.join("hostname"), &format!("{hostname}\n"))?;
        mntns::ensure_private_dir(&self.cfg.state_dir.join("mntns"))?;
        mntns::create(&paths, &binds(&dir), &hostname)?;
        Ok(())
    }

    /// Writes `c`'s resolv.conf and hosts from its endpoints and the host's
    /// resolv.conf, as new files (see `mntns::write_file`); whether one
    /// changed.
    fn write_container_files(&self, c: &Container) -> Result<bool> {
        let dir = self.etc_dir(&c.id);
        // The resolver of its first network that has one (Docker's embedded
        // resolver serves a container from the first user-defined network
        // it joins).
        // Its IPv6 address too where the container has IPv6 on that network.
        let (resolver, resolver6) = c
            .endpoints
            .iter()
            .filter(|e| e.ip.is_some())
            .filter_map(|e| Some((e, self.state.networks.get(&e.network_id)?)))
            .find_map(|(e, n)| {
                let r = crate::dns::resolver_of(n)?;
                Some((r, crate::dns::resolver6_of(n).filter(|_| e.ip6.is_some())))
            })
            .unzip();
        let rc = resolv_conf(&self.host_resolv, resolver, resolver6.flatten(), &c.dns);
        let ips: Vec<std::net::IpAddr> = c
            .endpoints
            .iter()
            .flat_map(|e| [e.ip.map(Into::into), e.ip6.map(Into::into)])
            .flatten()
            .collect();
        let files = [
            (dir.join("resolv.conf"), rc.clone()),
            (dir.join("resolve").join("resolv.conf"), rc.clone()),
            (dir.join("resolve").join("stub-resolv.conf"), rc),
            (dir.join("hosts"), hosts(&hostname_of(c), &c.name, &ips)),
        ];
        let mut changed = false;
        for (path, text) in &files {
            changed |= mntns::write_file(path, text)?;
        }
        Ok(changed)
    }

    /// Writes `c`'s files again after its endpoints or the host's
    /// resolv.conf changed (a container with files of its own only), and
    /// swaps the container's binds of those that changed.
    pub(super) fn refresh_container_files(&self, c: &Container) {
        let Some(paths) = self.ns_paths(c) else {
            return;
        };
        let dir = self.etc_dir(&c.id);
        if !dir.is_dir() {
            return;
        }
        let swapped = self.write_container_files(c).and_then(|changed| {
            if changed && mntns::is_mntns(&paths.mnt) {
                mntns::replace(&paths.mnt, &binds(&dir))?;
            }
            Ok(())
        });
        if let Err(e) = swapped {
            tracing::warn!(container = %c.name, "updating its resolv.conf and hosts: {e}");
        }
    }

    /// Removes `c`'s namespaces and files; missing is fine.
    pub(super) fn remove_container_ns(&self, c: &Container) {
        if let Some(paths) = self.ns_paths(c)
            && let Err(e) = mntns::remove(&paths)
        {
            tracing::warn!(container = %c.name, "removing its mount namespace: {e}");
        }
        let dir = self.etc_dir(&c.id);
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container = %c.name, "removing {}: {e}", dir.display());
        }
    }

    /// Binds the containers' files again where the host renamed its own
    /// over them (checked when the host's files change).
    pub(super) fn rebind_container_files(&self) {
        for c in self.state.containers.values() {
            let Some(paths) = self.ns_paths(c) else {
                continue;
            };
            match mntns::rebind(&paths.mnt, &binds(&self.etc_dir(&c.id))) {
                Ok(0) => {}
                Ok(n) => tracing::info!(container = %c.name, files = n, "bound its files again"),
                Err(e) => tracing::warn!(container = %c.name, "binding its files again: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# made by someone\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n\
                        nameserver 2001:db8::1\nsearch corp.example lab.example\n\
                        options ndots:2 edns0\n";

    #[test]
    fn user_defined_networks_name_their_resolver_with_the_hosts_search_and_options() {
        let t = resolv_conf(HOST, Some(Ipv4Addr::new(172, 18, 0, 1)), None, &[]);
        assert_eq!(
            t,
            "# Made by dnet for this container.\nnameserver 172.18.0.1\n\
             search corp.example lab.example\noptions edns0 ndots:0\n"
        );
        // --dns does not replace the resolver there: it is the container's
        // upstream (as Docker's embedded resolver does).
        let t2 = resolv_conf(
            HOST,
            Some(Ipv4Addr::new(172, 18, 0, 1)),
            None,
            &[Ipv4Addr::new(9, 9, 9, 9)],
        );
        assert_eq!(t, t2);
        // A dual-stack container: the IPv6 gateway after the IPv4 one.
        let t = resolv_conf(
            HOST,
            Some(Ipv4Addr::new(172, 18, 0, 1)),
            Some("fd00:18::1".parse().unwrap()),
            &[],
        );
        assert!(
            t.contains("nameserver 172.18.0.1\nnameserver fd00:18::1\nsearch"),
            "{t}"
        );
    }

    #[test]
    fn the_default_bridge_gets_the_hosts_upstreams_minus_loopback() {
        let t = resolv_conf(HOST, None, None, &[]);
        assert_eq!(
            t,
            "# Made by dnet for this container.\nnameserver 10.0.0.2\n\
             search corp.example lab.example\noptions ndots:2 edns0\n"
        );
        let t = resolv_conf("nameserver 127.0.0.53\n", None, None, &[]);
        assert!(
            t.contains("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"),
            "{t}"
        );
        let t = resolv_conf(HOST, None, None, &[Ipv4Addr::new(9, 9, 9, 9)]);
        assert!(
            t.contains("nameserver 9.9.9.9\n") && !t.contains("10.0.0.2"),
            "{t}"
        );
    }

    #[test]
    fn hosts_hold_localhost_and_the_containers_own_names() {
        let v4 = |a, b, c, d| std::net::IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let h = hosts("abc123", "web", &[v4(172, 18, 0, 2)]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(
            h.ends_with("ip6-allrouters\n172.18.0.2\tabc123 web\n"),
            "{h}"
        );
        let h = hosts("web", "web", &[v4(172, 18, 0, 2)]);
        assert!(h.ends_with("172.18.0.2\tweb\n"), "{h}");
        assert!(!hosts("x", "x", &[]).contains("\tx"));
        // One line per network it is on.
        let h = hosts(
            "web",
            "web",
            &[
                v4(172, 18, 0, 2),
                "fd00:1::2".parse().unwrap(),
                v4(172, 19, 0, 5),
            ],
        );
        assert!(
            h.ends_with("172.18.0.2\tweb\nfd00:1::2\tweb\n172.19.0.5\tweb\n"),
            "{h}"
        );
    }

    #[test]
    fn hostnames_are_checked() {
        for ok in ["web", "web-1.example", "A1"] {
            validate_hostname(ok).unwrap();
        }
        for bad in ["", "-web", ".web", "we b", "a/b", &"x".repeat(64)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }
}
