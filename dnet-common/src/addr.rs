//! Address helpers shared by both sides.

use core::net::Ipv4Addr;

/// The IPv4 address as the `u32` whose in-memory bytes are the octets in
/// network order (what a packet holds, what the maps use).
#[inline]
pub const fn ipv4_be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The inverse of [`ipv4_be`].
#[inline]
pub const fn ipv4_from_be(addr_be: u32) -> Ipv4Addr {
    let o = addr_be.to_ne_bytes();
    Ipv4Addr::new(o[0], o[1], o[2], o[3])
}

/// Docker's MAC scheme: `02:42` followed by the four bytes of the IPv4 address.
#[inline]
pub const fn docker_mac(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_mac_of_first_container() {
        assert_eq!(
            docker_mac(Ipv4Addr::new(172, 17, 0, 2)),
            [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]
        );
    }

    #[test]
    fn be_round_trip_keeps_octet_order() {
        let a = Ipv4Addr::new(10, 1, 2, 3);
        let be = ipv4_be(a);
        assert_eq!(be.to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(ipv4_from_be(be), a);
    }
}
