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
    /// `hostIP`: the host address to publish on; empty for all of them (see
    /// [`HostAddress`]).
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// Where a port mapping is published, from its `hostIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostAddress {
    /// Empty: every host address of each family the endpoint has.
    Any,
    /// An IPv4 address of the host; `0.0.0.0` for all of them.
    V4(Ipv4Addr),
    /// An IPv6 address of the host; `::` for all of them.
    V6(Ipv6Addr),
}

impl PortMapping {
    /// The mapping's `hostIP`.
    pub fn host_address(&self) -> Result<HostAddress> {
        match self.host_ip.as_deref().unwrap_or("") {
            "" => Ok(HostAddress::Any),
            ip => match ip.parse::<IpAddr>() {
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

    /// `protocol`, lowercase; `tcp` when absent.
    fn proto(&self) -> String {
        self.protocol
            .as_deref()
            .unwrap_or("tcp")
            .to_ascii_lowercase()
    }

    /// The Docker `-p` spec of this mapping (an IPv6 host address in brackets).
    pub fn spec(&self) -> Result<String> {
        let proto = self.proto();
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
            HostAddress::V6(ip) => format!("[{ip}]:"),
        };
        Ok(format!(
            "{host}{}:{}/{proto}",
            self.host_port, self.container_port
        ))
    }

    /// A mapping on every address of one family (`0.0.0.0`, `::`) whose port an
    /// every-address mapping of `all` (empty `hostIP`, both families) publishes already:
    /// a runtime's per-family twin of it.
    fn covered_by_any(&self, all: &[PortMapping]) -> Result<bool> {
        let one_family_any = match self.host_address()? {
            HostAddress::V4(ip) => ip.is_unspecified(),
            HostAddress::V6(ip) => ip.is_unspecified(),
            HostAddress::Any => false,
        };
        Ok(one_family_any
            && all.iter().any(|o| {
                o.host_address().ok() == Some(HostAddress::Any)
                    && (o.host_port, o.container_port, o.proto())
                        == (self.host_port, self.container_port, self.proto())
            }))
    }
}

/// The specs of `mappings` (see [`PortMapping::spec`]), each port once.
pub(super) fn specs(mappings: &[PortMapping]) -> Result<Vec<String>> {
    let mut specs = Vec::new();
    for m in mappings {
        let spec = m.spec()?;
        if !m.covered_by_any(mappings)? {
            specs.push(spec);
        }
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
