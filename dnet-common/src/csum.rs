//! Internet checksum arithmetic (RFC 1071, incremental updates per
//! RFC 1624). The datapath uses it for headers the kernel's checksum
//! helpers cannot reach (the inner headers of ICMP errors); tests use it to
//! check every checksum the datapath leaves behind.

/// One's-complement sum of `data` (big-endian 16-bit words) added to `sum`.
pub fn sum(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

/// Folds a 32-bit sum to 16 bits and complements it: the checksum field.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(data, 0))
}

/// A checksum field after one 16-bit word of the data changed from `old`
/// to `new` (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')). Host-order values.
#[inline(always)]
pub const fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let s = (!check as u32) + (!old as u32 & 0xffff) + new as u32;
    fold(s)
}

/// As [`replace2`] for a 32-bit field (two words).
#[inline(always)]
pub const fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let c = replace2(check, (old >> 16) as u16, (new >> 16) as u16);
    replace2(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header of RFC 1071's classic example style: a real header
    /// whose checksum is known.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn a_valid_header_sums_to_zero() {
        assert_eq!(checksum(&HDR), 0);
        let mut h = HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn incremental_updates_match_recomputation() {
        let mut h = HDR;
        let check = u16::from_be_bytes([h[10], h[11]]);
        // Source address 192.168.0.1 -> 10.0.0.7.
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new = u32::from_be_bytes([10, 0, 0, 7]);
        h[12..16].copy_from_slice(&new.to_be_bytes());
        let c = replace4(check, old, new);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
        // TTL 64 -> 63 (the word TTL|protocol).
        let old_w = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new_w = u16::from_be_bytes([h[8], h[9]]);
        let c = replace2(u16::from_be_bytes([h[10], h[11]]), old_w, new_w);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn odd_lengths_pad_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }
}
