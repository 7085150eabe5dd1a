//! `aya::Pod` for the map types, so userspace can read and write them.

use crate::{Endpoint, EndpointStats, NetMembers, Network};

// SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and integer
// arrays with explicit padding fields, so every bit pattern is a valid value and
// there are no uninitialised bytes.
unsafe impl aya::Pod for Endpoint {}
// SAFETY: as above.
unsafe impl aya::Pod for Network {}
// SAFETY: as above.
unsafe impl aya::Pod for NetMembers {}
// SAFETY: as above.
unsafe impl aya::Pod for EndpointStats {}
