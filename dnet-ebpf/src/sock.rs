//! Socket hooks for the host's own access to published ports, with no proxy
//! process and no `route_localnet`: `connect()` and `sendmsg()` to a
//! published port (on the uplink's address or on 127.0.0.0/8) are pointed
//! at the container; `recvmsg()` and `getpeername()` show the published
//! address again.
//!
//! The hooks sit on the cgroup v2 root, which every namespace of the
//! machine shares: each acts only on sockets of the daemon's own network
//! namespace (the netns cookie in the config), and leaves all others alone.

use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use dnet_common::{Config, SockRev, SockRevKey};

use crate::{
    l4::{IPPROTO_TCP, IPPROTO_UDP},
    maps::{CONFIG, SOCK_REVNAT},
    nat,
};

/// The verdict that lets the call go on.
const ALLOW: i32 = 1;

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
pub fn to_backend(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = ours(ctx) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // SAFETY: reading fields of the context the kernel passed; the verifier
    // rewrites these into reads of the real socket address.
    let (addr, port, proto) =
        unsafe { ((*sa).user_ip4, (*sa).user_port as u16, (*sa).protocol as u8) };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return ALLOW;
    }
    let loopback = addr.to_ne_bytes()[0] == 127;
    if !loopback && addr != cfg.uplink_addr_be {
        return ALLOW;
    }
    let Some(svc) = nat::service(addr, port, proto) else {
        return ALLOW;
    };
    // SAFETY: a helper call on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevKey {
        cookie,
        backend_be: svc.backend_be,
        backend_port_be: svc.backend_port_be,
        _pad: 0,
    };
    let _ = SOCK_REVNAT.insert(
        &key,
        &SockRev {
            addr_be: addr,
            port_be: port,
            _pad: 0,
        },
        0,
    );
    // SAFETY: these context fields are writable in connect4/sendmsg4.
    unsafe {
        (*sa).user_ip4 = svc.backend_be;
        (*sa).user_port = svc.backend_port_be as u32;
    }
    ALLOW
}

/// `recvmsg()` and `getpeername()`: the backend reads as the published port.
#[inline(always)]
pub fn from_backend(ctx: &SockAddrContext) -> i32 {
    if ours(ctx).is_none() {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: a helper call on the program's own context; field reads as above.
    let key = unsafe {
        SockRevKey {
            cookie: bpf_get_socket_cookie(ctx.as_ptr()),
            backend_be: (*sa).user_ip4,
            backend_port_be: (*sa).user_port as u16,
            _pad: 0,
        }
    };
    // SAFETY: read-only map access to plain data.
    if let Some(rev) = unsafe { SOCK_REVNAT.get(&key) } {
        // SAFETY: these context fields are writable in recvmsg4/getpeername4.
        unsafe {
            (*sa).user_ip4 = rev.addr_be;
            (*sa).user_port = rev.port_be as u32;
        }
    }
    ALLOW
}
