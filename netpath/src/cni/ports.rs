//! The `portMappings` capability: each mapping becomes a Docker `-p` spec that netpath
//! publishes, all of an ADD's in one request.

use super::*;

/// One entry of the `portMappings` capability.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// `hostPort`: the port published on the host.
    pub host_port: u16,
    /// `containerPort`: the port in the container it leads to.
    pub container_port: u16,
    /// `protocol`: `tcp` (the default) or `udp`, in any case.
    #[serde(default)]
    pub protocol: Option<String>,
    /// `hostIP`: the host address to publish on; empty or `0.0.0.0` for all of them
    /// (see [`HostAddress`]).
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// Where a port mapping is published, from its `hostIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostAddress {
    /// Empty or `0.0.0.0`: every host address.
    Any,
    /// One IPv4 address of the host.
    V4(Ipv4Addr),
    /// An IPv6 address (`::` for all of them): see [`PortMapping::ipv6_spec`].
    V6(Ipv6Addr),
}

impl PortMapping {
    /// The mapping's `hostIP`.
    pub fn host_address(&self) -> Result<HostAddress> {
        match self.host_ip.as_deref().unwrap_or("") {
            "" => Ok(HostAddress::Any),
            ip => match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) => Ok(HostAddress::Any),
                Ok(IpAddr::V4(a)) => Ok(HostAddress::V4(a)),
                Ok(IpAddr::V6(a)) => Ok(HostAddress::V6(a)),
                Err(_) => Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "port mapping {}:{}: hostIP {ip:?} is not an IP address",
                        self.host_port, self.container_port
                    ),
                )),
            },
        }
    }

    /// The Docker `-p` spec of this mapping; `None` for one that is not published (an
    /// IPv6 host address, [`PortMapping::ipv6_spec`]).
    pub fn spec(&self) -> Result<Option<String>> {
        let proto = self
            .protocol
            .as_deref()
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        if proto != "tcp" && proto != "udp" {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "port mapping {}:{}/{proto}: netpath publishes tcp and udp only",
                    self.host_port, self.container_port
                ),
            ));
        }
        if self.host_port == 0 || self.container_port == 0 {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "port mapping {}:{}: ports must be 1 to 65535",
                    self.host_port, self.container_port
                ),
            ));
        }
        let host = match self.host_address()? {
            HostAddress::Any => String::new(),
            HostAddress::V4(ip) => format!("{ip}:"),
            HostAddress::V6(ip) => return Ok(self.ipv6_spec(ip, &proto)),
        };
        Ok(Some(format!(
            "{host}{}:{}/{proto}",
            self.host_port, self.container_port
        )))
    }

    /// The one place that decides what a mapping on an IPv6 host address becomes:
    /// nothing yet. netpath's datapath does not publish on IPv6 (issue 15: NAT66 and
    /// published ports on IPv6 are still to come), so such a mapping is accepted and
    /// skipped, and ADD goes on with the others — runtimes send it beside its IPv4 twin
    /// (`hostIP` `::` next to `0.0.0.0`), which is published. When IPv6 publishing
    /// lands, this returns Docker's bracketed spec, `[{host}]:{hostPort}:{containerPort}/{proto}`.
    pub fn ipv6_spec(&self, _host: Ipv6Addr, _proto: &str) -> Option<String> {
        None
    }
}

/// The specs of `mappings` that are published (see [`PortMapping::spec`]).
pub(super) fn specs(mappings: &[PortMapping]) -> Result<Vec<String>> {
    let mut specs = Vec::new();
    for m in mappings {
        specs.extend(m.spec()?);
    }
    Ok(specs)
}

/// Publishes `specs` for `ep`, all or none (one request).
pub(super) async fn publish(client: &Client, ep: &Endpoint, specs: &[String]) -> Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let r = client
        .publish_ports(&PortPublish {
            endpoint: ep.id.clone(),
            spec: None,
            specs: specs.to_vec(),
        })
        .await;
    if let Err(e) = r {
        let mut err = api(e);
        err.msg = format!("publishing ports {}: {}", specs.join(", "), err.msg);
        return Err(err);
    }
    Ok(())
}
