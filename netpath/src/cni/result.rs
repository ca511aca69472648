//! The ADD result: the interfaces, one `ips` entry per address family the endpoint has
//! and a default route for each, in the format of the configuration's spec version;
//! and the addresses CHECK verifies.

use super::*;

/// One of an endpoint's addresses as the container has it: the address, its prefix
/// length and its gateway (the default route of its family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub gateway: IpAddr,
}

impl Assigned {
    /// `address/prefix`, as the result's `ips[].address`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }

    /// The spec's `ips[].version` (results before 1.0.0).
    fn version(&self) -> &'static str {
        if self.ip.is_ipv4() { "4" } else { "6" }
    }

    /// The default route of the address's family.
    fn default_route(&self) -> &'static str {
        if self.ip.is_ipv4() {
            "0.0.0.0/0"
        } else {
            "::/0"
        }
    }
}

/// The addresses of endpoint `ep` of `network`: its IPv4 one, then its IPv6 one, each
/// if the network has that family.
pub fn assigned(network: &Network, ep: &Endpoint) -> Vec<Assigned> {
    let v4 = crate::control::endpoints::ipv4_side(ep).map(|s| Assigned {
        ip: s.ip.into(),
        prefix_len: s.prefix_len,
        gateway: s.gateway.into(),
    });
    let v6 = crate::control::endpoints::ipv6_side(network, ep).map(|s| Assigned {
        ip: s.ip.into(),
        prefix_len: s.prefix_len,
        gateway: s.gateway.into(),
    });
    v4.into_iter().chain(v6).collect()
}

/// The host side's MAC, read from sysfs (the plugin runs in the host's namespace).
pub(super) fn host_mac(ifname: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(ifname).join("address"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The ADD result for endpoint `ep` of `network`, in the format of `conf.cni_version`.
pub fn result(conf: &NetConf, network: &Network, ep: &Endpoint, netns: &Path) -> Value {
    let mut host = json!({"name": ep.host_ifname});
    if let Some(mac) = host_mac(&ep.host_ifname) {
        host["mac"] = json!(mac);
    }
    let container = json!({
        "name": ep.details.ifname.as_deref().unwrap_or("eth0"),
        "mac": ep.mac,
        "sandbox": netns,
    });
    let addresses = assigned(network, ep);
    let ips: Vec<Value> = addresses
        .iter()
        .map(|a| {
            let mut ip = json!({
                "address": a.cidr(),
                "gateway": a.gateway.to_string(),
                "interface": 1,
            });
            if !at_least(&conf.cni_version, "1.0.0") {
                ip["version"] = json!(a.version());
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"dst": a.default_route(), "gw": a.gateway.to_string()}))
        .collect();
    json!({
        "cniVersion": conf.cni_version,
        "interfaces": [host, container],
        "ips": ips,
        "routes": routes,
        "dns": conf.dns.clone().unwrap_or_else(|| json!({})),
    })
}
