//! Socket hooks for the host's own access to published ports, with no proxy
//! process and no `route_localnet`: `connect()` and `sendmsg()` to a
//! published port (IPv4: on the uplink's address or on 127.0.0.0/8; IPv6:
//! on the uplink's IPv6 address or on `::1`) are pointed at the container;
//! `recvmsg()` and `getpeername()` show the published address again.
//!
//! The logic is written once, generic over the family ([`Family`]); each
//! family has its own service and reverse maps (an IPv6 port leads to the
//! container's IPv6 address, in `DNET_SERVICES6`). A dual-stack socket's
//! v4-mapped address (`::ffff:127.0.0.1`, `::ffff:UPLINK4`) is IPv4's, in
//! the IPv6 hooks too: it is pointed at the container's IPv4 address,
//! mapped, and remembered in IPv4's reverse map (a UDP `sendmsg()` to it
//! runs the IPv4 hook, its answers the IPv6 `recvmsg()` one). An IPv4-only container
//! has no IPv6 service: a host's IPv6 connection to its port is left to
//! the kernel, which refuses it (nothing listens there).
//!
//! The hooks sit on the cgroup v2 root, which every namespace of the
//! machine shares: each acts only on sockets of the daemon's own network
//! namespace (the netns cookie in the config), and leaves all others alone.

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use dnet_common::{Config, ServiceKey6, SockRev, SockRev6, SockRevKey, SockRevKey6};

use crate::{
    l4::{IPPROTO_TCP, IPPROTO_UDP},
    maps::{CONFIG, SERVICES6, SOCK_REVNAT, SOCK_REVNAT6},
    nat,
};

/// The verdict that lets the call go on.
const ALLOW: i32 = 1;

/// What the hooks need of an address family.
pub trait Family {
    type Addr: Copy;

    /// The address the socket call carries.
    ///
    /// # Safety
    /// `sa` is the context's socket address, of a hook of this family.
    unsafe fn read(sa: *const bpf_sock_addr) -> Self::Addr;

    /// Replaces the address the socket call carries.
    ///
    /// # Safety
    /// As [`Family::read`], in a hook where the address is writable.
    unsafe fn write(sa: *mut bpf_sock_addr, addr: Self::Addr);

    /// Ports published on `addr` are answered here: loopback or the
    /// uplink's address.
    fn published_on(cfg: &Config, addr: &Self::Addr) -> bool;

    /// The backend (address, port) of the port published at `addr`,
    /// `port_be` (or on every address).
    fn service(addr: Self::Addr, port_be: u16, proto: u8) -> Option<(Self::Addr, u16)>;

    /// Remembers that the socket `cookie` asked for `addr`:`port_be` and
    /// was pointed at `backend`:`backend_port_be`.
    fn remember(
        cookie: u64,
        backend: Self::Addr,
        backend_port_be: u16,
        addr: Self::Addr,
        port_be: u16,
    );

    /// What the socket `cookie` asked for when it was pointed at
    /// `backend`:`backend_port_be`.
    fn recall(cookie: u64, backend: Self::Addr, backend_port_be: u16) -> Option<(Self::Addr, u16)>;
}

/// IPv4: `connect4`, `sendmsg4`, `recvmsg4`, `getpeername4`.
pub struct V4;

impl Family for V4 {
    type Addr = u32;

    #[inline(always)]
    unsafe fn read(sa: *const bpf_sock_addr) -> u32 {
        // SAFETY: the caller's; the verifier rewrites this into a read of
        // the real socket address.
        unsafe { (*sa).user_ip4 }
    }

    #[inline(always)]
    unsafe fn write(sa: *mut bpf_sock_addr, addr: u32) {
        // SAFETY: the caller's.
        unsafe { (*sa).user_ip4 = addr }
    }

    #[inline(always)]
    fn published_on(cfg: &Config, addr: &u32) -> bool {
        addr.to_ne_bytes()[0] == 127 || *addr == cfg.uplink_addr_be
    }

    #[inline(always)]
    fn service(addr: u32, port_be: u16, proto: u8) -> Option<(u32, u16)> {
        nat::service(addr, port_be, proto).map(|s| (s.backend_be, s.backend_port_be))
    }

    #[inline(always)]
    fn remember(cookie: u64, backend: u32, backend_port_be: u16, addr: u32, port_be: u16) {
        let key = SockRevKey {
            cookie,
            backend_be: backend,
            backend_port_be,
            _pad: 0,
        };
        let rev = SockRev {
            addr_be: addr,
            port_be,
            _pad: 0,
        };
        let _ = SOCK_REVNAT.insert(&key, &rev, 0);
    }

    #[inline(always)]
    fn recall(cookie: u64, backend: u32, backend_port_be: u16) -> Option<(u32, u16)> {
        let key = SockRevKey {
            cookie,
            backend_be: backend,
            backend_port_be,
            _pad: 0,
        };
        // SAFETY: read-only map access to plain data.
        unsafe { SOCK_REVNAT.get(&key) }.map(|r| (r.addr_be, r.port_be))
    }
}

/// IPv6: `connect6`, `sendmsg6`, `recvmsg6`, `getpeername6`.
pub struct V6;

/// `::1`, as the socket address holds it.
const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

impl Family for V6 {
    type Addr = [u8; 16];

    #[inline(always)]
    unsafe fn read(sa: *const bpf_sock_addr) -> [u8; 16] {
        let mut a = [0u8; 16];
        for i in 0..4 {
            // SAFETY: the caller's; the verifier takes 4-byte reads of
            // `user_ip6`, word by word, in network order as stored.
            let w = unsafe { (*sa).user_ip6[i] }.to_ne_bytes();
            a[i * 4..i * 4 + 4].copy_from_slice(&w);
        }
        a
    }

    #[inline(always)]
    unsafe fn write(sa: *mut bpf_sock_addr, addr: [u8; 16]) {
        for i in 0..4 {
            let w = u32::from_ne_bytes([
                addr[i * 4],
                addr[i * 4 + 1],
                addr[i * 4 + 2],
                addr[i * 4 + 3],
            ]);
            // SAFETY: the caller's; 4-byte writes of `user_ip6` are the
            // ones the verifier takes.
            unsafe { (*sa).user_ip6[i] = w }
        }
    }

    #[inline(always)]
    fn published_on(cfg: &Config, addr: &[u8; 16]) -> bool {
        if let Some(v4) = v4_mapped(addr) {
            return V4::published_on(cfg, &v4);
        }
        *addr == LOOPBACK6 || (cfg.uplink_addr6 != [0; 16] && *addr == cfg.uplink_addr6)
    }

    #[inline(always)]
    fn service(addr: [u8; 16], port_be: u16, proto: u8) -> Option<([u8; 16], u16)> {
        if let Some(v4) = v4_mapped(&addr) {
            return V4::service(v4, port_be, proto).map(|(b, p)| (mapped(b), p));
        }
        service6(addr, port_be, proto).map(|s| (s.backend, s.backend_port_be))
    }

    #[inline(always)]
    fn remember(
        cookie: u64,
        backend: [u8; 16],
        backend_port_be: u16,
        addr: [u8; 16],
        port_be: u16,
    ) {
        if let (Some(b4), Some(a4)) = (v4_mapped(&backend), v4_mapped(&addr)) {
            return V4::remember(cookie, b4, backend_port_be, a4, port_be);
        }
        let key = SockRevKey6 {
            cookie,
            backend,
            backend_port_be,
            _pad: [0; 6],
        };
        let rev = SockRev6 {
            addr,
            port_be,
            _pad: 0,
        };
        let _ = SOCK_REVNAT6.insert(&key, &rev, 0);
    }

    #[inline(always)]
    fn recall(cookie: u64, backend: [u8; 16], backend_port_be: u16) -> Option<([u8; 16], u16)> {
        if let Some(b4) = v4_mapped(&backend) {
            return V4::recall(cookie, b4, backend_port_be).map(|(a, p)| (mapped(a), p));
        }
        let key = SockRevKey6 {
            cookie,
            backend,
            backend_port_be,
            _pad: [0; 6],
        };
        // SAFETY: read-only map access to plain data.
        unsafe { SOCK_REVNAT6.get(&key) }.map(|r| (r.addr, r.port_be))
    }
}

/// The IPv4 address (network order) of a v4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), which a dual-stack socket carries for an IPv4 peer.
#[inline(always)]
fn v4_mapped(a: &[u8; 16]) -> Option<u32> {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    (w(0) == 0 && w(4) == 0 && w(8) == u32::from_be(0xffff)).then(|| w(12))
}

/// `::ffff:a.b.c.d` for the IPv4 address `v4` (network order).
#[inline(always)]
fn mapped(v4: u32) -> [u8; 16] {
    let b = v4.to_ne_bytes();
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3],
    ]
}

/// The port published over IPv6 at `addr`, `port_be`, or on every address.
#[inline(always)]
pub fn service6(addr: [u8; 16], port_be: u16, proto: u8) -> Option<dnet_common::Service6> {
    let mut k = ServiceKey6 {
        addr,
        port_be,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only map access to plain data.
    unsafe {
        if let Some(s) = SERVICES6.get(&k) {
            return Some(*s);
        }
        k.addr = [0; 16];
        SERVICES6.get(&k).copied()
    }
}

/// The config, if the socket is in the daemon's namespace.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> Option<Config> {
    let cfg = CONFIG.get(0).copied()?;
    if cfg.netns_cookie == 0 {
        return None;
    }
    // SAFETY: a helper call on the program's own context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    (cookie == cfg.netns_cookie).then_some(cfg)
}

/// `connect()` and `sendmsg()`: a published port becomes its backend.
#[inline(always)]
pub fn to_backend<F: Family>(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = ours(ctx) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // SAFETY: reading fields of the context the kernel passed, a hook of
    // `F`'s family; the verifier rewrites these into reads of the real
    // socket address.
    let (addr, port, proto) =
        unsafe { (F::read(sa), (*sa).user_port as u16, (*sa).protocol as u8) };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return ALLOW;
    }
    if !F::published_on(&cfg, &addr) {
        return ALLOW;
    }
    let Some((backend, backend_port)) = F::service(addr, port, proto) else {
        return ALLOW;
    };
    // SAFETY: a helper call on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    F::remember(cookie, backend, backend_port, addr, port);
    // SAFETY: the address and port are writable in connect and sendmsg
    // hooks of `F`'s family.
    unsafe {
        F::write(sa, backend);
        (*sa).user_port = backend_port as u32;
    }
    ALLOW
}

/// `recvmsg()` and `getpeername()`: the backend reads as the published port.
#[inline(always)]
pub fn from_backend<F: Family>(ctx: &SockAddrContext) -> i32 {
    if ours(ctx).is_none() {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: a helper call on the program's own context; field reads as
    // in `to_backend`.
    let (cookie, backend, backend_port) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            F::read(sa),
            (*sa).user_port as u16,
        )
    };
    if let Some((addr, port)) = F::recall(cookie, backend, backend_port) {
        // SAFETY: the address and port are writable in recvmsg and
        // getpeername hooks of `F`'s family.
        unsafe {
            F::write(sa, addr);
            (*sa).user_port = port as u32;
        }
    }
    ALLOW
}
