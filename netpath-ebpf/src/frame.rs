//! [`Frame`] over the kernel's packet buffers: every load is checked against `data_end`
//! right before the access, which is the form the verifier can prove safe.

use aya_ebpf::programs::{TcContext, XdpContext};
use netpath_common::packet::{Frame, PEEK_LEN, headers_len};

/// Bounds-checked load of `N` bytes at `start + offset` if they end before `end`.
#[inline(always)]
fn load_between<const N: usize>(start: usize, end: usize, offset: usize) -> Option<[u8; N]> {
    // Verifier: the comparison is on the very pointer we dereference (start + offset + N
    // against data_end), so the access below is within the packet.
    if start + offset + N > end {
        return None;
    }
    // SAFETY: [start + offset, start + offset + N) lies inside the packet (checked above);
    // `read_unaligned` because packet data has no alignment guarantee.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
}

pub struct XdpFrame {
    start: usize,
    end: usize,
}

impl XdpFrame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        XdpFrame {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    #[inline(always)]
    pub fn len(&self) -> u64 {
        (self.end - self.start) as u64
    }
}

impl Frame for XdpFrame {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        load_between(self.start, self.end, offset)
    }
}

pub struct TcFrame {
    start: usize,
    end: usize,
    /// skb->len: the whole packet, linear part and fragments.
    len: usize,
}

impl TcFrame {
    /// Makes sure the headers the programs read are in the linear area (skbs may carry
    /// them in fragments) — those and no more ([`headers_len`]: a pull copies, and
    /// reallocates a cloned skb's header) — then captures the packet bounds. Pulling
    /// invalidates earlier packet pointers, so it happens before `data`/`data_end` are
    /// read for the frame.
    #[inline(always)]
    pub fn new(ctx: &TcContext) -> Self {
        let peek = load_between::<PEEK_LEN>(ctx.data(), ctx.data_end(), 0);
        let want = headers_len(peek, ctx.len() as usize);
        if ctx.data_end() - ctx.data() < want {
            // Best effort: on failure we classify what is linear.
            let _ = ctx.pull_data(want as u32);
        }
        TcFrame {
            start: ctx.data(),
            end: ctx.data_end(),
            len: ctx.len() as usize,
        }
    }
}

impl TcFrame {
    /// The packet bounds as they are now, without pulling: for a BPF subprogram, which
    /// must not use its caller's packet pointers (a caller's or an earlier sibling's
    /// store invalidates them) but runs after [`TcFrame::new`] pulled the headers.
    #[inline(always)]
    pub fn current(ctx: &TcContext) -> Self {
        TcFrame {
            start: ctx.data(),
            end: ctx.data_end(),
            len: ctx.len() as usize,
        }
    }
}

impl Frame for TcFrame {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        load_between(self.start, self.end, offset)
    }
}
