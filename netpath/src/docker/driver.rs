//! What each NetworkDriver call does to netpath: Docker's network id becomes a netpath
//! network `d-<first 10 hex digits>` (derived, so the mapping needs no record and
//! survives a restart); an endpoint is remembered from CreateEndpoint (its addresses,
//! from Docker's IPAM) until DeleteEndpoint. Every refusal is a message and changes
//! nothing.
//!
//! Join makes the netpath endpoint: a veth pair whose container end is left in the
//! host's namespace (libnetwork moves it into the container, renames it `eth<N>` and
//! gives it its addresses and routes: the container's namespace does not exist yet
//! when Join runs). The netpath endpoint records Docker's endpoint id as its
//! `container_id`, so Leave finds it after a daemon restart too. ProgramExternal-
//! Connectivity publishes the container's `-p` ports on it; Leave removes it, ports and
//! all. The endpoints between CreateEndpoint and DeleteEndpoint are saved in the
//! daemon's state directory ([`Saved`]).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::Arc,
};

use axum::http::StatusCode;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    saved::Saved,
    wire::{self, PortBinding},
};
use crate::{
    api::{ApiError, Backend},
    model::{
        Endpoint, EndpointCreate, MacAddr, Mode, Network, NetworkCreate, NetworkPolicy,
        PortPublish, Profile,
    },
    portspec::PortSpec,
};

/// A refusal, sent to dockerd in the reply's `Err` (or `Error`).
pub type Refusal = String;

/// Hex digits of the Docker network id kept in the netpath name (`d-` + 10 = 12, the
/// longest network name).
const ID_DIGITS: usize = 10;

/// The netpath network of a Docker network id.
pub fn network_name(network_id: &str) -> Result<String, Refusal> {
    if network_id.len() < ID_DIGITS || !network_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "NetworkID {network_id:?} is not a Docker network id (at least {ID_DIGITS} hex digits)"
        ));
    }
    Ok(format!(
        "d-{}",
        network_id[..ID_DIGITS].to_ascii_lowercase()
    ))
}

/// An endpoint between CreateEndpoint and DeleteEndpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    /// The netpath network.
    pub network: String,
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    /// Docker's `--mac-address`, or one netpath chose (and told Docker).
    pub mac: MacAddr,
}

/// The name the container end of an endpoint's veth is left under in the host's
/// namespace, for libnetwork to move: `npd` and 12 digits of Docker's endpoint id.
pub fn peer_name(endpoint_id: &str) -> String {
    let digits: String = endpoint_id.chars().take(12).collect();
    format!("npd{digits}")
}

/// What a container on a network whose endpoints sit behind their own point-to-point
/// link (routed mode) needs besides its default route: Docker gives the container its
/// address with the pool's prefix, whose on-link route would make it look for its
/// neighbours on the link, where nothing answers. The gateway (which the host end
/// holds) gets a link route of its own (`RouteType` 1, set up with the interface), and
/// the pool's two halves go via it: longer prefixes than the pool's, so they win.
fn routed_halves(net: &Network) -> Vec<Value> {
    let via = |subnet: IpNet, gw: IpAddr| -> Vec<Value> {
        let link = json!({"Destination": IpNet::from(gw).to_string(), "RouteType": 1});
        let halves = (halves(subnet).into_iter()).map(
            |h| json!({"Destination": h.to_string(), "RouteType": 0, "NextHop": gw.to_string()}),
        );
        std::iter::once(link).chain(halves).collect()
    };
    if net.mode != Mode::Routed {
        return Vec::new();
    }
    let mut routes = Vec::new();
    if let (Some(s), Some(g)) = (net.subnet, net.gateway) {
        routes.extend(via(s.into(), g.into()));
    }
    if let (Some(s6), Some(g6)) = (net.subnet6, net.gateway6) {
        routes.extend(via(s6.into(), g6.into()));
    }
    routes
}

/// The two halves of `net` (none for a single address).
fn halves(net: IpNet) -> Vec<IpNet> {
    (net.subnets(net.prefix_len() + 1).ok().into_iter().flatten()).collect()
}

/// The endpoints, by Docker endpoint id.
pub type Endpoints = BTreeMap<String, DockerEndpoint>;

/// The NetworkDriver over a netpath [`Backend`].
pub struct Driver<B> {
    pub(super) backend: Arc<B>,
    endpoints: Saved<Endpoints>,
}

fn said(e: ApiError) -> Refusal {
    match e.body.hint {
        Some(hint) => format!("{} ({hint})", e.body.error),
        None => e.body.error,
    }
}

/// The address of a CIDR string (`"10.88.0.1/16"`); a bare address is accepted too.
fn cidr_addr<A: FromStr>(what: &str, s: &str) -> Result<A, Refusal> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse()
        .map_err(|_| format!("{what} {s:?} is not an address"))
}

/// One family's pool of `CreateNetwork`: its subnet `N`, and its gateway `A` if Docker
/// chose one (a CIDR string with the pool's prefix length).
fn family_pool<N: FromStr, A: FromStr>(
    family: &str,
    pool: &wire::IpamData,
) -> Result<(N, Option<A>), Refusal> {
    let subnet = (pool.pool.parse())
        .map_err(|_| format!("{family} pool {:?} is not an {family} CIDR", pool.pool))?;
    let gateway = match pool.gateway.as_deref() {
        None | Some("") => None,
        Some(gw) => Some(cidr_addr(&format!("{family} gateway"), gw)?),
    };
    Ok((subnet, gateway))
}

/// The `-o` options netpath knows: mode, uplink, mtu, and network policy.
struct Generic {
    mode: Mode,
    uplink: Option<String>,
    mtu: Option<u32>,
    /// `-o isolate=true` (or Docker's `-o com.docker.network.bridge.enable_icc=false`),
    /// `-o egress-deny=CIDR|private[,…]`, `-o egress-allow=CIDR[,…]`,
    /// `-o host-access=all|none|PORT[/PROTO],…` (as `netpath network create`'s).
    policy: NetworkPolicy,
    /// `-o profile=untrusted`.
    profile: Option<Profile>,
}

/// A comma-separated `-o key=a,b` list, each item parsed.
fn items<T: std::str::FromStr>(key: &str, value: &str) -> Result<Vec<T>, Refusal>
where
    T::Err: std::fmt::Display,
{
    (value.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .map(|item| item.parse().map_err(|e| format!("-o {key}={value}: {e}")))
        .collect()
}

fn generic(options: &Map<String, Value>) -> Result<Generic, Refusal> {
    let mut g = Generic {
        mode: Mode::Bridge,
        uplink: None,
        mtu: None,
        policy: NetworkPolicy::default(),
        profile: None,
    };
    let Some(opts) = options.get(wire::GENERIC) else {
        return Ok(g);
    };
    let opts = opts
        .as_object()
        .ok_or_else(|| format!("option {} is not an object", wire::GENERIC))?;
    for (key, value) in opts {
        let value = value
            .as_str()
            .ok_or_else(|| format!("option -o {key} is not a string"))?;
        match key.as_str() {
            "mode" => {
                g.mode = match value {
                    "bridge" => Mode::Bridge,
                    "routed" => Mode::Routed,
                    _ => return Err(format!("-o mode={value}: the mode is bridge or routed")),
                }
            }
            "uplink" => g.uplink = Some(value.to_owned()),
            // Docker's bridge driver says `com.docker.network.bridge.enable_icc=false`.
            "isolate" | "com.docker.network.bridge.enable_icc" => {
                let on = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("-o {key}={value}: give true or false")),
                };
                g.policy.isolate = if key == "isolate" { on } else { !on };
            }
            "egress-deny" => g.policy.egress_deny = items(key, value)?,
            "egress-allow" => g.policy.egress_allow = items(key, value)?,
            "host-access" => {
                g.policy.host_access = value
                    .parse()
                    .map_err(|e| format!("-o {key}={value}: {e}"))?;
            }
            "profile" => {
                g.profile = match value {
                    "untrusted" => Some(Profile::Untrusted),
                    _ => return Err(format!("-o profile={value}: the profile is untrusted")),
                }
            }
            "mtu" => {
                g.mtu = Some(
                    value
                        .parse()
                        .map_err(|_| format!("-o mtu={value}: not a number"))?,
                )
            }
            _ => {
                return Err(format!(
                    "unknown option -o {key} (netpath knows mode, uplink, mtu, isolate, egress-deny, egress-allow, host-access, profile)"
                ));
            }
        }
    }
    Ok(g)
}

/// The netpath port spec of one Docker port binding.
pub fn port_spec(b: &PortBinding) -> Result<String, Refusal> {
    let proto = match b.proto {
        6 => "tcp",
        17 => "udp",
        p => {
            return Err(format!(
                "port {}: protocol {p} is not supported (tcp and udp are)",
                b.port
            ));
        }
    };
    let host = match b.host_ip.as_str() {
        "" => String::new(),
        ip => match cidr_addr("HostIP", ip)? {
            IpAddr::V4(a) => format!("{a}:"),
            IpAddr::V6(a) => format!("[{a}]:"),
        },
    };
    // `-p 8000-8010:80` arrives as one binding with the range: the first free port of it.
    let spec = match (host.is_empty(), b.host_port, b.host_port_end) {
        (true, 0, _) => format!("{}/{proto}", b.port),
        (false, 0, _) => format!("{host}:{}/{proto}", b.port),
        (_, hp, end) if end > hp => format!("{host}{hp}-{end}:{}/{proto}", b.port),
        (_, hp, _) => format!("{host}{hp}:{}/{proto}", b.port),
    };
    spec.parse::<PortSpec>().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The port specs of `com.docker.network.portmap` in `options` (none if absent).
pub fn port_specs(options: Option<&Map<String, Value>>) -> Result<Vec<String>, Refusal> {
    let Some(map) = options.and_then(|o| o.get(wire::PORTMAP)) else {
        return Ok(Vec::new());
    };
    let bindings: Vec<PortBinding> = serde_json::from_value(map.clone())
        .map_err(|e| format!("option {}: {e}", wire::PORTMAP))?;
    bindings.iter().map(port_spec).collect()
}

impl<B: Backend> Driver<B> {
    pub fn new(backend: Arc<B>, endpoints: Saved<Endpoints>) -> Self {
        Driver { backend, endpoints }
    }

    /// The endpoints remembered, by Docker endpoint id.
    pub fn remembered(&self) -> Endpoints {
        self.endpoints.get()
    }

    /// The endpoint `endpoint_id` of network `network_id`, or why not.
    fn endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<DockerEndpoint, Refusal> {
        let network = network_name(network_id)?;
        match self.endpoints.get().get(endpoint_id) {
            Some(ep) if ep.network == network => Ok(ep.clone()),
            _ => Err(format!(
                "no endpoint {endpoint_id:?} on network {network_id} (netpath network {network})"
            )),
        }
    }

    pub async fn create_network(&self, req: wire::CreateNetwork) -> Result<Value, Refusal> {
        let name = network_name(&req.network_id)?;
        let options = req.options.unwrap_or_default();
        let g = generic(&options)?;
        // `docker network create --internal`.
        let internal = options.get(wire::INTERNAL).and_then(Value::as_bool) == Some(true);
        let v4 = req.ipv4_data.unwrap_or_default();
        let [pool] = v4.as_slice() else {
            return Err(format!(
                "netpath needs exactly one IPv4 pool (--subnet), got {}",
                v4.len()
            ));
        };
        let (subnet, gateway) = family_pool::<Ipv4Net, Ipv4Addr>("IPv4", pool)?;
        let v6 = req.ipv6_data.unwrap_or_default();
        let (subnet6, gateway6) = match v6.as_slice() {
            [] => (None, None),
            [pool6] => {
                let (net, gw) = family_pool::<Ipv6Net, Ipv6Addr>("IPv6", pool6)?;
                (Some(net), gw)
            }
            more => {
                return Err(format!(
                    "netpath takes at most one IPv6 pool, got {}",
                    more.len()
                ));
            }
        };
        let create = NetworkCreate {
            name,
            subnet: Some(subnet),
            mode: g.mode,
            gateway,
            subnet6,
            gateway6,
            uplink: g.uplink,
            mtu: g.mtu,
            no_masquerade: Vec::new(),
            policy: NetworkPolicy {
                internal,
                ..g.policy
            },
            profile: g.profile,
        };
        self.backend.create_network(create).await.map_err(said)?;
        Ok(json!({}))
    }

    /// Docker deletes a network only once it has no endpoint left, by its own records:
    /// what netpath still holds on it (an endpoint whose Leave or DeleteEndpoint never
    /// came, while netpath was down) is stale, and goes with the network.
    pub async fn delete_network(&self, req: wire::NetworkRef) -> Result<Value, Refusal> {
        let name = network_name(&req.network_id)?;
        self.backend.get_network(&name).await.map_err(said)?;
        self.backend
            .remove_network(&name, true)
            .await
            .map_err(said)?;
        self.endpoints.update(|eps| {
            eps.retain(|_, ep| ep.network != name);
            Ok(())
        })?;
        Ok(json!({}))
    }

    pub async fn create_endpoint(&self, req: wire::CreateEndpoint) -> Result<Value, Refusal> {
        let name = network_name(&req.network_id)?;
        if req.endpoint_id.is_empty() {
            return Err("EndpointID is empty".into());
        }
        let net = self.backend.get_network(&name).await.map_err(said)?;
        let iface = req.interface.unwrap_or_default();
        if iface.address.is_empty() {
            return Err("the endpoint has no IPv4 address (Interface.Address)".into());
        }
        let Some(subnet) = net.subnet else {
            return Err(format!(
                "network {} has no IPv4 subnet (it is IPv6-only), and Docker gives every \
                 endpoint an IPv4 address",
                req.network_id
            ));
        };
        let ip = match cidr_addr("Interface.Address", &iface.address)? {
            IpAddr::V4(a) if subnet.contains(&a) => a,
            a => {
                return Err(format!(
                    "address {a} is outside network {}'s subnet {subnet}",
                    req.network_id
                ));
            }
        };
        let ip6 = match iface.address_ipv6.as_str() {
            "" => None,
            s => match (cidr_addr("Interface.AddressIPv6", s)?, net.subnet6) {
                (IpAddr::V6(a), Some(net6)) if net6.contains(&a) => Some(a),
                (a, _) => {
                    return Err(format!(
                        "IPv6 address {a} is outside network {}'s IPv6 subnet",
                        req.network_id
                    ));
                }
            },
        };
        let asked_mac = match iface.mac_address.as_str() {
            "" => None,
            s => Some(
                s.parse::<MacAddr>()
                    .map_err(|e| format!("Interface.MacAddress: {e}"))?,
            ),
        };
        port_specs(req.options.as_ref())?;
        let mac = asked_mac.unwrap_or_else(MacAddr::random_local);
        self.endpoints.update(|eps| {
            if eps.contains_key(&req.endpoint_id) {
                return Err(format!("endpoint {} already exists", req.endpoint_id));
            }
            if let Some((other, _)) = eps.iter().find(|(_, ep)| ep.network == name && ep.ip == ip) {
                return Err(format!("address {ip} is already used by endpoint {other}"));
            }
            let ep = DockerEndpoint {
                network: name,
                ip,
                ip6,
                mac,
            };
            eps.insert(req.endpoint_id, ep);
            Ok(())
        })?;
        // libnetwork takes a field the request left empty, and gives the MAC to the
        // interface it moves into the container.
        Ok(match asked_mac {
            Some(_) => json!({}),
            None => json!({"Interface": {"MacAddress": mac.to_string()}}),
        })
    }

    pub async fn endpoint_oper_info(&self, req: wire::EndpointRef) -> Result<Value, Refusal> {
        self.endpoint(&req.network_id, &req.endpoint_id)?;
        Ok(json!({"Value": {}}))
    }

    pub async fn delete_endpoint(&self, req: wire::EndpointRef) -> Result<Value, Refusal> {
        self.endpoint(&req.network_id, &req.endpoint_id)?;
        self.endpoints
            .update(|eps| Ok(eps.remove(&req.endpoint_id)))?;
        Ok(json!({}))
    }

    pub async fn join(&self, req: wire::Join) -> Result<Value, Refusal> {
        let ep = self.endpoint(&req.network_id, &req.endpoint_id)?;
        port_specs(req.options.as_ref())?;
        if let Some(made) = self.joined(&ep.network, &req.endpoint_id).await? {
            return Err(format!(
                "endpoint {} is already joined (netpath endpoint {})",
                req.endpoint_id, made.id
            ));
        }
        let net = self.backend.get_network(&ep.network).await.map_err(said)?;
        let peer = peer_name(&req.endpoint_id);
        self.backend
            .add_endpoint(EndpointCreate {
                network: ep.network.clone(),
                ip: Some(ep.ip),
                ip6: ep.ip6,
                mac: Some(ep.mac),
                container_id: Some(req.endpoint_id.clone()),
                peer: Some(peer.clone()),
                ..EndpointCreate::default()
            })
            .await
            .map_err(said)?;
        let gateway6 = match (ep.ip6, net.gateway6) {
            (Some(_), Some(g)) => g.to_string(),
            _ => String::new(),
        };
        Ok(json!({
            "InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
            "Gateway": net.gateway.map(|g| g.to_string()).unwrap_or_default(),
            "GatewayIPv6": gateway6,
            "StaticRoutes": routed_halves(&net),
        }))
    }

    /// The netpath endpoint Join made for Docker endpoint `endpoint_id`, if any.
    async fn joined(&self, network: &str, endpoint_id: &str) -> Result<Option<Endpoint>, Refusal> {
        let all = (self.backend.list_endpoints(Some(network)).await).map_err(said)?;
        Ok(all
            .into_iter()
            .find(|e| e.details.container_id.as_deref() == Some(endpoint_id)))
    }

    /// The joined netpath endpoint of a call about Docker endpoint `endpoint_id`.
    async fn joined_for(&self, network_id: &str, endpoint_id: &str) -> Result<Endpoint, Refusal> {
        let network = network_name(network_id)?;
        self.joined(&network, endpoint_id)
            .await?
            .ok_or_else(|| format!("endpoint {endpoint_id} on network {network_id} is not joined"))
    }

    pub async fn leave(&self, req: wire::EndpointRef) -> Result<Value, Refusal> {
        // Found in the records, not in memory: a Leave after a daemon restart works.
        let made = self.joined_for(&req.network_id, &req.endpoint_id).await?;
        match self.backend.remove_endpoint(&made.id).await {
            // Removed meanwhile (its container's namespace went, and reconcile with it).
            Ok(_) => Ok(json!({})),
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(json!({})),
            Err(e) => Err(said(e)),
        }
    }

    pub async fn program_external(&self, req: wire::ProgramExternal) -> Result<Value, Refusal> {
        let specs = port_specs(req.options.as_ref())?;
        let made = self.joined_for(&req.network_id, &req.endpoint_id).await?;
        if !specs.is_empty() {
            let publish = PortPublish {
                endpoint: made.id,
                spec: None,
                specs,
            };
            self.backend.publish_ports(publish).await.map_err(said)?;
        }
        Ok(json!({}))
    }

    pub async fn revoke_external(&self, req: wire::EndpointRef) -> Result<Value, Refusal> {
        let made = self.joined_for(&req.network_id, &req.endpoint_id).await?;
        let leases = self.backend.list_ports().await.map_err(said)?;
        if leases.iter().any(|l| l.endpoint == made.id) {
            (self.backend.unpublish_ports(Some(&made.id), None).await).map_err(said)?;
        }
        Ok(json!({}))
    }
}
