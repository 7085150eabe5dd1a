//! Per-endpoint counters.

use crate::drop::DROP_REASON_SLOTS;

/// Value of [`crate::maps::STATS`] (per CPU), indexed by [`crate::Endpoint::slot`].
/// Slot 0 counts what belongs to no endpoint.
///
/// "rx" is what the endpoint sent (received by the host side), "tx" what was
/// delivered to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Dropped packets by [`crate::DropReason`] code.
    pub drops: [u64; DROP_REASON_SLOTS],
    /// Packets of the endpoint's flows that NAT rewrote (either direction).
    pub translated: u64,
}

impl Default for EndpointStats {
    fn default() -> Self {
        EndpointStats {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            drops: [0; DROP_REASON_SLOTS],
            translated: 0,
        }
    }
}
