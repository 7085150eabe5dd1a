//! Ethernet header.

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q and 802.1ad (QinQ) tags.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// EtherType, network byte order.
    pub proto_be: u16,
}

impl EthHdr {
    #[inline(always)]
    pub fn proto(&self) -> u16 {
        u16::from_be(self.proto_be)
    }
}

/// Group bit: broadcast or multicast destination.
#[inline(always)]
pub fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    // Compared as a u32 and a u16 rather than byte by byte: fewer instructions.
    let a32 = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
    let b32 = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    a32 == b32 && a[4] == b[4] && a[5] == b[5]
}
