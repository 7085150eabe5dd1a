//! IPv4 header.

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub vihl: u8,
    pub tos: u8,
    pub tot_len_be: u16,
    pub id_be: u16,
    pub frag_off_be: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr_be: u32,
    pub daddr_be: u32,
}

pub const IPV4_MIN_HLEN: usize = 20;

impl Ipv4Hdr {
    /// Header length in bytes.
    #[inline(always)]
    pub fn hlen(&self) -> usize {
        ((self.vihl & 0x0f) as usize) * 4
    }

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.vihl >> 4
    }

    #[inline(always)]
    pub fn tot_len(&self) -> usize {
        u16::from_be(self.tot_len_be) as usize
    }

    /// A header that can be trusted: version 4, a length of at least five
    /// words, and a total length that covers the header and fits in the
    /// `avail` bytes from the header's start to the end of the packet.
    #[inline(always)]
    pub fn is_valid(&self, avail: usize) -> bool {
        let hlen = self.hlen();
        let tot = self.tot_len();
        self.version() == 4 && hlen >= IPV4_MIN_HLEN && tot >= hlen && tot <= avail
    }
}

/// 224.0.0.0/4, tested on the address as it sits in the packet.
#[inline(always)]
pub fn is_multicast(addr_be: u32) -> bool {
    (addr_be.to_ne_bytes()[0] & 0xf0) == 0xe0
}

pub const LIMITED_BROADCAST_BE: u32 = u32::MAX;
