//! ICMP errors dnet sends as the router at its own hop: "time exceeded"
//! when a TTL runs out where the datapath routes (so traceroute through a
//! dnet network shows the gateway, as through docker0), and "fragmentation
//! needed" with the next link's MTU when a packet does not fit it (so
//! path-MTU discovery works at dnet's hop too).
//!
//! The error is made in place from the packet that caused it, which must be
//! as its sender sent it (nothing rewritten yet): the packet is cut to its
//! IPv4 header and the start of its transport header, 28 bytes for a new
//! IPv4 and ICMP header go in front, the MACs swap, and it goes back out of
//! the interface it came in on, to its sender. The quote is the IPv4 header
//! and 8 bytes (RFC 792), a whole TCP header for TCP: a packet whose
//! checksum the NIC completes (`CHECKSUM_PARTIAL`, what a veth carries from
//! a local stack) cannot be cut inside the bytes that checksum covers. The
//! error then keeps that state, pointing into the quote, and goes back to
//! the same local stack, which takes such a packet's checksums as good.
//!
//! Rate limit: per endpoint (slot 0: the uplink) and per CPU, a token
//! bucket of [`BURST`] messages refilled at one per [`INTERVAL_NS`] (1,000
//! per second), Linux's `icmp_msgs_per_sec` and `icmp_msgs_burst`. An error
//! beyond it is not sent and is counted (`icmp-rate-limited`); the packet
//! that caused it is counted by its cause (`ttl-exceeded`, `frag-needed`)
//! either way.

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::generated::{
        bpf_csum_diff, bpf_ktime_get_ns, bpf_redirect, bpf_skb_adjust_room, bpf_skb_change_tail,
        bpf_skb_load_bytes, bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use dnet_common::DropReason;

use crate::{
    eth::{ETH_HLEN, ETH_P_IP},
    ipv4::{IPV4_MIN_HLEN, Ipv4Hdr},
    l4::{ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    maps::{ICMP_RATE, ICMP_SCRATCH},
    ptr::ptr_at,
    stats::count_drops,
    verdict::TC_ACT_SHOT,
};

/// "Fragmentation needed and DF set" (destination unreachable, code 4).
const ICMP_FRAG_NEEDED: u8 = 4;
/// The new IPv4 header and the ICMP header put in front of the quote.
const ROOM: usize = IPV4_MIN_HLEN + ICMP_HLEN;
const ICMP_HLEN: usize = 8;
/// The longest ICMP message: header, a 60-byte IPv4 header, a TCP header.
pub const MAX_ICMP_LEN: usize = ICMP_HLEN + 60 + 20;
/// Linux's precedence for ICMP errors (`IPTOS_PREC_INTERNETCONTROL`).
const TOS_INTERNETCONTROL: u8 = 0xc0;

/// One message per millisecond...
const INTERVAL_NS: u64 = 1_000_000;
/// ... after a burst of 50.
const BURST: u64 = 50;

/// Per-CPU room to build an error in: the container program's stack is
/// spoken for, so nothing of the builder's sits on it.
#[repr(C)]
pub struct IcmpScratch {
    /// The packet's Ethernet and IPv4 headers as they came.
    old: [u8; ETH_HLEN + IPV4_MIN_HLEN + 2],
    /// The new Ethernet (14 bytes), IPv4 (20) and ICMP (8) headers.
    hdr: [u8; ETH_HLEN + ROOM + 2],
    /// The ICMP message, read back for its checksum; zero beyond its end.
    msg: [u32; MAX_ICMP_LEN / 4],
}

/// What went wrong with the packet.
#[derive(Clone, Copy)]
pub enum IcmpError {
    /// Its TTL ran out here.
    TimeExceeded,
    /// It does not fit the next link, whose MTU this is.
    FragNeeded(u16),
}

impl IcmpError {
    #[inline(always)]
    fn cause(self) -> DropReason {
        match self {
            IcmpError::TimeExceeded => DropReason::TtlExceeded,
            IcmpError::FragNeeded(_) => DropReason::FragNeeded,
        }
    }

    /// Type, code, and the second 32-bit word of the ICMP header (for
    /// "fragmentation needed", the next-hop MTU, RFC 1191), packed.
    #[inline(always)]
    fn word(self) -> u64 {
        match self {
            IcmpError::TimeExceeded => (ICMP_TIME_EXCEEDED as u64) << 40,
            IcmpError::FragNeeded(mtu) => {
                (ICMP_DEST_UNREACH as u64) << 40 | (ICMP_FRAG_NEEDED as u64) << 32 | mtu as u64
            }
        }
    }
}

/// The length the next link must carry for the packet in `ctx`, for
/// `bpf_fib_lookup`'s MTU check (`tot_len`): the packet's own or, for a GSO
/// packet, which the kernel cuts into segments after the datapath, one
/// segment's (Linux's `ip_exceeds_mtu` judges those so too). 0, which asks
/// for no check, when the headers cannot be read; the helper then checks
/// the packet against the device itself, and lets GSO packets pass.
#[inline(always)]
pub fn mtu_len(ctx: &TcContext) -> u16 {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return 0;
    };
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let (tot, hlen, proto) = unsafe { (u16::from_be((*ip).tot_len_be), (*ip).hlen(), (*ip).proto) };
    // SAFETY: reading a field of the context the kernel passed.
    let gso = unsafe { (*ctx.skb.skb).gso_size };
    if gso == 0 {
        return tot;
    }
    let l4 = match proto {
        IPPROTO_TCP => match ptr_at::<u8>(ctx, ETH_HLEN + hlen + 12) {
            // SAFETY: as above; the data offset's high nibble, in words.
            Ok(p) => ((unsafe { *p } >> 4) as usize) * 4,
            Err(_) => return 0,
        },
        IPPROTO_UDP => 8,
        _ => return 0,
    };
    let seg = (hlen + l4) as u32 + gso;
    if seg < tot as u32 { seg as u16 } else { tot }
}

/// Answers the packet in `ctx` with `err`, from `from_be`, back out of
/// `ifindex` (the interface it came in on): counts the packet by its cause
/// against `slot` and returns the verdict (a redirect, or a drop when the
/// rate limit or the packet says no, counted too).
///
/// Inlined where it is called (once per program): a BPF subprogram's
/// frame adds to its caller's, and the container program's has no room.
#[inline(always)]
pub fn reply(ctx: &TcContext, err: IcmpError, ifindex: u32, slot: u32, from_be: u32) -> i32 {
    count_drops(slot, err.cause(), 1);
    let reason = if allowed(slot) {
        match build(ctx, err.word(), from_be) {
            // SAFETY: a helper call with plain integer arguments.
            Ok(()) => return unsafe { bpf_redirect(ifindex, 0) } as i32,
            Err(r) => r,
        }
    } else {
        DropReason::IcmpRateLimited
    };
    count_drops(slot, reason, 1);
    TC_ACT_SHOT
}

/// The GCRA form of a token bucket: `*tat` is when the next message would
/// be due at the steady rate; a message may come up to a burst earlier.
#[inline(always)]
pub(crate) fn allowed(slot: u32) -> bool {
    let Some(tat) = ICMP_RATE.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's copy of a live array element; nothing else on this
    // CPU runs while the program does.
    unsafe {
        let due = (*tat).max(now);
        if due - now > (BURST - 1) * INTERVAL_NS {
            return false;
        }
        *tat = due + INTERVAL_NS;
    }
    true
}

#[inline(always)]
pub(crate) fn ok(rc: i64) -> Result<(), DropReason> {
    if rc == 0 {
        Ok(())
    } else {
        Err(DropReason::Malformed)
    }
}

/// Turns the packet into the ICMP error `word` from `from_be` to its
/// sender.
#[inline(always)]
fn build(ctx: &TcContext, word: u64, from_be: u32) -> Result<(), DropReason> {
    let skb = ctx.skb.skb;
    let s = ICMP_SCRATCH.get_ptr_mut(0).ok_or(DropReason::Malformed)?;
    // SAFETY: the skb helpers get the program's own context; the kernel
    // checks every offset and length against the packet. `s` is this CPU's
    // scratch slot (nothing else runs on this CPU meanwhile), whose fields
    // are at least as long as the lengths passed with them.
    unsafe {
        let old = &mut (*s).old;
        ok(bpf_skb_load_bytes(
            skb as *const _,
            0,
            old.as_mut_ptr() as *mut _,
            (ETH_HLEN + IPV4_MIN_HLEN) as u32,
        ))?;
        let hlen = ((old[ETH_HLEN] & 0x0f) as usize) * 4;
        if hlen < IPV4_MIN_HLEN {
            return Err(DropReason::Malformed);
        }
        let quote = hlen
            + if old[ETH_HLEN + 9] == IPPROTO_TCP {
                20
            } else {
                8
            };
        if (ctx.len() as usize) < ETH_HLEN + quote {
            return Err(DropReason::Malformed);
        }
        ok(bpf_skb_change_tail(skb, (ETH_HLEN + quote) as u32, 0))?;
        ok(bpf_skb_adjust_room(skb, ROOM as i32, BPF_ADJ_ROOM_MAC, 0))?;

        let h = &mut (*s).hdr;
        // Back to the sender: the MACs swap.
        h[..6].copy_from_slice(&old[6..12]);
        h[6..12].copy_from_slice(&old[..6]);
        h[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let ip = ETH_HLEN;
        let tot = ((ROOM + quote) as u16).to_be_bytes();
        h[ip] = 0x45;
        h[ip + 1] = TOS_INTERNETCONTROL;
        h[ip + 2] = tot[0];
        h[ip + 3] = tot[1];
        // Identification, flags and fragment offset: 0.
        h[ip + 4..ip + 8].copy_from_slice(&[0; 4]);
        h[ip + 8] = 64;
        h[ip + 9] = IPPROTO_ICMP;
        h[ip + 10] = 0;
        h[ip + 11] = 0;
        h[ip + 12..ip + 16].copy_from_slice(&from_be.to_ne_bytes());
        // To the packet's source.
        h[ip + 16..ip + 20].copy_from_slice(&old[ETH_HLEN + 12..ETH_HLEN + 16]);
        let mut sum: u32 = 0;
        for i in 0..IPV4_MIN_HLEN / 2 {
            sum += u16::from_be_bytes([h[ip + 2 * i], h[ip + 2 * i + 1]]) as u32;
        }
        let c = fold(sum).to_be_bytes();
        h[ip + 10] = c[0];
        h[ip + 11] = c[1];
        // Type, code, checksum (0 while it is summed), rest of header.
        let w = word.to_be_bytes();
        let icmp = ip + IPV4_MIN_HLEN;
        h[icmp..icmp + ICMP_HLEN].copy_from_slice(&[w[2], w[3], 0, 0, w[4], w[5], w[6], w[7]]);
        ok(bpf_skb_store_bytes(
            skb as *mut _,
            0,
            h.as_ptr() as *const _,
            (ETH_HLEN + ROOM) as u32,
            0,
        ))?;

        // The ICMP checksum, over the header and the quote, read back
        // into a zeroed buffer of fixed size (zeros add nothing).
        let m = &mut (*s).msg;
        for w in m.iter_mut() {
            *w = 0;
        }
        let len = ICMP_HLEN + quote;
        if len > MAX_ICMP_LEN {
            return Err(DropReason::Malformed);
        }
        ok(bpf_skb_load_bytes(
            skb as *const _,
            (ETH_HLEN + IPV4_MIN_HLEN) as u32,
            m.as_mut_ptr() as *mut _,
            len as u32,
        ))?;
        let sum = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            m.as_mut_ptr(),
            MAX_ICMP_LEN as u32,
            0,
        );
        if sum < 0 {
            return Err(DropReason::Malformed);
        }
        // The sum is of the bytes as 32-bit words in memory order; folded
        // and stored in that order it is the checksum's bytes.
        let c = fold_ne(sum as u64);
        ok(bpf_skb_store_bytes(
            skb as *mut _,
            (ETH_HLEN + IPV4_MIN_HLEN + 2) as u32,
            &c as *const u16 as *const _,
            2,
            0,
        ))?;
    }
    Ok(())
}

/// Folds a one's-complement sum of big-endian 16-bit words into the
/// checksum field's value (host order).
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// As [`fold`] for a sum of words in memory order (`bpf_csum_diff`'s):
/// the result is in memory order too.
#[inline(always)]
pub(crate) fn fold_ne(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
