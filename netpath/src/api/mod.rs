//! The daemon's HTTP/JSON API on a unix socket (REST under `/v1`, like Docker's and
//! Firecracker's).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/version` | | 200 `{"version": …, "commit": …}` |
//! | GET | `/v1/networks` | | 200 `[Network]` |
//! | POST | `/v1/networks` | `NetworkCreate` | 201 `Network` |
//! | GET | `/v1/networks/{name}` | | 200 `Network` |
//! | PATCH | `/v1/networks/{name}` | `NetworkUpdate` | 200 `Network` (its policy changed on its running endpoints) |
//! | DELETE | `/v1/networks/{name}?force=true\|false` | | 200 `Network` (the removed one) |
//! | GET | `/v1/endpoints[?network=NAME]` | | 200 `[Endpoint]` |
//! | POST | `/v1/endpoints` | `EndpointCreate` | 201 `Endpoint` |
//! | POST | `/v1/taps` | `TapCreate` | 201 `Endpoint` |
//! | GET | `/v1/endpoints/{id}` | | 200 `Endpoint` |
//! | DELETE | `/v1/endpoints/{id}` | | 200 `Endpoint` (the removed one) |
//! | GET | `/v1/stats` | | 200 `StatsReport` (every counter; endpoints by id) |
//! | GET | `/v1/events[?type=drop\|trace&endpoint=ID&trace_every=N]` | | 200 JSON lines of `MonitorEvent`, as they happen |
//! | GET | `/v1/flows[?endpoint=ID&proto=tcp\|udp\|icmp&kind=masq\|publish\|hairpin]` | | 200 `[Flow]` (translated connections) |
//! | GET | `/v1/ports` | | 200 `[PortLease]` |
//! | POST | `/v1/ports` | `PortPublish` | 201 `[PortLease]` (all of its specs, or an error and none) |
//! | DELETE | `/v1/ports?endpoint=ID&lease=LEASE` | | 200 `[PortLease]` (the removed ones; either or both) |
//! | DELETE | `/v1/ports/{endpoint}` | | 200 `[PortLease]` (every port of the endpoint) |
//!
//! Endpoint ids may be given as a prefix that matches one endpoint only. Requests that
//! change state run to completion even when their client hangs up (see
//! `detach_mutations`).
//!
//! Every failure — the service's own errors, but also malformed JSON, unknown fields,
//! a wrong content type, a bad query string, an unknown route (404), a wrong method
//! (405) and a body over 1 MiB (413) — is answered with its status and a JSON
//! [`ApiErrorBody`] (`{"error": …, "hint": …}`), never a plain-text rejection.
//!
//! The router is generic over [`Backend`] so it can be exercised without root; the
//! daemon uses [`Service`].

mod error;
mod events;
mod extract;
pub mod metrics;
mod routes;
mod socket;
#[cfg(test)]
mod stack_tests;
#[cfg(test)]
mod tests;

use std::{future::Future, path::Path, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, FromRequest, FromRequestParts, Path as UrlPath, Query, Request, State,
    },
    http::{HeaderMap, Method, StatusCode, Uri, header, request::Parts},
    middleware,
    response::{IntoResponse, Response},
    routing::{delete, get, patch, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use self::{
    error::*,
    extract::*,
    routes::*,
    socket::{SocketError, SocketGroup, bind, serve_app},
};
use crate::{
    control::{Service, ServiceError},
    model::{
        ApiErrorBody, Endpoint, EndpointCreate, EventFilter, Flow, FlowFilter, Network,
        NetworkCreate, NetworkUpdate, PortLease, PortPublish, StatsReport, TapCreate,
    },
    sandbox::SandboxError,
    state::StateError,
    tap::TapError,
};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Answer of `GET /v1/version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
    /// The commit the daemon was built from (`git describe`), "unknown" outside git.
    #[serde(default)]
    pub commit: String,
}

/// What the API serves: the operations of [`Service`], as a trait so the router can
/// be built over a stand-in in tests.
pub trait Backend: Send + Sync + 'static {
    fn create_network(
        &self,
        req: NetworkCreate,
    ) -> impl Future<Output = Result<Network, ApiError>> + Send;
    fn remove_network(
        &self,
        name: &str,
        force: bool,
    ) -> impl Future<Output = Result<Network, ApiError>> + Send;
    fn list_networks(&self) -> impl Future<Output = Result<Vec<Network>, ApiError>> + Send;
    /// Changes a network's policy (`PATCH /v1/networks/{name}`).
    fn update_network(
        &self,
        _name: &str,
        _update: NetworkUpdate,
    ) -> impl Future<Output = Result<Network, ApiError>> + Send {
        async { Err(not_supported()) }
    }
    fn get_network(&self, name: &str) -> impl Future<Output = Result<Network, ApiError>> + Send;
    fn add_endpoint(
        &self,
        req: EndpointCreate,
    ) -> impl Future<Output = Result<Endpoint, ApiError>> + Send;
    fn add_tap(&self, req: TapCreate) -> impl Future<Output = Result<Endpoint, ApiError>> + Send;
    fn remove_endpoint(&self, id: &str) -> impl Future<Output = Result<Endpoint, ApiError>> + Send;
    fn list_endpoints(
        &self,
        network: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Endpoint>, ApiError>> + Send;
    fn get_endpoint(&self, id: &str) -> impl Future<Output = Result<Endpoint, ApiError>> + Send;
    fn stats(&self) -> impl Future<Output = Result<StatsReport, ApiError>> + Send;
    fn flows(
        &self,
        _filter: FlowFilter,
    ) -> impl Future<Output = Result<Vec<Flow>, ApiError>> + Send {
        async { Err(not_supported()) }
    }
    /// Starts watching the datapath's events as `filter` asks; the ring's lost count at
    /// the start.
    fn watch(&self, _filter: &EventFilter) -> Result<(crate::monitor::Watch, u64), ApiError> {
        Err(not_supported())
    }
    /// Events the datapath's ring could not take so far.
    fn events_lost(&self) -> u64 {
        0
    }
    fn publish_ports(
        &self,
        _req: PortPublish,
    ) -> impl Future<Output = Result<Vec<PortLease>, ApiError>> + Send {
        async { Err(not_supported()) }
    }
    fn unpublish_ports(
        &self,
        _endpoint: Option<&str>,
        _lease: Option<&str>,
    ) -> impl Future<Output = Result<Vec<PortLease>, ApiError>> + Send {
        async { Err(not_supported()) }
    }
    fn list_ports(&self) -> impl Future<Output = Result<Vec<PortLease>, ApiError>> + Send {
        async { Err(not_supported()) }
    }
}

fn not_supported() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not supported by this backend")
}

impl Backend for Service {
    async fn create_network(&self, req: NetworkCreate) -> Result<Network, ApiError> {
        Ok(Service::create_network(self, req).await?)
    }
    async fn remove_network(&self, name: &str, force: bool) -> Result<Network, ApiError> {
        Ok(Service::remove_network(self, name, force).await?)
    }
    async fn list_networks(&self) -> Result<Vec<Network>, ApiError> {
        Ok(Service::list_networks(self).await?)
    }
    async fn get_network(&self, name: &str) -> Result<Network, ApiError> {
        Ok(Service::get_network(self, name).await?)
    }
    async fn update_network(&self, name: &str, update: NetworkUpdate) -> Result<Network, ApiError> {
        Ok(Service::update_network(self, name, update).await?)
    }
    async fn add_endpoint(&self, req: EndpointCreate) -> Result<Endpoint, ApiError> {
        Ok(Service::add_endpoint(self, req).await?)
    }
    async fn add_tap(&self, req: TapCreate) -> Result<Endpoint, ApiError> {
        Ok(Service::add_tap(self, req).await?)
    }
    async fn remove_endpoint(&self, id: &str) -> Result<Endpoint, ApiError> {
        Ok(Service::remove_endpoint(self, id).await?)
    }
    async fn list_endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>, ApiError> {
        Ok(Service::list_endpoints(self, network).await?)
    }
    async fn get_endpoint(&self, id: &str) -> Result<Endpoint, ApiError> {
        Ok(Service::get_endpoint(self, id).await?)
    }
    async fn stats(&self) -> Result<StatsReport, ApiError> {
        Ok(Service::stats(self).await?)
    }
    async fn flows(&self, filter: FlowFilter) -> Result<Vec<Flow>, ApiError> {
        Ok(Service::flows(self, filter).await?)
    }
    fn watch(&self, filter: &EventFilter) -> Result<(crate::monitor::Watch, u64), ApiError> {
        Ok(Service::watch(self, filter)?)
    }
    fn events_lost(&self) -> u64 {
        Service::events_lost(self)
    }
    async fn publish_ports(&self, req: PortPublish) -> Result<Vec<PortLease>, ApiError> {
        Ok(Service::publish_ports(self, req).await?)
    }
    async fn unpublish_ports(
        &self,
        endpoint: Option<&str>,
        lease: Option<&str>,
    ) -> Result<Vec<PortLease>, ApiError> {
        Ok(Service::unpublish_ports(self, endpoint, lease).await?)
    }
    async fn list_ports(&self) -> Result<Vec<PortLease>, ApiError> {
        Ok(Service::list_ports(self).await?)
    }
}

/// Serves the API for `service` on the unix socket `socket` until `shutdown`
/// completes, then lets in-flight requests finish and removes the socket.
pub async fn serve(
    service: Arc<Service>,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SocketError> {
    serve_backend(service, socket, shutdown).await
}

/// [`serve`] over any [`Backend`].
pub async fn serve_backend<B: Backend>(
    backend: Arc<B>,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SocketError> {
    let listener = bind(socket, None).await?;
    serve_app(router(backend), listener, socket, shutdown).await
}
