//! [`Frame`] over the kernel's packet buffers: every load is checked against `data_end`
//! right before the access, which is the form the verifier can prove safe.

use aya_ebpf::programs::{TcContext, XdpContext};
use netpath_common::packet::Frame;

/// Bytes tc programs want in the skb's linear area: Ethernet + IPv4 with maximal options
/// + a TCP header without options.
const TC_PULL_LEN: u32 = 14 + 60 + 20;

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
    /// Makes sure the headers are in the linear area (skbs may carry them in fragments),
    /// then captures the packet bounds. Pulling invalidates earlier packet pointers, so it
    /// happens before `data`/`data_end` are read.
    #[inline(always)]
    pub fn new(ctx: &TcContext) -> Self {
        let want = if ctx.len() < TC_PULL_LEN {
            ctx.len()
        } else {
            TC_PULL_LEN
        };
        if ((ctx.data_end() - ctx.data()) as u32) < want {
            // Best effort: on failure we classify what is linear.
            let _ = ctx.pull_data(want);
        }
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
