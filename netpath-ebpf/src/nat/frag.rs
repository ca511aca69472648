//! Fragments through the uplinks' NAT, both families (`netpath_common::frag`, Cilium's
//! fragment tracking): a datagram's first fragment carries its L4 header, so it takes
//! the normal translation path classed as it would be whole; what that did to its
//! addresses is recorded in `NETPATH_FRAG`/`NETPATH_FRAG6` under the datagram's identity
//! as it arrived (source, destination, identification, protocol). Its later fragments
//! get the same addresses from the record — an L3 rewrite only (IPv4's header checksum
//! fixed; no L4 header to touch) — and go the same way (straight to the endpoint if the
//! first did). A later fragment that arrives before its first, or whose first was never
//! seen, is dropped (`DropReason::FragmentUnseen`, as Cilium's `DROP_FRAG_NOT_FOUND`) on
//! a path the NAT translates on — to the uplink's own address, from a masqueraded
//! source — and passes untouched elsewhere: never passed on half-translated.

// By reference, the map helpers get pointers into the work space, not copies of the
// keys on the stack.
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "pointers into the work space, not copies on the stack"
)]

use aya_ebpf::{
    maps::{LruHashMap, PerCpuArray},
    programs::TcContext,
};
use netpath_common::{
    frag::{FRAG_REDIRECTED, FragKeyOf, FragValueOf, FragWork, Later, fragment_of, later, records},
    maps::DropReason,
    packet::{Classified, Frame, PacketClass},
};

use super::{Family, rewrite_failed};
use crate::{
    TC_ACT_REDIRECT, TC_ACT_UNSPEC, TcVerdict,
    family::{Ip, V4, V6},
    frame::TcFrame,
    maps::{NETPATH_FRAG, NETPATH_FRAG_WORK, NETPATH_FRAG_WORK6, NETPATH_FRAG6},
    route::{Hop, to_endpoint},
};

/// A family as fragment tracking sees it: its fragment map and work space, and what
/// decides where the NAT translates (the masquerade's maps, through [`Family`]).
pub(crate) trait Fragments: Ip + Hop {
    /// Datagram identity → the addresses its later fragments get.
    fn frags() -> &'static LruHashMap<FragKeyOf<Self::Addr>, FragValueOf<Self::Addr>>;
    /// The per-CPU work space that carries a first fragment's key across its
    /// translation.
    fn work() -> &'static PerCpuArray<FragWork<Self::Addr>>;
    /// The address of uplink `ifindex` in this family, if it is one.
    fn uplink_addr(ifindex: u32) -> Option<Self::Addr>;
    /// Whether `src` is in a masqueraded subnet.
    fn masqueraded(src: Self::Addr) -> bool;
    /// The source and destination address, in one bounds-checked load. (Verifier: two
    /// loads after a translation's stores, LLVM dropped the first bound as implied by
    /// the second, which the verifier does not see: "!read_ok".)
    fn addresses(frame: &TcFrame) -> Option<(Self::Addr, Self::Addr)>;
}

/// The [`Fragments`] methods that come from the maps and the masquerade's [`Family`].
macro_rules! fragments {
    ($frags:ident, $work:ident) => {
        #[inline(always)]
        fn frags() -> &'static LruHashMap<FragKeyOf<Self::Addr>, FragValueOf<Self::Addr>> {
            &$frags
        }

        #[inline(always)]
        fn work() -> &'static PerCpuArray<FragWork<Self::Addr>> {
            &$work
        }

        #[inline(always)]
        fn uplink_addr(ifindex: u32) -> Option<Self::Addr> {
            <Self as Family>::uplink(ifindex).map(|u| u.addr)
        }

        #[inline(always)]
        fn masqueraded(src: Self::Addr) -> bool {
            <Self as Family>::masq_network(src).is_some()
        }
    };
}

impl Fragments for V4 {
    fragments!(NETPATH_FRAG, NETPATH_FRAG_WORK);

    #[inline(always)]
    fn addresses(frame: &TcFrame) -> Option<([u8; 4], [u8; 4])> {
        let a = frame.load::<8>(Self::SRC)?;
        Some(([a[0], a[1], a[2], a[3]], [a[4], a[5], a[6], a[7]]))
    }
}

impl Fragments for V6 {
    fragments!(NETPATH_FRAG6, NETPATH_FRAG_WORK6);

    #[inline(always)]
    fn addresses(frame: &TcFrame) -> Option<([u8; 16], [u8; 16])> {
        let a = frame.load::<32>(Self::SRC)?;
        let (mut src, mut dst) = ([0; 16], [0; 16]);
        src.copy_from_slice(&a[..16]);
        dst.copy_from_slice(&a[16..]);
        Some((src, dst))
    }
}

/// This CPU's work space of family `F`.
#[inline(always)]
fn work<F: Fragments>() -> Option<&'static mut FragWork<F::Addr>> {
    let w = F::work().get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this run alone (a program runs to completion on
    // its CPU), valid for the run.
    Some(unsafe { &mut *w })
}

/// Which side of the uplink a fragment is on, for where the NAT must translate.
#[derive(Clone, Copy)]
pub enum Side {
    /// Uplink ingress: fragments to the uplink's own address.
    Ingress,
    /// Uplink egress: fragments from a masqueraded source.
    Egress,
}

/// What [`fragment`] made of a packet.
pub enum Fragment {
    /// Not a tracked fragment: the uplink's path as it is.
    Whole,
    /// A first fragment, classed as it would be whole: the uplink's path, then
    /// [`first_done`] with that class.
    First(Classified),
    /// A later fragment, done with: this action.
    Done(i32),
}

/// Verifier: the fragment steps are inlined into the uplink programs, the whole-packet
/// path called after them as for any packet, never from inside them: called from a
/// subprogram of theirs, NAT66's step chain passed the verifier's 512 bytes of stack
/// (IPv6 keys and addresses on the stack: "combined stack size" over 512), and a
/// subprogram returning a `Result` through memory left a stack pointer in R0 ("cannot
/// return stack pointer to the caller"). IPv6's 40-byte key and addresses live in the
/// per-CPU work space (`NETPATH_FRAG_WORK6`; IPv4's likewise, one code path).
///
/// On uplink `ifindex`'s `side`: a first fragment's key is noted for [`first_done`]; a
/// later one is translated from its first's record or dropped, here.
#[inline(always)]
pub(crate) fn fragment(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    side: Side,
    ifindex: u32,
) -> Result<Fragment, DropReason> {
    // Verifier: each family's steps from the start (`fragment_of` shared by both, LLVM
    // merged the families' paths into pointer arithmetic the verifier refuses).
    match c.class {
        PacketClass::Ipv4Fragment => {
            start::<V4>(ctx, frame, c, |k| must_translate::<V4>(side, ifindex, k))
        }
        PacketClass::Ipv6Fragment => {
            start::<V6>(ctx, frame, c, |k| must_translate::<V6>(side, ifindex, k))
        }
        _ => Ok(Fragment::Whole),
    }
}

/// [`fragment`] for a fragment of family `F`; `must`: whether the NAT would have had to
/// translate a packet with a key's addresses.
#[inline(always)]
fn start<F: Fragments>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    must: impl FnOnce(&FragKeyOf<F::Addr>) -> bool,
) -> Result<Fragment, DropReason> {
    let Some(frag) = fragment_of(frame, c) else {
        return Ok(Fragment::Whole);
    };
    let Some(w) = work::<F>() else {
        return Ok(Fragment::Whole);
    };
    let Some((src, dst)) = F::addresses(frame) else {
        return Ok(Fragment::Whole);
    };
    w.key = FragKeyOf::new(src, dst, frag.id, frag.whole.proto);
    w.must = u8::from(must(&w.key));
    if frag.is_first() {
        return Ok(Fragment::First(frag.whole));
    }
    Ok(Fragment::Done(decode(later_outlined::<F>(ctx))?))
}

/// [`later_step`] as a BPF subprogram (off the program's frame, which the whole-packet
/// path's subprograms are called from), its verdict as one scalar ([`encode`]).
#[inline(never)]
fn later_outlined<F: Fragments>(ctx: &TcContext) -> i64 {
    encode(later_step::<F>(ctx))
}

/// A later fragment whose key `start` put in the work space: rewritten from its
/// first's record (and handed to the endpoint if its first was), passed, or dropped.
#[inline(always)]
fn later_step<F: Fragments>(ctx: &TcContext) -> TcVerdict {
    // This run's work space, which `start` filled.
    let Some(w) = work::<F>() else {
        return Ok(TC_ACT_UNSPEC);
    };
    // SAFETY: copied out at once.
    let found = unsafe { F::frags().get(&w.key) }.copied();
    w.after = match later(found, w.must != 0) {
        Later::Rewrite(to) => to,
        Later::Unseen => return Err(DropReason::FragmentUnseen),
        Later::Pass => return Ok(TC_ACT_UNSPEC),
    };
    rewrite_addr::<F>(ctx, F::SRC, w.key.src, w.after.src)?;
    rewrite_addr::<F>(ctx, F::DST, w.key.dst, w.after.dst)?;
    if w.after.flags & FRAG_REDIRECTED == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    // Its first fragment went straight to the endpoint: so does it.
    let len = ctx.len() as u64;
    to_endpoint::<F>(ctx, w.after.dst, len).unwrap_or(Ok(TC_ACT_UNSPEC))
}

/// A verdict as one scalar, for a subprogram's return. Verifier: a `Result` returned
/// through memory left a stack pointer in R0 on some path ("cannot return stack pointer
/// to the caller"). Actions are -1 (`TC_ACT_UNSPEC`) and up; a drop is -2 - its reason.
#[inline(always)]
fn encode(v: TcVerdict) -> i64 {
    match v {
        Ok(action) => i64::from(action),
        Err(reason) => -2 - i64::from(reason as u32),
    }
}

/// The verdict [`encode`] made `v` of.
#[inline(always)]
fn decode(v: i64) -> TcVerdict {
    if v >= -1 {
        return Ok(v as i32);
    }
    let reason = (-2 - v) as usize;
    Err(DropReason::ALL
        .get(reason)
        .copied()
        .unwrap_or(DropReason::FragmentUnseen))
}

/// Makes `c` the class `whole` of a first fragment, for the whole-packet path.
///
/// Verifier: the offset in one 64-bit store. Written plainly, LLVM stored it as two
/// 32-bit halves (the high one a constant 0), and a subprogram reading it back as one
/// 64-bit value got a scalar without bounds ("math between pkt pointer and register
/// with unbounded min value").
#[inline(always)]
pub(crate) fn reclassify(c: &mut Classified, whole: Classified) {
    c.class = whole.class;
    c.proto = whole.proto;
    // SAFETY: a write to a field of a live local through a reference to it.
    unsafe { core::ptr::write_volatile(&mut c.l4_offset, whole.l4_offset) };
}

/// After the uplink's path took a first fragment (classed `c` as whole) with `action`:
/// records the addresses it left with, for its later fragments.
#[inline(always)]
pub(crate) fn first_done(ctx: &TcContext, c: Classified, action: i32) {
    let _ = match c.class.is_ipv6() {
        true => record_outlined::<V6>(ctx, action),
        false => record_outlined::<V4>(ctx, action),
    };
}

/// [`record`] as a BPF subprogram, returning a scalar (see [`encode`]). Verifier:
/// inlined into the program after the whole-packet path, LLVM shifted a register the
/// verifier still held the context pointer in ("pointer arithmetic with <<= operator
/// prohibited").
#[inline(never)]
fn record_outlined<F: Fragments>(ctx: &TcContext, action: i32) -> i64 {
    record::<F>(ctx, action);
    0
}

#[inline(always)]
fn record<F: Fragments>(ctx: &TcContext, action: i32) {
    // This run's work space, which `start` filled.
    let Some(w) = work::<F>() else {
        return;
    };
    // Read afresh: the translation's stores invalidated earlier packet pointers.
    let now = TcFrame::current(ctx);
    let Some((src, dst)) = F::addresses(&now) else {
        return;
    };
    let flags = if action == TC_ACT_REDIRECT {
        FRAG_REDIRECTED
    } else {
        0
    };
    w.after = FragValueOf::new(src, dst, flags);
    if records(&w.key, &w.after, w.must != 0) {
        // A full LRU map evicts its oldest entry; a failure only costs this datagram's
        // later fragments (dropped as unseen, never mistranslated).
        let _ = F::frags().insert(&w.key, &w.after, 0);
    }
}

/// Whether a packet with `key`'s addresses on uplink `ifindex`'s `side` is on a path
/// where the NAT would have had to translate it (so an untracked later fragment is
/// dropped).
#[inline(always)]
fn must_translate<F: Fragments>(side: Side, ifindex: u32, key: &FragKeyOf<F::Addr>) -> bool {
    let Some(uplink) = F::uplink_addr(ifindex) else {
        return false;
    };
    match side {
        Side::Ingress => key.dst == uplink,
        Side::Egress => F::masqueraded(key.src),
    }
}

/// Rewrites the address at `at` from `old` to `new` (if they differ), fixing the IP
/// header checksum (IPv4); a later fragment has no L4 checksum to touch.
#[inline(always)]
fn rewrite_addr<F: Fragments>(
    ctx: &TcContext,
    at: usize,
    old: F::Addr,
    new: F::Addr,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.store(at, &new, 0).map_err(rewrite_failed)?;
    F::l3_csum(ctx, old, new)
}
