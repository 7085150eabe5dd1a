//! Bounds-checked direct packet access.

use aya_ebpf::programs::TcContext;

/// The packet ends before `offset + size_of::<T>()`.
#[derive(Clone, Copy, Debug)]
pub struct OutOfBounds;

/// A pointer to a `T` at `offset` bytes into the packet, if the whole `T` lies
/// inside the linear data. The check is the one the verifier needs to allow
/// the access.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, OutOfBounds> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(OutOfBounds);
    }
    Ok((start + offset) as *mut T)
}
