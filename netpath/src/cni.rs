//! `netpath-cni`: a CNI plugin (spec 1.0/1.1, and the 0.3.x/0.4.0 result format) that is
//! a thin client of the daemon's API, like Cilium's plugin.
//!
//! The runtime execs the plugin with the `CNI_*` environment and the network
//! configuration on stdin; it answers on stdout and exits 0, or prints a spec error
//! (`{"cniVersion","code","msg","details"}`) and exits 1.
//!
//! * ADD: ensures netpath network `name` exists (creating it from `subnet`, `mode`,
//!   `uplink`, `gateway`, `mtu` on first use; a concurrent creator winning is fine),
//!   adds a veth endpoint into `CNI_NETNS` tagged with `CNI_CONTAINERID`, publishes the
//!   `portMappings` capability as Docker `-p` specs, and returns the result. A repeated
//!   ADD of the same (container id, ifname) returns the existing attachment's result.
//! * DEL: removes the endpoints of the attachment (their port leases go with them);
//!   succeeds when there is none, and when the namespace is gone.
//! * CHECK: the endpoint is ready, its host device exists and the container interface
//!   has its address (and the `prevResult`'s).
//! * GC: removes this network's CNI endpoints that are not in
//!   `cni.dev/valid-attachments`. STATUS: the daemon answers `/v1/version`.
//! * VERSION: the supported versions.
//!
//! Error codes: the spec's 1-7 and 11 (the daemon is down or slow: try again later),
//! 50 (STATUS: the daemon is down), and [`code::DAEMON_REFUSED`] (100: the daemon refused
//! the request; `details` has its hint) and [`code::CHECK_FAILED`] (101).

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    client::{Client, ClientError},
    config::DEFAULT_SOCKET,
    model::{Endpoint, EndpointCreate, EndpointState, Mode, Network, NetworkCreate, PortPublish},
};

/// The plugin's `type` in a network configuration.
pub const PLUGIN_TYPE: &str = "netpath-cni";
/// The newest spec version this plugin implements.
pub const CNI_VERSION: &str = "1.1.0";
/// Every `cniVersion` the plugin accepts (and formats results for).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Bound on each request to the daemon.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// Error codes: the spec's well-known ones, then this plugin's (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD (the daemon is down).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The daemon refused or failed the request (its message is `msg`, its hint `details`).
    pub const DAEMON_REFUSED: u32 = 100;
    /// CHECK: the attachment is not what netpath set up.
    pub const CHECK_FAILED: u32 = 101;
}

/// A spec error: printed as JSON on stdout, exit status 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// The error object of the spec, for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if let Some(d) = &self.details {
            v["details"] = json!(d);
        }
        v
    }

    /// A daemon client error as a spec error. `status_down` is the code for "the daemon
    /// does not answer".
    fn from_client(e: ClientError, down: u32) -> Self {
        let hint = e.hint();
        let code = match &e {
            ClientError::DaemonDown { socket } => {
                return CniError::new(
                    down,
                    format!(
                        "the netpath daemon is not running (no answer on {}): start it with `sudo netpath daemon`",
                        socket.display()
                    ),
                )
                .details("or point \"socket\" in the network configuration at its API socket");
            }
            ClientError::Timeout { .. } => code::TRY_AGAIN_LATER,
            ClientError::Api { status: 400, .. } => code::INVALID_CONFIG,
            ClientError::Api { .. } => code::DAEMON_REFUSED,
            ClientError::Io { .. } | ClientError::Protocol { .. } | ClientError::Decode { .. } => {
                code::IO
            }
        };
        let err = CniError::new(code, format!("netpath: {e}"));
        match hint {
            Some(h) => err.details(h),
            None => err,
        }
    }
}

type Result<T, E = CniError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The `CNI_*` environment of one invocation, validated for its command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
}

impl Env {
    /// Reads and validates the environment through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let invalid = |m: String| CniError::new(code::INVALID_ENV, m);
        let command = match var("CNI_COMMAND") {
            None => {
                return Err(invalid(
                    "CNI_COMMAND is not set: netpath-cni is a CNI plugin, run by a container runtime (ADD, DEL, CHECK, GC, STATUS or VERSION)".into(),
                ));
            }
            Some(c) => Command::parse(&c).ok_or_else(|| {
                invalid(format!(
                    "unknown CNI_COMMAND {c:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"
                ))
            })?,
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        if !per_attachment {
            // VERSION, GC and STATUS concern no attachment: libcni fills the other
            // variables with placeholders ("dummy") for them.
            return Ok(Env {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: Vec::new(),
            });
        }
        let non_empty = |k: &str| var(k).filter(|v| !v.is_empty());
        let container_id = match non_empty("CNI_CONTAINERID") {
            Some(c) => {
                validate_container_id(&c).map_err(invalid)?;
                c
            }
            None => {
                return Err(invalid(format!(
                    "CNI_CONTAINERID is not set (required for {command:?})"
                )));
            }
        };
        let ifname = match non_empty("CNI_IFNAME") {
            Some(i) => {
                validate_ifname(&i).map_err(invalid)?;
                i
            }
            None => {
                return Err(invalid(format!(
                    "CNI_IFNAME is not set (required for {command:?})"
                )));
            }
        };
        let netns = non_empty("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && matches!(command, Command::Add | Command::Check) {
            return Err(invalid(format!(
                "CNI_NETNS is not set (required for {command:?})"
            )));
        }
        if let Some(n) = &netns
            && !n.is_absolute()
        {
            return Err(invalid(format!(
                "CNI_NETNS {} is not an absolute path",
                n.display()
            )));
        }
        let args = parse_cni_args(&var("CNI_ARGS").unwrap_or_default()).map_err(invalid)?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The spec's rule: an alphanumeric, then alphanumerics, `_`, `.` and `-`.
fn validate_container_id(id: &str) -> Result<(), String> {
    let ok = id.len() <= 1024
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid CNI_CONTAINERID {id:?}: it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
        ))
    }
}

fn validate_ifname(name: &str) -> Result<(), String> {
    crate::types::check_ifname(name)
        .map_err(|reason| format!("invalid CNI_IFNAME {name:?}: {reason}"))
}

/// `K1=V1;K2=V2` (empty: none).
fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!(
                "invalid CNI_ARGS {s:?}: expected KEY=VALUE pairs separated by ';'"
            )),
        })
        .collect()
}

/// One entry of the `portMappings` capability.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A decoded network configuration (one plugin entry of a conflist, as the runtime
/// passes it).
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// netpath's network name.
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub mode: Option<Mode>,
    pub uplink: Option<String>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    /// `noMasquerade`: destinations reached unmasqueraded (other nodes' pod CIDRs).
    pub no_masquerade: Option<Vec<Ipv4Net>>,
    pub socket: PathBuf,
    pub dns: Option<Value>,
    pub port_mappings: Vec<PortMapping>,
    /// Requested addresses: `runtimeConfig.ips`, then `args.cni.ips`.
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// True if `v` is at least `min` (both supported versions).
fn at_least(v: &str, min: &str) -> bool {
    version_tuple(v) >= version_tuple(min)
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> CniError {
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
        let invalid = |m: String| CniError::new(code::INVALID_CONFIG, m);
        let string = |key: &str| -> Result<Option<String>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(decode_err(
                    &format!("\"{key}\""),
                    format!("expected a string, found {other}"),
                )),
            }
        };
        let cni_version = string("cniVersion")?
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
        let name = string("name")?.filter(|n| !n.is_empty()).ok_or_else(|| {
            invalid("the network configuration has no \"name\" (netpath's network name)".into())
        })?;
        if let Some(t) = string("type")?
            && t != PLUGIN_TYPE
        {
            return Err(invalid(format!(
                "the network configuration's type is {t:?}, not {PLUGIN_TYPE:?}"
            )));
        }
        if obj.get("ipam").is_some_and(|v| !v.is_null()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "netpath-cni allocates addresses itself: remove the \"ipam\" section (use \"subnet\", and the \"ips\" capability for fixed addresses)",
            ));
        }
        let subnet = match string("subnet")? {
            Some(s) => Some(s.parse::<Ipv4Net>().map_err(|_| {
                invalid(format!(
                    "invalid subnet {s:?}: expected an IPv4 CIDR such as 10.88.0.0/16"
                ))
            })?),
            None => None,
        };
        let mode = match string("mode")?.as_deref() {
            None => None,
            Some("bridge") => Some(Mode::Bridge),
            Some("routed") => Some(Mode::Routed),
            Some(m) => {
                return Err(invalid(format!(
                    "invalid mode {m:?}: expected \"bridge\" or \"routed\""
                )));
            }
        };
        let uplink = string("uplink")?;
        if let Some(u) = &uplink {
            validate_ifname(u)
                .map_err(|_| invalid(format!("invalid uplink interface name {u:?}")))?;
        }
        let gateway = match string("gateway")? {
            Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| {
                invalid(format!("invalid gateway {g:?}: expected an IPv4 address"))
            })?),
            None => None,
        };
        let mtu =
            match obj.get("mtu") {
                None | Some(Value::Null) => None,
                Some(m) => Some(m.as_u64().and_then(|m| u32::try_from(m).ok()).ok_or_else(
                    || decode_err("\"mtu\"", format!("expected a number, found {m}")),
                )?),
            };
        let no_masquerade = match obj.get("noMasquerade") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let cidrs: Vec<String> = serde_json::from_value(v.clone())
                    .map_err(|e| decode_err("\"noMasquerade\"", e))?;
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
        let socket = string("socket")?
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let runtime: RuntimeConfig = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => RuntimeConfig::default(),
            Some(r) => {
                serde_json::from_value(r.clone()).map_err(|e| decode_err("\"runtimeConfig\"", e))?
            }
        };
        let mut ips = runtime.ips;
        if let Some(a) = obj
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
        {
            let more: Vec<String> =
                serde_json::from_value(a.clone()).map_err(|e| decode_err("\"args.cni.ips\"", e))?;
            ips.extend(more);
        }
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(a) => Some(
                serde_json::from_value(a.clone())
                    .map_err(|e| decode_err("\"cni.dev/valid-attachments\"", e))?,
            ),
        };
        Ok(NetConf {
            cni_version,
            name,
            subnet,
            mode,
            uplink,
            gateway,
            mtu,
            no_masquerade,
            socket,
            dns: obj.get("dns").filter(|d| !d.is_null()).cloned(),
            port_mappings: runtime.port_mappings,
            ips,
            mac: runtime.mac,
            prev_result: obj.get("prevResult").filter(|p| !p.is_null()).cloned(),
            valid_attachments,
        })
    }

    /// The one IPv4 address requested by the runtime (`ips` capability, `args.cni.ips`
    /// or `CNI_ARGS` `IP=`), if any.
    fn requested_ip(&self, env: &Env) -> Result<Option<Ipv4Addr>> {
        let mut all: Vec<&str> = self.ips.iter().map(String::as_str).collect();
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
    fn requested_mac(&self, env: &Env) -> Result<Option<crate::types::MacAddr>> {
        let Some(m) = self
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

/// What the plugin prints and its exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// Runs one invocation: `var` reads the environment, `stdin` is the configuration.
pub async fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    match run_inner(var, stdin).await {
        Ok(Some(v)) => Outcome {
            stdout: format!("{v}\n"),
            exit_code: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            exit_code: 0,
        },
        Err(e) => Outcome {
            stdout: format!("{}\n", e.to_json(&version_of(stdin))),
            exit_code: 1,
        },
    }
}

async fn run_inner(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>> {
    let env = Env::from_vars(var)?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": CNI_VERSION,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let needs = |min: &str| {
        if at_least(&conf.cni_version, min) {
            Ok(())
        } else {
            Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "{:?} needs cniVersion {min} or later, the configuration has {}",
                    env.command, conf.cni_version
                ),
            ))
        }
    };
    let client = Client::new(&conf.socket).with_timeout(DAEMON_TIMEOUT);
    match env.command {
        Command::Version => unreachable!("answered above"),
        Command::Add => add(&client, &env, &conf).await.map(Some),
        Command::Del => del(&client, &env, &conf).await.map(|()| None),
        Command::Check => {
            needs("0.4.0")?;
            check(&client, &env, &conf).await.map(|()| None)
        }
        Command::Status => {
            needs("1.1.0")?;
            client
                .version()
                .await
                .map_err(|e| CniError::from_client(e, code::NOT_AVAILABLE))?;
            Ok(None)
        }
        Command::Gc => {
            needs("1.1.0")?;
            gc(&client, &conf).await.map(|()| None)
        }
    }
}

fn api(e: ClientError) -> CniError {
    CniError::from_client(e, code::TRY_AGAIN_LATER)
}

/// Endpoints of `conf.name` that belong to the attachment (container id, ifname).
async fn attachment(client: &Client, env: &Env, conf: &NetConf) -> Result<Vec<Endpoint>> {
    let all = client.list_endpoints(None).await.map_err(api)?;
    Ok(all
        .into_iter()
        .filter(|e| {
            e.network == conf.name
                && e.container_id.as_deref() == Some(env.container_id.as_str())
                && e.ifname.as_deref() == Some(env.ifname.as_str())
        })
        .collect())
}

/// The network of `conf`, created on first use.
async fn ensure_network(client: &Client, conf: &NetConf) -> Result<Network> {
    let existing = match client.get_network(&conf.name).await {
        Ok(n) => Some(n),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(e) => return Err(api(e)),
    };
    let network = match existing {
        Some(n) => n,
        None => {
            let Some(subnet) = conf.subnet else {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "netpath network {:?} does not exist and the network configuration has no \"subnet\" to create it with",
                        conf.name
                    ),
                ));
            };
            let req = NetworkCreate {
                name: conf.name.clone(),
                subnet,
                mode: conf.mode.unwrap_or_default(),
                gateway: conf.gateway,
                uplink: conf.uplink.clone(),
                mtu: conf.mtu,
                no_masquerade: conf.no_masquerade.clone().unwrap_or_default(),
            };
            match client.create_network(&req).await {
                Ok(n) => n,
                // Another ADD may have created it meanwhile ("already exists", or a
                // conflict with the devices it is making): use it if it is there now.
                Err(e) => match client.get_network(&conf.name).await {
                    Ok(n) => n,
                    Err(_) => return Err(api(e)),
                },
            }
        }
    };
    if let Some(s) = conf.subnet
        && s != network.subnet
    {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "netpath network {:?} exists with subnet {}, but the network configuration says {s}",
                network.name, network.subnet
            ),
        )
        .details("use another network name, or remove the network with `netpath network rm`"));
    }
    if let Some(m) = conf.mode
        && m != network.mode
    {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "netpath network {:?} exists in {:?} mode, but the network configuration says {m:?}",
                network.name, network.mode
            ),
        ));
    }
    let differs = |what: &str, has: String, says: String| {
        CniError::new(
            code::INVALID_CONFIG,
            format!(
                "netpath network {:?} exists with {what} {has}, but the network configuration says {says}",
                network.name
            ),
        )
        .details("make the configuration match the network, or use another network name")
    };
    if let Some(g) = conf.gateway
        && g != network.gateway
    {
        return Err(differs(
            "gateway",
            network.gateway.to_string(),
            g.to_string(),
        ));
    }
    if let Some(m) = conf.mtu
        && m != network.mtu
    {
        return Err(differs("MTU", network.mtu.to_string(), m.to_string()));
    }
    if let Some(n) = &conf.no_masquerade
        && *n != network.no_masquerade
    {
        let show = |v: &[Ipv4Net]| {
            let s: Vec<String> = v.iter().map(|c| c.to_string()).collect();
            format!("[{}]", s.join(", "))
        };
        return Err(differs(
            "noMasquerade",
            show(&network.no_masquerade),
            show(n),
        ));
    }
    if let Some(u) = &conf.uplink
        && network.uplink.as_ref() != Some(u)
    {
        let has = network.uplink.clone().unwrap_or_else(|| "none".into());
        return Err(differs("uplink", has, u.clone()));
    }
    Ok(network)
}

async fn add(client: &Client, env: &Env, conf: &NetConf) -> Result<Value> {
    let netns = env.netns.clone().expect("validated: ADD has CNI_NETNS");
    if !netns.exists() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", netns.display()),
        ));
    }
    let ip = conf.requested_ip(env)?;
    let mac = conf.requested_mac(env)?;
    let mut specs = Vec::new();
    for m in &conf.port_mappings {
        specs.extend(m.spec()?);
    }
    if let Some(ep) = attachment(client, env, conf).await?.into_iter().next() {
        // A repeated ADD: answer with what exists.
        if ep.state != EndpointState::Ready {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "the attachment of container {} ({}) is still being set up (endpoint {})",
                    env.container_id, env.ifname, ep.id
                ),
            ));
        }
        // The same ADD again is answered with what exists; an ADD asking for another
        // address or MAC is not the same request.
        if let Some(want) = ip
            && want != ep.ip
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "container {} ({}) is already attached with address {}, not {want}",
                    env.container_id, env.ifname, ep.ip
                ),
            )
            .details("DEL the attachment first to change its address"));
        }
        if let Some(want) = mac
            && want != ep.mac
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "container {} ({}) is already attached with MAC {}, not {want}",
                    env.container_id, env.ifname, ep.mac
                ),
            )
            .details("DEL the attachment first to change its MAC"));
        }
        let has_ports = client
            .list_ports()
            .await
            .map_err(api)?
            .iter()
            .any(|l| l.endpoint == ep.id);
        if !has_ports {
            publish(client, &ep, &specs).await?;
        }
        return Ok(result(conf, &ep, &netns));
    }
    ensure_network(client, conf).await?;
    let ep = client
        .add_endpoint(&EndpointCreate {
            network: conf.name.clone(),
            netns: Some(netns.clone()),
            pid: None,
            ip,
            ifname: Some(env.ifname.clone()),
            mac,
            container_id: Some(env.container_id.clone()),
        })
        .await
        .map_err(api)?;
    if let Err(e) = publish(client, &ep, &specs).await {
        // All or nothing: the runtime treats a failed ADD as never done.
        let _ = client.remove_endpoint(&ep.id).await;
        return Err(e);
    }
    Ok(result(conf, &ep, &netns))
}

/// Publishes `specs` for `ep`, all or none (one request).
async fn publish(client: &Client, ep: &Endpoint, specs: &[String]) -> Result<()> {
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

/// The host side's MAC, read from sysfs (the plugin runs in the host's namespace).
fn host_mac(ifname: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(ifname).join("address"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The ADD result for `ep`, in the format of `conf.cni_version`.
pub fn result(conf: &NetConf, ep: &Endpoint, netns: &Path) -> Value {
    let mut host = json!({"name": ep.host_ifname});
    if let Some(mac) = host_mac(&ep.host_ifname) {
        host["mac"] = json!(mac);
    }
    let container = json!({
        "name": ep.ifname.as_deref().unwrap_or("eth0"),
        "mac": ep.mac,
        "sandbox": netns,
    });
    let mut ip = json!({
        "address": format!("{}/{}", ep.ip, ep.prefix_len),
        "gateway": ep.gateway.to_string(),
        "interface": 1,
    });
    if !at_least(&conf.cni_version, "1.0.0") {
        ip["version"] = json!("4");
    }
    let mut r = json!({
        "cniVersion": conf.cni_version,
        "interfaces": [host, container],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": ep.gateway.to_string()}],
    });
    r["dns"] = conf.dns.clone().unwrap_or_else(|| json!({}));
    r
}

async fn del(client: &Client, env: &Env, conf: &NetConf) -> Result<()> {
    for ep in attachment(client, env, conf).await? {
        match client.remove_endpoint(&ep.id).await {
            Ok(_) | Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => return Err(api(e)),
        }
    }
    Ok(())
}

async fn check(client: &Client, env: &Env, conf: &NetConf) -> Result<()> {
    let failed = |m: String| CniError::new(code::CHECK_FAILED, m);
    let eps = attachment(client, env, conf).await?;
    let Some(ep) = eps.first() else {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "netpath has no attachment of container {} ({}) on network {:?}",
                env.container_id, env.ifname, conf.name
            ),
        ));
    };
    if ep.state != EndpointState::Ready {
        return Err(failed(format!("endpoint {} is not ready", ep.id)));
    }
    let network = client.get_network(&conf.name).await.map_err(api)?;
    if let Some(s) = conf.subnet
        && s != network.subnet
    {
        return Err(failed(format!(
            "network {:?} has subnet {}, the configuration says {s}",
            network.name, network.subnet
        )));
    }
    if !Path::new("/sys/class/net").join(&ep.host_ifname).exists() {
        return Err(failed(format!(
            "the host side {} of endpoint {} is missing",
            ep.host_ifname, ep.id
        )));
    }
    let netns = env.netns.clone().expect("validated: CHECK has CNI_NETNS");
    if !netns.exists() {
        return Err(failed(format!(
            "network namespace {} does not exist",
            netns.display()
        )));
    }
    let addrs = addresses_in(&netns, &env.ifname)
        .map_err(|e| failed(format!("cannot inspect {}: {e}", netns.display())))?;
    let Some(addrs) = addrs else {
        return Err(failed(format!(
            "interface {} is missing in {}",
            env.ifname,
            netns.display()
        )));
    };
    if !addrs.contains(&ep.ip) {
        return Err(failed(format!(
            "interface {} in {} does not have address {}",
            env.ifname,
            netns.display(),
            ep.ip
        )));
    }
    if let Some(prev) = &conf.prev_result {
        let want = format!("{}/{}", ep.ip, ep.prefix_len);
        let listed = prev
            .get("ips")
            .and_then(Value::as_array)
            .is_some_and(|ips| ips.iter().any(|i| i.get("address") == Some(&json!(want))));
        if !listed {
            return Err(failed(format!(
                "prevResult does not list the attachment's address {want}"
            )));
        }
    }
    Ok(())
}

/// The IPv4 addresses of `ifname` inside `netns`; `None` if there is no such interface.
fn addresses_in(netns: &Path, ifname: &str) -> std::io::Result<Option<Vec<Ipv4Addr>>> {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(netns)?;
    let ifname = ifname.to_owned();
    std::thread::spawn(move || -> std::io::Result<Option<Vec<Ipv4Addr>>> {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let mut found = false;
        let mut addrs = Vec::new();
        for a in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
            if a.interface_name != ifname {
                continue;
            }
            found = true;
            if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                addrs.push(sin.ip());
            }
        }
        Ok(found.then_some(addrs))
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace inspection thread panicked"))?
}

async fn gc(client: &Client, conf: &NetConf) -> Result<()> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "GC needs \"cni.dev/valid-attachments\" in the network configuration",
        ));
    };
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let all = client.list_endpoints(None).await.map_err(api)?;
    for ep in all.iter().filter(|e| e.network == conf.name) {
        let Some(cid) = ep.container_id.as_deref() else {
            continue; // not made by CNI
        };
        if keep.contains(&(cid, ep.ifname.as_deref().unwrap_or(""))) {
            continue;
        }
        match client.remove_endpoint(&ep.id).await {
            Ok(_) | Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => return Err(api(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn env_is_validated_per_command() {
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
        assert_eq!(
            env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        // DEL needs no namespace.
        let d = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.1.0.5"),
        ])
        .unwrap();
        assert_eq!(d.arg("IP"), Some("10.1.0.5"));
        for (k, v) in [
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "waytoolongifname0"),
            ("CNI_IFNAME", "a b"),
            ("CNI_ARGS", "novalue"),
        ] {
            let mut pairs = vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
            ];
            pairs.retain(|(pk, _)| *pk != k);
            pairs.push((k, v));
            assert_eq!(env(&pairs).unwrap_err().code, code::INVALID_ENV, "{k}={v}");
        }
        // GC and STATUS need no attachment.
        env(&[("CNI_COMMAND", "GC")]).unwrap();
        env(&[("CNI_COMMAND", "STATUS")]).unwrap();
    }

    fn conf(extra: Value) -> Result<NetConf> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "web", "type": "netpath-cni"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn netconf_decoding_and_codes() {
        let c = conf(json!({"subnet": "10.88.0.0/24", "mode": "routed", "uplink": "eth0",
            "gateway": "10.88.0.254", "socket": "/tmp/x.sock", "dns": {"nameservers": ["10.0.0.1"]},
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
                "ips": ["10.88.0.9/24"], "mac": "02:00:00:00:00:09"}}))
        .unwrap();
        assert_eq!(c.subnet, Some("10.88.0.0/24".parse().unwrap()));
        assert_eq!(c.mode, Some(Mode::Routed));
        assert_eq!(c.socket, Path::new("/tmp/x.sock"));
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.mac.as_deref(), Some("02:00:00:00:00:09"));
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(
            c.requested_ip(&e).unwrap(),
            Some("10.88.0.9".parse().unwrap())
        );
        assert_eq!(conf(json!({})).unwrap().socket, Path::new(DEFAULT_SOCKET));

        let code_of = |b: &[u8]| NetConf::parse(b).unwrap_err().code;
        assert_eq!(code_of(b"{not json"), code::DECODE);
        assert_eq!(code_of(b"[1]"), code::DECODE);
        assert_eq!(code_of(br#"{"name":"a"}"#), code::INVALID_CONFIG);
        assert_eq!(
            code_of(br#"{"cniVersion":"9.9.9","name":"a"}"#),
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(code_of(br#"{"cniVersion":"1.0.0"}"#), code::INVALID_CONFIG);
        let bad = |v: Value| conf(v).unwrap_err().code;
        assert_eq!(bad(json!({"subnet": "10.88.0.0"})), code::INVALID_CONFIG);
        assert_eq!(bad(json!({"subnet": "fd00::/64"})), code::INVALID_CONFIG);
        assert_eq!(bad(json!({"mode": "overlay"})), code::INVALID_CONFIG);
        assert_eq!(bad(json!({"type": "bridge"})), code::INVALID_CONFIG);
        assert_eq!(bad(json!({"gateway": "x"})), code::INVALID_CONFIG);
        assert_eq!(bad(json!({"subnet": 5})), code::DECODE);
        assert_eq!(
            bad(json!({"ipam": {"type": "host-local"}})),
            code::UNSUPPORTED_FIELD
        );
        assert_eq!(
            bad(json!({"runtimeConfig": {"portMappings": [{"hostPort": "x"}]}})),
            code::DECODE
        );
    }

    #[test]
    fn no_masquerade_destinations_parse_sorted_and_checked() {
        let c = conf(json!({"noMasquerade": ["10.245.0.0/16", "10.244.0.0/16", "10.244.0.0/16"]}))
            .unwrap();
        assert_eq!(
            c.no_masquerade,
            Some(vec![
                "10.244.0.0/16".parse().unwrap(),
                "10.245.0.0/16".parse().unwrap()
            ])
        );
        assert_eq!(conf(json!({})).unwrap().no_masquerade, None);
        let e = conf(json!({"noMasquerade": ["10.244.0.0"]})).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("invalid noMasquerade entry"), "{}", e.msg);
        let e = conf(json!({"noMasquerade": "10.244.0.0/16"})).unwrap_err();
        assert_eq!(e.code, code::DECODE);
    }

    #[test]
    fn requested_addresses() {
        let e = |a: &str| {
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", a),
            ])
            .unwrap()
        };
        let c = conf(json!({"args": {"cni": {"ips": ["10.88.0.7"]}}})).unwrap();
        assert_eq!(
            c.requested_ip(&e("")).unwrap(),
            Some("10.88.0.7".parse().unwrap())
        );
        assert_eq!(
            c.requested_ip(&e("IP=10.88.0.8")).unwrap_err().code,
            code::INVALID_CONFIG
        );
        let c = conf(json!({"runtimeConfig": {"ips": ["fd00::1/64"]}})).unwrap();
        assert_eq!(
            c.requested_ip(&e("")).unwrap_err().code,
            code::INVALID_CONFIG
        );
        let c = conf(json!({})).unwrap();
        assert_eq!(
            c.requested_ip(&e("IP=10.88.0.3")).unwrap(),
            Some("10.88.0.3".parse().unwrap())
        );
        assert_eq!(
            c.requested_mac(&e("MAC=02:00:00:00:00:01"))
                .unwrap()
                .map(|m| m.to_string())
                .as_deref(),
            Some("02:00:00:00:00:01")
        );
        let bad = c.requested_mac(&e("MAC=01:00:00:00:00:01")).unwrap_err();
        assert_eq!(bad.code, code::INVALID_CONFIG);
        assert!(bad.msg.contains("unicast"), "{}", bad.msg);
    }

    #[test]
    fn port_mappings_become_docker_specs() {
        let m = |v: Value| serde_json::from_value::<PortMapping>(v).unwrap().spec();
        assert_eq!(
            m(json!({"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}))
                .unwrap(),
            Some("18080:80/tcp".into())
        );
        assert_eq!(
            m(json!({"hostPort": 53, "containerPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"})).unwrap(),
            Some("127.0.0.1:53:5353/udp".into())
        );
        assert_eq!(
            m(json!({"hostPort": 1, "containerPort": 2})).unwrap(),
            Some("1:2/tcp".into())
        );
        assert_eq!(
            m(json!({"hostPort": 1, "containerPort": 2, "hostIP": "::"})).unwrap(),
            None
        );
        assert_eq!(
            m(json!({"hostPort": 1, "containerPort": 2, "protocol": "sctp"}))
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
        for spec in ["18080:80/tcp", "127.0.0.1:53:5353/udp", "1:2/tcp"] {
            spec.parse::<crate::portspec::PortSpec>().unwrap();
        }
    }

    #[test]
    fn results_follow_the_version() {
        let ep = Endpoint {
            id: "0123456789ab".into(),
            network: "web".into(),
            kind: crate::model::EndpointKind::Veth,
            state: EndpointState::Ready,
            ip: "10.88.0.2".parse().unwrap(),
            prefix_len: 24,
            mac: "02:00:00:00:00:02".parse().unwrap(),
            gateway: "10.88.0.1".parse().unwrap(),
            host_ifname: "np-0123456789ab".into(),
            ifname: Some("eth0".into()),
            netns: Some("/run/netns/x".into()),
            uid: None,
            gid: None,
            queues: None,
            container_id: Some("c1".into()),
            netns_inode: None,
        };
        let c = conf(json!({"dns": {"nameservers": ["10.88.0.1"]}})).unwrap();
        let r = result(&c, &ep, Path::new("/run/netns/x"));
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(
            r["interfaces"][1],
            json!({"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"})
        );
        assert_eq!(r["interfaces"][0]["name"], "np-0123456789ab");
        assert_eq!(
            r["ips"],
            json!([{"address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 1}])
        );
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}])
        );
        assert_eq!(r["dns"], json!({"nameservers": ["10.88.0.1"]}));
        let c = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"web"}"#).unwrap();
        assert_eq!(result(&c, &ep, Path::new("/x"))["ips"][0]["version"], "4");
    }

    #[test]
    fn errors_have_the_spec_shape() {
        let e = CniError::new(code::INVALID_CONFIG, "bad").details("why");
        assert_eq!(
            e.to_json("1.1.0"),
            json!({"cniVersion": "1.1.0", "code": 7, "msg": "bad", "details": "why"})
        );
        assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(version_of(br#"{"cniVersion":"7.0.0"}"#), CNI_VERSION);
        assert_eq!(version_of(b"nope"), CNI_VERSION);
        let down = CniError::from_client(
            ClientError::DaemonDown {
                socket: "/x.sock".into(),
            },
            code::TRY_AGAIN_LATER,
        );
        assert_eq!(down.code, code::TRY_AGAIN_LATER);
        assert!(down.msg.contains("netpath daemon"), "{}", down.msg);
        assert!(at_least("1.1.0", "1.0.0") && !at_least("0.3.1", "0.4.0"));
    }

    #[test]
    fn old_endpoint_records_load_without_container_id() {
        let old = r#"{"id":"0123456789ab","network":"web","kind":"veth","state":"ready","ip":"10.88.0.2","prefix_len":24,"mac":"02:00:00:00:00:02","gateway":"10.88.0.1","host_ifname":"np-0123456789ab","ifname":"eth0","netns":"/run/netns/x","uid":null,"gid":null,"queues":null}"#;
        let ep: Endpoint = serde_json::from_str(old).unwrap();
        assert_eq!(ep.container_id, None);
        assert!(!serde_json::to_string(&ep).unwrap().contains("container_id"));
    }

    #[tokio::test]
    async fn daemon_down_is_try_again_later() {
        let stdin = br#"{"cniVersion":"1.1.0","name":"web","type":"netpath-cni","subnet":"10.88.0.0/24","socket":"/nonexistent/netpath.sock"}"#;
        let vars = |cmd: &'static str| {
            move |k: &str| match k {
                "CNI_COMMAND" => Some(cmd.to_owned()),
                "CNI_CONTAINERID" => Some("c1".to_owned()),
                "CNI_IFNAME" => Some("eth0".to_owned()),
                "CNI_NETNS" => Some("/proc/self/ns/net".to_owned()),
                _ => None,
            }
        };
        for (cmd, want) in [
            ("ADD", 11),
            ("DEL", 11),
            ("CHECK", 11),
            ("GC", 7),
            ("STATUS", 50),
        ] {
            let out = run(vars(cmd), stdin).await;
            assert_eq!(out.exit_code, 1, "{cmd}");
            let v: Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(v["code"], want, "{cmd}: {v}");
            assert_eq!(v["cniVersion"], "1.1.0");
        }
        let out = run(vars("VERSION"), b"").await;
        assert_eq!(out.exit_code, 0);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            SUPPORTED_VERSIONS.len()
        );
    }
}
