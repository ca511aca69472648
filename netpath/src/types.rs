//! Boundary types: values checked once where they enter (the API, the CLI, the CNI
//! plugin, the state database) and carried typed from there on — a MAC address
//! ([`MacAddr`]), the rules of an interface name ([`check_ifname`]), and one value per
//! address family ([`by_family`]: the CLI's `--subnet`/`--gateway`/`--ip`, the CNI
//! plugin's `subnets`, `gateways` and requested addresses).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Why `name` cannot be a Linux interface name, if it cannot: 1 to 15 bytes, not `.` or
/// `..`, without `/`, `:`, `%` (the kernel would take it as a name template), NUL or
/// whitespace. The one rule every caller (endpoint interface names, TAP names, uplinks,
/// CNI_IFNAME) applies.
pub fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("the name is empty")
    } else if name.len() > IFNAME_MAX {
        Err("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Err("`.` and `..` are not interface names")
    } else if name.contains('/') {
        Err("contains `/`")
    } else if name.contains(':') {
        Err("contains `:`")
    } else if name.contains('%') {
        Err("contains `%` (the kernel would treat it as a name template)")
    } else if name.contains('\0') {
        Err("contains a NUL byte")
    } else if name.chars().any(char::is_whitespace) {
        Err("contains whitespace")
    } else {
        Ok(())
    }
}

/// An Ethernet unicast MAC address, written `aa:bb:cc:dd:ee:ff` (as JSON too).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a [`MacAddr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: {reason}")]
pub struct MacAddrError {
    /// The string refused.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl MacAddr {
    /// A random unicast, locally administered address.
    pub fn random_local() -> MacAddr {
        let mut mac: [u8; 6] = rand::random();
        mac[0] = (mac[0] & 0xfe) | 0x02;
        MacAddr(mac)
    }

    /// The six bytes, first on the wire first.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| MacAddrError {
            input: s.to_owned(),
            reason,
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(err("expected aa:bb:cc:dd:ee:ff"));
        }
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(&parts) {
            *b = u8::from_str_radix(p, 16).map_err(|_| err("expected aa:bb:cc:dd:ee:ff"))?;
        }
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(err("it must be a unicast address"));
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// An egress rule's destination: a CIDR of either family, or `private`, the preset of
/// addresses an untrusted guest has no business reaching (see
/// `control::policy::PRIVATE`). Written as such (as JSON too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Private,
    Cidr(ipnet::IpNet),
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "private" {
            return Ok(Destination::Private);
        }
        s.parse().map(Destination::Cidr).map_err(|_| {
            format!("invalid destination {s:?}: give a CIDR (10.0.0.0/8, fd00::/8) or `private`")
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Private => f.write_str("private"),
            Destination::Cidr(c) => c.fmt(f),
        }
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A value of either address family (`IpNet`, `IpAddr`).
pub trait Dual: Copy + fmt::Display {
    type V4;
    type V6;
    /// The IPv4 value (`Ok`) or the IPv6 one (`Err`).
    fn split(self) -> Result<Self::V4, Self::V6>;

    /// `"IPv4"` or `"IPv6"`.
    fn family(self) -> &'static str {
        match self.split() {
            Ok(_) => "IPv4",
            Err(_) => "IPv6",
        }
    }
}

/// `Dual` for an enum of the two families (`IpNet`, `IpAddr`).
macro_rules! dual {
    ($either:ident: $v4:ty, $v6:ty) => {
        impl Dual for $either {
            type V4 = $v4;
            type V6 = $v6;
            fn split(self) -> Result<$v4, $v6> {
                match self {
                    $either::V4(v) => Ok(v),
                    $either::V6(v) => Err(v),
                }
            }
        }
    };
}

dual!(IpNet: Ipv4Net, Ipv6Net);
dual!(IpAddr: Ipv4Addr, Ipv6Addr);

/// At most one value of each family: (the IPv4 one, the IPv6 one).
pub type PerFamily<T> = (Option<<T as Dual>::V4>, Option<<T as Dual>::V6>);

/// Two values of one family where one per family is allowed: `first` and `second`, in
/// the order given. Each caller says it in its own words (a flag, a configuration key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwoOfOneFamily<T> {
    pub family: &'static str,
    pub first: T,
    pub second: T,
}

/// `values` split by family, each in the order given: (the IPv4 ones, the IPv6 ones).
pub fn split_families<T: Dual>(values: &[T]) -> (Vec<T::V4>, Vec<T::V6>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for v in values {
        match v.split() {
            Ok(a) => v4.push(a),
            Err(a) => v6.push(a),
        }
    }
    (v4, v6)
}

/// `values` by family: at most one IPv4 and one IPv6, in either order.
pub fn by_family<T: Dual>(values: &[T]) -> Result<PerFamily<T>, TwoOfOneFamily<T>> {
    let (mut v4, mut v6) = (None, None);
    for (i, &second) in values.iter().enumerate() {
        let taken = match second.split() {
            Ok(a) => v4.replace(a).is_some(),
            Err(a) => v6.replace(a).is_some(),
        };
        if taken {
            let family = second.family();
            let first = values[..i]
                .iter()
                .copied()
                .find(|v| v.family() == family)
                .expect("an earlier value of the family");
            return Err(TwoOfOneFamily {
                family,
                first,
                second,
            });
        }
    }
    Ok((v4, v6))
}

/// Asserts that `check` refuses every input of `cases` with an error that says why
/// (contains the case's reason): the refusal tables of the boundary types' tests (MAC
/// addresses, interface names, `-p` specs).
#[cfg(test)]
pub(crate) fn assert_refusals<T: fmt::Debug, E: fmt::Display>(
    check: impl Fn(&str) -> Result<T, E>,
    cases: &[(&str, &str)],
) {
    for (input, why) in cases {
        match check(input) {
            Ok(v) => panic!("{input:?} was accepted: {v:?}"),
            Err(e) => assert!(e.to_string().contains(why), "{input:?}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_family_and_the_pair_that_breaks_it() {
        let ips = |s: &[&str]| -> Vec<IpAddr> { s.iter().map(|a| a.parse().unwrap()).collect() };
        let (v4, v6): (Ipv4Addr, Ipv6Addr) =
            ("10.1.0.5".parse().unwrap(), "fd01::5".parse().unwrap());
        assert_eq!(
            by_family(&ips(&["fd01::5", "10.1.0.5"])),
            Ok((Some(v4), Some(v6)))
        );
        assert_eq!(by_family::<IpAddr>(&[]), Ok((None, None)));
        assert_eq!(
            by_family(&ips(&["10.1.0.5", "fd01::5", "10.1.0.6"])),
            Err(TwoOfOneFamily {
                family: "IPv4",
                first: IpAddr::V4(v4),
                second: "10.1.0.6".parse().unwrap(),
            })
        );
    }

    #[test]
    fn macs_parse_print_and_round_trip_through_json() {
        let m: MacAddr = "02:00:0a:FF:00:01".parse().unwrap();
        assert_eq!(m.octets(), [2, 0, 10, 255, 0, 1]);
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"02:00:0a:ff:00:01\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), m);
        assert_refusals(
            str::parse::<MacAddr>,
            &[
                ("", "expected"),
                ("02:00:00:00:00", "expected"),
                ("zz:00:00:00:00:00", "expected"),
                ("2:0:0:0:0:1", "expected"),
                ("02:00:00:00:00:001", "expected"),
                ("01:00:00:00:00:00", "unicast"),
                ("00:00:00:00:00:00", "unicast"),
            ],
        );
        // JSON is checked as strictly as the command line.
        assert_refusals(
            |s| serde_json::from_str::<MacAddr>(s),
            &[("\"ff:ff:ff:ff:ff:ff\"", "unicast")],
        );
    }

    #[test]
    fn random_macs_are_unicast_and_local() {
        for _ in 0..100 {
            let m = MacAddr::random_local().octets();
            assert_eq!(m[0] & 0x03, 0x02);
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "np-0123456789a", "a", "fc-tap0", "x.y_z-1"] {
            assert_eq!(check_ifname(ok), Ok(()), "{ok}");
        }
        assert_refusals(
            check_ifname,
            &[
                ("", "empty"),
                ("0123456789abcdef", "longer than 15"),
                (".", "not interface names"),
                ("..", "not interface names"),
                ("a/b", "`/`"),
                ("a:b", "`:`"),
                ("tap%d", "`%`"),
                ("a\0b", "NUL"),
                ("a b", "whitespace"),
                ("a\tb", "whitespace"),
            ],
        );
    }
}
