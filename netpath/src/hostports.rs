//! The host's own sockets, as far as publishing ports goes: whether one holds a port
//! ([`busy`]), and which process it belongs to ([`owner`]) for the error that says so.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4, SocketAddrV6},
    path::Path,
};

use crate::portspec::Proto;

/// Whether a host socket listens (TCP) or is bound (UDP) on `proto` port `port` at `ip`
/// or on every address of its family.
///
/// Asked of the kernel by binding a probe socket to `ip:port` (and closing it at once),
/// which fails exactly when a conflicting socket exists: a listener or bound UDP socket
/// on that address or the wildcard, or on any address when `ip` is the wildcard. TCP
/// probes set SO_REUSEADDR, so connections that merely use the port (established,
/// TIME_WAIT) do not count, as for a real server. An IPv6 probe is IPv6-only
/// (`IPV6_V6ONLY`): IPv4 sockets do not hold an IPv6 publish's port, while a dual-stack
/// `[::]` socket holds both families' (an IPv4 probe then fails too). One syscall pair,
/// whatever the number of sockets on the host (reading /proc/net/tcp walks all of them:
/// ~8 ms per port with a few thousand connections around).
pub fn busy(proto: Proto, ip: IpAddr, port: u16) -> bool {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, setsockopt, socket,
        sockopt,
    };
    let kind = match proto {
        Proto::Udp => SockType::Datagram,
        Proto::Tcp => SockType::Stream,
    };
    let err = (|| {
        let family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
        if proto == Proto::Tcp {
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        }
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        match ip {
            IpAddr::V4(ip) => bind(raw, &SockaddrIn::from(SocketAddrV4::new(ip, port))),
            IpAddr::V6(ip) => {
                setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
                bind(raw, &SockaddrIn6::from(SocketAddrV6::new(ip, port, 0, 0)))
            }
        }
    })()
    .err()
    .map(std::io::Error::from);
    err.is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

/// Who holds `proto` port `port` on the host, in words: "process nginx (pid 812)
/// listening on 0.0.0.0:8080", or a plainer description when the socket's process
/// cannot be found (another network namespace's, or gone meanwhile). Reads /proc: meant
/// for error messages, not for every port checked.
pub fn owner(proto: Proto, port: u16) -> String {
    let proc = Path::new("/proc");
    let sockets = listeners(proc, proto, port);
    for (local, inode) in &sockets {
        if let Some((pid, comm)) = process_of(proc, *inode) {
            let how = match proto {
                Proto::Tcp => "listening on",
                Proto::Udp => "bound to",
            };
            return format!("process {comm} (pid {pid}) {how} {local}");
        }
    }
    match sockets.first() {
        Some((local, _)) => format!("a host socket on {local}"),
        None => format!("a host socket on {proto} port {port}"),
    }
}

/// The sockets of /proc/net/{tcp,tcp6,udp,udp6} on local port `port` that hold it as a
/// server would (TCP: listening; UDP: any): (local address as printed, inode).
fn listeners(proc: &Path, proto: Proto, port: u16) -> Vec<(String, u64)> {
    let files: &[&str] = match proto {
        Proto::Tcp => &["net/tcp", "net/tcp6"],
        Proto::Udp => &["net/udp", "net/udp6"],
    };
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(proc.join(f)) else {
            continue;
        };
        out.extend(parse_sockets(&text, proto, port));
    }
    out
}

/// The rows of one /proc/net/{tcp,udp}[6] table bound to local `port` (TCP: in LISTEN).
fn parse_sockets(text: &str, proto: Proto, port: u16) -> Vec<(String, u64)> {
    const TCP_LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, p) = f.get(1)?.split_once(':')?;
            if u16::from_str_radix(p, 16).ok()? != port {
                return None;
            }
            if proto == Proto::Tcp && *f.get(3)? != TCP_LISTEN {
                return None;
            }
            let inode: u64 = f.get(9)?.parse().ok()?;
            Some((format!("{}:{port}", proc_addr(addr)?), inode))
        })
        .collect()
}

/// An address as /proc/net prints it: hex of the network-order bytes read as native
/// 32-bit words (4 of them for IPv6).
fn proc_addr(hex: &str) -> Option<String> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()),
        16 => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(format!("[{}]", std::net::Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The process (pid, command name) with a file descriptor on socket inode `inode`.
fn process_of(proc: &Path, inode: u64) -> Option<(u32, String)> {
    let want = format!("socket:[{inode}]");
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()));
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, comm.trim().to_owned()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    /// The probes of one family: `lo` its loopback address, `any` its wildcard, `other`
    /// the other family's wildcard.
    fn probes_of_one_family(lo: IpAddr, any: IpAddr, other: IpAddr) {
        let l = std::net::TcpListener::bind((lo, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        // A listener of one family holds no port of the other.
        assert!(!busy(Proto::Tcp, other, port));
        assert!(busy(Proto::Tcp, lo, port));
        // A wildcard publish overlaps every address.
        assert!(busy(Proto::Tcp, any, port));
        // Other protocol: no conflict.
        assert!(!busy(Proto::Udp, lo, port));
        // A connection using the port as its local port is not a listener.
        let c = std::net::TcpStream::connect((lo, port)).unwrap();
        let (_accepted, _) = l.accept().unwrap();
        drop(l);
        assert!(!busy(Proto::Tcp, any, port));
        drop(c);
        let u = std::net::UdpSocket::bind((lo, 0)).unwrap();
        let uport = u.local_addr().unwrap().port();
        assert!(busy(Proto::Udp, any, uport));
        drop(u);
        assert!(!busy(Proto::Udp, any, uport));
    }

    #[test]
    fn probes_conflict_by_address_and_protocol() {
        let v4: (IpAddr, IpAddr) = (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::UNSPECIFIED.into());
        let v6: (IpAddr, IpAddr) = (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::UNSPECIFIED.into());
        for ((lo, any), (_, other)) in [(v4, v6), (v6, v4)] {
            probes_of_one_family(lo, any, other);
        }
    }

    #[test]
    fn the_owner_is_this_process() {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let who = owner(Proto::Tcp, port);
        let pid = std::process::id();
        assert!(
            who.contains(&format!("(pid {pid}) listening on 127.0.0.1:{port}")),
            "{who}"
        );
        let u = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let uport = u.local_addr().unwrap().port();
        assert!(owner(Proto::Udp, uport).contains(&format!("(pid {pid}) bound to")));
    }

    #[test]
    fn proc_net_rows_parse() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_sockets(text, Proto::Tcp, 8080),
            [("127.0.0.1:8080".to_owned(), 4242)]
        );
        assert_eq!(
            parse_sockets(text, Proto::Tcp, 80),
            [("0.0.0.0:80".to_owned(), 4444)]
        );
        assert_eq!(
            proc_addr("00000000000000000000000001000000").as_deref(),
            Some("[::1]")
        );
    }
}
