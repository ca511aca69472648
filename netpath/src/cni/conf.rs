//! The network configuration on stdin (`NetConf`), its runtime config (`portMappings`,
//! `ips`, `mac`) and the spec versions.

use super::*;
use crate::types::PerFamily;

/// The `runtimeConfig` of a network configuration: the capabilities the runtime
/// fills in for the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuntimeConfig {
    /// `portMappings`: the ports to publish for the container.
    pub port_mappings: Vec<PortMapping>,
    /// `ips`: the requested addresses (a prefix length is ignored); [`NetConf::parse`]
    /// appends those of `args.cni.ips`.
    pub ips: Vec<String>,
    /// `mac`: the MAC requested for the container's interface.
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
pub(super) type Object = serde_json::Map<String, Value>;

pub(super) fn invalid(m: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, m)
}

/// Member `key` of `obj`, unless it is absent or null.
pub(super) fn member<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// Member `key` of `obj` as a string, unless it is absent or null.
pub(super) fn string(obj: &Object, key: &str) -> Result<Option<String>> {
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
pub(super) fn decoded<T: DeserializeOwned>(obj: &Object, key: &str) -> Result<Option<T>> {
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
                "netpath-cni allocates addresses itself: remove the \"ipam\" section (use \"subnet\", or \"subnets\" for a dual-stack network, and the \"ips\" capability for fixed addresses)",
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

    /// The addresses requested by the runtime (`ips` capability, `args.cni.ips` or
    /// `CNI_ARGS` `IP=`, a prefix length ignored): at most one IPv4 and one IPv6 (which
    /// needs a dual-stack network); the same address given twice is asked once.
    pub(super) fn requested_ips(&self, env: &Env) -> Result<PerFamily<IpAddr>> {
        let mut all: Vec<&str> = self.runtime.ips.iter().map(String::as_str).collect();
        if let Some(ip) = env.arg("IP") {
            all.extend(ip.split(',').filter(|s| !s.is_empty()));
        }
        let mut found: Vec<IpAddr> = Vec::new();
        for s in all {
            let addr = s.split_once('/').map_or(s, |(a, _)| a);
            let a: IpAddr = addr
                .parse()
                .map_err(|_| invalid(format!("requested address {s:?} is not an IP address")))?;
            if !found.contains(&a) {
                found.push(a);
            }
        }
        crate::types::by_family(&found).map_err(|two| {
            invalid(format!(
                "two {} addresses requested ({}, {}): a netpath endpoint has at most one address per family",
                two.family, two.first, two.second
            ))
        })
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
