//! Connection tracking: finding a packet's flow and noting the packet on
//! it (TCP flags per direction, last use, the completed handshake), what
//! opens a flow, and inserting a new flow's two entries.
//!
//! The map layout and the meaning of each entry are described in
//! `dnet_common::nat`. The table is a plain hash: a new flow never pushes
//! an existing one out; when it is full, new flows are refused
//! (`conntrack-full`) until the daemon's collector frees expired ones.
//! A flow's entries are made reply first and removed first entry first,
//! so that while a flow has its first entry its reply tuple (and NAT port)
//! is held.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use dnet_common::{
    CtAddr, CtEntry, CtEntry6, CtEntryOf, CtKey, CtKey6, CtKeyOf, DropReason,
    maps::CT_ENTRIES,
    nat::{
        CT_F_ASSURED, CT_F_COUNTED, CT_F_REPLY, CT_FIN_ACKED, CT_PEER_FIN, CT_SEEN, TCP_ACK,
        TCP_FIN, TCP_RST, TCP_SYN, partner, reply_into, tcp_closed, tcp_reusable,
    },
    tcp::{Seg, TcpWindow, rst_exact, start, track, valid_flags},
};

use crate::{
    l4::IPPROTO_TCP,
    quota::{recharge, release},
};

pub const NSEC_PER_SEC: u64 = 1_000_000_000;
/// How long a closed TCP flow keeps its port after its last packet (the
/// last ACK, or the RST) from the later probes of a new flow, the ones
/// made once the first found no free port. That packet and a new flow's
/// SYN on the same tuple may reach the peer out of order when two CPUs
/// forward them; a SYN that comes first meets the old connection and is
/// answered with a challenge ACK, which costs the new connect a SYN
/// retransmit (1 s).
pub const REUSE_GRACE_NS: u64 = NSEC_PER_SEC / 20;
/// How long a closed TCP flow keeps its port from the first probes of a new
/// flow ([`reclaim`]'s `grace` in the NAT port choice), while free ports
/// remain. The grace alone protects only an order: a last ACK that is
/// lost, or queued behind a busy CPU for longer than the grace, leaves the
/// server in LAST_ACK on that tuple, and a new SYN on it meets a challenge
/// ACK whose answering RST is outside the new flow's window. A second
/// covers the server's first FIN retransmit and its answer.
pub const REUSE_SETTLE_NS: u64 = NSEC_PER_SEC;

/// `-E2BIG`: what inserting into a full hash map returns.
const E2BIG: i32 = -7;

/// Both directions of every translated flow; the daemon sets the size
/// (`--ct-entries`) and collects expired entries.
#[map(name = "DNET_CT")]
pub static CT: HashMap<CtKey, CtEntry> = HashMap::with_max_entries(CT_ENTRIES, 0);

/// Both directions of every IPv6 flow (NAT66): the same code, keyed by
/// 128-bit addresses.
#[map(name = "DNET_CT6")]
pub static CT6: HashMap<CtKey6, CtEntry6> = HashMap::with_max_entries(CT_ENTRIES, 0);

/// Room (one per CPU) for a new reply entry and its key while it is made:
/// the programs' 512-byte stacks are spoken for.
pub struct CtScratch<A> {
    pub rkey: CtKeyOf<A>,
    pub reply: CtEntryOf<A>,
    /// The first entry's key, for [`reclaim`].
    pub fkey: CtKeyOf<A>,
}

#[map(name = "DNET_CT_SCRATCH")]
pub static CT_SCRATCH: PerCpuArray<CtScratch<u32>> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "DNET_CT6_SCRATCH")]
pub static CT6_SCRATCH: PerCpuArray<CtScratch<[u8; 16]>> = PerCpuArray::with_max_entries(1, 0);

/// An address family's conntrack table and scratch: what the code below,
/// written once, is monomorphised over.
pub trait Family: CtAddr + 'static {
    fn table() -> &'static HashMap<CtKeyOf<Self>, CtEntryOf<Self>>;
    fn scratch_map() -> &'static PerCpuArray<CtScratch<Self>>;
}

impl Family for u32 {
    #[inline(always)]
    fn table() -> &'static HashMap<CtKey, CtEntry> {
        &CT
    }
    #[inline(always)]
    fn scratch_map() -> &'static PerCpuArray<CtScratch<u32>> {
        &CT_SCRATCH
    }
}

impl Family for [u8; 16] {
    #[inline(always)]
    fn table() -> &'static HashMap<CtKey6, CtEntry6> {
        &CT6
    }
    #[inline(always)]
    fn scratch_map() -> &'static PerCpuArray<CtScratch<[u8; 16]>> {
        &CT6_SCRATCH
    }
}

/// This CPU's scratch slot.
#[inline(always)]
pub fn scratch<A: Family>() -> Option<&'static mut CtScratch<A>> {
    // SAFETY: this CPU's slot of a live per-CPU array; nothing else runs on
    // this CPU while the program does, and no caller holds two of them.
    A::scratch_map().get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// What a packet's flow says to do with it: the fields of its entry that
/// rewriting and delivery read, copied out small (the programs' stacks
/// are full; the entry itself is larger).
#[derive(Clone, Copy)]
pub struct XlateOf<A> {
    pub new_saddr_be: A,
    pub new_daddr_be: A,
    pub new_sport_be: u16,
    pub new_dport_be: u16,
    pub flags: u16,
    pub endpoint_be: u32,
}

/// [`XlateOf`] for IPv4.
pub type Xlate = XlateOf<u32>;

impl<A: Copy> XlateOf<A> {
    #[inline(always)]
    pub fn of(e: &CtEntryOf<A>) -> XlateOf<A> {
        XlateOf {
            new_saddr_be: e.new_saddr_be,
            new_daddr_be: e.new_daddr_be,
            new_sport_be: e.new_sport_be,
            new_dport_be: e.new_dport_be,
            flags: e.flags,
            endpoint_be: e.endpoint_be,
        }
    }
}

/// Why inserting a new entry failed.
pub enum InsertError {
    /// The key is taken.
    Exists,
    /// The table is full.
    Full,
}

/// Inserts `e` under `k` only if `k` is free. A full table refuses; nothing
/// is evicted.
#[inline(always)]
pub fn insert_new<A: Family>(k: &CtKeyOf<A>, e: &CtEntryOf<A>) -> Result<(), InsertError> {
    match A::table().insert(k, e, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(E2BIG) => Err(InsertError::Full),
        Err(_) => Err(InsertError::Exists),
    }
}

/// The flow `key` belongs to, with the packet (`seg`) noted on it. A
/// first entry whose reply entry is gone gets it back; if its reply tuple
/// belongs to another flow now (or the table is full), the flow ends here
/// (`conntrack-half-flow`): its packets would go out on a tuple whose
/// answers reach another container.
///
/// TCP segments are judged against the flow's windows
/// (`dnet_common::tcp`): one with a flag combination no TCP sends is
/// dropped (`conntrack-tcp-invalid`), one outside the windows moves
/// nothing, and a RST outside them is dropped
/// (`conntrack-rst-out-of-window`). The exception is the opener's RST
/// before the other side has answered: it goes through and ends nothing.
/// A RST in the window ends an established flow only when its sequence
/// number is exact; another reaches the endpoint, which answers it with a
/// challenge ACK, as Linux's conntrack lets it. When a TCP flow closes, it gives back what
/// it was charged to its container's limits (`quota`) at once, not when
/// the collector removes it.
///
/// The partner entry is looked up once, and only when needed: for TCP
/// (the state spans both directions), and for other protocols while the
/// first direction has not seen an answer (`CT_F_ASSURED`). An answered
/// UDP or ICMP flow's reply entry cannot go while its first entry is
/// there: every remover takes the first entry first.
///
/// An ICMP error's quote is looked up with [`probe`], which writes nothing.
#[inline(always)]
pub fn lookup<A: Family>(key: &CtKeyOf<A>, seg: &Seg) -> Result<Option<XlateOf<A>>, DropReason> {
    let Some(e) = A::table().get_ptr_mut(key) else {
        return Ok(None);
    };
    let t = now();
    let tcp = key.proto == IPPROTO_TCP;
    let tcp_flags = seg.flags;
    if tcp && !valid_flags(tcp_flags) {
        return Err(DropReason::CtTcpInvalid);
    }
    // SAFETY: `e` (and the partner entry below) point into live map values.
    // The datapath writes only `last_seen_ns`, `tcp_seen`, `win` and the
    // `CT_F_ASSURED` and `CT_F_COUNTED` bits of `flags`, all plain data: a
    // torn timestamp is harmless, a `tcp_seen` bit lost to a concurrent
    // write on another CPU only keeps a closed flow's port held until the
    // closing timeout, a lost `CT_F_ASSURED` is set again by the next
    // packet that would set it, `CT_F_COUNTED` is cleared once
    // (`uncharge`), and a window field written by two CPUs at once keeps
    // one of the two values, each a bound the flow had (the next segment
    // in the window moves it on).
    unsafe {
        let refresh = t.saturating_sub((*e).last_seen_ns) > NSEC_PER_SEC;
        let first = (*e).flags & CT_F_REPLY == 0;
        let assured = (*e).flags & CT_F_ASSURED != 0;
        let mut p = None;
        if tcp || (first && !assured) {
            let rk = partner(key, &*e);
            p = match A::table().get_ptr_mut(&rk) {
                Some(p) => Some(p),
                None if first => repair(key, &*e),
                None => None,
            };
            // Only an entry of the same identity is this flow's.
            p = p.filter(|p| (**p).flow_id == (*e).flow_id);
            if first && p.is_none() {
                remove_first(key, (*e).flow_id);
                return Err(DropReason::CtHalfFlow);
            }
        }
        let seen = (*e).tcp_seen;
        let other = p.map(|p| (*p).tcp_seen).unwrap_or(0);
        if !tcp {
            if refresh {
                (*e).last_seen_ns = t;
            }
            // Answered: the first direction stops checking its partner.
            if first && !assured && other & CT_SEEN != 0 {
                (*e).flags |= CT_F_ASSURED;
            }
            if seen & CT_SEEN == 0 {
                (*e).tcp_seen = seen | tcp_flags;
            }
            return Ok(Some(XlateOf::of(&*e)));
        }
        if first && opens_flow(IPPROTO_TCP, tcp_flags) && tcp_closed(seen, other) {
            // A new connection on the tuple of a closed one, from the side
            // that opened it, with a SYN that may open a flow (not SYN+RST
            // or SYN+FIN, nor a SYN from the other side): both
            // directions start over, or the old FIN/RST would mark the new
            // one closed (and the old windows judge the new sequence). It
            // is charged as a new flow (the old one gave its charge back).
            if recharge(key, &*e)? {
                (*e).flags |= CT_F_COUNTED;
            }
            (*e).tcp_seen = tcp_flags;
            (*e).flags &= !CT_F_ASSURED;
            start(&mut (*e).win, seg);
            (*e).last_seen_ns = t;
            if let Some(p) = p {
                (*p).tcp_seen = 0;
                (*p).win = TcpWindow::default();
            }
            return Ok(Some(XlateOf::of(&*e)));
        }
        let mut add = tcp_flags;
        if let Some(p) = p {
            if !track(&mut (*e).win, &mut (*p).win, seg) {
                // The opener's RST before the other side has answered
                // goes through, ending nothing: it answers an ACK of an
                // older connection on the tuple (the peer still in
                // LAST_ACK, which the RST ends), as RFC 793 has a
                // connecting side do, and its sequence number is the old
                // connection's. The peer judges it; this flow has no
                // window of the peer's to protect yet.
                if tcp_flags & TCP_RST != 0 && !(first && (*p).win.maxwin == 0) {
                    return Err(DropReason::CtRstOutOfWindow);
                }
                return Ok(Some(XlateOf::of(&*e)));
            }
            // An established flow ends only by a RST at the exact sequence
            // number; another in the window goes to the endpoint, which
            // answers with a challenge ACK (a blind RST that hit the
            // window ends nothing).
            let established = if first {
                assured
            } else {
                (*p).flags & CT_F_ASSURED != 0
            };
            if tcp_flags & TCP_RST != 0 && established && !rst_exact(&(*e).win, seg) {
                add &= !TCP_RST;
            }
        }
        // The handshake completes with the opener's ACK after the other
        // side's SYN-ACK.
        if first
            && !assured
            && tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_ACK
            && other & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        {
            (*e).flags |= CT_F_ASSURED;
        }
        if add & TCP_FIN != 0 && seen & TCP_FIN == 0 {
            // This side's first FIN: the other side's next ACK is its last
            // word. Noted on the other side's entry.
            if let Some(p) = p {
                (*p).tcp_seen |= CT_PEER_FIN;
            }
        }
        if add & TCP_ACK != 0 && seen & (CT_PEER_FIN | CT_FIN_ACKED) == CT_PEER_FIN {
            // Follows the order packets reach the datapath, not ACK numbers:
            // a FIN lost beyond it can make a port reusable early, as a lost
            // last ACK keeps one held until the closing timeout.
            add |= CT_FIN_ACKED;
        }
        if seen | add != seen {
            (*e).tcp_seen = seen | add;
        }
        // A closed flow's port waits REUSE_GRACE_NS after its last step
        // (the closing FIN or RST, the last ACK), whichever way it went. A
        // closed flow has given its charge back, so its time moves only
        // when its state does (a bounded number of times, each bit once),
        // never on a mere segment: an uncharged flow cannot be kept alive
        // past the collector's short closed timeout by one segment now and
        // then.
        let closed = tcp_closed(seen | add, other);
        let was_closed = tcp_closed(seen, other);
        if (refresh && !was_closed) || (closed && seen | add != seen) {
            (*e).last_seen_ns = t;
        }
        // Closed: its charge comes back now (the first entry holds it).
        if closed {
            match (first, p) {
                (true, _) => uncharge(key, e),
                (false, Some(p)) if (*p).flags & CT_F_COUNTED != 0 => {
                    uncharge(&partner(key, &*e), p)
                }
                _ => {}
            }
        }
        Ok(Some(XlateOf::of(&*e)))
    }
}

/// The flow the ICMP error quoting a packet keyed `key` is about, looked
/// up only: nothing is written (no repair, no time, no state), so an
/// error, forged or not, keeps no flow alive. A first entry whose reply
/// entry is missing answers for no flow (its next packet repairs or ends
/// it).
#[inline(always)]
pub fn probe<A: Family>(key: &CtKeyOf<A>) -> Option<XlateOf<A>> {
    // SAFETY: read-only map access to plain data (copied out).
    unsafe {
        let e = A::table().get(key)?;
        if e.flags & CT_F_REPLY == 0 && A::table().get(&partner(key, e))?.flow_id != e.flow_id {
            return None;
        }
        Some(XlateOf::of(e))
    }
}

/// Gives back the charge of the closed flow whose first entry, keyed
/// `key`, is at `f`, and clears its `CT_F_COUNTED`, so that the collector
/// (and the flow's later packets) give back nothing more. The BPF target
/// has no atomic read-modify-write here: two closing packets of one flow
/// on two CPUs within the same instant may each give it back, leaving its
/// container's count one low (as two charging at once may pass a limit by
/// one).
#[inline(always)]
fn uncharge<A: Family>(key: &CtKeyOf<A>, f: *mut CtEntryOf<A>) {
    // SAFETY: `f` points into a live map value; `flags` is plain data.
    let flags = unsafe { (*f).flags };
    if flags & CT_F_COUNTED == 0 {
        return;
    }
    // SAFETY: as above.
    let endpoint_be = unsafe {
        (*f).flags = flags & !CT_F_COUNTED;
        (*f).endpoint_be
    };
    release(key, endpoint_be, flags);
}

/// Removes the first entry keyed `key` if it is still of the flow
/// `flow_id` (another flow may have taken the key since it was read), and
/// gives back its charge. Reads the entry before the removal frees it for
/// another flow.
#[inline(always)]
fn remove_first<A: Family>(key: &CtKeyOf<A>, flow_id: u32) {
    // SAFETY: read-only map access to plain data (copied out).
    let Some((flags, endpoint_be)) = (unsafe { A::table().get(key) })
        .filter(|f| f.flow_id == flow_id)
        .map(|f| (f.flags, f.endpoint_be))
    else {
        return;
    };
    if A::table().remove(key).is_ok() {
        release(key, endpoint_be, flags);
    }
}

/// Makes the reply entry of the flow whose first entry `e` (keyed `key`)
/// has lost it, if its tuple is free; returns what holds the tuple then
/// (another CPU may have made the same entry meanwhile: same identity).
#[inline(always)]
fn repair<A: Family>(key: &CtKeyOf<A>, e: &CtEntryOf<A>) -> Option<*mut CtEntryOf<A>> {
    let s = reply_in_scratch(key, e)?;
    let _ = insert_new(&s.rkey, &s.reply);
    A::table().get_ptr_mut(&s.rkey)
}

/// This CPU's scratch slot with the reply entry (and its key) of the flow
/// whose first entry is `fwd`, keyed `key`. Built there: the callers'
/// stacks are full.
#[inline(always)]
pub fn reply_in_scratch<A: Family>(
    key: &CtKeyOf<A>,
    fwd: &CtEntryOf<A>,
) -> Option<&'static mut CtScratch<A>> {
    let s = scratch()?;
    reply_into(key, fwd, &mut s.rkey, &mut s.reply);
    Some(s)
}

/// A TCP segment that may open a flow: a SYN without ACK, RST or FIN (Linux's
/// conntrack calls SYN+RST and SYN+FIN invalid). Anything else with no flow
/// (a stray ACK, a spoofed segment) opens none, so it cannot take a port or
/// an entry of the table.
#[inline(always)]
pub fn opens_flow(proto: u8, tcp_flags: u8) -> bool {
    proto != IPPROTO_TCP || tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
}

/// A new flow's first entry (its reply entry follows from it:
/// `reply_into`), with a fresh identity; a TCP flow's window starts from
/// its SYN (`seg`).
#[inline(always)]
pub fn entry<A: Family>(
    new_saddr_be: A,
    new_sport_be: u16,
    new_daddr_be: A,
    new_dport_be: u16,
    flags: u16,
    endpoint_be: u32,
    seg: &Seg,
) -> CtEntryOf<A> {
    let mut e = CtEntryOf::default();
    entry_into(
        &mut e,
        new_saddr_be,
        new_sport_be,
        new_daddr_be,
        new_dport_be,
        flags,
        endpoint_be,
        seg,
    );
    e
}

/// [`entry`], written in place (a scratch slot: IPv6's entries are too
/// large for the stack beside the rest). Every field is written.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn entry_into<A: Family>(
    e: &mut CtEntryOf<A>,
    new_saddr_be: A,
    new_sport_be: u16,
    new_daddr_be: A,
    new_dport_be: u16,
    flags: u16,
    endpoint_be: u32,
    seg: &Seg,
) {
    let t = now();
    e.new_saddr_be = new_saddr_be;
    e.new_daddr_be = new_daddr_be;
    e.new_sport_be = new_sport_be;
    e.new_dport_be = new_dport_be;
    e.flags = flags;
    e.tcp_seen = seg.flags;
    e._pad = 0;
    e.endpoint_be = endpoint_be;
    // SAFETY: a helper call without arguments.
    e.flow_id = unsafe { bpf_get_prandom_u32() };
    e.created_ns = t;
    e.last_seen_ns = t;
    e.win = TcpWindow::default();
    if seg.flags & TCP_SYN != 0 {
        start(&mut e.win, seg);
    }
}

/// Inserts a new flow: its reply entry (keyed `rkey`) only if that tuple is
/// free, then its first entry. `Ok(true)`: made here; `Ok(false)`: another
/// CPU made the same flow meanwhile, and `fwd` is now its first entry.
#[inline(always)]
pub fn insert_flow<A: Family>(
    key: &CtKeyOf<A>,
    fwd: &mut CtEntryOf<A>,
    rkey: &CtKeyOf<A>,
    reply: &CtEntryOf<A>,
) -> Result<bool, InsertError> {
    insert_new(rkey, reply)?;
    match insert_new(key, fwd) {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = A::table().remove(rkey);
            // SAFETY: read-only map access to plain data (copied out).
            match unsafe { A::table().get(key) } {
                Some(f) => {
                    *fwd = *f;
                    Ok(false)
                }
                None => Err(e),
            }
        }
    }
}

/// Frees the port of the TCP flow whose reply is keyed `s.rkey` if that
/// flow is over (a RST, or a FIN each way and the last ACK) since `grace`
/// ([`REUSE_SETTLE_NS`] or [`REUSE_GRACE_NS`]), so a closed connection's
/// port serves a new one soon, as Linux reuses a TIME_WAIT tuple for a new
/// SYN. Without it, short connections to one server would hold every port
/// of the range for the closing timeout. Uses `s.fkey`.
#[inline(always)]
pub fn reclaim<A: Family>(s: &mut CtScratch<A>, grace: u64) {
    let Some(old) = A::table().get_ptr(&s.rkey) else {
        return;
    };
    // SAFETY: `old` and `f` point into live map values, read field by
    // field (plain data; a concurrent write gives a stale but valid value).
    unsafe {
        s.fkey = partner(&s.rkey, &*old);
        // Only a first entry of the same identity is this flow's: another
        // flow may have that key now.
        let f = A::table()
            .get_ptr(&s.fkey)
            .filter(|f| (**f).flow_id == (*old).flow_id);
        let closed = match f {
            Some(f) => {
                tcp_reusable((*old).tcp_seen, (*f).tcp_seen)
                    && now().saturating_sub((*old).last_seen_ns.max((*f).last_seen_ns)) > grace
            }
            // Half a flow: another CPU may be between its two inserts, so
            // only an orphan older than a second is taken.
            None => now().saturating_sub((*old).created_ns) > NSEC_PER_SEC,
        };
        if !closed {
            return;
        }
        // The first entry goes first: while it is there, its port is held.
        if f.is_some() {
            remove_first(&s.fkey, (*old).flow_id);
        }
    }
    let _ = A::table().remove(&s.rkey);
}
