//! Entry points, one per attach point. Each is a thin call into the library.
#![no_std]
#![no_main]

use aya_ebpf::{macros::classifier, programs::TcContext};

/// tcx ingress of a container's host-side veth: traffic the container sends.
#[classifier]
pub fn lxc_from_container(ctx: TcContext) -> i32 {
    dnet_ebpf::lxc::from_container(&ctx)
}

/// tcx egress of a container's host-side veth: traffic the host stack sends
/// into the container.
#[classifier]
pub fn lxc_to_container(ctx: TcContext) -> i32 {
    dnet_ebpf::lxc::to_container(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: BPF programs cannot panic; the verifier rejects any path that
    // could reach this, so it is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
