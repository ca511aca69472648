extern crate std;

use super::*;
use crate::{
    ipv6::tests::{ext8, frag, ipv6_frame},
    packet::{classify, tests::ipv4_frame},
};

const UDP: [u8; 8] = [0x12, 0x34, 0x00, 0x35, 0, 16, 0xab, 0xcd];

#[test]
fn an_ipv4_first_fragment_is_classed_as_whole_and_a_later_one_by_its_protocol() {
    // More fragments, offset 0: the UDP header is there.
    let f = ipv4_frame(IPPROTO_UDP, &[], &UDP, 0x2000);
    let got = fragment_of(&f[..], classify(&f[..])).unwrap();
    let whole = Classified {
        class: PacketClass::Ipv4Udp,
        l4_offset: ETH_HLEN + 20,
        proto: IPPROTO_UDP,
    };
    assert_eq!(got, Fragment { id: 0x1234, whole });
    assert!(got.is_first());
    // With options, the L4 header moves along.
    let f = ipv4_frame(IPPROTO_TCP, &[1, 1, 1, 0], &[0; 20], 0x2000);
    let got = fragment_of(&f[..], classify(&f[..])).unwrap();
    assert_eq!(
        (got.whole.class, got.whole.l4_offset),
        (PacketClass::Ipv4Tcp, ETH_HLEN + 24)
    );
    // Offset 185 (× 8), last fragment: no L4 header.
    let f = ipv4_frame(IPPROTO_UDP, &[], &[0; 8], 185);
    let got = fragment_of(&f[..], classify(&f[..])).unwrap();
    assert_eq!(
        got,
        Fragment {
            id: 0x1234,
            whole: Classified {
                class: PacketClass::Ipv4Fragment,
                l4_offset: 0,
                proto: IPPROTO_UDP,
            },
        }
    );
    assert!(!got.is_first());
    // A middle fragment (more fragments and an offset) is a later one too.
    let f = ipv4_frame(IPPROTO_ICMP, &[], &[0; 8], 0x2000 | 185);
    assert!(!fragment_of(&f[..], classify(&f[..])).unwrap().is_first());
}

#[test]
fn an_ipv4_first_fragment_too_short_for_its_ports_is_not_tracked() {
    // A first TCP fragment of 8 bytes (RFC 1858's tiny fragment): no ports to translate.
    let f = ipv4_frame(IPPROTO_TCP, &[], &[0; 8], 0x2000);
    assert_eq!(fragment_of(&f[..], classify(&f[..])), None);
    // Another protocol needs no L4 header: tracked, as `Ipv4Other`.
    let f = ipv4_frame(47, &[], &[0; 8], 0x2000);
    let got = fragment_of(&f[..], classify(&f[..])).unwrap();
    assert_eq!(got.whole.class, PacketClass::Ipv4Other);
    // Not a fragment at all.
    let f = ipv4_frame(IPPROTO_UDP, &[], &UDP, 0x4000);
    assert_eq!(fragment_of(&f[..], classify(&f[..])), None);
}

#[test]
fn an_ipv6_fragment_header_after_the_fixed_header_is_tracked() {
    let first = ipv6_frame(NEXT_FRAGMENT, &frag(IPPROTO_UDP, 0, true), &UDP);
    let got = fragment_of(&first[..], classify(&first[..])).unwrap();
    let whole = Classified {
        class: PacketClass::Ipv6Udp,
        l4_offset: ETH_HLEN + IPV6_HLEN + 8,
        proto: IPPROTO_UDP,
    };
    // `frag` writes identification 7.
    assert_eq!(got, Fragment { id: 7, whole });
    let later = ipv6_frame(NEXT_FRAGMENT, &frag(IPPROTO_UDP, 185, false), &[0; 8]);
    let got = fragment_of(&later[..], classify(&later[..])).unwrap();
    assert_eq!(
        got,
        Fragment {
            id: 7,
            whole: Classified {
                class: PacketClass::Ipv6Fragment,
                l4_offset: 0,
                proto: IPPROTO_UDP,
            },
        }
    );
    let icmp = ipv6_frame(
        NEXT_FRAGMENT,
        &frag(IPPROTO_ICMPV6, 0, true),
        &[128, 0, 0, 0, 0, 1, 0, 1],
    );
    let got = fragment_of(&icmp[..], classify(&icmp[..])).unwrap();
    assert_eq!(got.whole.class, PacketClass::Ipv6Icmp);
}

#[test]
fn an_ipv6_fragment_header_elsewhere_in_the_chain_is_not_tracked() {
    // Hop-by-hop options before the fragment header: all its fragments go alike.
    let mut ext = ext8(NEXT_FRAGMENT).to_vec();
    ext.extend_from_slice(&frag(IPPROTO_UDP, 0, true));
    let f = ipv6_frame(0, &ext, &UDP);
    assert_eq!(classify(&f[..]).class, PacketClass::Ipv6Fragment);
    assert_eq!(fragment_of(&f[..], classify(&f[..])), None);
    let mut ext = ext8(NEXT_FRAGMENT).to_vec();
    ext.extend_from_slice(&frag(IPPROTO_UDP, 185, false));
    let f = ipv6_frame(60, &ext, &[0; 8]);
    assert_eq!(fragment_of(&f[..], classify(&f[..])), None);
    // Destination options after the fragment header, in the first fragment.
    let mut ext = frag(60, 0, true).to_vec();
    ext.extend_from_slice(&ext8(IPPROTO_UDP));
    let f = ipv6_frame(NEXT_FRAGMENT, &ext, &UDP);
    assert_eq!(classify(&f[..]).class, PacketClass::Ipv6Fragment);
    assert_eq!(fragment_of(&f[..], classify(&f[..])), None);
    // A whole packet.
    let f = ipv6_frame(IPPROTO_UDP, &[], &UDP);
    assert_eq!(fragment_of(&f[..], classify(&f[..])), None);
}

#[test]
fn firsts_are_recorded_when_translated_or_on_a_path_the_nat_translates_on() {
    let key = FragKeyOf::new([192, 0, 2, 1], [198, 51, 100, 7], 0x1234, IPPROTO_UDP);
    let same = FragValueOf::new(key.src, key.dst, 0);
    let translated = FragValueOf::new(key.src, [10, 219, 0, 2], FRAG_REDIRECTED);
    assert!(records(&key, &translated, false));
    assert!(records(&key, &translated, true));
    assert!(records(&key, &same, true));
    // Untranslated on another path (host traffic): no map space.
    assert!(!records(&key, &same, false));
    let snat = FragValueOf::new([203, 0, 113, 1], key.dst, 0);
    assert!(records(&key, &snat, false));
}

#[test]
fn a_later_fragment_is_rewritten_by_its_record_or_dropped_only_where_the_nat_translates() {
    let v = FragValueOf::new([1; 16], [2; 16], 0);
    assert_eq!(later(Some(v), true), Later::Rewrite(v));
    assert_eq!(later(Some(v), false), Later::Rewrite(v));
    assert_eq!(later::<[u8; 16]>(None, true), Later::Unseen);
    assert_eq!(later::<[u8; 16]>(None, false), Later::Pass);
}
