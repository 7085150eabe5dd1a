//! Fragments of translated flows, for both families. Only a datagram's
//! first fragment carries its ports (or echo identifier): when it is
//! translated, its ports are recorded under the datagram's identity
//! (addresses, protocol and identification, as the packet had them before
//! translation), and each later fragment of the datagram finds its flow
//! there and has its addresses translated. dnet neither reassembles nor
//! holds fragments back: a later fragment that arrives before its first,
//! or whose record is gone, is dropped (`fragment`), as Cilium's fragment
//! tracking does. TCP is never followed: it does not need fragments (MSS,
//! path-MTU discovery), and its tracking reads whole segments.
//!
//! IPv4's identification is 16 bits, in the IPv4 header; IPv6's is 32, in
//! the fragment header (`frag6` finds it).

use aya_ebpf::{macros::map, maps::LruHashMap};
use dnet_common::{CtAddr, CtKeyOf};

/// A datagram's identity, as its fragments carry it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragKeyOf<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    /// The identification (IPv4's 16 bits widened), as the packet has it.
    pub id_be: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// What a later fragment needs of its datagram's first: the tuple's ports
/// and the ICMP type (echo request or reply) that says where its
/// identifier stands.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragPorts {
    pub sport_be: u16,
    pub dport_be: u16,
    pub icmp_type: u8,
    pub _pad: [u8; 3],
}

/// Datagrams in flight: LRUs, so that the records of datagrams whose
/// later fragments never came make room by themselves. 8,192 covers
/// thousands of fragmented datagrams in flight at once.
#[map(name = "DNET_FRAGS")]
static FRAGS: LruHashMap<FragKeyOf<u32>, FragPorts> = LruHashMap::with_max_entries(8192, 0);
#[map(name = "DNET_FRAGS6")]
static FRAGS6: LruHashMap<FragKeyOf<[u8; 16]>, FragPorts> = LruHashMap::with_max_entries(8192, 0);

/// A family's record of datagrams in flight.
pub trait FragFamily: CtAddr + 'static {
    fn frags() -> &'static LruHashMap<FragKeyOf<Self>, FragPorts>;
}

impl FragFamily for u32 {
    #[inline(always)]
    fn frags() -> &'static LruHashMap<FragKeyOf<u32>, FragPorts> {
        &FRAGS
    }
}

impl FragFamily for [u8; 16] {
    #[inline(always)]
    fn frags() -> &'static LruHashMap<FragKeyOf<[u8; 16]>, FragPorts> {
        &FRAGS6
    }
}

#[inline(always)]
fn key_of<A: Copy>(saddr_be: A, daddr_be: A, id_be: u32, proto: u8) -> FragKeyOf<A> {
    FragKeyOf {
        saddr_be,
        daddr_be,
        id_be,
        proto,
        _pad: [0; 3],
    }
}

/// Records the ports of the datagram whose first fragment has tuple `key`
/// (as it came) and identification `id_be`. A full map evicts the
/// oldest record; a failure costs only the datagram's later fragments.
#[inline(always)]
pub fn record<A: FragFamily>(key: &CtKeyOf<A>, id_be: u32, icmp_type: u8) {
    let k = key_of(key.saddr_be, key.daddr_be, id_be, key.proto);
    let v = FragPorts {
        sport_be: key.sport_be,
        dport_be: key.dport_be,
        icmp_type,
        _pad: [0; 3],
    };
    let _ = A::frags().insert(&k, &v, 0);
}

/// The ports its first fragment recorded for a later fragment's datagram.
#[inline(always)]
pub fn ports<A: FragFamily>(saddr_be: A, daddr_be: A, id_be: u32, proto: u8) -> Option<FragPorts> {
    // SAFETY: the value is copied out at once; an LRU entry may be evicted
    // or overwritten afterwards, never while it is copied.
    unsafe { A::frags().get(&key_of(saddr_be, daddr_be, id_be, proto)) }.copied()
}
