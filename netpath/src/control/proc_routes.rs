//! The host's routes as the kernel prints them in `/proc/net/route` (IPv4) and
//! `/proc/net/ipv6_route` (IPv6, every table: the local table's address routes too):
//! what a new network's subnets must not overlap. Parsed by pure functions, so the
//! formats are tested without a kernel.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Every route of both families: (device, destination).
pub fn read() -> Vec<(String, IpNet)> {
    let text = |path| std::fs::read_to_string(path).unwrap_or_default();
    let v4 = ipv4(&text("/proc/net/route")).into_iter();
    let v6 = ipv6(&text("/proc/net/ipv6_route")).into_iter();
    v4.map(|(d, n)| (d, IpNet::V4(n)))
        .chain(v6.map(|(d, n)| (d, IpNet::V6(n))))
        .collect()
}

/// `/proc/net/route`: a header, then `Iface Destination Gateway Flags RefCnt Use Metric
/// Mask …`, addresses in hex as the network-order bytes read as a native u32.
pub fn ipv4(text: &str) -> Vec<(String, Ipv4Net)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let dst = Ipv4Addr::from(dst.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            Some((f[0].to_owned(), Ipv4Net::new(dst, prefix).ok()?))
        })
        .collect()
}

/// `/proc/net/ipv6_route`: no header; `dst(32 hex) dst_len(hex) src src_len next_hop
/// metric refcnt use flags device`, addresses in network order.
pub fn ipv6(text: &str) -> Vec<(String, Ipv6Net)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u128::from_str_radix(f.first()?, 16).ok()?;
            let len = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let dev = f.get(9)?;
            Some((
                dev.to_string(),
                Ipv6Net::new(Ipv6Addr::from(dst), len).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_parse_as_the_kernel_prints_them() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            ipv4(v4),
            vec![
                ("eth0".into(), "0.0.0.0/0".parse().unwrap()),
                ("eth0".into(), "192.168.2.0/24".parse().unwrap()),
            ]
        );
        let v6 = "fd4100000000000000000000000000000040 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 br-x\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000002 00000000 00000003 eth0\n\
                  20010db8000000000000000000000005 80 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000000 00000002 00000000 80200001 lo\n";
        // (The first line's destination is 34 hex digits: not an address; skipped.)
        assert_eq!(
            ipv6(v6),
            vec![
                ("eth0".into(), "::/0".parse().unwrap()),
                ("lo".into(), "2001:db8::5/128".parse().unwrap()),
            ]
        );
    }
}
