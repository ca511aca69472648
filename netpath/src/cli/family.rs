//! Dual-stack flags: `--subnet`, `--gateway` and `--ip` take one value per address
//! family, in either order (`--subnet 10.50.0.0/24 --subnet fd50::/64`).

pub use netpath::types::PerFamily;
use netpath::types::{Dual, TwoOfOneFamily};

/// The values of a repeatable `--flag`, by family: at most one IPv4 and one IPv6.
pub fn by_family<T: Dual>(flag: &str, values: &[T]) -> anyhow::Result<PerFamily<T>> {
    netpath::types::by_family(values).map_err(|TwoOfOneFamily { family, second, .. }| {
        anyhow::anyhow!("two {family} --{flag} values (… {second}): give at most one per family")
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ipnet::{IpNet, Ipv4Net, Ipv6Net};

    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn one_value_per_family_in_any_order() {
        let v4: Ipv4Net = "10.50.0.0/24".parse().unwrap();
        let v6: Ipv6Net = "fd50::/64".parse().unwrap();
        let cases: [(&[&str], Option<Ipv4Net>, Option<Ipv6Net>); 4] = [
            (&[], None, None),
            (&["10.50.0.0/24"], Some(v4), None),
            (&["fd50::/64", "10.50.0.0/24"], Some(v4), Some(v6)),
            (&["fd50::/64"], None, Some(v6)),
        ];
        for (given, want4, want6) in cases {
            let got = by_family("subnet", &nets(given)).unwrap();
            assert_eq!(got, (want4, want6), "{given:?}");
        }
    }

    #[test]
    fn two_of_one_family_are_refused() {
        for (given, family) in [
            (&["10.50.0.0/24", "10.51.0.0/24"][..], "IPv4"),
            (&["fd50::/64", "10.1.0.0/16", "fd51::/64"], "IPv6"),
        ] {
            let err = by_family("subnet", &nets(given)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("two {family} --subnet values")),
                "{err}"
            );
        }
        let ips: Vec<IpAddr> = vec!["fd50::2".parse().unwrap(), "fd50::3".parse().unwrap()];
        let err = by_family("ip", &ips).unwrap_err().to_string();
        assert!(err.contains("two IPv6 --ip values (… fd50::3)"), "{err}");
    }
}
