//! Map names (as the datapath declares them and bpffs pins them) and sizes.

/// `HashMap<u32 addr_be, Endpoint>`: endpoints by IPv4 address.
pub const ENDPOINTS_BY_IP: &str = "DNET_EP_BY_IP";
/// `HashMap<u32 ifindex, Endpoint>`: endpoints by host-side veth ifindex.
pub const ENDPOINTS_BY_IF: &str = "DNET_EP_BY_IF";
/// `Array<Network>`, indexed by network id.
pub const NETWORKS: &str = "DNET_NETWORKS";
/// `LpmTrie<[u8; 4], u32 net_id>`: which network a subnet belongs to.
pub const SUBNETS: &str = "DNET_SUBNETS";
/// `Array<NetFanout>`, indexed by network id: how many members get the
/// network's broadcasts.
pub const NET_FANOUT: &str = "DNET_NET_FANOUT";
/// `HashMap<MemberKey, u32 ifindex>`: a network's members (host-side veth
/// ifindexes) by index, `0..count` of [`NET_FANOUT`].
pub const NET_MEMBER: &str = "DNET_NET_MEMBER";
/// `PerCpuArray<EndpointStats>`, indexed by endpoint slot.
pub const STATS: &str = "DNET_STATS";

/// `HashMap<CtKey, CtEntry>`: connection tracking and NAT, both directions.
/// A plain hash, not an LRU: nothing is ever evicted by a new flow; a full
/// table refuses new flows (`conntrack-full`) and the daemon's collector
/// frees expired ones.
pub const CT: &str = "DNET_CT";
/// `HashMap<CtKey6, CtEntry6>`: the same for IPv6 (NAT66), the same
/// sizes and rules.
pub const CT6: &str = "DNET_CT6";
/// `PerCpuHashMap<QuotaKey, i64>`: flows the datapath charged to containers'
/// limits, less those it removed itself (`dnet-ebpf/src/quota.rs`).
pub const CT_OPENED: &str = "DNET_CT_OPENED";
/// `HashMap<QuotaKey, i64>`: charged flows the daemon removed.
pub const CT_CLOSED: &str = "DNET_CT_CLOSED";
/// `HashMap<ServiceKey, Service>`: published ports.
pub const SERVICES: &str = "DNET_SERVICES";
/// `Array<Config>`, one entry.
pub const CONFIG: &str = "DNET_CONFIG";
/// `LruHashMap<SockRevKey, SockRev>`: what host sockets asked for, so that
/// replies read as coming from the published port.
pub const SOCK_REVNAT: &str = "DNET_SOCK_REVNAT";
/// `LpmTrie<u32 addr_be, u8>`: the sources that may open flows to published
/// ports from the world (`dnet daemon --publish-from`; `0.0.0.0/0` when
/// any may).
pub const PUBLISH_FROM: &str = "DNET_PUBLISH_FROM";
/// `LpmTrie<[u8; 16] addr, u8>`: [`PUBLISH_FROM`] for the world's IPv6
/// sources (`::/0` when any may).
pub const PUBLISH_FROM6: &str = "DNET_PUBLISH_FROM6";

/// `HashMap<Ip6, Endpoint>`: dual-stack endpoints by IPv6 address (the
/// value is the endpoint's one [`crate::Endpoint`] record).
pub const ENDPOINTS6_BY_IP: &str = "DNET_EP6_BY_IP";
/// `HashMap<u32 ifindex, Endpoint6>`: a dual-stack endpoint's IPv6 address by
/// host-side veth ifindex.
pub const ENDPOINT6_BY_IF: &str = "DNET_EP6_BY_IF";
/// `Array<Network6>`, indexed by network id: the IPv6 side of dual-stack
/// networks.
pub const NETWORKS6: &str = "DNET_NETWORKS6";
/// `LpmTrie<[u8; 16], u32 net_id>`: which network an IPv6 subnet belongs to.
pub const SUBNETS6: &str = "DNET_SUBNETS6";

/// `HashMap<ServiceKey6, Service6>`: ports published over IPv6, to
/// dual-stack containers' IPv6 addresses.
pub const SERVICES6: &str = "DNET_SERVICES6";
/// `LruHashMap<SockRevKey6, SockRev6>`: what host IPv6 sockets asked for
/// (see [`SOCK_REVNAT`]).
pub const SOCK_REVNAT6: &str = "DNET_SOCK_REVNAT6";

/// `ProgramArray`: the programs the container program tail-calls, at
/// the `PROG_SLOT_*` indexes. Pinned beside the others, but not in
/// [`ALL`]: its entries are program ids, which every load rewrites.
pub const PROGS: &str = "DNET_PROGS";
/// Slot of [`PROGS`]: IPv6 from a container (`lxc6_from_container`), which
/// has a stack of its own there (the IPv4 program's is full).
pub const PROG_SLOT_FROM_CONTAINER6: u32 = 0;
/// Slot of [`PROGS`]: NAT66 of a container's IPv6 to the world
/// (`lxc6_nat_from_container`), tail-called by `lxc6_from_container`.
pub const PROG_SLOT_NAT6_FROM_CONTAINER: u32 = 1;
/// Slot of [`PROGS`]: IPv6 on the uplink (`host6_from_uplink`),
/// tail-called by `host_from_uplink`.
pub const PROG_SLOT_FROM_UPLINK6: u32 = 2;
/// Slot of [`PROGS`]: a new flow from the world to a port published over
/// IPv6 (`host6_publish`), tail-called by `host6_from_uplink`.
pub const PROG_SLOT_PUBLISHED6: u32 = 3;
/// Slot of [`PROGS`]: a routed IPv6 network's packet from a container to
/// the world (`lxc6_routed_from_container`), tail-called by
/// `lxc6_from_container`.
pub const PROG_SLOT_ROUTED6_FROM_CONTAINER: u32 = 4;
/// Slot of [`PROGS`]: a packet on the uplink to a container of a routed
/// IPv6 network (`host6_routed`), tail-called by `host6_from_uplink`.
pub const PROG_SLOT_ROUTED6_FROM_UPLINK: u32 = 5;
/// Slot of [`PROGS`]: an ICMPv6 error from the world about a NAT66 flow
/// (`host6_icmp6_error`), tail-called by `host6_from_uplink`.
pub const PROG_SLOT_ICMP6_ERROR_FROM_UPLINK: u32 = 6;
/// Slot of [`PROGS`]: an ICMPv6 error from a container about a flow to a
/// port published over IPv6 (`lxc6_icmp6_error`), tail-called by
/// `lxc6_from_container`.
pub const PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER: u32 = 7;
/// Slot of [`PROGS`]: "packet too big" or "time exceeded" for a
/// container's NAT66 or routed packet, from its gateway
/// (`lxc6_icmp6_reply`), tail-called by `lxc6_nat_from_container` and
/// `lxc6_routed_from_container`.
pub const PROG_SLOT_ICMP6_REPLY: u32 = 8;
/// Slot of [`PROGS`]: a container's TCP and UDP to the uplink's IPv6
/// address or to its IPv6 gateway (hairpin over IPv6, `lxc6_hairpin`),
/// tail-called by `lxc6_from_container`.
pub const PROG_SLOT_HAIRPIN6: u32 = 9;
/// Slot of [`PROGS`]: "time exceeded" for a packet from the world that
/// dnet would route into a container (NAT66 or routed) and whose hop limit
/// runs out here, from the uplink's IPv6 address (`host6_icmp6_reply`),
/// tail-called by `host6_from_uplink`, `host6_publish` and `host6_routed`.
pub const PROG_SLOT_ICMP6_REPLY_FROM_UPLINK: u32 = 10;
/// Slot of [`PROGS`]: a container's IPv6 fragment bound for NAT66
/// (`lxc6_nat_frag`), tail-called by `lxc6_nat_from_container`.
pub const PROG_SLOT_NAT6_FRAG_FROM_CONTAINER: u32 = 11;
/// Slot of [`PROGS`]: the world's IPv6 fragment to the uplink's IPv6
/// address (`host6_frag`), tail-called by `host6_from_uplink`.
pub const PROG_SLOT_FRAG6_FROM_UPLINK: u32 = 12;
/// Slot of [`PROGS`]: the world's first IPv6 fragment of a new flow to a
/// port published over IPv6 (`host6_frag_publish`), tail-called by
/// `host6_frag`.
pub const PROG_SLOT_FRAG6_PUBLISHED: u32 = 13;
/// Size of [`PROGS`].
pub const PROGS_SLOTS: u32 = 14;

/// Every map the datapath declares (but [`PROGS`] and scratch maps).
pub const ALL: [&str; 22] = [
    ENDPOINTS_BY_IP,
    ENDPOINTS_BY_IF,
    NETWORKS,
    SUBNETS,
    NET_FANOUT,
    NET_MEMBER,
    STATS,
    CT,
    CT6,
    CT_OPENED,
    CT_CLOSED,
    SERVICES,
    CONFIG,
    SOCK_REVNAT,
    PUBLISH_FROM,
    ENDPOINTS6_BY_IP,
    ENDPOINT6_BY_IF,
    NETWORKS6,
    SUBNETS6,
    SERVICES6,
    SOCK_REVNAT6,
    PUBLISH_FROM6,
];

/// Maps older builds pinned and no build uses any more: a daemon removes
/// their pins when it starts (`DNET_NET_MEMBERS` held at most 64 members
/// of each network, replaced by [`NET_FANOUT`] and [`NET_MEMBER`]).
pub const RETIRED: [&str; 1] = ["DNET_NET_MEMBERS"];

/// Default size of the conntrack map (entries; a flow takes two).
pub const CT_ENTRIES: u32 = 131_072;
/// Default size of each limit counter map: a key per live flow at most
/// (half the conntrack entries) and one per endpoint.
pub const QUOTA_ENTRIES: u32 = CT_ENTRIES / 2 + MAX_ENDPOINTS;
/// Most CPUs whose counters the limits sum (`Config::nr_cpus` is capped
/// here; a longer loop outgrows the verifier's budget). On a host with
/// more CPUs, flows charged on the others are not seen: the limits are
/// lenient there.
pub const MAX_CPUS: u32 = 16;
/// Most published ports.
pub const MAX_SERVICES: u32 = 65_536;
/// Size of [`PUBLISH_FROM`], in prefixes.
pub const MAX_PUBLISH_FROM: u32 = 1024;
/// Host sockets remembered by the socket hooks.
pub const SOCK_REVNAT_ENTRIES: u32 = 65_536;

/// Most endpoints one daemon serves (and endpoint map entries).
pub const MAX_ENDPOINTS: u32 = 8192;
/// Network ids run from 1 to `MAX_NETWORKS - 1` (0 is never used).
pub const MAX_NETWORKS: u32 = 1024;
/// Stats slots; slot 0 counts what belongs to no endpoint.
pub const STATS_SLOTS: u32 = MAX_ENDPOINTS + 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `PROG_SLOT_*` with its name. A slot shared by two programs
    /// would make a tail call jump to the wrong one.
    const SLOTS: [(&str, u32); 14] = [
        ("PROG_SLOT_FROM_CONTAINER6", PROG_SLOT_FROM_CONTAINER6),
        (
            "PROG_SLOT_NAT6_FROM_CONTAINER",
            PROG_SLOT_NAT6_FROM_CONTAINER,
        ),
        ("PROG_SLOT_FROM_UPLINK6", PROG_SLOT_FROM_UPLINK6),
        ("PROG_SLOT_PUBLISHED6", PROG_SLOT_PUBLISHED6),
        (
            "PROG_SLOT_ROUTED6_FROM_CONTAINER",
            PROG_SLOT_ROUTED6_FROM_CONTAINER,
        ),
        (
            "PROG_SLOT_ROUTED6_FROM_UPLINK",
            PROG_SLOT_ROUTED6_FROM_UPLINK,
        ),
        (
            "PROG_SLOT_ICMP6_ERROR_FROM_UPLINK",
            PROG_SLOT_ICMP6_ERROR_FROM_UPLINK,
        ),
        (
            "PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER",
            PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER,
        ),
        ("PROG_SLOT_ICMP6_REPLY", PROG_SLOT_ICMP6_REPLY),
        ("PROG_SLOT_HAIRPIN6", PROG_SLOT_HAIRPIN6),
        (
            "PROG_SLOT_ICMP6_REPLY_FROM_UPLINK",
            PROG_SLOT_ICMP6_REPLY_FROM_UPLINK,
        ),
        (
            "PROG_SLOT_NAT6_FRAG_FROM_CONTAINER",
            PROG_SLOT_NAT6_FRAG_FROM_CONTAINER,
        ),
        ("PROG_SLOT_FRAG6_FROM_UPLINK", PROG_SLOT_FRAG6_FROM_UPLINK),
        ("PROG_SLOT_FRAG6_PUBLISHED", PROG_SLOT_FRAG6_PUBLISHED),
    ];

    #[test]
    fn every_prog_slot_is_distinct_and_inside_the_array() {
        // The list above is every slot this file declares.
        let declared: Vec<&str> = include_str!("maps.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const PROG_SLOT_"))
            .filter_map(|l| l.split(':').next())
            .collect();
        let listed: Vec<&str> = SLOTS
            .iter()
            .map(|(n, _)| n.strip_prefix("PROG_SLOT_").unwrap())
            .collect();
        assert_eq!(declared, listed, "a PROG_SLOT_* missing from SLOTS");
        for (i, (name, slot)) in SLOTS.iter().enumerate() {
            assert!(*slot < PROGS_SLOTS, "{name} = {slot} >= PROGS_SLOTS");
            for (other, s) in &SLOTS[..i] {
                assert_ne!(slot, s, "{name} and {other} share slot {slot}");
            }
        }
    }
}
