//! Reporting events (`netpath_common::events`): at the end of every tc program run, a
//! drop — or a forward the sampling picks — becomes an `Event` in the ring, when the
//! daemon has asked for them (someone runs `netpath monitor`). Nothing waits for the
//! ring: a full one loses the event, counted per CPU. Nor does it wake the reader for
//! every event: only once the ring holds [`WAKEUP_BYTES`] (the daemon polls meanwhile).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};
use netpath_common::{
    events::{EVENT_DROP, EVENT_TRACE, Event, WAKEUP_BYTES, drop_of, last_drop},
    ipv6::IPPROTO_ICMPV6,
    maps::{DropReason, Hook},
    packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    TC_ACT_REDIRECT, TC_ACT_SHOT, ifindex,
    maps::{NETPATH_EVENTS, NETPATH_EVENTS_LOST, NETPATH_LAST_DROP, NETPATH_MONITOR},
};

/// A drop's code when the program said nothing of why (a verdict of "drop" not made by
/// `verdict`).
const UNKNOWN: u8 = u8::MAX;

/// Records that this CPU's program just dropped its packet at slot `at` of the drop
/// counters, for [`report`].
#[inline(always)]
pub fn remember_drop(at: u32) {
    if let Some(last) = NETPATH_LAST_DROP.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, no concurrent writer while this program runs.
        unsafe { *last = last_drop(at) };
    }
}

/// The reason of this CPU's last drop, forgotten once read.
#[inline(always)]
fn take_last_drop() -> u8 {
    let Some(last) = NETPATH_LAST_DROP.get_ptr_mut(0) else {
        return UNKNOWN;
    };
    // SAFETY: as in `remember_drop`.
    let at = unsafe { core::mem::replace(&mut *last, 0) };
    drop_of(at).map_or(UNKNOWN, |at| (at % DropReason::COUNT) as u8)
}

/// The end of a tc program at `hook` that decided `action` on a frame of `len` bytes:
/// reported if it is a drop and drops are watched, or a redirect the trace sampling
/// picks (one in `trace_every`).
#[inline(always)]
pub fn report(ctx: &TcContext, hook: Hook, action: i32, len: u64) {
    let Some(cfg) = NETPATH_MONITOR.get(0).copied() else {
        return;
    };
    if action == TC_ACT_SHOT && cfg.drops != 0 {
        emit(ctx, EVENT_DROP, hook as u8, take_last_drop(), len);
    } else if action == TC_ACT_REDIRECT && cfg.trace_every != 0 {
        // SAFETY: a helper without arguments.
        let pick = cfg.trace_every == 1 || unsafe { bpf_get_prandom_u32() } % cfg.trace_every == 0;
        if pick {
            emit(ctx, EVENT_TRACE, hook as u8, action as u8, len);
        }
    }
}

/// Big-endian `u16` at `at` of the packet, 0 past its end.
#[inline(always)]
fn be16(ctx: &TcContext, at: usize) -> u16 {
    ctx.load::<[u8; 2]>(at).map_or(0, u16::from_be_bytes)
}

/// Writes one event of the packet into the ring (or counts it lost). A subprogram of its
/// own: its 64-byte event never sits on the stack of the program's entry, whose call
/// chain (with `ingress6`) is close to the verifier's 512 bytes.
#[inline(never)]
fn emit(ctx: &TcContext, kind: u8, hook: u8, code: u8, len: u64) {
    let mut e = Event {
        // SAFETY: a helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ifindex: ifindex(ctx),
        len: len as u32,
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        kind,
        hook,
        code,
        family: 0,
        proto: 0,
        _pad: [0; 7],
    };
    // The headers are read with `bpf_skb_load_bytes` (ctx.load), which checks every
    // offset itself: no packet bounds to prove here.
    let l4 = match ctx.load::<[u8; 2]>(12) {
        Ok([0x08, 0x00]) => {
            e.family = 4;
            e.proto = ctx.load::<u8>(23).unwrap_or(0);
            if let Ok(a) = ctx.load::<[u8; 8]>(26) {
                e.src[..4].copy_from_slice(&a[..4]);
                e.dst[..4].copy_from_slice(&a[4..]);
            }
            14 + usize::from(ctx.load::<u8>(14).unwrap_or(0) & 0x0f) * 4
        }
        Ok([0x86, 0xdd]) => {
            e.family = 6;
            e.proto = ctx.load::<u8>(20).unwrap_or(0);
            e.src = ctx.load::<[u8; 16]>(22).unwrap_or([0; 16]);
            e.dst = ctx.load::<[u8; 16]>(38).unwrap_or([0; 16]);
            // The first header's ports: past extension headers, they are not parsed.
            54
        }
        _ => 0,
    };
    if l4 != 0 {
        match e.proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                e.sport = be16(ctx, l4);
                e.dport = be16(ctx, l4 + 2);
            }
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                e.sport = be16(ctx, l4 + 4);
                e.dport = e.sport;
            }
            _ => {}
        }
    }
    // Past the mark, wake the reader; below it, let its poll find the event.
    let flags = if NETPATH_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKEUP_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    if NETPATH_EVENTS.output::<Event>(&e, flags).is_err()
        && let Some(lost) = NETPATH_EVENTS_LOST.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot, no concurrent writer while this program runs.
        unsafe { *lost += 1 };
    }
}
