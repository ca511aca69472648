//! The IPv6 guard seen from outside, for the container and the microVM tests alike: the
//! forged frames an endpoint sends to test it (a router advertisement, a neighbour
//! advertisement for its gateway, a datagram from an address not its own), the frames it
//! may send that show a capture works, how to count both in a capture, and the drop
//! counters the forged ones must raise.

use std::net::Ipv6Addr;

use serde_json::Value;

use crate::{Daemon, frames};

/// The drop reasons of the three forged frames, in [`forged`]'s order.
pub const REASONS: [&str; 3] = ["router_message", "spoofed_nd", "spoofed_ip"];
/// UDP port of the forged-source datagram, and of the control datagram.
pub const FORGED_PORT: u16 = 7490;
pub const CONTROL_PORT: u16 = 7491;
/// The source a forged datagram claims: not the sender's.
pub const FORGED_SOURCE: [u8; 16] = [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// An endpoint's `ip6` in `--json` output.
pub fn ep_ip6(ep: &Value) -> Ipv6Addr {
    ep["ip6"].as_str().expect("ip6").parse().expect("IPv6")
}

/// An endpoint's `mac` in `--json` output.
pub fn ep_mac(ep: &Value) -> [u8; 6] {
    parse_mac(ep["mac"].as_str().expect("mac"))
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let b: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("MAC {s}")))
        .collect();
    b.try_into().unwrap_or_else(|_| panic!("MAC {s}"))
}

/// The endpoint that forges: its MAC, its own IPv6 address and its gateway's.
#[derive(Clone, Copy, Debug)]
pub struct Sender {
    pub mac: [u8; 6],
    pub ip6: [u8; 16],
    pub gateway: [u8; 16],
}

impl Sender {
    /// Endpoint `ep` of `--json` output.
    pub fn of(ep: &Value) -> Sender {
        let gateway: Ipv6Addr = ep["gateway6"]
            .as_str()
            .expect("gateway6")
            .parse()
            .expect("IPv6");
        Sender {
            mac: ep_mac(ep),
            ip6: ep_ip6(ep).octets(),
            gateway: gateway.octets(),
        }
    }

    pub fn link_local(&self) -> [u8; 16] {
        frames::link_local(self.mac)
    }
}

/// `frame` with hop limit 255 (what neighbour discovery requires to be heeded) and the
/// given Ethernet addresses.
pub fn on_link(mut frame: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[21] = 255;
    frame
}

/// What `from` must not send, in [`REASONS`]' order: a router advertisement with a
/// prefix to autoconfigure (fd99::/64), an advertisement of its gateway's address at its
/// own MAC (both from its link-local address to all nodes), and a datagram to `to`
/// (next hop `to_mac`) from [`FORGED_SOURCE`].
pub fn forged(from: &Sender, to: [u8; 16], to_mac: [u8; 6]) -> [Vec<u8>; 3] {
    let ll = from.link_local();
    let mut ra = vec![64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    ra.extend_from_slice(&[
        3, 4, 64, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    ra.extend_from_slice(&[
        0, 0, 0, 0, 0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    [
        on_link(
            frames::icmp6(ll, frames::ALL_NODES, 134, &ra),
            ALL_NODES_MAC,
            from.mac,
        ),
        on_link(
            frames::neighbor_advert(ll, from.gateway, from.mac),
            ALL_NODES_MAC,
            from.mac,
        ),
        on_link(
            frames::udp6(FORGED_SOURCE, 1, to, FORGED_PORT, b"forged"),
            to_mac,
            from.mac,
        ),
    ]
}

/// What `from` may send, so that a capture is shown to see its frames: an advertisement
/// of its own link-local address and a datagram to `to` from its own address.
pub fn control(from: &Sender, to: [u8; 16], to_mac: [u8; 6]) -> [Vec<u8>; 2] {
    let ll = from.link_local();
    [
        on_link(
            frames::neighbor_advert(ll, ll, from.mac),
            ALL_NODES_MAC,
            from.mac,
        ),
        on_link(
            frames::udp6(from.ip6, 1, to, CONTROL_PORT, b"fine"),
            to_mac,
            from.mac,
        ),
    ]
}

/// How many of each frame of [`forged`] and [`control`] a capture holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub router_adverts: usize,
    pub gateway_adverts: usize,
    pub forged_source: usize,
    pub control_adverts: usize,
    pub control_datagrams: usize,
}

impl Seen {
    /// The forged frames only.
    pub fn forged(&self) -> (usize, usize, usize) {
        (
            self.router_adverts,
            self.gateway_adverts,
            self.forged_source,
        )
    }
}

/// Counts `from`'s frames in `frames` by their IPv6 source (the Ethernet addresses change
/// when a frame is routed): RAs and NAs from its link-local address, datagrams from
/// [`FORGED_SOURCE`] or its own address to the two ports.
pub fn seen(frames: &[Vec<u8>], from: &Sender) -> Seen {
    let ll = from.link_local();
    let mut n = Seen::default();
    for f in frames
        .iter()
        .filter(|f| f.len() >= 58 && f[12..14] == [0x86, 0xdd])
    {
        let src: [u8; 16] = f[22..38].try_into().expect("16 bytes");
        let target = (f.len() >= 78).then(|| &f[62..78]);
        match (f[20], f[54]) {
            (58, 134) if src == ll => n.router_adverts += 1,
            (58, 136) if src == ll && target == Some(&from.gateway[..]) => n.gateway_adverts += 1,
            (58, 136) if src == ll && target == Some(&ll[..]) => n.control_adverts += 1,
            (17, _) if src == FORGED_SOURCE && f[56..58] == FORGED_PORT.to_be_bytes() => {
                n.forged_source += 1
            }
            (17, _) if src == from.ip6 && f[56..58] == CONTROL_PORT.to_be_bytes() => {
                n.control_datagrams += 1
            }
            _ => {}
        }
    }
    n
}

/// The guard's drop counters of [`REASONS`].
pub fn guard_drops(d: &Daemon) -> [u64; 3] {
    REASONS.map(|r| d.drops(r))
}
