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
#![no_std]

pub mod addr;
pub mod drop;
pub mod endpoint;
pub mod maps;
pub mod network;
pub mod stats;

#[cfg(feature = "user")]
mod pod;

pub use drop::DropReason;
pub use endpoint::Endpoint;
pub use network::{NetMembers, Network};
pub use stats::EndpointStats;
