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

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    /// The layouts are part of the pinned-map ABI: a change here is a break.
    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<Endpoint>(), 24);
        assert_eq!(size_of::<Network>(), 24);
        assert_eq!(size_of::<NetMembers>(), 8 + 4 * crate::network::MAX_FANOUT);
        assert_eq!(
            size_of::<EndpointStats>(),
            32 + 8 * crate::drop::DROP_REASON_SLOTS
        );
    }
}
