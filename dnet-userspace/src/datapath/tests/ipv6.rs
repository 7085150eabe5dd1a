//! IPv6 (issue 13): the control plane's map API, and the container-side
//! path on hand-made frames.

use std::net::Ipv6Addr;

use dnet_common::{Network6, ipv6::NET6_F_NAT};

use super::*;

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn net6(subnet: &str, gw: &str, flags: u32) -> (Ipv6Network, Network6) {
    let n: Ipv6Network = subnet.parse().unwrap();
    let v = Network6 {
        subnet: n.network().octets(),
        gateway: ip6(gw).octets(),
        flags,
        prefix_len: n.prefix(),
        active: 1,
        _pad: [0; 2],
    };
    (n, v)
}

#[test]
fn the_ipv6_map_api_writes_reads_and_clears_every_entry() {
    in_fresh_netns(|| {
        let mut fx = fixture(0);
        let dp = &mut fx.dp;
        let (s1, n1) = net6("fd00:1::/64", "fd00:1::1", NET6_F_NAT);
        let (s2, n2) = net6("fd00:2::/64", "fd00:2::1", 0);
        dp.set_network6(1, s1, &n1).unwrap();
        dp.set_network6(2, s2, &n2).unwrap();
        assert_eq!(dp.network6(1).unwrap(), n1);
        assert_eq!(dp.network6(2).unwrap(), n2);
        assert_eq!(dp.network6(3).unwrap(), Network6::default(), "IPv4 only");
        let mut subnets = dp.subnets6().unwrap();
        subnets.sort();
        assert_eq!(subnets, vec![(s1, 1), (s2, 2)]);

        let (a, b) = (fx.a, fx.b);
        dp.set_endpoint6(a.ifindex, ip6("fd00:1::2"), &a).unwrap();
        dp.set_endpoint6(b.ifindex, ip6("fd00:1::3"), &b).unwrap();
        let mut eps = dp.endpoints6().unwrap();
        eps.sort_by_key(|(addr, _)| *addr);
        assert_eq!(eps, vec![(ip6("fd00:1::2"), a), (ip6("fd00:1::3"), b)]);
        let mut addrs = dp.endpoint6_addrs().unwrap();
        addrs.sort();
        assert_eq!(
            addrs,
            vec![(a.ifindex, ip6("fd00:1::2")), (b.ifindex, ip6("fd00:1::3"))]
        );
        // The IPv4 entries are the IPv4 API's: untouched.
        assert_eq!(dp.endpoints(m::ENDPOINTS_BY_IF).unwrap().len(), 3);

        // By interface only, then by address only; missing entries are fine.
        dp.clear_endpoint6(None, Some(a.ifindex)).unwrap();
        assert_eq!(
            dp.endpoint6_addrs().unwrap(),
            vec![(b.ifindex, ip6("fd00:1::3"))]
        );
        assert_eq!(dp.endpoints6().unwrap().len(), 2);
        dp.clear_endpoint6(Some(ip6("fd00:1::2")), None).unwrap();
        dp.clear_endpoint6(Some(ip6("fd00:1::2")), Some(a.ifindex))
            .unwrap();
        dp.clear_endpoint6(Some(ip6("fd00:1::3")), Some(b.ifindex))
            .unwrap();
        assert!(dp.endpoints6().unwrap().is_empty());
        assert!(dp.endpoint6_addrs().unwrap().is_empty());

        dp.clear_network6(1, Some(s1)).unwrap();
        dp.clear_network6(1, Some(s1)).unwrap();
        assert_eq!(dp.network6(1).unwrap(), Network6::default());
        assert_eq!(dp.subnets6().unwrap(), vec![(s2, 2)]);
        // Without the subnet: the entry goes, the trie keeps it (its id may
        // be another network's now); clear_subnet6 takes it.
        dp.clear_network6(2, None).unwrap();
        assert_eq!(dp.network6(2).unwrap(), Network6::default());
        assert_eq!(dp.subnets6().unwrap(), vec![(s2, 2)]);
        dp.clear_subnet6(s2).unwrap();
        assert!(dp.subnets6().unwrap().is_empty());
        // The IPv4 side never moved.
        assert_eq!(dp.network(1).unwrap().active, 1);
        assert_eq!(dp.subnets().unwrap().len(), 2);
    });
}

#[test]
fn the_ipv6_maps_are_pinned_and_adopted_by_a_restarted_datapath() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    in_fresh_netns(move || {
        // A bpffs of the test's own, in a mount namespace of this thread's
        // own: the pins go with the namespace, also when the test fails.
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mounts");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make mounts private");
        mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount a bpffs");
        let (s1, n1) = net6("fd00:1::/64", "fd00:1::1", 0);
        let ep = Endpoint {
            ifindex: 7,
            addr_be: ipv4_be(ip("172.17.0.2")),
            net_id: 1,
            slot: 1,
            mac: docker_mac(ip("172.17.0.2")),
            _pad: [0; 2],
        };
        {
            let mut dp = Datapath::load(Some(&dir)).unwrap();
            dp.set_network6(1, s1, &n1).unwrap();
            dp.set_endpoint6(7, ip6("fd00:1::2"), &ep).unwrap();
        }
        for name in [
            m::ENDPOINTS6_BY_IP,
            m::ENDPOINT6_BY_IF,
            m::NETWORKS6,
            m::SUBNETS6,
        ] {
            assert!(dir.join("maps").join(name).exists(), "{name}");
        }
        let dp = Datapath::load(Some(&dir)).unwrap();
        assert_eq!(dp.network6(1).unwrap(), n1);
        assert_eq!(dp.subnets6().unwrap(), vec![(s1, 1)]);
        assert_eq!(dp.endpoints6().unwrap(), vec![(ip6("fd00:1::2"), ep)]);
        assert_eq!(dp.endpoint6_addrs().unwrap(), vec![(7, ip6("fd00:1::2"))]);
    });
    drop(tmp);
}
