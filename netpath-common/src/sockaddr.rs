//! Addresses as the cgroup socket-address hooks see them.
//!
//! An `AF_INET6` socket (Java's default, and many runtimes') reaches an IPv4 address
//! through its v4-mapped form `::ffff:a.b.c.d` (RFC 4291, 2.5.5.2): `connect()` to
//! `127.0.0.1` arrives at the IPv6 hooks as `::ffff:127.0.0.1`. Those hooks hold the
//! address in `bpf_sock_addr.user_ip6`, four `u32` words in network byte order: the
//! in-memory bytes of each word are the address's bytes, in order, whatever the CPU's
//! endianness. These functions take and give the words that way.

/// The IPv4 address `a.b.c.d` of the v4-mapped IPv6 address `::ffff:a.b.c.d` held in
/// `words` (as `user_ip6` holds it), or `None` for any other IPv6 address (a native one,
/// which the IPv4 logic must not see).
#[inline(always)]
pub fn v4_of_mapped(words: [u32; 4]) -> Option<[u8; 4]> {
    if words[0] == 0 && words[1] == 0 && words[2].to_ne_bytes() == [0, 0, 0xff, 0xff] {
        Some(words[3].to_ne_bytes())
    } else {
        None
    }
}

/// The v4-mapped IPv6 address `::ffff:a.b.c.d` of `addr`, as `user_ip6` holds it.
#[inline(always)]
pub fn mapped_of_v4(addr: [u8; 4]) -> [u32; 4] {
    [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(addr),
    ]
}

/// The bytes of the IPv6 address held in `words` (as `user_ip6` holds it).
#[inline(always)]
pub fn v6_of_words(words: [u32; 4]) -> [u8; 16] {
    let [a, b, c, d] = words.map(u32::to_ne_bytes);
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// The IPv6 address `addr` as `user_ip6` holds it.
#[inline(always)]
pub fn words_of_v6(addr: [u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// An IPv6 address as `user_ip6` holds it: each word made of the next 4 bytes.
    fn words(addr: Ipv6Addr) -> [u32; 4] {
        let o = addr.octets();
        core::array::from_fn(|i| {
            u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
        })
    }

    #[test]
    fn v4_mapped_addresses_give_their_ipv4_address() {
        let cases: [(&str, Option<[u8; 4]>); 10] = [
            ("::ffff:127.0.0.1", Some([127, 0, 0, 1])),
            ("::ffff:198.51.100.2", Some([198, 51, 100, 2])),
            ("::ffff:0.0.0.0", Some([0, 0, 0, 0])),
            // Native IPv6: loopback, any, link-local, a global address.
            ("::1", None),
            ("::", None),
            ("fe80::ffff:7f00:1", None),
            ("2001:db8::ffff:7f00:1", None),
            // Look-alikes: IPv4-compatible (deprecated, not mapped), SIIT's IPv4-translated
            // form, NAT64's well-known prefix.
            ("::127.0.0.1", None),
            ("::ffff:0:127.0.0.1", None),
            ("64:ff9b::127.0.0.1", None),
        ];
        for (text, want) in cases {
            let addr: Ipv6Addr = text.parse().unwrap();
            assert_eq!(v4_of_mapped(words(addr)), want, "{text}");
        }
    }

    #[test]
    fn mapped_of_v4_is_the_v4_mapped_address() {
        assert_eq!(
            mapped_of_v4([127, 0, 0, 1]),
            words("::ffff:127.0.0.1".parse().unwrap())
        );
    }

    proptest! {
        /// Agrees with std's `to_ipv4_mapped` on every address, and maps back.
        #[test]
        fn agrees_with_std(octets in any::<[u8; 16]>(), v4 in any::<[u8; 4]>()) {
            let addr = Ipv6Addr::from(octets);
            prop_assert_eq!(
                v4_of_mapped(words(addr)),
                addr.to_ipv4_mapped().map(|a| a.octets())
            );
            let mapped = Ipv4Addr::from(v4).to_ipv6_mapped();
            prop_assert_eq!(mapped_of_v4(v4), words(mapped));
            prop_assert_eq!(v4_of_mapped(words(mapped)), Some(v4));
        }
    }

    #[test]
    fn native_addresses_round_trip_through_words() {
        for a in ["::1", "2001:db8:5:2::2", "fe80::1", "::ffff:127.0.0.1"] {
            let addr: Ipv6Addr = a.parse().unwrap();
            assert_eq!(v6_of_words(words(addr)), addr.octets(), "{a}");
            assert_eq!(words_of_v6(addr.octets()), words(addr), "{a}");
        }
    }
}
