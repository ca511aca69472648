//! An address family ([`Ip`], crate-level) as the masquerade sees it ([`Family`]): its
//! ICMP types and NAT maps — [`V4`] with the maps IPv4 masquerade has always used, [`V6`]
//! with its own (`NETPATH_*6`) — and its work space ([`Scratch`]); and the checksum
//! update for an address change ([`csum_addr`]). `masq` and `icmp` are written once
//! against [`Family`], `publish` against [`Ip`], `hairpin` against both (it works in
//! [`Scratch`] too).

use aya_ebpf::{
    maps::{LruHashMap, lpm_trie::Key},
    programs::TcContext,
};
use netpath_common::{
    ipv6::IPV6_HLEN,
    maps::DropReason,
    nat::{Address, NatAge, NatTargetOf, TupleOf, UplinkOf, no_masq_key, no_masq_key6},
    packet::{ETH_HLEN, Frame, IP_TOTAL_LEN},
};

use super::{icmp::Quoted, rewrite_failed};
use crate::{
    family::{Ip, V4, V6},
    frame::TcFrame,
    maps::{
        NETPATH_MASQ_SRC, NETPATH_MASQ_SRC6, NETPATH_NAT_AGE, NETPATH_NAT_AGE6,
        NETPATH_NAT66_SCRATCH, NETPATH_NO_MASQ, NETPATH_NO_MASQ6, NETPATH_RNAT, NETPATH_RNAT6,
        NETPATH_SNAT, NETPATH_SNAT6, NETPATH_UPLINKS, NETPATH_UPLINKS6,
    },
};

/// The masquerade's work space for a new or ongoing connection: the tuples and targets
/// the map helpers take pointers to. Hairpin uses it too (`orig`: the packet's tuple,
/// `reply`, `back`: the front it was published as, `target`: the endpoint's address and
/// port), never in the same run as the masquerade.
///
/// Verifier: IPv4's lives on the stack; NAT66's, with 40-byte tuples, in a per-CPU map
/// (`NETPATH_NAT66_SCRATCH`): on the stack, `uplink_egress6` and the port search past
/// it passed the verifier's 512 bytes for a call chain. (A program runs to completion
/// on its CPU, so nothing else uses the slot meanwhile.)
#[repr(C)]
pub struct Scratch<A: Address> {
    /// The connection as the endpoint sent it.
    pub(super) orig: TupleOf<A>,
    /// Its replies' tuple (the NAT port's owner).
    pub(super) reply: TupleOf<A>,
    /// The original tuple of a connection whose stale port is taken back.
    pub(super) old_orig: TupleOf<A>,
    /// Where replies go back to.
    pub(super) back: NatTargetOf<A>,
    /// The new source.
    pub(super) target: NatTargetOf<A>,
    /// The uplink a new connection leaves by.
    pub(super) uplink: UplinkOf<A>,
}

/// A NAT table of a family: tuple → target.
pub(super) type NatMap<A> = LruHashMap<TupleOf<A>, NatTargetOf<A>>;

/// An address family as the masquerade sees it; what follows from [`Ip::IS_V6`] alone
/// is stated here once for both.
pub(super) trait Family: Ip {
    /// Its ICMP's echo request/reply types.
    const ECHO_REQUEST: u8 = if Self::IS_V6 { 128 } else { 8 };
    const ECHO_REPLY: u8 = if Self::IS_V6 { 129 } else { 0 };
    /// Port allocation and the rewrite run in BPF subprograms of their own (see
    /// `masq::allocate`): NAT66's, for the verifier's stack limit.
    const SUBPROGRAMS: bool = Self::IS_V6;
    /// Where the source address sits in an IP header.
    const QUOTED_SRC: usize = if Self::IS_V6 { 8 } else { 12 };

    /// Runs `f` with this family's [`Scratch`]; `None` if there is none (not expected).
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self::Addr>) -> R) -> Option<R>;

    /// The end of the IP datagram (Ethernet padding after it is no one's).
    #[inline(always)]
    fn datagram_end(frame: &TcFrame) -> Option<usize> {
        if Self::IS_V6 {
            // The payload length, after the version/class/flow word.
            let payload = frame.load_be16(ETH_HLEN + 4)?;
            Some(ETH_HLEN + IPV6_HLEN + usize::from(payload))
        } else {
            Some(ETH_HLEN + usize::from(frame.load_be16(IP_TOTAL_LEN)?))
        }
    }

    /// Whether ICMP type `kind` is an error that quotes the offending packet:
    /// destination unreachable, time exceeded, parameter problem (and ICMPv6's packet
    /// too big).
    #[inline(always)]
    fn is_error(kind: u8) -> bool {
        if Self::IS_V6 {
            matches!(kind, 1..=4)
        } else {
            matches!(kind, 3 | 11 | 12)
        }
    }

    /// The IP header an ICMP error quotes at `inner` (without options or extension
    /// headers).
    fn quoted(frame: &TcFrame, inner: usize) -> Option<Quoted<Self::Addr>>;
    /// The uplink `ifindex`'s address and port range for this family.
    fn uplink(ifindex: u32) -> Option<UplinkOf<Self::Addr>>;
    /// The network whose masqueraded subnet holds `src`.
    fn masq_network(src: Self::Addr) -> Option<u32>;
    /// Whether `network` reaches `dst` unmasqueraded (`--no-masquerade`).
    fn exempt(network: u32, dst: Self::Addr) -> bool;
    /// Original tuple → new source.
    fn snat() -> &'static NatMap<Self::Addr>;
    /// Reply tuple → original source.
    fn rnat() -> &'static NatMap<Self::Addr>;
    /// Reply tuple → last seen and state.
    fn ages() -> &'static LruHashMap<TupleOf<Self::Addr>, NatAge>;
}

/// The [`Family`] methods that name a family's maps, from the maps: the uplinks, the
/// masqueraded subnets (an address is a prefix of `/bits`), the exemptions (keyed by
/// `key(network, destination)`, `/bits` for an address), and the NAT state.
macro_rules! family_maps {
    (
        uplinks: $uplinks:ident,
        masq_src: $masq:ident / $masq_bits:literal,
        no_masq: $no_masq:ident / $no_masq_bits:literal by $key:ident,
        snat: $snat:ident,
        rnat: $rnat:ident,
        ages: $ages:ident,
    ) => {
        #[inline(always)]
        fn uplink(ifindex: u32) -> Option<UplinkOf<Self::Addr>> {
            // SAFETY: copied out at once.
            unsafe { $uplinks.get(ifindex) }.copied()
        }

        #[inline(always)]
        fn masq_network(src: Self::Addr) -> Option<u32> {
            $masq.get(Key::new($masq_bits, src)).copied()
        }

        #[inline(always)]
        fn exempt(network: u32, dst: Self::Addr) -> bool {
            $no_masq
                .get(Key::new($no_masq_bits, $key(network, dst)))
                .is_some()
        }

        #[inline(always)]
        fn snat() -> &'static NatMap<Self::Addr> {
            &$snat
        }

        #[inline(always)]
        fn rnat() -> &'static NatMap<Self::Addr> {
            &$rnat
        }

        #[inline(always)]
        fn ages() -> &'static LruHashMap<TupleOf<Self::Addr>, NatAge> {
            &$ages
        }
    };
}

impl Family for V4 {
    #[inline(always)]
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<[u8; 4]>) -> R) -> Option<R> {
        let t = TupleOf::new(0, [0; 4], 0, [0; 4], 0);
        let n = NatTargetOf::new([0; 4], 0);
        let mut s = Scratch {
            orig: t,
            reply: t,
            old_orig: t,
            back: n,
            target: n,
            uplink: UplinkOf {
                addr: [0; 4],
                first_port: 0,
                last_port: 0,
            },
        };
        Some(f(&mut s))
    }

    #[inline(always)]
    fn quoted(frame: &TcFrame, inner: usize) -> Option<Quoted<[u8; 4]>> {
        let h = frame.load::<20>(inner)?;
        if h[0] != 0x45 {
            return None;
        }
        Some(Quoted {
            proto: h[9],
            ip_csum: Some(u16::from_be_bytes([h[10], h[11]])),
            src: [h[12], h[13], h[14], h[15]],
            dst: [h[16], h[17], h[18], h[19]],
            l4_at: inner + 20,
        })
    }

    family_maps! {
        uplinks: NETPATH_UPLINKS,
        masq_src: NETPATH_MASQ_SRC / 32,
        no_masq: NETPATH_NO_MASQ / 64 by no_masq_key,
        snat: NETPATH_SNAT,
        rnat: NETPATH_RNAT,
        ages: NETPATH_NAT_AGE,
    }
}

/// NAT66.
impl Family for V6 {
    #[inline(always)]
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<[u8; 16]>) -> R) -> Option<R> {
        let s = NETPATH_NAT66_SCRATCH.get_ptr_mut(0)?;
        // SAFETY: this CPU's slot, used by this run alone (see `Scratch`), valid for it.
        Some(f(unsafe { &mut *s }))
    }

    #[inline(always)]
    fn quoted(frame: &TcFrame, inner: usize) -> Option<Quoted<[u8; 16]>> {
        // Version/class/flow, length, next header, hop limit; then the addresses.
        let h = frame.load::<8>(inner)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        Some(Quoted {
            proto: h[6],
            ip_csum: None,
            src: frame.load::<16>(inner + 8)?,
            dst: frame.load::<16>(inner + 24)?,
            l4_at: inner + IPV6_HLEN,
        })
    }

    family_maps! {
        uplinks: NETPATH_UPLINKS6,
        masq_src: NETPATH_MASQ_SRC6 / 128,
        no_masq: NETPATH_NO_MASQ6 / 160 by no_masq_key6,
        snat: NETPATH_SNAT6,
        rnat: NETPATH_RNAT6,
        ages: NETPATH_NAT_AGE6,
    }
}

/// Updates the checksum at `csum_at` for an address changing `old` → `new`, one 32-bit
/// word at a time (`flags`: e.g. `BPF_F_PSEUDO_HDR`, the UDP flags).
#[inline(always)]
pub(super) fn csum_addr<A: Address>(
    ctx: &TcContext,
    csum_at: usize,
    old: A,
    new: A,
    flags: u64,
) -> Result<(), DropReason> {
    // Verifier: a constant trip count (1 or 4 words).
    for i in 0..A::WORDS {
        // As the words sit in memory (network order).
        let (o, n) = (old.word(i).to_be(), new.word(i).to_be());
        if o != n {
            ctx.l4_csum_replace(csum_at, u64::from(o), u64::from(n), flags | 4)
                .map_err(rewrite_failed)?;
        }
    }
    Ok(())
}
