//! Docker's `-p` syntax: `[HOSTIP:][HOSTPORT[-END]:]GUESTPORT[-END][/tcp|/udp]`, an IPv6
//! HOSTIP in brackets (`[::1]:8080:80`, `[::]:8080:80`).
//!
//! Parsing only: which host IP, protocol and port ranges. Whether the ports are free,
//! the host IP is the host's, and so on, is decided when the lease is taken.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// `/tcp` (the default).
    Tcp,
    /// `/udp`.
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// An inclusive, non-empty port range of valid ports (1..=65535).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ports {
    /// The first port of the range.
    pub first: u16,
    /// The last port of the range (`first` for one port).
    pub last: u16,
}

impl Ports {
    /// How many ports the range has (at least one).
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Never: a range has at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The host addresses a spec publishes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostIp {
    /// No HOSTIP: every host address of each family the endpoint has (see
    /// [`PortSpec::requests`]).
    Any,
    /// An IPv4 address; 0.0.0.0 is every IPv4 address.
    V4(Ipv4Addr),
    /// A bracketed IPv6 address; `[::]` is every IPv6 address.
    V6(Ipv6Addr),
}

/// A parsed `-p` specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Where on the host.
    pub host: HostIp,
    /// `None`: an ephemeral host port (range) chosen by the daemon.
    pub host_ports: Option<Ports>,
    /// The endpoint's port (range) the host ports lead to.
    pub guest_ports: Ports,
    /// `/tcp` or `/udp`.
    pub proto: Proto,
}

/// Why a string is not a [`PortSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port specification {spec:?}: {reason}")]
pub struct PortSpecError {
    /// The specification refused.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One port number, 1-65535, in decimal digits only.
fn port(s: &str) -> Result<u16, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a port number"));
    }
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("port {s} is out of range (1-65535)")),
    }
}

/// `PORT` or `FIRST-LAST`, not reversed.
fn ports(s: &str) -> Result<Ports, String> {
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if last < first {
        return Err(format!("range {s} is reversed"));
    }
    Ok(Ports { first, last })
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| PortSpecError {
            spec: spec.to_owned(),
            reason,
        };
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Proto::Tcp),
            Some((rest, "udp")) => (rest, Proto::Udp),
            Some((_, other)) => {
                return Err(err(format!("unknown protocol {other:?} (tcp or udp)")));
            }
            None => (spec, Proto::Tcp),
        };
        let (host, rest) = bracketed_host(rest).map_err(err)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (host, host_ports, guest) = match (host, parts.as_slice()) {
            (None, [guest]) => (HostIp::Any, None, *guest),
            (None, [host, guest]) => (HostIp::Any, Some(*host), *guest),
            (None, [ip, host, guest]) => {
                let ip = ip
                    .parse::<Ipv4Addr>()
                    .map_err(|_| err(format!("{ip:?} is not an IPv4 address")))?;
                (HostIp::V4(ip), Some(*host), *guest)
            }
            (Some(ip6), [host, guest]) => (HostIp::V6(ip6), Some(*host), *guest),
            (None, [..]) if parts.len() > 3 => {
                return Err(err(
                    "expected [HOSTIP:][HOSTPORT[-END]:]GUESTPORT[-END][/tcp|/udp] (an IPv6 \
                     HOSTIP in brackets, e.g. [::1]:8080:80)"
                        .into(),
                ));
            }
            _ => {
                return Err(err(
                    "expected [HOSTIP:][HOSTPORT[-END]:]GUESTPORT[-END][/tcp|/udp]".into(),
                ));
            }
        };
        let guest_ports = ports(guest).map_err(err)?;
        let host_ports = match host_ports {
            Some("") => None,
            Some(h) => Some(ports(h).map_err(err)?),
            None => None,
        };
        // Docker's `8000-8010:80`: a host range for one guest port is "the first free one".
        if let Some(h) = host_ports
            && h.len() != guest_ports.len()
            && guest_ports.len() != 1
        {
            let n = |len: u32| format!("{len} port{}", if len == 1 { "" } else { "s" });
            return Err(err(format!(
                "the host range has {} but the guest range {}: give as many host ports as \
                 guest ports, or a host range for one guest port",
                n(h.len()),
                n(guest_ports.len())
            )));
        }
        Ok(PortSpec {
            host,
            host_ports,
            guest_ports,
            proto,
        })
    }
}

/// A leading `[IPV6]:` of a spec: the address and what follows the colon; `None` and
/// the whole spec when it does not start with a bracket.
fn bracketed_host(s: &str) -> Result<(Option<Ipv6Addr>, &str), String> {
    let Some(inner) = s.strip_prefix('[') else {
        return Ok((None, s));
    };
    let Some((ip, rest)) = inner.split_once(']') else {
        return Err("the IPv6 host address lacks its closing ]".into());
    };
    let ip: Ipv6Addr = ip
        .parse()
        .map_err(|_| format!("[{ip}] is not an IPv6 address"))?;
    let Some(rest) = rest.strip_prefix(':') else {
        return Err(format!("expected :HOSTPORT after [{ip}]"));
    };
    Ok((Some(ip), rest))
}

/// Which host port a [`PortRequest`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPort {
    /// Exactly this one.
    Exact(u16),
    /// The first free one of this range (Docker's `8000-8010:80`).
    FirstFree(Ports),
    /// Any free one of the daemon's ephemeral range.
    Ephemeral,
}

/// One port to lease: a spec expands to one request per guest port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRequest {
    /// The spec's protocol.
    pub proto: Proto,
    /// The host addresses to lease the port on, one lease each and the same host port
    /// for all: one address, or every address of both families (`0.0.0.0` and `::`,
    /// a spec without HOSTIP on a dual-stack endpoint). An unspecified address is every
    /// address of its family.
    pub host_ips: Vec<IpAddr>,
    /// Which host port to lease.
    pub host: HostPort,
    /// The endpoint's port it leads to.
    pub guest_port: u16,
}

impl PortSpec {
    /// The leases this spec asks for, one request per guest port, for an endpoint with
    /// an IPv4 address (`v4`) and an IPv6 address (`v6`), or one of them. No HOSTIP
    /// publishes on every address of each family the endpoint has (Docker's behaviour).
    /// `Err`: the spec names a host address of a family the endpoint has no address of.
    pub fn requests(&self, v4: bool, v6: bool) -> Result<Vec<PortRequest>, IpAddr> {
        let any: [(bool, IpAddr); 2] = [
            (v4, Ipv4Addr::UNSPECIFIED.into()),
            (v6, Ipv6Addr::UNSPECIFIED.into()),
        ];
        let host_ips: Vec<IpAddr> = match self.host {
            HostIp::Any => any
                .into_iter()
                .filter(|(has, _)| *has)
                .map(|(_, ip)| ip)
                .collect(),
            HostIp::V4(ip) if v4 => vec![ip.into()],
            HostIp::V6(ip) if v6 => vec![ip.into()],
            HostIp::V4(ip) => return Err(ip.into()),
            HostIp::V6(ip) => return Err(ip.into()),
        };
        let guest = self.guest_ports.first..=self.guest_ports.last;
        Ok(guest
            .enumerate()
            .map(|(i, guest_port)| PortRequest {
                proto: self.proto,
                host_ips: host_ips.clone(),
                host: match self.host_ports {
                    None => HostPort::Ephemeral,
                    Some(h) if self.guest_ports.len() == 1 && h.len() > 1 => HostPort::FirstFree(h),
                    // Same length, checked when parsing.
                    Some(h) => HostPort::Exact(h.first + i as u16),
                },
                guest_port,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn docker_forms() {
        assert_eq!(
            p("80"),
            PortSpec {
                host: HostIp::Any,
                host_ports: None,
                guest_ports: Ports {
                    first: 80,
                    last: 80
                },
                proto: Proto::Tcp
            }
        );
        assert_eq!(
            p("8080:80").host_ports,
            Some(Ports {
                first: 8080,
                last: 8080
            })
        );
        assert_eq!(p("8080:80/udp").proto, Proto::Udp);
        let s = p("127.0.0.1:8080-8081:80-81/tcp");
        assert_eq!(s.host, HostIp::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            s.host_ports,
            Some(Ports {
                first: 8080,
                last: 8081
            })
        );
        assert_eq!(
            s.guest_ports,
            Ports {
                first: 80,
                last: 81
            }
        );
        // An empty host port means ephemeral; 0.0.0.0 means every IPv4 address.
        let e = p("0.0.0.0::80");
        assert_eq!(
            (e.host, e.host_ports),
            (HostIp::V4(Ipv4Addr::UNSPECIFIED), None)
        );
        assert_eq!(p("1-3").guest_ports.len(), 3);
        // IPv6 host addresses in brackets, every one or one.
        assert_eq!(p("[::]:8080:80").host, HostIp::V6(Ipv6Addr::UNSPECIFIED));
        let one = p("[fd00::1]:8080-8081:80-81/udp");
        assert_eq!(one.host, HostIp::V6("fd00::1".parse().unwrap()));
        assert_eq!((one.proto, one.guest_ports.len()), (Proto::Udp, 2));
        assert_eq!(p("[::1]::80").host_ports, None);
    }

    #[test]
    fn specs_expand_to_requests() {
        let any4: IpAddr = Ipv4Addr::UNSPECIFIED.into();
        let any6: IpAddr = Ipv6Addr::UNSPECIFIED.into();
        let r = p("127.0.0.1:8080-8081:80-81/udp")
            .requests(true, true)
            .unwrap();
        assert_eq!(
            r.iter()
                .map(|r| (r.proto, r.host_ips.clone(), r.host, r.guest_port))
                .collect::<Vec<_>>(),
            [
                (
                    Proto::Udp,
                    vec![Ipv4Addr::LOCALHOST.into()],
                    HostPort::Exact(8080),
                    80
                ),
                (
                    Proto::Udp,
                    vec![Ipv4Addr::LOCALHOST.into()],
                    HostPort::Exact(8081),
                    81
                )
            ]
        );
        let r = p("8000-8010:80").requests(true, false).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].host,
            HostPort::FirstFree(Ports {
                first: 8000,
                last: 8010
            })
        );
        assert_eq!(r[0].host_ips, [any4]);
        let r = p("80-82").requests(true, false).unwrap();
        assert!(r.iter().all(|r| r.host == HostPort::Ephemeral));
        assert_eq!(
            r.iter().map(|r| r.guest_port).collect::<Vec<_>>(),
            [80, 81, 82]
        );
        // A one-port host range for one guest port is exact.
        assert_eq!(
            p("8080-8080:80").requests(true, false).unwrap()[0].host,
            HostPort::Exact(8080)
        );
        // 0.0.0.0: every IPv4 address, whatever the endpoint has.
        assert_eq!(
            p("0.0.0.0:80:80").requests(true, true).unwrap()[0].host_ips,
            [any4]
        );
        // No HOSTIP: every address of each family the endpoint has.
        assert_eq!(
            p("8080:80").requests(true, false).unwrap()[0].host_ips,
            [any4]
        );
        assert_eq!(
            p("8080:80").requests(true, true).unwrap()[0].host_ips,
            [any4, any6]
        );
        // An IPv6 HOSTIP: that one, on a dual-stack endpoint only.
        assert_eq!(
            p("[::]:80:80").requests(true, true).unwrap()[0].host_ips,
            [any6]
        );
        assert_eq!(
            p("[::1]:80:80").requests(true, true).unwrap()[0].host_ips,
            [IpAddr::from(Ipv6Addr::LOCALHOST)]
        );
        assert_eq!(
            p("[::1]:80:80").requests(true, false),
            Err(Ipv6Addr::LOCALHOST.into())
        );
        // An IPv6-only endpoint: every family it has, and no IPv4 address.
        assert_eq!(
            p("8080:80").requests(false, true).unwrap()[0].host_ips,
            [any6]
        );
        assert_eq!(
            p("127.0.0.1:80:80").requests(false, true),
            Err(Ipv4Addr::LOCALHOST.into())
        );
    }

    #[test]
    fn malformed_specs_say_why() {
        crate::types::assert_refusals(
            str::parse::<PortSpec>,
            &[
                ("", "not a port number"),
                ("0", "out of range"),
                ("65536", "out of range"),
                ("8080:0", "out of range"),
                ("90-80", "reversed"),
                ("8080-8082:80-81", "host range has 3 ports"),
                (
                    "8080:80-81",
                    "host range has 1 port but the guest range 2 ports",
                ),
                ("80/sctp", "unknown protocol"),
                ("abc", "not a port number"),
                ("1.2.3:80:80", "not an IPv4 address"),
                ("a:b:c:d", "expected"),
                ("+80", "not a port number"),
                ("80-", "not a port number"),
                // IPv6: in brackets, well formed, followed by a host port.
                ("::1:8080:80", "an IPv6 HOSTIP in brackets"),
                ("[::1:8080:80", "lacks its closing ]"),
                ("[::1]8080:80", "expected :HOSTPORT after [::1]"),
                ("[]:8080:80", "[] is not an IPv6 address"),
                ("[1.2.3.4]:8080:80", "[1.2.3.4] is not an IPv6 address"),
                ("[fe80::1%eth0]:8080:80", "is not an IPv6 address"),
                ("[::1]:80", "expected"),
                ("[::1]:1:2:3", "expected"),
            ],
        );
    }

    proptest::proptest! {
        /// Any string either parses into a consistent spec or gives an error; never panics.
        #[test]
        fn parse_is_total(s in "[0-9a-z.:/\\[\\]-]{0,24}") {
            if let Ok(spec) = s.parse::<PortSpec>() {
                proptest::prop_assert!(spec.guest_ports.first >= 1 && spec.guest_ports.first <= spec.guest_ports.last);
                if let Some(h) = spec.host_ports {
                    proptest::prop_assert!(h.len() == spec.guest_ports.len() || spec.guest_ports.len() == 1);
                }
                if let Ok(requests) = spec.requests(true, true) {
                    proptest::prop_assert_eq!(requests.len() as u32, spec.guest_ports.len());
                }
            }
        }
    }
}
