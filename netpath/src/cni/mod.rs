//! `netpath-cni`: a CNI plugin (spec 1.0/1.1, and the 0.3.x/0.4.0 result format) that is
//! a thin client of the daemon's API, like Cilium's plugin.
//!
//! The runtime execs the plugin with the `CNI_*` environment and the network
//! configuration on stdin; it answers on stdout and exits 0, or prints a spec error
//! (`{"cniVersion","code","msg","details"}`) and exits 1.
//!
//! * ADD: ensures netpath network `name` exists (creating it from `subnet` or `subnets`,
//!   one CIDR per address family, `mode`, `uplink`, `gateway` or `gateways`, `mtu` on
//!   first use; a concurrent creator winning is fine), adds a veth endpoint into
//!   `CNI_NETNS` tagged with `CNI_CONTAINERID` (with the addresses the runtime asks for,
//!   at most one per family), publishes the `portMappings` capability as Docker `-p`
//!   specs, and returns the result: one `ips` entry and one default route per family. A
//!   repeated ADD of the same (container id, ifname) returns the existing attachment's
//!   result.
//! * DEL: removes the endpoints of the attachment (their port leases go with them);
//!   succeeds when there is none, and when the namespace is gone.
//! * CHECK: the endpoint is ready, its host device exists and the container interface
//!   has its addresses (and the `prevResult` lists them).
//! * GC: removes this network's CNI endpoints that are not in
//!   `cni.dev/valid-attachments`. STATUS: the daemon answers `/v1/version`.
//! * VERSION: the supported versions.
//!
//! Error codes: the spec's 1-7 and 11 (the daemon is down or slow: try again later),
//! 50 (STATUS: the daemon is down), and [`code::DAEMON_REFUSED`] (100: the daemon refused
//! the request; `details` has its hint) and [`code::CHECK_FAILED`] (101).

mod check;
mod conf;
mod env;
mod network;
mod ops;
mod ports;
mod result;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use self::{check::*, ops::*};
pub use self::{conf::*, env::*, network::*, ports::*, result::*};
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
        let err = CniError::new(code, format!("netpath: {}", crate::error::chain(&e)));
        match hint {
            Some(h) => err.details(h),
            None => err,
        }
    }
}

type Result<T, E = CniError> = std::result::Result<T, E>;

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
