//! TCP window tracking, as Linux's conntrack does it (`tcp_in_window` in
//! `nf_conntrack_proto_tcp.c`, kept to what judges a segment): each
//! direction remembers how far it has sent (`end`), how far the other side
//! lets it send (`maxend`, the other side's ACK plus its window) and the
//! largest window it advertised (`maxwin`), with the window scale its SYN
//! offered. A segment is in the window when
//!
//! 1. its sequence number is not beyond what the receiver allows
//!    (`seq <= sender.maxend`),
//! 2. its end is not further back than the receiver's largest window
//!    (`end >= sender.end - receiver.maxwin`),
//! 3. its ACK acknowledges nothing the receiver has not sent
//!    (`ack <= receiver.end`), and not too far back either
//!    (`ack >= receiver.end - max(sender.maxwin, 66000)`).
//!
//! Only segments in the window move the state, and a side's first segment
//! (its SYN-ACK) starts its state only once it is found in the window; a
//! RST outside it is dropped (`conntrack-rst-out-of-window`), so an
//! attacker who knows a flow's tuple but not its sequence numbers cannot
//! end it (a blind RST hits with odds of about window / 2^32). A RST moves
//! no state, and ends an established flow only when its sequence number is
//! exactly its sender's next ([`rst_exact`], as Linux since 5.8 and RFC
//! 5961): one elsewhere in the window reaches the endpoint, which answers
//! it with a challenge ACK, and the flow goes on. A segment with a flag
//! combination no TCP sends ([`valid_flags`]) is invalid, as Linux's
//! conntrack calls it.
//!
//! All sequence arithmetic is modulo 2^32.

use crate::nat::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// One direction's window state: the sender of the packets keyed by the
/// entry that holds it. All zero until the direction's first segment
/// (`maxwin == 0`: nothing known).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpWindow {
    /// The sequence number after the last byte sent (SYN and FIN count one).
    pub end: u32,
    /// The furthest sequence number the other side allows: its ACK plus
    /// its window.
    pub maxend: u32,
    /// The largest window this side advertised, scaled; 0: nothing known.
    pub maxwin: u32,
    /// The window scale this side's SYN offered (0 unless both SYNs did).
    pub scale: u8,
    /// `WIN_F_*`.
    pub flags: u8,
    pub _pad: u16,
}

/// In [`TcpWindow::flags`]: this side's SYN carried the window scale option.
pub const WIN_F_SCALE: u8 = 1 << 0;

/// What window tracking reads of a segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Seg {
    pub seq: u32,
    pub ack: u32,
    /// Payload bytes.
    pub len: u32,
    /// The window field as sent (unscaled).
    pub win: u16,
    /// TCP flags (`TCP_*`).
    pub flags: u8,
    /// The window scale option of a SYN, or [`NO_WSCALE`].
    pub wscale: u8,
}

/// [`Seg::wscale`] of a segment without the option.
pub const NO_WSCALE: u8 = 0xff;
/// RFC 7323: larger shifts are taken as 14.
pub const MAX_WSCALE: u8 = 14;
/// The least ACK window Linux allows (`MAXACKWINCONST`).
const MAX_ACK_WIN_CONST: u32 = 66_000;

#[inline(always)]
const fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline(always)]
const fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// The sequence number after the segment (SYN and FIN count one each).
#[inline(always)]
pub const fn seg_end(s: &Seg) -> u32 {
    let mut end = s.seq.wrapping_add(s.len);
    if s.flags & TCP_SYN != 0 {
        end = end.wrapping_add(1);
    }
    if s.flags & TCP_FIN != 0 {
        end = end.wrapping_add(1);
    }
    end
}

/// Starts a direction's state from its SYN (or SYN-ACK).
#[inline(always)]
pub const fn start(w: &mut TcpWindow, s: &Seg) {
    let end = seg_end(s);
    w.end = end;
    w.maxend = end;
    // A SYN's window is never scaled.
    w.maxwin = if s.win == 0 { 1 } else { s.win as u32 };
    if s.wscale != NO_WSCALE {
        w.flags = WIN_F_SCALE;
        w.scale = if s.wscale > MAX_WSCALE {
            MAX_WSCALE
        } else {
            s.wscale
        };
    } else {
        w.flags = 0;
        w.scale = 0;
    }
    w._pad = 0;
}

/// The TCP flag combinations (of those conntrack keeps) a segment may carry,
/// as Linux's `tcp_valid_flags`: SYN, SYN-ACK, RST, RST-ACK, FIN-ACK and
/// ACK. A segment with none of them (a null segment, or PSH alone), a FIN
/// without ACK, SYN with FIN or RST, and the like are sent by no TCP.
#[inline(always)]
pub const fn valid_flags(flags: u8) -> bool {
    let f = flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    f == TCP_SYN
        || f == TCP_SYN | TCP_ACK
        || f == TCP_RST
        || f == TCP_RST | TCP_ACK
        || f == TCP_FIN | TCP_ACK
        || f == TCP_ACK
}

/// A RST that may end an established flow: its sequence number is exactly
/// the next one its sender (state `sender`) would use, what a stack's own
/// RST carries. One elsewhere in the window may be blind: RFC 5961's
/// receiver answers it with a challenge ACK, and Linux's conntrack (since
/// 5.8) leaves the flow as it is. A side not heard from yet has nothing to
/// match (its RST was judged by its ACK).
#[inline(always)]
pub const fn rst_exact(sender: &TcpWindow, s: &Seg) -> bool {
    sender.maxwin == 0 || s.seq == sender.end
}

/// Judges the segment `s` sent by the side whose state is `sender` to the
/// side whose state is `receiver`, and notes it on both when it is in the
/// window. Returns whether it was. A RST is judged but notes nothing.
#[inline(always)]
pub fn track(sender: &mut TcpWindow, receiver: &mut TcpWindow, s: &Seg) -> bool {
    let syn = s.flags & TCP_SYN != 0;
    let rst = s.flags & TCP_RST != 0;
    let has_ack = s.flags & TCP_ACK != 0;
    // Only a SYN and a RST may come without an ACK (as Linux): a segment
    // without one would be believed at any sequence number, and one from a
    // side not heard from yet (a FIN before the SYN-ACK) would set where
    // that side is before its real SYN-ACK comes.
    if !has_ack && !syn && !rst {
        return false;
    }
    let win = if syn {
        s.win as u32
    } else {
        (s.win as u32) << (sender.scale & 15)
    };
    let end = seg_end(s);
    if sender.maxwin == 0 {
        if rst {
            // A RST from a side not heard from yet (a refused SYN): only
            // one that acknowledges what the receiver sent is believed.
            return has_ack && (receiver.maxwin == 0 || ack_fits(0, receiver, s.ack));
        }
        // This side's first segment (its SYN-ACK, or, its history lost,
        // one picked up mid-stream) is taken at its sequence numbers, so
        // only its ACK can be judged: checked before anything is noted, or
        // a forged SYN-ACK would set this side's state and the real one be
        // out of the window.
        let first_win = if win == 0 { 1 } else { win };
        if has_ack && receiver.maxwin != 0 && !ack_fits(first_win, receiver, s.ack) {
            return false;
        }
        if syn {
            // The answer's SYN-ACK (or a simultaneous open): scaling holds
            // only if both SYNs offered it.
            start(sender, s);
            if sender.flags & receiver.flags & WIN_F_SCALE == 0 {
                sender.scale = 0;
                receiver.scale = 0;
            }
        } else {
            sender.end = end;
            sender.maxwin = first_win;
            sender.maxend = end.wrapping_add(first_win);
            if receiver.maxwin == 0 {
                receiver.end = s.ack;
                receiver.maxend = s.ack;
            }
        }
    }
    let ack = if has_ack { s.ack } else { receiver.end };
    let in_window = !after(s.seq, sender.maxend)
        && (receiver.maxwin == 0
            || after(
                end,
                sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1),
            ))
        && (!has_ack || receiver.maxwin == 0 || ack_fits(sender.maxwin, receiver, ack));
    if !in_window {
        return false;
    }
    if rst {
        // A RST carries nothing to note: the flow ends, or the endpoint
        // answers it (`rst_exact`).
        return true;
    }
    if sender.maxwin < win {
        sender.maxwin = win;
    }
    if after(end, sender.end) {
        sender.end = end;
    }
    if receiver.maxwin != 0 && after(end, sender.maxend) {
        receiver.maxwin = receiver
            .maxwin
            .wrapping_add(end.wrapping_sub(sender.maxend));
    }
    let allowed = ack.wrapping_add(win);
    if after(allowed, receiver.maxend.wrapping_sub(1)) {
        receiver.maxend = if win == 0 {
            allowed.wrapping_add(1)
        } else {
            allowed
        };
    }
    true
}

/// An ACK that acknowledges nothing the receiver has not sent, and not too
/// far back: the sender's largest window (`sender_maxwin`), at least
/// [`MAX_ACK_WIN_CONST`].
#[inline(always)]
fn ack_fits(sender_maxwin: u32, receiver: &TcpWindow, ack: u32) -> bool {
    let back = if sender_maxwin > MAX_ACK_WIN_CONST {
        sender_maxwin
    } else {
        MAX_ACK_WIN_CONST
    };
    !after(ack, receiver.end) && after(ack, receiver.end.wrapping_sub(back).wrapping_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, ack: u32, len: u32, win: u16, flags: u8) -> Seg {
        Seg {
            seq,
            ack,
            len,
            win,
            flags,
            wscale: NO_WSCALE,
        }
    }

    /// A handshake, client ISN 1000 with scale 7, server ISN 5000 with
    /// scale 7, and a little data each way.
    fn established() -> (TcpWindow, TcpWindow) {
        let (mut c, mut s) = (TcpWindow::default(), TcpWindow::default());
        start(
            &mut c,
            &Seg {
                wscale: 7,
                ..seg(1000, 0, 0, 64240, TCP_SYN)
            },
        );
        let synack = Seg {
            wscale: 7,
            ..seg(5000, 1001, 0, 65160, TCP_SYN | TCP_ACK)
        };
        assert!(track(&mut s, &mut c, &synack));
        assert!(track(&mut c, &mut s, &seg(1001, 5001, 0, 502, TCP_ACK)));
        assert!(track(&mut c, &mut s, &seg(1001, 5001, 100, 502, TCP_ACK)));
        assert!(track(&mut s, &mut c, &seg(5001, 1101, 50, 509, TCP_ACK)));
        (c, s)
    }

    #[test]
    fn a_handshake_and_data_are_in_the_window() {
        let (c, s) = established();
        assert_eq!((c.end, s.end), (1101, 5051));
        assert_eq!((c.scale, s.scale), (7, 7));
        // The server may send up to the client's ACK plus its window.
        assert_eq!(s.maxend, 5001 + (502 << 7));
        assert_eq!(c.maxend, 1101 + (509 << 7));
    }

    #[test]
    fn a_reset_outside_the_window_is_refused_and_one_inside_accepted() {
        let (mut c, mut s) = established();
        let before = (c, s);
        // Far ahead, far behind, half the space away.
        for seq in [
            5051 + (1 << 20),
            5051u32.wrapping_sub(1 << 20),
            5051 + (1 << 31),
        ] {
            assert!(!track(&mut s, &mut c, &seg(seq, 0, 0, 0, TCP_RST)), "{seq}");
        }
        assert_eq!((c, s), before, "nothing moved");
        // A RST|ACK whose ACK acknowledges data never sent.
        assert!(!track(
            &mut s,
            &mut c,
            &seg(5051, 1101 + (1 << 20), 0, 0, TCP_RST | TCP_ACK)
        ));
        assert!(track(&mut s, &mut c, &seg(5051, 0, 0, 0, TCP_RST)));
        // Anywhere in the client's window will do, as for Linux.
        let (mut c, mut s) = established();
        assert!(track(&mut s, &mut c, &seg(5051 + 1000, 0, 0, 0, TCP_RST)));
    }

    #[test]
    fn without_both_scale_options_windows_are_not_scaled() {
        let (mut c, mut s) = (TcpWindow::default(), TcpWindow::default());
        start(
            &mut c,
            &Seg {
                wscale: 7,
                ..seg(1000, 0, 0, 64240, TCP_SYN)
            },
        );
        assert!(track(
            &mut s,
            &mut c,
            &seg(5000, 1001, 0, 1000, TCP_SYN | TCP_ACK)
        ));
        assert_eq!((c.scale, s.scale), (0, 0));
        assert!(track(&mut c, &mut s, &seg(1001, 5001, 0, 502, TCP_ACK)));
        assert_eq!(s.maxend, 5001 + 502, "the client's window, unscaled");
    }

    #[test]
    fn a_refused_syn_is_reset_only_by_a_rst_that_acknowledges_it() {
        let mut c = TcpWindow::default();
        start(&mut c, &seg(1000, 0, 0, 64240, TCP_SYN));
        let mut s = TcpWindow::default();
        assert!(!track(&mut s, &mut c, &seg(0, 0, 0, 0, TCP_RST)), "no ACK");
        assert!(!track(
            &mut s,
            &mut c,
            &seg(0, 777_777, 0, 0, TCP_RST | TCP_ACK)
        ));
        assert!(track(
            &mut s,
            &mut c,
            &seg(0, 1001, 0, 0, TCP_RST | TCP_ACK)
        ));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let (mut c, mut s) = (TcpWindow::default(), TcpWindow::default());
        start(&mut c, &seg(u32::MAX - 10, 0, 0, 65535, TCP_SYN));
        let isn = u32::MAX - 5;
        assert!(track(
            &mut s,
            &mut c,
            &seg(isn, u32::MAX - 9, 0, 65535, TCP_SYN | TCP_ACK)
        ));
        assert!(track(
            &mut c,
            &mut s,
            &seg(u32::MAX - 9, isn + 1, 100, 65535, TCP_ACK)
        ));
        assert_eq!(c.end, 90, "wrapped");
        assert!(track(
            &mut s,
            &mut c,
            &seg(isn + 1, 90, 0, 65535, TCP_RST | TCP_ACK)
        ));
        assert!(!track(
            &mut s,
            &mut c,
            &seg(isn.wrapping_add(1 << 30), 90, 0, 0, TCP_RST)
        ));
    }

    /// The client's SYN sent, nothing heard from the server yet.
    fn syn_sent() -> (TcpWindow, TcpWindow) {
        let mut c = TcpWindow::default();
        start(
            &mut c,
            &Seg {
                wscale: 7,
                ..seg(1000, 0, 0, 64240, TCP_SYN)
            },
        );
        (c, TcpWindow::default())
    }

    #[test]
    fn a_segment_without_ack_is_believed_only_if_a_syn_or_a_rst() {
        let (mut c, mut s) = syn_sent();
        let before = (c, s);
        // A forged FIN (or a null segment) from the server's side before
        // its SYN-ACK: not in the window, nothing noted.
        assert!(!track(&mut s, &mut c, &seg(9_000_000, 0, 0, 512, TCP_FIN)));
        assert!(!track(&mut s, &mut c, &seg(9_000_000, 0, 0, 512, 0)));
        assert_eq!((c, s), before);
        // The real SYN-ACK then starts the server's side.
        let synack = Seg {
            wscale: 7,
            ..seg(5000, 1001, 0, 65160, TCP_SYN | TCP_ACK)
        };
        assert!(track(&mut s, &mut c, &synack));
        assert_eq!(s.end, 5001);
        // Mid-stream too: a FIN without ACK is refused.
        let (mut c, mut s) = established();
        assert!(!track(&mut s, &mut c, &seg(5051, 0, 0, 509, TCP_FIN)));
    }

    #[test]
    fn a_syn_ack_that_acknowledges_nothing_sent_starts_nothing() {
        let (mut c, mut s) = syn_sent();
        let before = (c, s);
        let forged = Seg {
            wscale: 7,
            ..seg(5000 + 1_000_000, 777_777, 0, 65160, TCP_SYN | TCP_ACK)
        };
        assert!(!track(&mut s, &mut c, &forged));
        assert_eq!((c, s), before, "the server's side is not started");
        let synack = Seg {
            wscale: 7,
            ..seg(5000, 1001, 0, 65160, TCP_SYN | TCP_ACK)
        };
        assert!(track(&mut s, &mut c, &synack));
        assert!(track(&mut c, &mut s, &seg(1001, 5001, 0, 502, TCP_ACK)));
    }

    #[test]
    fn a_reset_moves_nothing_and_only_an_exact_one_is_exact() {
        let (mut c, mut s) = established();
        let before = (c, s);
        // In the window, a little ahead of the server's next byte.
        let ahead = seg(5051 + 1000, 0, 0, 0, TCP_RST);
        assert!(track(&mut s, &mut c, &ahead));
        assert_eq!((c, s), before, "a RST notes nothing");
        assert!(!rst_exact(&s, &ahead));
        assert!(rst_exact(&s, &seg(5051, 0, 0, 0, TCP_RST)));
        assert!(rst_exact(&c, &seg(1101, 0, 0, 0, TCP_RST | TCP_ACK)));
        assert!(!rst_exact(&c, &seg(1100, 0, 0, 0, TCP_RST | TCP_ACK)));
    }

    #[test]
    fn only_the_flag_combinations_a_tcp_sends_are_valid() {
        const PSH: u8 = 0x08;
        for f in [
            TCP_SYN,
            TCP_SYN | TCP_ACK,
            TCP_RST,
            TCP_RST | TCP_ACK,
            TCP_FIN | TCP_ACK,
            TCP_ACK,
            TCP_ACK | PSH,
            TCP_FIN | TCP_ACK | PSH,
        ] {
            assert!(valid_flags(f), "{f:#x}");
        }
        for f in [
            0,
            PSH,
            TCP_FIN,
            TCP_FIN | PSH,
            TCP_SYN | TCP_FIN,
            TCP_SYN | TCP_RST,
            TCP_RST | TCP_FIN,
            TCP_SYN | TCP_ACK | TCP_RST,
            TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK,
        ] {
            assert!(!valid_flags(f), "{f:#x}");
        }
    }
}
