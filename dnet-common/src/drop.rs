//! Why the datapath dropped a packet. Shared by the programs that count drops
//! and the tools that print them (`dnet stats`).
//!
//! Append-only: a code keeps its number forever.

/// A drop reason. The value indexes [`crate::EndpointStats::drops`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A frame too short for its headers, an IPv4 or IPv6 header that is
    /// invalid (an IPv6 payload length beyond the packet, an ICMPv6, UDP
    /// or TCP header that does not fit in the payload), or a Neighbor
    /// Solicitation that breaks RFC 4861's checks (hop limit, code, length,
    /// a multicast target, extension headers before it).
    Malformed = 0,
    /// Source MAC is not the endpoint's own.
    SpoofedMac = 1,
    /// Source IPv4 or IPv6 address is not the endpoint's own (or, on the
    /// uplink, is one of dnet's networks). IPv6 link-local and `::`
    /// sources are not the endpoint's own.
    SpoofedIp = 2,
    /// An ARP reply or gratuitous ARP sent by a container.
    ArpReply = 3,
    /// An ARP request whose sender fields are not the endpoint's own.
    ArpSpoofed = 4,
    /// An ARP request for an address that is neither the gateway nor an endpoint.
    ArpUnknownTarget = 5,
    /// Destination belongs to another network.
    CrossNetwork = 6,
    /// Destination is in the same network, which has `icc=false`.
    IccDisabled = 7,
    /// Destination is an unused address of a dnet subnet.
    NoEndpoint = 8,
    /// IPv6 from or to an endpoint of an IPv4-only network (or an endpoint
    /// without an IPv6 address).
    Ipv6 = 9,
    /// An EtherType the datapath does not carry.
    UnknownL3 = 10,
    /// Retired: broadcast or multicast copies beyond a fan-out bound of 64
    /// members, which older builds had. Every member gets its copy now;
    /// the code stays reserved and is never counted.
    FanoutLimit = 11,
    /// A packet on an interface that has no endpoint entry.
    UnknownEndpoint = 12,
    /// Redirect to the destination failed (its link went away).
    RedirectFailed = 13,
    /// Traffic to or from outside an `--internal` network.
    Internal = 14,
    /// No free NAT port for a new flow.
    NatPortsExhausted = 15,
    /// An IPv4 fragment on a translated path (NAT needs the ports).
    Fragment = 16,
    /// TTL ran out where the datapath routes (answered with an ICMP "time
    /// exceeded" from dnet's hop, within the rate limit).
    TtlExceeded = 17,
    /// No route out for a translated flow.
    NoRoute = 18,
    /// A protocol or ICMP type the NAT does not translate.
    NatUnsupported = 19,
    /// The conntrack table is full: a new flow is refused (established
    /// flows are never pushed out to make room).
    CtFull = 20,
    /// A TCP segment other than a SYN for a flow the datapath does not know.
    CtNoFlow = 21,
    /// An 802.1Q/802.1ad tagged frame: from a container (in the packet's
    /// metadata, where the kernel moves the outer tag, or still in the
    /// frame), or from the host into a container. dnet networks carry no
    /// VLANs, and no tag leaves through the uplink.
    VlanTagged = 22,
    /// A packet the host's kernel forwarded towards a container from
    /// another interface (a LAN host routing a dnet subnet to the host):
    /// only what the datapath delivers and what the host itself sends
    /// reaches a container.
    HostForwarded = 23,
    /// A packet larger than the next link's MTU (answered with an ICMP
    /// "fragmentation needed" carrying that MTU).
    FragNeeded = 24,
    /// An ICMP error dnet would have sent ("time exceeded", "fragmentation
    /// needed") beyond its rate limit.
    IcmpRateLimited = 25,
    /// Traffic to the world while the uplink has no IPv4 address to
    /// translate to (never routed out untranslated).
    NoNatAddress = 26,
    /// A packet of a flow whose reply entry is gone and whose reply tuple
    /// another flow holds now: the flow is ended (its first entry removed)
    /// rather than sent out on a tuple whose answers belong to another.
    CtHalfFlow = 27,
    /// A new flow of a container that has as many live flows as
    /// `--ct-flows-per-endpoint` allows.
    CtEndpointLimit = 28,
    /// A new flow of a container that holds as many NAT ports towards that
    /// destination (address, port, protocol) as `--nat-ports-per-destination`
    /// allows: one container cannot take every port towards a resolver.
    NatDestinationLimit = 29,
    /// A TCP RST outside the flow's window (a blind reset guessing the
    /// sequence number): the flow goes on.
    CtRstOutOfWindow = 30,
    /// A new flow from the world to a published port, from a source that
    /// `dnet daemon --publish-from` does not list.
    SourceNotAllowed = 31,
    /// An IPv6 packet whose extension headers run past the datapath's
    /// bound (more than [`IPV6_MAX_EXT_HEADERS`]) or past the packet.
    Ipv6ExtHeaders = 32,
    /// An ICMPv6 Router Solicitation from a container: dnet sends no Router
    /// Advertisements (containers get their addresses and routes from it).
    NdpRouterSolicitation = 33,
    /// An ICMPv6 Router Advertisement from a container (it would
    /// reconfigure the host or its peers: CVE-2020-13401).
    NdpRouterAdvertisement = 34,
    /// An ICMPv6 Redirect from a container.
    NdpRedirect = 35,
    /// An MLD query, report or done from a container (IPv6 multicast goes
    /// to every member of the network; nobody listens for membership).
    Mld = 36,
    /// A Neighbor Advertisement from a container, or a Neighbor
    /// Solicitation about its own address (duplicate address detection,
    /// source `::`): the IPv6 analogue of `arp-reply-from-container`.
    NdpAdvertisement = 37,
    /// A Neighbor Solicitation for an address that is neither the gateway
    /// nor an endpoint of the sender's network.
    NdpUnknownTarget = 38,
    /// An ICMP or ICMPv6 error (destination unreachable, packet too big,
    /// time exceeded, parameter problem) from a container about a packet
    /// that was not sent to it: the quoted packet's destination must be the
    /// container's own address and its source the error's destination, so
    /// that a container cannot speak into a peer's or the host's flows.
    IcmpErrorForged = 39,
    /// A TCP segment of a known flow with a flag combination no TCP sends
    /// (none of SYN, ACK and RST: a null or PSH-only segment, a FIN
    /// without ACK; SYN with FIN or RST), as Linux's conntrack calls it
    /// invalid: it would be judged by no window.
    CtTcpInvalid = 40,
    /// On the uplink, a new flow from the world to a container of a routed
    /// IPv6 network (`-o gateway_mode_ipv6=routed`) that its container did
    /// not publish: as Docker's routed mode, the world reaches a routed
    /// container's published ports (and ICMPv6) only, and the answers of
    /// flows it opened.
    NotPublished = 41,
}

/// Most IPv6 extension headers the datapath walks to find the L4 header.
pub const IPV6_MAX_EXT_HEADERS: usize = 4;

/// Number of drop reasons; the size of the per-endpoint drop counter array.
/// Larger than the current count so reasons can be appended without changing
/// the layout of pinned maps.
pub const DROP_REASON_SLOTS: usize = 48;

impl DropReason {
    /// Every reason, in code order.
    pub const ALL: [DropReason; 42] = [
        DropReason::Malformed,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::ArpReply,
        DropReason::ArpSpoofed,
        DropReason::ArpUnknownTarget,
        DropReason::CrossNetwork,
        DropReason::IccDisabled,
        DropReason::NoEndpoint,
        DropReason::Ipv6,
        DropReason::UnknownL3,
        DropReason::FanoutLimit,
        DropReason::UnknownEndpoint,
        DropReason::RedirectFailed,
        DropReason::Internal,
        DropReason::NatPortsExhausted,
        DropReason::Fragment,
        DropReason::TtlExceeded,
        DropReason::NoRoute,
        DropReason::NatUnsupported,
        DropReason::CtFull,
        DropReason::CtNoFlow,
        DropReason::VlanTagged,
        DropReason::HostForwarded,
        DropReason::FragNeeded,
        DropReason::IcmpRateLimited,
        DropReason::NoNatAddress,
        DropReason::CtHalfFlow,
        DropReason::CtEndpointLimit,
        DropReason::NatDestinationLimit,
        DropReason::CtRstOutOfWindow,
        DropReason::SourceNotAllowed,
        DropReason::Ipv6ExtHeaders,
        DropReason::NdpRouterSolicitation,
        DropReason::NdpRouterAdvertisement,
        DropReason::NdpRedirect,
        DropReason::Mld,
        DropReason::NdpAdvertisement,
        DropReason::NdpUnknownTarget,
        DropReason::IcmpErrorForged,
        DropReason::CtTcpInvalid,
        DropReason::NotPublished,
    ];

    /// The stable, user-visible name (`dnet stats` prints it).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::SpoofedMac => "spoofed-mac",
            DropReason::SpoofedIp => "spoofed-ip",
            DropReason::ArpReply => "arp-reply-from-container",
            DropReason::ArpSpoofed => "arp-spoofed",
            DropReason::ArpUnknownTarget => "arp-unknown-target",
            DropReason::CrossNetwork => "cross-network",
            DropReason::IccDisabled => "icc-disabled",
            DropReason::NoEndpoint => "no-endpoint",
            DropReason::Ipv6 => "ipv6",
            DropReason::UnknownL3 => "unknown-ethertype",
            DropReason::FanoutLimit => "fanout-limit",
            DropReason::UnknownEndpoint => "unknown-endpoint",
            DropReason::RedirectFailed => "redirect-failed",
            DropReason::Internal => "internal-network",
            DropReason::NatPortsExhausted => "nat-ports-exhausted",
            DropReason::Fragment => "fragment",
            DropReason::TtlExceeded => "ttl-exceeded",
            DropReason::NoRoute => "no-route",
            DropReason::NatUnsupported => "nat-unsupported",
            DropReason::CtFull => "conntrack-full",
            DropReason::CtNoFlow => "conntrack-no-flow",
            DropReason::VlanTagged => "vlan-tagged",
            DropReason::HostForwarded => "host-forwarded",
            DropReason::FragNeeded => "frag-needed",
            DropReason::IcmpRateLimited => "icmp-rate-limited",
            DropReason::NoNatAddress => "no-nat-address",
            DropReason::CtHalfFlow => "conntrack-half-flow",
            DropReason::CtEndpointLimit => "conntrack-endpoint-limit",
            DropReason::NatDestinationLimit => "nat-destination-limit",
            DropReason::CtRstOutOfWindow => "conntrack-rst-out-of-window",
            DropReason::SourceNotAllowed => "source-not-allowed",
            DropReason::Ipv6ExtHeaders => "ipv6-ext-headers",
            DropReason::NdpRouterSolicitation => "ndp-router-solicitation",
            DropReason::NdpRouterAdvertisement => "ndp-router-advertisement",
            DropReason::NdpRedirect => "ndp-redirect",
            DropReason::Mld => "mld",
            DropReason::NdpAdvertisement => "ndp-advertisement",
            DropReason::NdpUnknownTarget => "ndp-unknown-target",
            DropReason::IcmpErrorForged => "icmp-error-forged",
            DropReason::CtTcpInvalid => "conntrack-tcp-invalid",
            DropReason::NotPublished => "not-published",
        }
    }

    /// The reason for a code, if it is known.
    pub fn from_code(code: u32) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| *r as u32 == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_in_order_and_fit_the_counter_array() {
        // Codes are handed out by slot (28-30 are spoken for), so they may
        // have gaps; each is unique and below the slot count.
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert!(*r as usize >= i, "{} out of order", r.name());
            if i > 0 {
                assert!(*r as u32 > DropReason::ALL[i - 1] as u32, "{}", r.name());
            }
            assert!((*r as usize) < DROP_REASON_SLOTS, "{}", r.name());
            assert_eq!(DropReason::from_code(*r as u32), Some(*r));
        }
    }
}
