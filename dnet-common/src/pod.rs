//! `aya::Pod` for the map types, so userspace can read and write them.

use crate::{
    Config, Endpoint, EndpointStats, MemberKey, NetFanout, Network, Service, ServiceKey, SockRev,
    SockRevKey,
};

// SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and integer
// arrays with explicit padding fields, so every bit pattern is a valid value and
// there are no uninitialised bytes.
unsafe impl aya::Pod for Endpoint {}
// SAFETY: as above.
unsafe impl aya::Pod for Network {}
// SAFETY: as above.
unsafe impl aya::Pod for NetFanout {}
// SAFETY: as above.
unsafe impl aya::Pod for MemberKey {}
// SAFETY: as above.
unsafe impl aya::Pod for EndpointStats {}
// SAFETY: as above.
// (Both families: `u32` and `[u8; 16]` addresses, the layout test pins
// their sizes.)
unsafe impl<A: crate::CtAddr + aya::Pod> aya::Pod for crate::CtKeyOf<A> {}
// SAFETY: as above.
unsafe impl<A: crate::CtAddr + aya::Pod> aya::Pod for crate::CtEntryOf<A> {}
// SAFETY: as above.
unsafe impl aya::Pod for ServiceKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Service {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for SockRevKey {}
// SAFETY: as above.
unsafe impl aya::Pod for SockRev {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::QuotaKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::Network6 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::Ip6 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::Endpoint6 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::ServiceKey6 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::Service6 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::SockRevKey6 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::SockRev6 {}
