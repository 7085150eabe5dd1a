//! ARP for IPv4 over Ethernet, and the responder that answers containers.

/// ARP header for IPv4 over Ethernet (RFC 826), 28 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct ArpHdr {
    pub htype_be: u16,
    pub ptype_be: u16,
    pub hlen: u8,
    pub plen: u8,
    pub op_be: u16,
    pub sha: [u8; 6],
    pub spa_be: u32,
    pub tha: [u8; 6],
    pub tpa_be: u32,
}

pub const ARP_HTYPE_ETHER: u16 = 1;
pub const ARPOP_REQUEST: u16 = 1;
pub const ARPOP_REPLY: u16 = 2;

impl ArpHdr {
    /// Ethernet/IPv4 with the usual address lengths.
    #[inline(always)]
    pub fn is_ipv4_over_ether(&self) -> bool {
        u16::from_be(self.htype_be) == ARP_HTYPE_ETHER
            && u16::from_be(self.ptype_be) == crate::eth::ETH_P_IP
            && self.hlen == 6
            && self.plen == 4
    }

    #[inline(always)]
    pub fn op(&self) -> u16 {
        u16::from_be(self.op_be)
    }
}
