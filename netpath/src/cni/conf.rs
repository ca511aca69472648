//! The network configuration on stdin (`NetConf`), its runtime config
//! (`portMappings`) and the result format of each spec version.

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
    /// `hostIP`: the host address to publish on; empty or `0.0.0.0` for all of them.
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

impl PortMapping {
    /// The Docker `-p` spec of this mapping; `None` for an IPv6 host address (netpath
    /// publishes IPv4 only; runtimes send such mappings next to the IPv4 ones).
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
        let host = match self.host_ip.as_deref().unwrap_or("") {
            "" | "0.0.0.0" => String::new(),
            ip if ip.contains(':') => return Ok(None),
            ip => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| {
                    CniError::new(
                        code::INVALID_CONFIG,
                        format!("port mapping hostIP {ip:?} is not an IP address"),
                    )
                })?;
                format!("{ip}:")
            }
        };
        Ok(Some(format!(
            "{host}{}:{}/{proto}",
            self.host_port, self.container_port
        )))
    }
}

/// The `runtimeConfig` of a network configuration: the capabilities the runtime
/// fills in for the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `portMappings`: the ports to publish for the container.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `ips`: the requested addresses (a prefix length is ignored); [`NetConf::parse`]
    /// appends those of `args.cni.ips`.
    #[serde(default)]
    pub ips: Vec<String>,
    /// `mac`: the MAC requested for the container's interface.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `containerID`: the container the attachment is of.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `ifname`: its interface in the container.
    pub ifname: String,
}

/// A decoded network configuration (one plugin entry of a conflist, as the runtime
/// passes it).
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// `cniVersion`: the spec version the runtime speaks, one of
    /// [`SUPPORTED_VERSIONS`]; results and errors are formatted for it.
    pub cni_version: String,
    /// `name`: netpath's network name.
    pub name: String,
    /// What the network is to be like.
    pub network: NetworkSettings,
    /// `dns`: passed through into the ADD result as it is.
    pub dns: Option<Value>,
    /// `socket`: the daemon's API socket ([`DEFAULT_SOCKET`] when absent).
    pub socket: PathBuf,
    // What the runtime adds to the configuration for the invocation:
    /// `runtimeConfig`, with the addresses of `args.cni.ips` after its own.
    pub runtime: RuntimeConfig,
    /// `prevResult`: the ADD result CHECK is given to verify against.
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments`: for GC, the attachments to keep.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The settings of the netpath network a configuration names: ADD creates the network
/// with them on first use, and an existing network must have each one that is given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkSettings {
    /// `subnet`: the network's IPv4 CIDR (needed to create it).
    pub subnet: Option<Ipv4Net>,
    /// `gateway`: the network's gateway address (netpath picks one when absent).
    pub gateway: Option<Ipv4Addr>,
    /// `mode`: `"bridge"` or `"routed"` (netpath's default when absent).
    pub mode: Option<Mode>,
    /// `uplink`: the host interface the network reaches the outside through.
    pub uplink: Option<String>,
    /// `noMasquerade`: destinations reached unmasqueraded (other nodes' pod CIDRs).
    pub no_masquerade: Option<Vec<Ipv4Net>>,
    /// `mtu` of the network's devices.
    pub mtu: Option<u32>,
}

pub(super) fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// True if `v` is at least `min` (both supported versions).
pub(super) fn at_least(v: &str, min: &str) -> bool {
    version_tuple(v) >= version_tuple(min)
}

pub(super) fn decode_err(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::DECODE,
        format!("cannot decode {what} of the network configuration: {e}"),
    )
}

/// The `cniVersion` of `stdin` when it is there and supported, for error answers.
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CNI_VERSION.to_owned())
}

/// The members of a JSON object.
type Object = serde_json::Map<String, Value>;

fn invalid(m: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, m)
}

/// Member `key` of `obj`, unless it is absent or null.
fn member<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// Member `key` of `obj` as a string, unless it is absent or null.
fn string(obj: &Object, key: &str) -> Result<Option<String>> {
    match member(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(decode_err(
            &format!("\"{key}\""),
            format!("expected a string, found {other}"),
        )),
    }
}

/// Member `key` of `obj` decoded as a `T`, unless it is absent or null.
fn decoded<T: DeserializeOwned>(obj: &Object, key: &str) -> Result<Option<T>> {
    member(obj, key)
        .map(|v| {
            serde_json::from_value(v.clone()).map_err(|e| decode_err(&format!("\"{key}\""), e))
        })
        .transpose()
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("cannot decode the network configuration on stdin as JSON: {e}"),
            )
        })?;
        let obj = v.as_object().ok_or_else(|| {
            CniError::new(
                code::DECODE,
                "the network configuration on stdin is not a JSON object",
            )
        })?;
        let cni_version = string(obj, "cniVersion")?
            .ok_or_else(|| invalid("the network configuration has no \"cniVersion\"".into()))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {cni_version:?} is not supported by netpath-cni (supported: {})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let name = string(obj, "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                invalid("the network configuration has no \"name\" (netpath's network name)".into())
            })?;
        if let Some(t) = string(obj, "type")?
            && t != PLUGIN_TYPE
        {
            return Err(invalid(format!(
                "the network configuration's type is {t:?}, not {PLUGIN_TYPE:?}"
            )));
        }
        if member(obj, "ipam").is_some() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "netpath-cni allocates addresses itself: remove the \"ipam\" section (use \"subnet\", and the \"ips\" capability for fixed addresses)",
            ));
        }
        let network = NetworkSettings::parse(obj)?;
        let socket = string(obj, "socket")?
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let mut runtime: RuntimeConfig = decoded(obj, "runtimeConfig")?.unwrap_or_default();
        if let Some(a) = obj
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
        {
            let more: Vec<String> =
                serde_json::from_value(a.clone()).map_err(|e| decode_err("\"args.cni.ips\"", e))?;
            runtime.ips.extend(more);
        }
        Ok(NetConf {
            cni_version,
            name,
            network,
            dns: member(obj, "dns").cloned(),
            socket,
            runtime,
            prev_result: member(obj, "prevResult").cloned(),
            valid_attachments: decoded(obj, "cni.dev/valid-attachments")?,
        })
    }

    /// The one IPv4 address requested by the runtime (`ips` capability, `args.cni.ips`
    /// or `CNI_ARGS` `IP=`), if any.
    pub(super) fn requested_ip(&self, env: &Env) -> Result<Option<Ipv4Addr>> {
        let mut all: Vec<&str> = self.runtime.ips.iter().map(String::as_str).collect();
        if let Some(ip) = env.arg("IP") {
            all.extend(ip.split(',').filter(|s| !s.is_empty()));
        }
        let mut found: Vec<Ipv4Addr> = Vec::new();
        for s in all {
            let addr = s.split_once('/').map_or(s, |(a, _)| a);
            match addr.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) => {
                    if !found.contains(&a) {
                        found.push(a);
                    }
                }
                Ok(std::net::IpAddr::V6(_)) => {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("requested address {s}: netpath networks are IPv4 only"),
                    ));
                }
                Err(_) => {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("requested address {s:?} is not an IP address"),
                    ));
                }
            }
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "{} addresses requested ({}): a netpath endpoint has one",
                    many.len(),
                    many.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The MAC requested by the runtime (`mac` capability, or `CNI_ARGS` `MAC=`), if any.
    pub(super) fn requested_mac(&self, env: &Env) -> Result<Option<crate::types::MacAddr>> {
        let Some(m) = self
            .runtime
            .mac
            .clone()
            .or_else(|| env.arg("MAC").map(str::to_owned))
        else {
            return Ok(None);
        };
        m.parse()
            .map(Some)
            .map_err(|e: crate::types::MacAddrError| {
                CniError::new(code::INVALID_CONFIG, e.to_string())
            })
    }
}

impl NetworkSettings {
    /// The network settings of a configuration's members.
    fn parse(obj: &Object) -> Result<NetworkSettings> {
        let subnet = match string(obj, "subnet")? {
            Some(s) => Some(s.parse::<Ipv4Net>().map_err(|_| {
                invalid(format!(
                    "invalid subnet {s:?}: expected an IPv4 CIDR such as 10.88.0.0/16"
                ))
            })?),
            None => None,
        };
        let mode = match string(obj, "mode")?.as_deref() {
            None => None,
            Some("bridge") => Some(Mode::Bridge),
            Some("routed") => Some(Mode::Routed),
            Some(m) => {
                return Err(invalid(format!(
                    "invalid mode {m:?}: expected \"bridge\" or \"routed\""
                )));
            }
        };
        let uplink = string(obj, "uplink")?;
        if let Some(u) = &uplink {
            validate_ifname(u)
                .map_err(|_| invalid(format!("invalid uplink interface name {u:?}")))?;
        }
        let gateway = match string(obj, "gateway")? {
            Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| {
                invalid(format!("invalid gateway {g:?}: expected an IPv4 address"))
            })?),
            None => None,
        };
        let mtu =
            match member(obj, "mtu") {
                None => None,
                Some(m) => Some(m.as_u64().and_then(|m| u32::try_from(m).ok()).ok_or_else(
                    || decode_err("\"mtu\"", format!("expected a number, found {m}")),
                )?),
            };
        let no_masquerade = match decoded::<Vec<String>>(obj, "noMasquerade")? {
            None => None,
            Some(cidrs) => {
                let mut out = Vec::new();
                for c in cidrs {
                    out.push(c.parse::<Ipv4Net>().map_err(|_| {
                        invalid(format!(
                            "invalid noMasquerade entry {c:?}: expected an IPv4 CIDR such as 10.244.0.0/16"
                        ))
                    })?);
                }
                out.sort();
                out.dedup();
                Some(out)
            }
        };
        Ok(NetworkSettings {
            subnet,
            gateway,
            mode,
            uplink,
            no_masquerade,
            mtu,
        })
    }

    /// The request that creates network `name` with these settings; `None` without a
    /// subnet.
    pub(super) fn create(&self, name: &str) -> Option<NetworkCreate> {
        Some(NetworkCreate {
            name: name.to_owned(),
            subnet: self.subnet?,
            mode: self.mode.unwrap_or_default(),
            gateway: self.gateway,
            subnet6: None,
            gateway6: None,
            uplink: self.uplink.clone(),
            mtu: self.mtu,
            no_masquerade: self.no_masquerade.clone().unwrap_or_default(),
        })
    }
}
