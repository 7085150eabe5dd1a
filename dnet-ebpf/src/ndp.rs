//! Neighbor Discovery (RFC 4861) for containers: their Neighbor
//! Solicitations are answered here, as their ARP requests are (`lxc`), for
//! the network's gateway and its endpoints. The container never learns a
//! MAC from the wire, and no solicitation leaves its veth.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use dnet_common::{DropReason, Endpoint, Endpoint6, Network6, csum};

use crate::{
    eth::{ETH_HLEN, ETH_P_IPV6},
    ipv6::{
        ICMPV6_NEIGH_ADVERT, IPPROTO_ICMPV6, IPV6_HLEN, Ipv6Hdr, addr_eq, endpoint6_at,
        is_link_local, is_multicast, is_unspecified,
    },
    maps::NETWORKS,
    ptr::ptr_at,
};

/// A Neighbor Solicitation's fixed part: type, code, checksum, reserved,
/// target (24 bytes; options follow).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NsHdr {
    pub ty: u8,
    pub code: u8,
    pub check_be: u16,
    pub reserved: [u8; 4],
    pub target: [u8; 16],
}

/// The answer, whole: Ethernet, IPv6, and a Neighbor Advertisement with
/// one Target Link-Layer Address option (86 bytes).
#[repr(C, packed)]
pub struct NaFrame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub eth_proto_be: u16,
    pub ip: Ipv6Hdr,
    pub ty: u8,
    pub code: u8,
    pub check_be: u16,
    /// R, S, O in the first byte's top bits; the rest reserved.
    pub flags: [u8; 4],
    pub target: [u8; 16],
    /// Option type 2 (target link-layer address), length 1 (8 bytes).
    pub opt_type: u8,
    pub opt_len: u8,
    pub opt_mac: [u8; 6],
}

/// Length of the Neighbor Advertisement (ICMPv6 header, flags, target,
/// option).
pub const NA_LEN: usize = 32;
pub const NA_FRAME_LEN: usize = ETH_HLEN + IPV6_HLEN + NA_LEN;
const NS_MIN_LEN: usize = 24;
/// Router, Solicited, Override.
pub const NA_F_ROUTER: u8 = 0x80;
pub const NA_F_SOLICITED: u8 = 0x40;
pub const NA_F_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;
/// Hop limit of every NDP message (RFC 4861 7.1: anything else was routed).
const NDP_HOP_LIMIT: u8 = 255;

/// The sum of an address's 16-bit words.
#[inline(always)]
fn sum_addr(a: &[u8; 16]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i < 16 {
        s += u16::from_be_bytes([a[i], a[i + 1]]) as u32;
        i += 2;
    }
    s
}

/// The ICMPv6 checksum of the advertisement, pseudo-header included
/// (source, destination, upper-layer length, next header).
#[inline(always)]
pub fn na_checksum(src: &[u8; 16], dst: &[u8; 16], flags: u8, mac: &[u8; 6]) -> u16 {
    let mut s = sum_addr(src) + sum_addr(dst) + NA_LEN as u32 + IPPROTO_ICMPV6 as u32;
    s += (ICMPV6_NEIGH_ADVERT as u32) << 8; // type, code 0
    s += (flags as u32) << 8;
    s += sum_addr(src); // the target is the source
    s += ((ND_OPT_TARGET_LL_ADDR as u32) << 8) | 1;
    s += u16::from_be_bytes([mac[0], mac[1]]) as u32;
    s += u16::from_be_bytes([mac[2], mac[3]]) as u32;
    s += u16::from_be_bytes([mac[4], mac[5]]) as u32;
    csum::fold(s)
}

/// Answers the Neighbor Solicitation at `off` (the ICMPv6 header; `end`:
/// the end of the IPv6 payload) from the container behind `ep`, whose
/// IPv6 address is `me`: rewritten in place into the advertisement and sent
/// back to the asker.
///
/// For the gateway the answer says Router, Solicited, Override; for an
/// endpoint of the same network Solicited, Override, with the endpoint's
/// MAC. Never for the asker's own address, never for duplicate address
/// detection (source `::`): both are `ndp-advertisement`. The asker may
/// ask from its address or its link-local one; another source is spoofed.
#[inline(always)]
pub fn answer_ns(
    ctx: &TcContext,
    ep: &Endpoint,
    me: &Endpoint6,
    net6: &Network6,
    off: usize,
    end: usize,
) -> Result<i32, DropReason> {
    // RFC 4861 7.1.1: hop limit 255, code 0, 24 bytes at least, a target
    // that is not multicast. An extension header before it is not
    // expected of a container (and the answer's layout has none).
    if off != ETH_HLEN + IPV6_HLEN || end < off + NS_MIN_LEN {
        return Err(DropReason::Malformed);
    }
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    let ns: *const NsHdr = ptr_at(ctx, off).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that both headers lie inside the packet.
    let (ip, ns) = unsafe { (&*ip, &*ns) };
    if ip.hop_limit != NDP_HOP_LIMIT || ns.code != 0 || is_multicast(&ns.target) {
        return Err(DropReason::Malformed);
    }
    let asker = ip.saddr;
    let target = ns.target;
    if is_unspecified(&asker) {
        // Duplicate address detection: the address is the container's.
        return Err(DropReason::NdpAdvertisement);
    }
    if !addr_eq(&asker, &me.addr) && !is_link_local(&asker) {
        return Err(DropReason::SpoofedIp);
    }
    if addr_eq(&target, &me.addr) {
        return Err(DropReason::NdpAdvertisement);
    }
    let net = NETWORKS
        .get(ep.net_id)
        .filter(|n| n.active != 0)
        .ok_or(DropReason::UnknownEndpoint)?;
    let (mac, flags) = if addr_eq(&target, &net6.gateway) {
        (
            net.gateway_mac,
            NA_F_ROUTER | NA_F_SOLICITED | NA_F_OVERRIDE,
        )
    } else {
        match endpoint6_at(&target) {
            Some(t) if t.net_id == ep.net_id => (t.mac, NA_F_SOLICITED | NA_F_OVERRIDE),
            _ => return Err(DropReason::NdpUnknownTarget),
        }
    };
    let check = na_checksum(&target, &asker, flags, &mac);
    // The solicitation's options (a source link-layer address, a nonce)
    // go; the advertisement's one option takes their place.
    // SAFETY: a helper call on the program's own context.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, NA_FRAME_LEN as u32, 0) } != 0 {
        return Err(DropReason::Malformed);
    }
    // The packet changed: every pointer into it is taken anew.
    let f: *mut NaFrame = ptr_at(ctx, 0).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the whole frame lies inside the
    // packet; the struct is packed, so every field is written unaligned.
    unsafe {
        (*f).eth_dst = ep.mac;
        (*f).eth_src = mac;
        (*f).eth_proto_be = ETH_P_IPV6.to_be();
        (*f).ip = Ipv6Hdr {
            vtcfl: [0x60, 0, 0, 0],
            payload_len_be: (NA_LEN as u16).to_be(),
            nexthdr: IPPROTO_ICMPV6,
            hop_limit: NDP_HOP_LIMIT,
            saddr: target,
            daddr: asker,
        };
        (*f).ty = ICMPV6_NEIGH_ADVERT;
        (*f).code = 0;
        (*f).check_be = check.to_be();
        (*f).flags = [flags, 0, 0, 0];
        (*f).target = target;
        (*f).opt_type = ND_OPT_TARGET_LL_ADDR;
        (*f).opt_len = 1;
        (*f).opt_mac = mac;
    }
    // SAFETY: a helper call with plain integer arguments.
    Ok(unsafe { bpf_redirect(ep.ifindex, 0) } as i32)
}
