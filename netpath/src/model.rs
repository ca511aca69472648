//! The control plane's data model: what the API, the CLI and the state database speak.
//!
//! Every type here is plain serde data. Requests reject unknown fields, so a typo in a
//! client is an error rather than silently ignored; a request may leave out any `Option`
//! field (serde reads a missing one as `None`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use crate::types::{Destination, MacAddr};

/// How a network connects its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A Linux bridge; endpoints' host-side devices are its ports.
    #[default]
    Bridge,
    /// No bridge: a /32 route per endpoint, the host side answers as the gateway.
    Routed,
}

/// What kind of device an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// A veth pair, one end in a container's network namespace.
    Veth,
    /// A TAP device for a microVM.
    Tap,
}

/// Lifecycle of an endpoint record. A record is written `Creating` in the same
/// transaction that leases its IP, then its devices are made, then it becomes `Ready`.
/// A crash in between leaves `Creating`, which reconciliation rolls back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    Creating,
    Ready,
}

/// A request to create a network (`POST /v1/networks`, `netpath network create`).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// 1 to 12 characters from a-z, 0-9, '-' and '_'; the bridge is `np-NAME`.
    pub name: String,
    /// The endpoints' IPv4 addresses, given as its network address (`10.50.0.0/24`);
    /// `None` for an IPv6-only network (which then needs `subnet6`).
    pub subnet: Option<Ipv4Net>,
    /// Bridge (default) or routed.
    #[serde(default)]
    pub mode: Mode,
    /// Default: the first host address of the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 subnet of a dual-stack or IPv6-only network (`fd50::/64`): its network address, a
    /// prefix of /64 to /120. (The IPv6 fields are left out of an IPv4-only request, so
    /// that it reads as before to a daemon that predates them.)
    pub subnet6: Option<Ipv6Net>,
    /// Default: the first address of `subnet6` (`fd50::1`).
    pub gateway6: Option<Ipv6Addr>,
    /// Default: the interface of the host's default route.
    pub uplink: Option<String>,
    /// Default: 1500.
    pub mtu: Option<u32>,
    /// Destinations the network's traffic reaches with the endpoints' own addresses, not
    /// masqueraded (ip-masq-agent's idea: other hosts' pod CIDRs, a routed LAN).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade: Vec<IpNet>,
    /// What the network's endpoints may reach (default: everything).
    #[serde(default, skip_serializing_if = "NetworkPolicy::is_open")]
    pub policy: NetworkPolicy,
    /// A preset added to `policy` ([`Profile`]).
    pub profile: Option<Profile>,
}

/// A preset of network policy (`--profile`), added to the rules a request gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// For microVM tenants nobody vetted: isolated, no private destination, nothing of
    /// the host's but published ports (`--isolate --egress-deny private --host-access
    /// none`).
    Untrusted,
}

impl Profile {
    /// `policy` with this preset's rules added.
    pub fn apply(self, mut policy: NetworkPolicy) -> NetworkPolicy {
        match self {
            Profile::Untrusted => {
                policy.isolate = true;
                if !policy.egress_deny.contains(&Destination::Private) {
                    policy.egress_deny.push(Destination::Private);
                }
                if policy.host_access.is_all() {
                    policy.host_access = HostAccess::None;
                }
            }
        }
        policy
    }
}

/// What a network's endpoints may reach, enforced by the endpoint program on each
/// endpoint's own device (see `netpath_common::policy`). Set at creation, changed with
/// `PATCH /v1/networks/NAME` ([`NetworkUpdate`]) on running endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Endpoints do not reach each other directly (Docker's `icc=false`); a neighbour's
    /// published port through a host address still answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolate: bool,
    /// Nothing leaves the network (Docker's `--internal`): endpoints reach each other and
    /// their gateway only; no masquerade, no published ports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Destinations outside the network its endpoints may not reach: CIDRs, or
    /// `private` (RFC 1918, 100.64/10, 169.254/16, fc00::/7, fe80::/10 and the host's
    /// own subnets). The longest matching rule of the two lists decides; none matching,
    /// the packet goes. The host's own addresses are not egress (host access is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_deny: Vec<Destination>,
    /// Exceptions to `egress_deny` (a longer prefix inside a denied one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allow: Vec<IpNet>,
    /// What the endpoints may open on the host's own addresses (published ports are
    /// always reachable).
    #[serde(default, skip_serializing_if = "HostAccess::is_all")]
    pub host_access: HostAccess,
}

/// What a network's endpoints may open on the host's own addresses (its gateway, its
/// uplink's, any other): `all`, `none`, or ports (`53/udp,53/tcp`, `22`: TCP by default).
/// A port published on a host address is always reachable; TCP segments that open
/// nothing, ICMP errors and neighbour discovery always pass. Written as such (JSON
/// too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostAccess {
    #[default]
    All,
    None,
    /// (IP protocol, port), sorted, each once.
    Ports(Vec<(crate::portspec::Proto, u16)>),
}

impl HostAccess {
    pub fn is_all(&self) -> bool {
        *self == HostAccess::All
    }

    /// The (IP protocol number, port) pairs it allows; none for `all` and `none`.
    pub fn ports(&self) -> Vec<(u8, u16)> {
        match self {
            HostAccess::Ports(p) => p
                .iter()
                .map(|(proto, port)| (proto.number(), *port))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl std::str::FromStr for HostAccess {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use crate::portspec::Proto;
        match s {
            "all" => return Ok(HostAccess::All),
            "none" => return Ok(HostAccess::None),
            _ => {}
        }
        let mut ports = Vec::new();
        for item in s.split(',') {
            let (port, proto) = match item.split_once('/') {
                Some((port, "tcp")) => (port, Proto::Tcp),
                Some((port, "udp")) => (port, Proto::Udp),
                Some((_, other)) => {
                    return Err(format!(
                        "invalid host access {item:?}: the protocol is tcp or udp, not {other:?}"
                    ));
                }
                None => (item, Proto::Tcp),
            };
            match port.parse::<u16>() {
                Ok(p) if p > 0 => ports.push((proto, p)),
                _ => {
                    return Err(format!(
                        "invalid host access {s:?}: give all, none, or ports such as 53/udp,53/tcp,22"
                    ));
                }
            }
        }
        ports.sort_by_key(|(proto, port)| (proto.number(), *port));
        ports.dedup();
        Ok(HostAccess::Ports(ports))
    }
}

impl std::fmt::Display for HostAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostAccess::All => f.write_str("all"),
            HostAccess::None => f.write_str("none"),
            HostAccess::Ports(ports) => {
                let items: Vec<String> = ports
                    .iter()
                    .map(|(proto, port)| format!("{port}/{proto}"))
                    .collect();
                f.write_str(&items.join(","))
            }
        }
    }
}

impl Serialize for HostAccess {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostAccess {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl NetworkPolicy {
    /// No rule: what a network without a policy (and every record from before policies)
    /// has.
    pub fn is_open(&self) -> bool {
        *self == NetworkPolicy::default()
    }

    /// The rules as words, for `ls` and messages ("isolate, internal"; "-" for none).
    pub fn describe(&self) -> String {
        let list = |what: &str, items: Vec<String>| {
            (!items.is_empty()).then(|| format!("{what}={}", items.join("+")))
        };
        let rules: Vec<String> = [(self.isolate, "isolate"), (self.internal, "internal")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_owned())
            .chain(list(
                "egress-deny",
                self.egress_deny.iter().map(|d| d.to_string()).collect(),
            ))
            .chain(list(
                "egress-allow",
                self.egress_allow.iter().map(|c| c.to_string()).collect(),
            ))
            .chain((!self.host_access.is_all()).then(|| {
                format!(
                    "host-access={}",
                    self.host_access.to_string().replace(',', "+")
                )
            }))
            .collect();
        if rules.is_empty() {
            "-".into()
        } else {
            rules.join(",")
        }
    }
}

/// A change of a network's policy (`PATCH /v1/networks/NAME`, `netpath network update`):
/// each rule given is set, the others stay.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkUpdate {
    pub isolate: Option<bool>,
    pub internal: Option<bool>,
    /// The whole new list (`[]`: none).
    pub egress_deny: Option<Vec<Destination>>,
    pub egress_allow: Option<Vec<IpNet>>,
    pub host_access: Option<HostAccess>,
    /// A preset added after the rules above.
    pub profile: Option<Profile>,
}

impl NetworkUpdate {
    /// `policy` with this update's rules applied.
    pub fn apply(&self, policy: &NetworkPolicy) -> NetworkPolicy {
        let policy = NetworkPolicy {
            isolate: self.isolate.unwrap_or(policy.isolate),
            internal: self.internal.unwrap_or(policy.internal),
            egress_deny: (self.egress_deny.clone()).unwrap_or_else(|| policy.egress_deny.clone()),
            egress_allow: (self.egress_allow.clone())
                .unwrap_or_else(|| policy.egress_allow.clone()),
            host_access: (self.host_access.clone()).unwrap_or_else(|| policy.host_access.clone()),
        };
        match self.profile {
            Some(p) => p.apply(policy),
            None => policy,
        }
    }
}

/// A network as recorded: the request with every default decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Small id, unique among live networks; it is the datapath's network id.
    pub id: u16,
    pub name: String,
    /// The IPv4 subnet and gateway (the host's address on the network: the endpoints'
    /// default route); `None` in an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 subnet and gateway of a dual-stack or IPv6-only network. Records
    /// written before IPv6 load as IPv4-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub mode: Mode,
    /// Where masqueraded traffic leaves; `None` when the host had no default route.
    pub uplink: Option<String>,
    /// The MTU of the bridge and of every endpoint's devices.
    pub mtu: u32,
    /// The bridge (bridge mode), `None` in routed mode.
    pub bridge: Option<String>,
    /// Destinations not masqueraded (see [`NetworkCreate::no_masquerade`]). Records
    /// written before this field existed load with none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade: Vec<IpNet>,
    /// What its endpoints may reach. Records written before policies load open.
    #[serde(default, skip_serializing_if = "NetworkPolicy::is_open")]
    pub policy: NetworkPolicy,
}

/// A request to add a container endpoint, a veth pair (`POST /v1/endpoints`).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointCreate {
    /// The network to join.
    pub network: String,
    /// The container's network namespace: a path (e.g. /run/netns/x, /proc/PID/ns/net)…
    pub netns: Option<PathBuf>,
    /// …or a process whose namespace to use.
    pub pid: Option<u32>,
    /// The address to lease; default: the lowest free one.
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address to lease in a dual-stack network; default: the lowest free one.
    pub ip6: Option<Ipv6Addr>,
    /// Interface name inside the namespace (default `eth0`).
    pub ifname: Option<String>,
    /// `aa:bb:cc:dd:ee:ff`; default: random, locally administered.
    pub mac: Option<MacAddr>,
    /// The container this endpoint is a CNI attachment of (`CNI_CONTAINERID`); with
    /// `ifname` it names the attachment for CNI DEL, CHECK, GC and a repeated ADD. For
    /// an engine's attachment (Docker's), the engine's id of it.
    pub container_id: Option<String>,
    /// Leave the container end in the host's namespace under this name, down and
    /// unconfigured, instead of in a namespace: for an engine that moves it into the
    /// container and configures it itself (Docker's libnetwork, at Join, when the
    /// container's namespace does not exist yet). Excludes `netns`, `pid` and `ifname`.
    pub peer: Option<String>,
}

/// A request to add a microVM endpoint, a TAP device (`POST /v1/taps`).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapCreate {
    /// The network to join.
    pub network: String,
    /// TAP device name on the host.
    pub name: String,
    /// The guest's address to lease; default: the lowest free one.
    pub ip: Option<Ipv4Addr>,
    /// The guest's IPv6 address in a dual-stack network; default: the lowest free one.
    pub ip6: Option<Ipv6Addr>,
    /// Guest MAC; default: random, locally administered.
    pub mac: Option<MacAddr>,
    /// The user that may open the TAP without privileges (the VMM's); default: none.
    pub uid: Option<u32>,
    /// The group that may open it.
    pub gid: Option<u32>,
    /// Number of queues (multiqueue TAP when > 1). Default 1.
    pub queues: Option<u16>,
}

/// What every endpoint request says of the network it joins: which one, the addresses
/// to lease (one per family) and the MAC; the kind's own fields keep their defaults.
pub trait Joining: Default {
    fn joining(
        network: String,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        mac: Option<MacAddr>,
    ) -> Self;
}

macro_rules! joining {
    ($($request:ty),*) => {$(
        impl Joining for $request {
            fn joining(
                network: String,
                ip: Option<Ipv4Addr>,
                ip6: Option<Ipv6Addr>,
                mac: Option<MacAddr>,
            ) -> Self {
                Self { network, ip, ip6, mac, ..Default::default() }
            }
        }
    )*};
}
joining!(EndpointCreate, TapCreate);

/// An endpoint as recorded: a container's veth pair or a microVM's TAP.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 12 lowercase hex digits.
    pub id: String,
    pub network: String,
    pub kind: EndpointKind,
    /// `Creating` until its devices exist (a crash leaves it for reconcile to undo).
    pub state: EndpointState,
    /// Its leased IPv4 address; `None` in an IPv6-only network.
    pub ip: Option<Ipv4Addr>,
    /// Its leased IPv6 address, in a dual-stack network (a /128 behind the gateway for a
    /// TAP or a routed container, an address of the subnet behind a bridge).
    pub ip6: Option<Ipv6Addr>,
    /// The network's IPv6 gateway, the endpoint's IPv6 default route.
    pub gateway6: Option<Ipv6Addr>,
    /// IPv4 prefix length the endpoint sees (the subnet's for bridged veths, 32 for
    /// routed ones and TAPs; 32, unused, in an IPv6-only network).
    pub prefix_len: u8,
    /// The endpoint's own MAC (container interface or guest NIC).
    pub mac: MacAddr,
    /// The network's IPv4 gateway (with `ip`).
    pub gateway: Option<Ipv4Addr>,
    /// Host-side device: veth host end or the TAP.
    pub host_ifname: String,
    /// What only some kinds have (serialized inline).
    #[serde(flatten)]
    pub details: EndpointDetails,
}

impl Endpoint {
    /// The address to name it by: its IPv4 address, or the IPv6 one in an IPv6-only
    /// network (every endpoint has one of them).
    pub fn primary_ip(&self) -> IpAddr {
        match (self.ip, self.ip6) {
            (Some(ip), _) => ip.into(),
            (None, Some(ip6)) => ip6.into(),
            (None, None) => Ipv4Addr::UNSPECIFIED.into(),
        }
    }
}

/// The fields of an [`Endpoint`] that only some kinds have: a veth's namespace side and
/// CNI attachment, a TAP's owner and queues. All `None` by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDetails {
    /// Interface name inside the container (veth) — `None` for TAPs.
    pub ifname: Option<String>,
    /// The container's network namespace as the request named it (a `/proc/PID/ns/net`
    /// or `/run/netns/NAME` path) — `None` for TAPs.
    pub netns: Option<PathBuf>,
    /// A TAP's owner, who may open it without privileges (Firecracker's jailer uid/gid).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A TAP's number of queues (a multiqueue TAP when > 1).
    pub queues: Option<u16>,
    /// The CNI container id of the attachment (see [`EndpointCreate::container_id`]).
    /// Records written before this field existed load as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The identity of the container's network namespace: the inode of its nsfs file
    /// (`stat -L /proc/PID/ns/net`, `ls -i /run/netns/NAME`), which stays the namespace's
    /// whatever path named it — a `/proc/PID/ns/net` goes with its process, while the
    /// namespace may live on. Records written before this field existed load as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u64>,
    /// The name the container end was left under in the host's namespace, for an
    /// engine to move (see [`EndpointCreate::peer`]); `None` for every other endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// Error body of every failed API request.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// What failed and why, in one sentence.
    pub error: String,
    /// What to do about it, when there is something to do.
    pub hint: Option<String>,
}

/// A request to publish ports of an endpoint, Docker's `-p` syntax: every spec of
/// `specs` (and `spec`, the one-spec form) is published, or none is.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortPublish {
    /// Endpoint id, or a prefix of one that matches only it.
    pub endpoint: String,
    pub spec: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<String>,
}

impl PortPublish {
    /// Every spec of the request, `spec` first.
    pub fn specs(&self) -> Vec<&str> {
        self.spec
            .iter()
            .chain(&self.specs)
            .map(String::as_str)
            .collect()
    }
}

/// One published port: `proto` traffic to `host_ip:host_port` goes to the endpoint's
/// `guest_port` at `guest_ip`, the endpoint's address of the same family. `host_ip`
/// 0.0.0.0 means every host IPv4 address, `::` every IPv6 one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLease {
    /// `proto/host_ip:host_port`, e.g. `tcp/0.0.0.0:8080`, `tcp/[::]:8080`.
    pub id: String,
    pub endpoint: String,
    pub proto: crate::portspec::Proto,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub guest_ip: IpAddr,
    pub guest_port: u16,
}

impl PortLease {
    pub fn lease_id(proto: crate::portspec::Proto, host_ip: IpAddr, port: u16) -> String {
        format!("{proto}/{}", std::net::SocketAddr::new(host_ip, port))
    }
}

/// Everything `netpath stats` shows, as `GET /v1/stats` serves it: the datapath's
/// counters, with each endpoint's traffic under its id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsReport {
    /// Packets per hook and packet class.
    pub classes: Vec<ClassCount>,
    /// Per endpoint: tx = sent by the endpoint, rx = delivered to it by the fast path.
    pub endpoints: Vec<EndpointTraffic>,
    /// The fast path's forwards past the kernel's path, per way.
    pub forwards: Vec<WayCount>,
    /// Drops per reason (summed over hooks).
    pub drops: Vec<ReasonCount>,
    /// Drops per hook and reason, every slot (zeros too). Absent from a daemon older than
    /// layout 6.
    pub drops_by_hook: Vec<HookDropCount>,
    /// How full each table of the datapath is (its arrays left out).
    pub maps: Vec<MapFill>,
    /// Each program's runs and run time, as the kernel counts them while its BPF
    /// statistics are on (`sysctl kernel.bpf_stats_enabled=1`); zeros otherwise.
    pub programs: Vec<ProgramCost>,
}

/// How full one table of the datapath is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapFill {
    pub map: String,
    pub entries: u64,
    pub capacity: u32,
}

/// One program's runs and the time spent in them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramCost {
    pub program: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Packets and bytes: every counter of the datapath (serialized inline in its row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, other: Count) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// The drops for one reason at one hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDropCount {
    pub hook: String,
    pub reason: String,
    #[serde(flatten)]
    pub count: Count,
}

/// The packets of one class at one hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCount {
    pub hook: String,
    pub class: String,
    #[serde(flatten)]
    pub count: Count,
}

/// One endpoint's traffic: tx = sent by the endpoint, rx = delivered to it by the fast
/// path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointTraffic {
    /// The endpoint's id; `None` for a map entry no record explains (or when the state
    /// database could not be read).
    pub id: Option<String>,
    pub network: Option<String>,
    /// Its IPv4 address; `None` for an endpoint of an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    pub ifindex: u32,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

impl EndpointTraffic {
    /// What the endpoint sent.
    pub fn tx(&self) -> Count {
        Count {
            packets: self.tx_packets,
            bytes: self.tx_bytes,
        }
    }

    /// What the fast path delivered to it.
    pub fn rx(&self) -> Count {
        Count {
            packets: self.rx_packets,
            bytes: self.rx_bytes,
        }
    }
}

/// The fast path's forwards one way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WayCount {
    pub way: String,
    #[serde(flatten)]
    pub count: Count,
}

/// The drops for one reason, over every hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    #[serde(flatten)]
    pub count: Count,
}

/// What translates a connection `netpath flows` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    /// An endpoint's connection out through an uplink, its source masqueraded.
    Masq,
    /// A connection from outside to a published port.
    Publish,
    /// A connection from an endpoint to a published port on a host address.
    Hairpin,
}

/// A transport protocol, as `netpath flows --proto` selects it (`icmp`: ICMP and ICMPv6
/// echo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProto {
    Tcp,
    Udp,
    Icmp,
}

/// Which connections `GET /v1/flows` lists: all of them, or those of one endpoint (an id
/// or a unique prefix), protocol or kind.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    pub endpoint: Option<String>,
    pub proto: Option<FlowProto>,
    pub kind: Option<FlowKind>,
}

/// A connection the datapath translates (`GET /v1/flows`, `netpath flows`), as
/// `conntrack -L` shows one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub kind: FlowKind,
    pub proto: FlowProto,
    /// The endpoint it belongs to: the source of a masqueraded connection, the target
    /// of a published one (`None` if no record has its address).
    pub endpoint: Option<String>,
    pub network: Option<String>,
    /// `outbound`: the endpoint opened it; `inbound`: it came to the endpoint.
    pub direction: String,
    /// As the opening side sent it.
    pub original: FlowTuple,
    /// As it travels after translation.
    pub translated: FlowTuple,
    /// `new` (only the opening side has spoken), `established` (answered), `closing`
    /// (TCP FIN or RST seen).
    pub state: String,
    /// Since its first packet, since its last, and until it times out (whole seconds).
    pub age_secs: u64,
    pub idle_secs: u64,
    pub expires_in_secs: u64,
}

/// A connection's source and destination (ICMP echo: its identifier as the port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTuple {
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
}

/// Which events `GET /v1/events` streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// Every dropped packet.
    Drop,
    /// Forwarded packets, sampled (`trace_every`).
    Trace,
}

/// The query of `GET /v1/events`: drops, traces or both (no `type`); of one endpoint
/// (an id or a unique prefix); forwards traced one in `trace_every` (default 1 when
/// traces are asked for).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    #[serde(rename = "type")]
    pub kind: Option<EventType>,
    pub endpoint: Option<String>,
    pub trace_every: Option<u32>,
}

/// One line of `GET /v1/events` (JSON lines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MonitorEvent {
    Drop(PacketEvent),
    Trace(PacketEvent),
    /// Events this stream did not get since its last `lost` line: the ring was full
    /// (`ring`), or this reader fell behind (`behind`).
    Lost {
        ring: u64,
        behind: u64,
    },
}

/// A packet a program dropped or forwarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketEvent {
    pub time_unix_ns: u64,
    pub hook: String,
    /// Why it was dropped (drops only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub endpoint: Option<String>,
    pub ifindex: u32,
    pub proto: String,
    /// `ip:port` (TCP, UDP), `ip` (other IP), `-` (not IP).
    pub src: String,
    pub dst: String,
    pub len: u32,
}

/// A ready veth endpoint `id` of network `web` with address `ip` and host-side device
/// `np-<id>`: the record the unit tests of listings and events name things after.
#[cfg(test)]
pub(crate) fn test_endpoint(id: &str, ip: &str) -> Endpoint {
    Endpoint {
        id: id.to_owned(),
        network: "web".to_owned(),
        kind: EndpointKind::Veth,
        state: EndpointState::Ready,
        ip: Some(ip.parse().unwrap()),
        ip6: None,
        gateway6: None,
        prefix_len: 24,
        mac: "02:00:00:00:00:01".parse().unwrap(),
        gateway: Some("10.50.0.1".parse().unwrap()),
        host_ifname: format!("np-{id}"),
        details: EndpointDetails::default(),
    }
}
