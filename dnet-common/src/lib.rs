//! Types shared by dnet's eBPF datapath (`dnet-ebpf`) and its control plane
//! (`dnet-userspace`).
//!
//! Everything that crosses the kernel boundary lives here: map keys and values,
//! map names and sizes, and the drop reasons. The rules for these types:
//!
//! - `#[repr(C)]`, no `bool`, no hidden padding (padding is an explicit field);
//! - IPv4 addresses are `u32` holding the four octets in network byte order as
//!   they sit in the packet (fields end in `_be`), MACs are `[u8; 6]`;
//! - structs are append-only: a retired field stays as reserved, offsets never
//!   move, so a daemon can adopt maps pinned by an older one.
#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod csum;
pub mod drop;
pub mod endpoint;
pub mod ipv6;
pub mod maps;
pub mod nat;
pub mod network;
pub mod stats;
pub mod tcp;

#[cfg(feature = "user")]
mod pod;

pub use drop::DropReason;
pub use endpoint::Endpoint;
pub use ipv6::{Endpoint6, Ip6, Network6, Service6, ServiceKey6, SockRev6, SockRevKey6};
pub use nat::{
    Config, CtAddr, CtEntry, CtEntry6, CtEntryOf, CtKey, CtKey6, CtKeyOf, QuotaKey, Service,
    ServiceKey, SockRev, SockRevKey,
};
pub use network::{MemberKey, NetFanout, Network};
pub use stats::EndpointStats;

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use crate::{Endpoint, EndpointStats, MemberKey, NetFanout, Network};

    /// The layouts are part of the pinned-map ABI: a change here is a break.
    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<Endpoint>(), 24);
        assert_eq!(size_of::<Network>(), 24);
        assert_eq!(size_of::<crate::Network6>(), 40);
        assert_eq!(size_of::<crate::Ip6>(), 16);
        assert_eq!(size_of::<crate::Endpoint6>(), 16);
        assert_eq!(size_of::<NetFanout>(), 8);
        assert_eq!(size_of::<MemberKey>(), 8);
        assert_eq!(
            size_of::<EndpointStats>(),
            40 + 8 * crate::drop::DROP_REASON_SLOTS
        );
        assert_eq!(size_of::<crate::CtKey>(), 16);
        assert_eq!(size_of::<crate::CtEntry>(), 56);
        assert_eq!(size_of::<crate::CtKey6>(), 40);
        assert_eq!(size_of::<crate::CtEntry6>(), 80);
        assert_eq!(size_of::<crate::tcp::TcpWindow>(), 16);
        assert_eq!(size_of::<crate::QuotaKey>(), 12);
        assert_eq!(size_of::<crate::ServiceKey>(), 8);
        assert_eq!(size_of::<crate::Service>(), 8);
        assert_eq!(size_of::<crate::Config>(), 56);
        assert_eq!(size_of::<crate::SockRevKey>(), 16);
        assert_eq!(size_of::<crate::SockRev>(), 8);
        assert_eq!(size_of::<crate::ServiceKey6>(), 20);
        assert_eq!(size_of::<crate::Service6>(), 20);
        assert_eq!(size_of::<crate::SockRevKey6>(), 32);
        assert_eq!(size_of::<crate::SockRev6>(), 20);
    }
}
