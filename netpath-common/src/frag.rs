//! Fragment tracking for the uplinks' NAT, both families (as Cilium's
//! `ipv4_handle_fragmentation`): only a datagram's first fragment carries its ports, so
//! the translation a first fragment gets is recorded under the datagram's identity
//! ([`FragKeyOf`]: source, destination, identification, protocol, as on the wire before
//! any translation), and its later fragments take the same addresses from the record
//! ([`FragValueOf`]) — an L3 rewrite only, no L4 header to touch.
//!
//! What this module decides, as pure functions the programs and host tests share:
//! - [`fragment_of`]: a fragment's identity and, for a first one, the class it would
//!   have whole (so the normal translation handles it: its L4 header and checksum are in
//!   it, and an incremental checksum update stays right for the whole datagram);
//! - [`later`]: what becomes of a later fragment, given its record and whether its path
//!   is one the NAT would have had to translate. A later fragment whose first was not
//!   seen (lost, reordered before it, or evicted) is dropped on such a path
//!   (`DropReason::FragmentUnseen`, as Cilium's `DROP_FRAG_NOT_FOUND`): never passed on
//!   untranslated to an address the NAT owns. Elsewhere it passes untouched.

use crate::{
    ipv6::{IPPROTO_ICMPV6, IPV6_HLEN},
    nat::Address,
    packet::{
        Classified, ETH_HLEN, Frame, ICMP_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        PacketClass, TCP_MIN_HLEN, UDP_HLEN,
    },
};

/// The IPv6 fragment header's next-header value.
pub const NEXT_FRAGMENT: u8 = 44;

/// A fragment's identity within its datagram and what the NAT can read of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// The identification (IPv4's 16 bits, IPv6's 32).
    pub id: u32,
    /// A first fragment: the class it would have whole, its L4 offset and protocol. A
    /// later one: `l4_offset` 0, its class the fragment class, `proto` its protocol.
    pub whole: Classified,
}

impl Fragment {
    /// The first fragment (offset 0), which carries the L4 header.
    #[inline(always)]
    pub const fn is_first(&self) -> bool {
        self.whole.l4_offset != 0
    }
}

/// The [`Fragment`] of a frame classified `c` as `Ipv4Fragment` or `Ipv6Fragment`;
/// `None` for anything else, or a fragment the NAT does not track: an IPv6 one whose
/// fragment header does not directly follow the fixed header (the kernel path takes
/// all of that datagram's fragments alike), or a first fragment whose L4 header is cut
/// short (RFC 1858's tiny fragments).
#[inline(always)]
pub fn fragment_of<F: Frame + ?Sized>(frame: &F, c: Classified) -> Option<Fragment> {
    match c.class {
        PacketClass::Ipv4Fragment => ipv4_fragment(frame),
        PacketClass::Ipv6Fragment => ipv6_fragment(frame, c),
        _ => None,
    }
}

/// IPv4: the header was checked by the classifier (version, IHL, length).
#[inline(always)]
fn ipv4_fragment<F: Frame + ?Sized>(frame: &F) -> Option<Fragment> {
    // version/ihl, tos, total length, id, flags/fragment offset, ttl, protocol.
    let h = frame.load::<10>(ETH_HLEN)?;
    let id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    let offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    let proto = h[9];
    if offset != 0 {
        return Some(Fragment {
            id,
            whole: later_class(PacketClass::Ipv4Fragment, proto),
        });
    }
    // `& 0xf` keeps the offset provably small for the verifier.
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let (class, need) = match proto {
        IPPROTO_TCP => (PacketClass::Ipv4Tcp, TCP_MIN_HLEN),
        IPPROTO_UDP => (PacketClass::Ipv4Udp, UDP_HLEN),
        IPPROTO_ICMP => (PacketClass::Ipv4Icmp, ICMP_HLEN),
        _ => (PacketClass::Ipv4Other, 0),
    };
    let l4_offset = ETH_HLEN + ihl;
    if need > 0 && (ihl + need > total_len || frame.load_u8(l4_offset + need - 1).is_none()) {
        return None;
    }
    Some(Fragment {
        id,
        whole: Classified {
            class,
            l4_offset,
            proto,
        },
    })
}

/// IPv6: the classifier found the fragment header (and for a first fragment, checked its
/// L4 header is in the packet); it is read here where Linux puts it, right after the
/// fixed header.
#[inline(always)]
fn ipv6_fragment<F: Frame + ?Sized>(frame: &F, c: Classified) -> Option<Fragment> {
    // Version/class/flow, payload length, next header.
    if frame.load::<8>(ETH_HLEN)?[6] != NEXT_FRAGMENT {
        return None;
    }
    // Next header, reserved, offset and flags, identification.
    let e = frame.load::<8>(ETH_HLEN + IPV6_HLEN)?;
    let id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
    let proto = e[0];
    if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
        return Some(Fragment {
            id,
            whole: later_class(PacketClass::Ipv6Fragment, proto),
        });
    }
    // A first fragment with more headers after the fragment header: not tracked.
    if c.l4_offset != ETH_HLEN + IPV6_HLEN + 8 || c.proto != proto {
        return None;
    }
    let class = match proto {
        IPPROTO_TCP => PacketClass::Ipv6Tcp,
        IPPROTO_UDP => PacketClass::Ipv6Udp,
        IPPROTO_ICMPV6 => PacketClass::Ipv6Icmp,
        _ => PacketClass::Ipv6Other,
    };
    Some(Fragment {
        id,
        whole: Classified {
            class,
            l4_offset: c.l4_offset,
            proto,
        },
    })
}

const fn later_class(class: PacketClass, proto: u8) -> Classified {
    Classified {
        class,
        l4_offset: 0,
        proto,
    }
}

map_type_per_family! {
    /// Key of `NETPATH_FRAG`/`NETPATH_FRAG6`: a datagram as its fragments arrive on the
    /// uplink (before any translation). IPv4's identification fills the low 16 bits.
    pub struct FragKeyOf<A: Address> for ([u8; 4] => 16, [u8; 16] => 40) {
        pub src: A,
        pub dst: A,
        pub id: u32,
        pub proto: u8,
        pub _pad: [u8; 3],
    }
}

map_type_per_family! {
    /// Value of `NETPATH_FRAG`/`NETPATH_FRAG6`: the addresses a datagram's later fragments
    /// leave with (the key's own: they pass untouched), and whether its first fragment
    /// was handed straight to an endpoint ([`FRAG_REDIRECTED`]), as they then are too.
    pub struct FragValueOf<A: Address> for ([u8; 4] => 12, [u8; 16] => 36) {
        pub src: A,
        pub dst: A,
        pub flags: u8,
        pub _pad: [u8; 3],
    }
}

/// The programs' per-CPU work space for a first fragment (`NETPATH_FRAG_WORK`,
/// `NETPATH_FRAG_WORK6`; IPv6's key is too big for the stack beside NAT66): its key as
/// it arrived, whether its path is one the NAT translates on, the addresses it left
/// with. No state between runs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragWork<A: Address> {
    pub key: FragKeyOf<A>,
    pub after: FragValueOf<A>,
    pub must: u8,
    pub _pad: [u8; 3],
}

// No implicit padding: every byte of the per-CPU value is a field's.
const _: () = assert!(core::mem::size_of::<FragWork<[u8; 4]>>() == 16 + 12 + 4);
const _: () = assert!(core::mem::size_of::<FragWork<[u8; 16]>>() == 40 + 36 + 4);

/// IPv4 fragment key and value.
pub type FragKey = FragKeyOf<[u8; 4]>;
pub type FragValue = FragValueOf<[u8; 4]>;
/// IPv6 fragment key and value.
pub type FragKey6 = FragKeyOf<[u8; 16]>;
pub type FragValue6 = FragValueOf<[u8; 16]>;

/// [`FragValueOf::flags`]: the first fragment went straight to its endpoint.
pub const FRAG_REDIRECTED: u8 = 1;
/// Datagrams being reassembled the fragment maps remember at the most (LRU).
pub const FRAG_ENTRIES: u32 = 8192;

impl<A: Address> FragKeyOf<A> {
    pub const fn new(src: A, dst: A, id: u32, proto: u8) -> Self {
        FragKeyOf {
            src,
            dst,
            id,
            proto,
            _pad: [0; 3],
        }
    }
}

impl<A: Address> FragValueOf<A> {
    pub const fn new(src: A, dst: A, flags: u8) -> Self {
        FragValueOf {
            src,
            dst,
            flags,
            _pad: [0; 3],
        }
    }
}

/// Whether a first fragment's translation is recorded: when it was translated (its
/// addresses changed: `key` before, `after` after), or when its path is one the NAT
/// translates on (`must_translate`), so that its later fragments pass untouched rather
/// than being dropped as unseen. Other traffic's fragments take no map space.
#[inline(always)]
pub fn records<A: Address>(
    key: &FragKeyOf<A>,
    after: &FragValueOf<A>,
    must_translate: bool,
) -> bool {
    must_translate || key.src != after.src || key.dst != after.dst
}

/// What becomes of a later fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Later<A: Address> {
    /// Its first fragment's record: rewrite the addresses that differ from the key's.
    Rewrite(FragValueOf<A>),
    /// Untouched, to the kernel path.
    Pass,
    /// Dropped: its first fragment was not seen on a path the NAT translates on.
    Unseen,
}

/// The fate of a later fragment with record `found` on a path where the NAT would have
/// had to translate (`must_translate`) or not.
#[inline(always)]
pub fn later<A: Address>(found: Option<FragValueOf<A>>, must_translate: bool) -> Later<A> {
    match found {
        Some(v) => Later::Rewrite(v),
        None if must_translate => Later::Unseen,
        None => Later::Pass,
    }
}

#[cfg(test)]
mod tests;
