//! Why the datapath dropped a packet. Shared by the programs that count drops
//! and the tools that print them (`dnet stats`).
//!
//! Append-only: a code keeps its number forever.

/// A drop reason. The value indexes [`crate::EndpointStats::drops`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A frame too short for its headers, or an IPv4 header that is invalid.
    Malformed = 0,
    /// Source MAC is not the endpoint's own.
    SpoofedMac = 1,
    /// Source IPv4 address is not the endpoint's own.
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
    /// IPv6 (dnet networks are IPv4-only).
    Ipv6 = 9,
    /// An EtherType the datapath does not carry.
    UnknownL3 = 10,
    /// Broadcast or multicast copies beyond the fan-out bound.
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
    /// TTL ran out where the datapath routes.
    TtlExceeded = 17,
    /// No route out for a translated flow.
    NoRoute = 18,
    /// A protocol or ICMP type the NAT does not translate.
    NatUnsupported = 19,
    /// The conntrack map refused a new entry.
    CtFull = 20,
    /// A TCP segment other than a SYN for a flow the datapath does not know.
    CtNoFlow = 21,
}

/// Number of drop reasons; the size of the per-endpoint drop counter array.
/// Larger than the current count so reasons can be appended without changing
/// the layout of pinned maps.
pub const DROP_REASON_SLOTS: usize = 32;

impl DropReason {
    /// Every reason, in code order.
    pub const ALL: [DropReason; 22] = [
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
    fn codes_are_dense_and_fit_the_counter_array() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{} out of order", r.name());
            assert_eq!(DropReason::from_code(i as u32), Some(*r));
        }
        assert!(DropReason::ALL.len() <= DROP_REASON_SLOTS);
    }
}
