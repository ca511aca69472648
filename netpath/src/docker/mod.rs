//! netpath as a legacy (v1) Docker plugin: the libnetwork remote NetworkDriver and
//! IpamDriver, served by the daemon on its own unix socket
//! (`/run/docker/plugins/netpath.sock` by default, `--docker-plugin-socket`).
//!
//! Every call is `POST /<Interface>.<Method>` with a JSON body (dockerd sends no
//! Content-Type, so none is required; some bodies are empty). Every answer is HTTP 200
//! with a JSON object; a refusal carries its message in `Err` for `Plugin.*` and
//! `NetworkDriver.*` calls and in `Error` for `IpamDriver.*` calls (libnetwork reads a
//! 200 reply's `Err` only from network drivers, `Error` only from IPAM drivers). An
//! unknown call is a 404, which dockerd takes as "not implemented". Every call answers
//! within [`CALL_TIMEOUT`] (dockerd puts no timeout on v1 plugins, so a hung answer
//! would hang dockerd): past it the reply is a refusal while the work, detached, runs
//! to its end.
//!
//! | module | owns |
//! |---|---|
//! | [`wire`] | the JSON of each call, field names as libnetwork's |
//! | [`driver`] | the NetworkDriver calls mapped to netpath networks and endpoints |
//! | [`ipam`] | the IpamDriver calls: pools and addresses |
//! | [`saved`] | the plugin's memory, saved in the state directory |
//!
//! Facts and sources: `shared/research/docker-plugin.md`; moby/libnetwork
//! `drivers/remote/api/api.go`, `ipams/remote/api/api.go`, `docs/remote.md`, `docs/ipam.md`.

pub mod driver;
pub mod ipam;
pub mod saved;
#[cfg(test)]
mod tests;
pub mod wire;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use self::{
    driver::{Driver, Refusal},
    ipam::Ipam,
    saved::Saved,
};
use crate::api::Backend;

/// Longest time a call may take before it is answered with a refusal.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The socket dockerd finds the plugin `netpath` on.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netpath.sock";

/// The plugin: both drivers over one netpath backend.
pub struct Plugin<B> {
    pub driver: Driver<B>,
    pub ipam: Ipam,
}

impl<B: Backend> Plugin<B> {
    /// A plugin that keeps its memory in memory only (tests).
    pub fn new(backend: Arc<B>) -> Self {
        Plugin {
            driver: Driver::new(backend, Saved::memory()),
            ipam: Ipam::new(Saved::memory()),
        }
    }

    /// A plugin whose memory is saved in `state_dir` (`docker-endpoints.json`,
    /// `docker-ipam.json`), loaded from there first.
    pub fn open(backend: Arc<B>, state_dir: &std::path::Path) -> Result<Self, String> {
        Ok(Plugin {
            driver: Driver::new(
                backend,
                Saved::load(&state_dir.join("docker-endpoints.json"))?,
            ),
            ipam: Ipam::new(Saved::load(&state_dir.join("docker-ipam.json"))?),
        })
    }
}

/// The key a refusal goes in: `Error` for IPAM calls, `Err` for the rest.
fn refusal_key(call: &str) -> &'static str {
    if call.starts_with("IpamDriver.") {
        "Error"
    } else {
        "Err"
    }
}

fn body<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| format!("{call}: malformed request: {e}"))
}

/// Runs one call; `None`: netpath does not implement it.
async fn dispatch<B: Backend>(
    plugin: &Plugin<B>,
    call: &str,
    b: &[u8],
) -> Option<Result<Value, Refusal>> {
    let d = &plugin.driver;
    let ipam = &plugin.ipam;
    // A NetworkDriver call: its body parsed, then the driver's method of that name.
    macro_rules! net {
        ($method:ident) => {
            match body(call, b) {
                Ok(r) => d.$method(r).await,
                Err(e) => Err(e),
            }
        };
    }
    Some(match call {
        "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
        "NetworkDriver.GetCapabilities" => {
            Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
        }
        "NetworkDriver.CreateNetwork" => net!(create_network),
        "NetworkDriver.DeleteNetwork" => net!(delete_network),
        "NetworkDriver.CreateEndpoint" => net!(create_endpoint),
        "NetworkDriver.EndpointOperInfo" => net!(endpoint_oper_info),
        "NetworkDriver.DeleteEndpoint" => net!(delete_endpoint),
        "NetworkDriver.Join" => net!(join),
        "NetworkDriver.Leave" => net!(leave),
        "NetworkDriver.ProgramExternalConnectivity" => net!(program_external),
        "NetworkDriver.RevokeExternalConnectivity" => net!(revoke_external),
        "IpamDriver.GetCapabilities" => Ok(Ipam::capabilities()),
        "IpamDriver.GetDefaultAddressSpaces" => Ok(Ipam::default_spaces()),
        "IpamDriver.RequestPool" => body(call, b).and_then(|r| ipam.request_pool(r)),
        "IpamDriver.ReleasePool" => body(call, b).and_then(|r| ipam.release_pool(r)),
        "IpamDriver.RequestAddress" => body(call, b).and_then(|r| ipam.request_address(r)),
        "IpamDriver.ReleaseAddress" => body(call, b).and_then(|r| ipam.release_address(r)),
        _ => return None,
    })
}

struct Shared<B> {
    plugin: Arc<Plugin<B>>,
    timeout: Duration,
}

impl<B> Clone for Shared<B> {
    fn clone(&self) -> Self {
        Shared {
            plugin: self.plugin.clone(),
            timeout: self.timeout,
        }
    }
}

async fn handle<B: Backend>(
    State(s): State<Shared<B>>,
    UrlPath(call): UrlPath<String>,
    b: Bytes,
) -> Response {
    let key = refusal_key(&call);
    let plugin = s.plugin.clone();
    let name = call.clone();
    // Detached: a call that outlives its answer (timeout, dockerd hanging up) still runs
    // to its end rather than stopping half-way.
    let task = tokio::spawn(async move { dispatch(&plugin, &name, &b).await });
    let answer = match tokio::time::timeout(s.timeout, task).await {
        Ok(Ok(Some(answer))) => answer,
        Ok(Ok(None)) => {
            let msg = format!("netpath does not implement {call}");
            return (StatusCode::NOT_FOUND, Json(json!({ key: msg }))).into_response();
        }
        Ok(Err(e)) => Err(format!("{call}: internal error: {e}")),
        Err(_) => Err(format!(
            "{call}: netpath did not answer within {:?} (the call goes on in the daemon)",
            s.timeout
        )),
    };
    match answer {
        Ok(v) => Json(v).into_response(),
        Err(msg) => Json(json!({ key: msg })).into_response(),
    }
}

/// The plugin's routes over `plugin`, each call answered within `timeout`.
pub fn router<B: Backend>(plugin: Arc<Plugin<B>>, timeout: Duration) -> Router {
    Router::new()
        .route("/{call}", post(handle::<B>))
        .with_state(Shared { plugin, timeout })
}

/// The routes of `plugin`, ready for [`crate::api::serve_app`] on a socket bound with
/// [`crate::api::bind`] (a stale socket is replaced, a live one refused).
pub fn app<B: Backend>(plugin: Plugin<B>) -> Router {
    router(Arc::new(plugin), CALL_TIMEOUT)
}
