//! The daemon's HTTP/JSON API on a unix socket (REST under `/v1`, like Docker's and
//! Firecracker's).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/version` | | 200 `{"version": …, "commit": …}` |
//! | GET | `/v1/networks` | | 200 `[Network]` |
//! | POST | `/v1/networks` | `NetworkCreate` | 201 `Network` |
//! | GET | `/v1/networks/{name}` | | 200 `Network` |
//! | DELETE | `/v1/networks/{name}?force=true\|false` | | 200 `Network` (the removed one) |
//! | GET | `/v1/endpoints[?network=NAME]` | | 200 `[Endpoint]` |
//! | POST | `/v1/endpoints` | `EndpointCreate` | 201 `Endpoint` |
//! | POST | `/v1/taps` | `TapCreate` | 201 `Endpoint` |
//! | GET | `/v1/endpoints/{id}` | | 200 `Endpoint` |
//! | DELETE | `/v1/endpoints/{id}` | | 200 `Endpoint` (the removed one) |
//! | GET | `/v1/stats` | | 200 `StatsReport` (every counter; endpoints by id) |
//! | GET | `/v1/ports` | | 200 `[PortLease]` |
//! | POST | `/v1/ports` | `PortPublish` | 200 `[PortLease]` (all of its specs, or an error and none) |
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

use std::{
    future::Future,
    io,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::Path,
    sync::Arc,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, FromRequest, FromRequestParts, Path as UrlPath, Query, Request, State,
    },
    http::{HeaderMap, Method, StatusCode, Uri, header, request::Parts},
    middleware,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    control::{Service, ServiceError},
    model::{
        ApiErrorBody, Endpoint, EndpointCreate, Network, NetworkCreate, PortLease, PortPublish,
        StatsReport, TapCreate,
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

/// A failed request: the HTTP status and the JSON body sent with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ApiErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ApiErrorBody {
                error: error.into(),
                hint: None,
            },
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.body.hint = Some(hint.into());
        self
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError {
            status: status_of(&e),
            body: ApiErrorBody {
                error: e.to_string(),
                hint: e.hint(),
            },
        }
    }
}

/// The HTTP status of a service error: 400 bad input, 404 unknown resource, 409 conflict,
/// 500 internal. (The service says what went wrong; how HTTP puts it is decided here.)
fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Conflict { .. } => StatusCode::CONFLICT,
        ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
        ServiceError::State(e) => match e {
            StateError::NetworkNotFound { .. } | StateError::EndpointNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            StateError::NetworkExists { .. }
            | StateError::SubnetOverlap { .. }
            | StateError::NetworkInUse { .. }
            | StateError::IpInUse { .. }
            | StateError::SubnetExhausted { .. }
            | StateError::EndpointExists { .. }
            | StateError::HostIfnameInUse { .. }
            | StateError::NetworkIdsExhausted
            | StateError::PortInUse { .. }
            | StateError::HostPortInUse { .. }
            | StateError::PortsExhausted { .. } => StatusCode::CONFLICT,
            StateError::InvalidSubnet { .. }
            | StateError::InvalidGateway { .. }
            | StateError::InvalidIp { .. }
            | StateError::InvalidEndpointId { .. }
            | StateError::AmbiguousEndpointId { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        ServiceError::Tap(TapError::Exists { .. }) => StatusCode::CONFLICT,
        ServiceError::Tap(TapError::InvalidName { .. }) => StatusCode::BAD_REQUEST,
        ServiceError::Sandbox(
            SandboxError::Netns { .. }
            | SandboxError::NetnsMissing { .. }
            | SandboxError::NetnsDenied { .. }
            | SandboxError::NotNetns { .. }
            | SandboxError::HostNetns { .. },
        ) => StatusCode::BAD_REQUEST,
        ServiceError::Sandbox(SandboxError::IfnameExists { .. }) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self.body)).into_response();
        // Lets `add_allow_hint` complete a 405 body once axum has set `Allow`.
        response.extensions_mut().insert(self.body);
        response
    }
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
) -> anyhow::Result<()> {
    serve_backend(service, socket, shutdown).await
}

/// [`serve`] over any [`Backend`].
pub async fn serve_backend<B: Backend>(
    backend: Arc<B>,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = bind(socket).await?;
    serve_listener(backend, listener, socket, shutdown).await
}

/// [`serve_backend`] on a listener already bound with [`bind`] (so a caller can bind,
/// announce readiness, then serve).
pub async fn serve_listener<B: Backend>(
    backend: Arc<B>,
    listener: tokio::net::UnixListener,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bound = std::fs::symlink_metadata(socket)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let served = axum::serve(listener, router(backend))
        .with_graceful_shutdown(shutdown)
        .await
        .with_context(|| format!("serving the API on {}", socket.display()));
    // Remove the socket only if it is still the one we bound (a successor may have
    // replaced it already).
    if let Ok(m) = std::fs::symlink_metadata(socket)
        && bound == Some((m.dev(), m.ino()))
    {
        let _ = std::fs::remove_file(socket);
    }
    served
}

/// Binds the API socket: creates its directory, replaces a stale socket file (one
/// nothing answers on), refuses if another daemon answers, and restricts it to its
/// owner and group (0660).
pub async fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => anyhow::bail!(
            "{} exists and is not a socket; remove it or pass another --socket",
            socket.display()
        ),
        Ok(_) => match tokio::net::UnixStream::connect(socket).await {
            Ok(_) => anyhow::bail!(
                "another daemon is listening on {} — stop it first, or pass another --socket",
                socket.display()
            ),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                // A stale socket from a daemon that died: nothing answers on it.
                match std::fs::remove_file(socket) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("cannot remove the stale socket {}", socket.display())
                        });
                    }
                }
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot check whether {} is in use", socket.display())
                });
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect {}", socket.display()));
        }
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot bind the API socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the permissions of {}", socket.display()))?;
    Ok(listener)
}

/// The API's routes over `backend`.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    let routes = Router::new()
        .route("/v1/version", get(version))
        .route(
            "/v1/networks",
            get(list_networks::<B>).post(create_network::<B>),
        )
        .route(
            "/v1/networks/{name}",
            get(get_network::<B>).delete(remove_network::<B>),
        )
        .route(
            "/v1/endpoints",
            get(list_endpoints::<B>).post(add_endpoint::<B>),
        )
        .route(
            "/v1/endpoints/{id}",
            get(get_endpoint::<B>).delete(remove_endpoint::<B>),
        )
        .route("/v1/taps", post(add_tap::<B>))
        .route("/v1/stats", get(stats::<B>))
        .route(
            "/v1/ports",
            get(list_ports::<B>)
                .post(publish_ports::<B>)
                .delete(unpublish_selected::<B>),
        )
        .route("/v1/ports/{endpoint}", delete(unpublish_ports::<B>))
        // Must come after the routes: it is installed on each of them.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(backend);
    // Outside the routes: axum adds the `Allow` header of a 405 after the route's
    // layers have run, so the hint is added around the whole router.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::map_response(add_allow_hint))
        .layer(middleware::from_fn(detach_mutations))
}

/// Runs every request that may change state (all but GET and HEAD) on a task of its own,
/// so it completes — or rolls back — whatever its client does. hyper drops a request's
/// future when its connection closes; dropped in the middle of an operation (between
/// leasing an IP and creating the devices, say), it would leave half-made state behind.
/// Detached, the operation runs to its end and only its answer is lost. A body the
/// client never finished sending fails to parse inside the task, so nothing changes.
async fn detach_mutations(req: Request, next: middleware::Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: the handler of {method} {path} failed: {e}"),
        )
        .hint("the daemon rolls back whatever it left unfinished; retry the request")
        .into_response(),
    }
}

type Shared<B> = State<Arc<B>>;

async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: env!("NETPATH_COMMIT").into(),
    })
}

async fn list_networks<B: Backend>(State(b): Shared<B>) -> Result<Json<Vec<Network>>, ApiError> {
    Ok(Json(b.list_networks().await?))
}

async fn create_network<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<NetworkCreate>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.create_network(req).await?)))
}

async fn get_network<B: Backend>(
    State(b): Shared<B>,
    PathParam(name): PathParam,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(b.get_network(&name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNetworkQuery {
    #[serde(default)]
    force: bool,
}

async fn remove_network<B: Backend>(
    State(b): Shared<B>,
    PathParam(name): PathParam,
    QueryParams(q): QueryParams<RemoveNetworkQuery>,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(b.remove_network(&name, q.force).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListEndpointsQuery {
    #[serde(default)]
    network: Option<String>,
}

async fn list_endpoints<B: Backend>(
    State(b): Shared<B>,
    QueryParams(q): QueryParams<ListEndpointsQuery>,
) -> Result<Json<Vec<Endpoint>>, ApiError> {
    Ok(Json(b.list_endpoints(q.network.as_deref()).await?))
}

async fn add_endpoint<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<EndpointCreate>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.add_endpoint(req).await?)))
}

async fn add_tap<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<TapCreate>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.add_tap(req).await?)))
}

async fn get_endpoint<B: Backend>(
    State(b): Shared<B>,
    PathParam(id): PathParam,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(b.get_endpoint(&id).await?))
}

async fn remove_endpoint<B: Backend>(
    State(b): Shared<B>,
    PathParam(id): PathParam,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(b.remove_endpoint(&id).await?))
}

async fn stats<B: Backend>(State(b): Shared<B>) -> Result<Json<StatsReport>, ApiError> {
    Ok(Json(b.stats().await?))
}

async fn publish_ports<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<PortPublish>,
) -> Result<(StatusCode, Json<Vec<PortLease>>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.publish_ports(req).await?)))
}

async fn unpublish_ports<B: Backend>(
    State(b): Shared<B>,
    PathParam(endpoint): PathParam,
) -> Result<Json<Vec<PortLease>>, ApiError> {
    Ok(Json(b.unpublish_ports(Some(&endpoint), None).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnpublishQuery {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    lease: Option<String>,
}

async fn unpublish_selected<B: Backend>(
    State(b): Shared<B>,
    QueryParams(q): QueryParams<UnpublishQuery>,
) -> Result<Json<Vec<PortLease>>, ApiError> {
    Ok(Json(
        b.unpublish_ports(q.endpoint.as_deref(), q.lease.as_deref())
            .await?,
    ))
}

async fn list_ports<B: Backend>(State(b): Shared<B>) -> Result<Json<Vec<PortLease>>, ApiError> {
    Ok(Json(b.list_ports().await?))
}

const ROUTES_HINT: &str = "the API is under /v1: version, networks[/{name}], \
     endpoints[/{id}], taps, stats";

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such API route: {method} {}", uri.path()),
    )
    .hint(ROUTES_HINT)
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// Completes 405 answers with the allowed methods, which axum only puts in the
/// `Allow` header after the fallback has run.
async fn add_allow_hint(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let Some(mut body) = response.extensions().get::<ApiErrorBody>().cloned() else {
        return response;
    };
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if allow.is_empty() || body.hint.is_some() {
        return response;
    }
    body.hint = Some(format!("allowed: {}", allow.replace(',', ", ")));
    let (mut parts, _) = response.into_parts();
    let json = Json(&body).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, json.into_body())
}

/// Whether the Content-Type is JSON (`application/json`, any parameters); `None` if absent.
fn is_json(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    Some(essence.as_deref() == Some("application/json"))
}

/// Parses a request body as `T`, with the reason in the error message.
pub fn parse_json<T: DeserializeOwned>(
    content_type: Option<bool>,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid request body: it is empty, expected a JSON object",
        ));
    }
    if content_type != Some(true) {
        let what = if content_type.is_none() {
            "missing Content-Type"
        } else {
            "unsupported Content-Type"
        };
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{what}: the request body must be JSON"),
        )
        .hint("send the header `Content-Type: application/json`"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON in request body"
            }
            serde_json::error::Category::Data | serde_json::error::Category::Io => {
                "invalid request body"
            }
        };
        ApiError::new(StatusCode::BAD_REQUEST, format!("{what}: {e}"))
    })
}

/// A JSON request body; every rejection is a JSON [`ApiError`].
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    format!("request body too large: the limit is {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(
                    status,
                    format!("cannot read the request body: {}", e.body_text()),
                )
            }
        })?;
        parse_json(content_type, &bytes).map(JsonBody)
    }
}

/// The single path parameter of a route; rejections are JSON.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        UrlPath::<String>::from_request_parts(parts, state)
            .await
            .map(|UrlPath(p)| PathParam(p))
            .map_err(|e| ApiError::new(e.status(), format!("invalid path: {}", e.body_text())))
    }
}

/// A query string; rejections (unknown parameters, bad values) are JSON.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid query string: {text}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ApiError {
        r.expect_err("must fail")
    }

    #[test]
    fn valid_body_parses() {
        let req: NetworkCreate =
            parse_json(Some(true), br#"{"name":"a","subnet":"10.1.0.0/24"}"#).unwrap();
        assert_eq!(req.name, "a");
    }

    #[test]
    fn malformed_json_is_400_with_reason() {
        let e = err(parse_json::<NetworkCreate>(Some(true), b"{\"name\":"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.body.error.starts_with("malformed JSON in request body: "),
            "{}",
            e.body.error
        );
        let e = err(parse_json::<NetworkCreate>(Some(true), b"{nope}"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.body.error.contains("line 1 column 2"), "{}", e.body.error);
    }

    #[test]
    fn unknown_field_is_400_naming_it_and_the_expected_ones() {
        let e = err(parse_json::<NetworkCreate>(
            Some(true),
            br#"{"name":"a","subnet":"10.1.0.0/24","foo":1}"#,
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.body
                .error
                .starts_with("invalid request body: unknown field `foo`, expected one of `name`"),
            "{}",
            e.body.error
        );
    }

    #[test]
    fn wrong_type_and_missing_field_are_400() {
        let e = err(parse_json::<TapCreate>(
            Some(true),
            br#"{"network":"a","name":"t","queues":"many"}"#,
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.body
                .error
                .starts_with("invalid request body: invalid type: string \"many\""),
            "{}",
            e.body.error
        );
        let e = err(parse_json::<TapCreate>(Some(true), br#"{"network":"a"}"#));
        assert!(
            e.body.error.contains("missing field `name`"),
            "{}",
            e.body.error
        );
        let e = err(parse_json::<NetworkCreate>(
            Some(true),
            br#"{"name":"a","subnet":"10.1.0.300/24"}"#,
        ));
        assert!(
            e.body.error.starts_with("invalid request body: "),
            "{}",
            e.body.error
        );
    }

    #[test]
    fn empty_body_and_wrong_content_type() {
        let e = err(parse_json::<NetworkCreate>(Some(true), b" \n"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.body.error.contains("empty"));
        let e = err(parse_json::<NetworkCreate>(Some(false), b"{}"));
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.body.hint.unwrap().contains("application/json"));
        let e = err(parse_json::<NetworkCreate>(None, b"{}"));
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.body.error.starts_with("missing Content-Type"));
    }

    #[test]
    fn content_type_essence_is_matched() {
        let mut h = HeaderMap::new();
        assert_eq!(is_json(&h), None);
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(is_json(&h), Some(true));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(is_json(&h), Some(false));
    }
}

/// The whole stack (socket, router, extractors, client) over an in-memory backend.
#[cfg(test)]
mod stack_tests {
    use std::{
        net::Ipv4Addr,
        path::PathBuf,
        sync::{
            Mutex,
            atomic::{AtomicU32, Ordering},
        },
        time::Duration,
    };

    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use tokio::sync::oneshot;

    use super::*;
    use crate::{
        client::{Client, ClientError},
        model::Mode,
    };

    #[derive(Default)]
    struct Fake {
        networks: Mutex<Vec<Network>>,
        last_force: Mutex<Option<bool>>,
        last_filter: Mutex<Option<Option<String>>>,
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no {what}"))
    }

    impl Backend for Fake {
        async fn create_network(&self, req: NetworkCreate) -> Result<Network, ApiError> {
            let mut nets = self.networks.lock().unwrap();
            if nets.iter().any(|n| n.name == req.name) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("network {} already exists", req.name),
                )
                .hint("pick another name"));
            }
            let n = Network {
                id: nets.len() as u16 + 1,
                name: req.name,
                subnet: req.subnet,
                gateway: Ipv4Addr::new(10, 1, 0, 1),
                mode: req.mode,
                uplink: req.uplink,
                mtu: req.mtu.unwrap_or(1500),
                bridge: None,
                no_masquerade: req.no_masquerade,
            };
            nets.push(n.clone());
            Ok(n)
        }
        async fn remove_network(&self, name: &str, force: bool) -> Result<Network, ApiError> {
            *self.last_force.lock().unwrap() = Some(force);
            let mut nets = self.networks.lock().unwrap();
            let i = nets
                .iter()
                .position(|n| n.name == name)
                .ok_or_else(|| not_found(name))?;
            Ok(nets.remove(i))
        }
        async fn list_networks(&self) -> Result<Vec<Network>, ApiError> {
            Ok(self.networks.lock().unwrap().clone())
        }
        async fn get_network(&self, name: &str) -> Result<Network, ApiError> {
            let nets = self.networks.lock().unwrap();
            nets.iter()
                .find(|n| n.name == name)
                .cloned()
                .ok_or_else(|| not_found(name))
        }
        async fn add_endpoint(&self, req: EndpointCreate) -> Result<Endpoint, ApiError> {
            Err(not_found(&req.network))
        }
        async fn add_tap(&self, req: TapCreate) -> Result<Endpoint, ApiError> {
            Err(not_found(&req.network))
        }
        async fn remove_endpoint(&self, id: &str) -> Result<Endpoint, ApiError> {
            Err(not_found(id))
        }
        async fn list_endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>, ApiError> {
            *self.last_filter.lock().unwrap() = Some(network.map(str::to_owned));
            Ok(vec![])
        }
        async fn get_endpoint(&self, id: &str) -> Result<Endpoint, ApiError> {
            Err(not_found(id))
        }
        async fn stats(&self) -> Result<StatsReport, ApiError> {
            Ok(StatsReport {
                classes: vec![crate::model::ClassCount {
                    hook: "xdp".into(),
                    class: "ipv4".into(),
                    packets: 3,
                    bytes: 180,
                }],
                ..Default::default()
            })
        }
    }

    struct Daemon {
        dir: PathBuf,
        socket: PathBuf,
        fake: Arc<Fake>,
        stop: Option<oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    }

    fn temp_dir() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netpath-api-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn start(socket: &Path) -> anyhow::Result<Daemon> {
        let fake = Arc::new(Fake::default());
        let (tx, rx) = oneshot::channel();
        let listener = bind(socket).await?;
        let app = router(fake.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .map_err(Into::into)
        });
        Ok(Daemon {
            dir: socket.parent().unwrap().to_owned(),
            socket: socket.to_owned(),
            fake,
            stop: Some(tx),
            task: Some(task),
        })
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            if let Some(t) = self.task.take() {
                t.abort();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// One raw HTTP exchange: (status, Allow header, body).
    async fn raw(
        socket: &Path,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Option<String>, ApiErrorBody) {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let res = tx
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let allow = res
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json",
            "{method} {path}"
        );
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: not an ApiErrorBody ({e}): {bytes:?}"));
        (status, allow, body)
    }

    fn create(name: &str) -> NetworkCreate {
        NetworkCreate {
            name: name.into(),
            subnet: "10.1.0.0/24".parse().unwrap(),
            mode: Mode::Routed,
            gateway: None,
            uplink: None,
            mtu: Some(9000),
            no_masquerade: Vec::new(),
        }
    }

    #[tokio::test]
    async fn typed_client_round_trips() {
        let d = start(&temp_dir().join("run/api.sock")).await.unwrap();
        let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let c = Client::new(&d.socket);
        assert_eq!(
            c.version().await.unwrap().version,
            env!("CARGO_PKG_VERSION")
        );
        let n = c.create_network(&create("a")).await.unwrap();
        assert_eq!((n.name.as_str(), n.mtu, n.mode), ("a", 9000, Mode::Routed));
        let e = c.create_network(&create("a")).await.unwrap_err();
        assert!(matches!(&e, ClientError::Api { status: 409, .. }), "{e:?}");
        assert_eq!(e.hint().as_deref(), Some("pick another name"));
        assert_eq!(c.get_network("a").await.unwrap(), n);
        assert_eq!(c.list_networks().await.unwrap(), vec![n.clone()]);
        let e = c.get_network("zz").await.unwrap_err();
        assert!(matches!(e, ClientError::Api { status: 404, .. }), "{e:?}");
        assert_eq!(c.remove_network("a", true).await.unwrap(), n);
        assert_eq!(*d.fake.last_force.lock().unwrap(), Some(true));
        c.list_endpoints(Some("a b/c")).await.unwrap();
        assert_eq!(
            *d.fake.last_filter.lock().unwrap(),
            Some(Some("a b/c".into()))
        );
        c.list_endpoints(None).await.unwrap();
        assert_eq!(*d.fake.last_filter.lock().unwrap(), Some(None));
        let stats = c.stats().await.unwrap();
        assert_eq!(
            (stats.classes[0].hook.as_str(), stats.classes[0].packets),
            ("xdp", 3)
        );
        let e = c.get_endpoint("0123456789ab").await.unwrap_err();
        assert!(matches!(e, ClientError::Api { status: 404, .. }), "{e:?}");
    }

    #[tokio::test]
    async fn concurrent_requests() {
        let d = start(&temp_dir().join("api.sock")).await.unwrap();
        let c = Client::new(&d.socket);
        let all = (0..64).map(|i| {
            let c = c.clone();
            async move { c.create_network(&create(&format!("n{i}"))).await }
        });
        for r in futures::future::join_all(all).await {
            r.unwrap();
        }
        assert_eq!(c.list_networks().await.unwrap().len(), 64);
    }

    #[tokio::test]
    async fn every_rejection_is_json() {
        let d = start(&temp_dir().join("api.sock")).await.unwrap();
        let s = &d.socket;
        let json = Some("application/json");

        let (st, _, b) = raw(s, "GET", "/v2/nope", None, vec![]).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(b.error, "no such API route: GET /v2/nope");
        assert!(b.hint.unwrap().contains("/v1"));

        let (st, allow, b) = raw(s, "PUT", "/v1/networks", json, b"{}".to_vec()).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(b.error, "method PUT is not allowed on /v1/networks");
        assert!(allow.unwrap().contains("POST"));
        let hint = b.hint.unwrap();
        assert!(
            hint.starts_with("allowed: ") && hint.contains("GET"),
            "{hint}"
        );

        let body = br#"{"name":"a","subnet":"10.1.0.0/24","foo":1}"#.to_vec();
        let (st, _, b) = raw(s, "POST", "/v1/networks", json, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(
            b.error
                .starts_with("invalid request body: unknown field `foo`, expected one of"),
            "{}",
            b.error
        );

        let (st, _, b) = raw(s, "POST", "/v1/taps", json, b"{\"network\":".to_vec()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(b.error.starts_with("malformed JSON"), "{}", b.error);

        let (st, _, b) = raw(s, "POST", "/v1/endpoints", None, b"{}".to_vec()).await;
        assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(b.error.starts_with("missing Content-Type"), "{}", b.error);
        let body = b"name=a".to_vec();
        let (st, _, _) = raw(s, "POST", "/v1/networks", Some("text/plain"), body).await;
        assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let (st, _, b) = raw(s, "POST", "/v1/networks", json, vec![]).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(b.error.contains("empty"), "{}", b.error);

        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let (st, _, b) = raw(s, "POST", "/v1/networks", json, big).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(b.error.starts_with("request body too large"), "{}", b.error);

        let (st, _, b) = raw(s, "DELETE", "/v1/networks/a?force=maybe", None, vec![]).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(b.error.starts_with("invalid query string: "), "{}", b.error);
        let (st, _, b) = raw(s, "GET", "/v1/endpoints?netwrk=a", None, vec![]).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(b.error.contains("unknown field `netwrk`"), "{}", b.error);
    }

    #[tokio::test]
    async fn socket_lifecycle() {
        let dir = temp_dir();
        let socket = dir.join("api.sock");

        // Something that is not a socket is left alone.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&socket, b"").unwrap();
        let e = bind(&socket).await.unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        std::fs::remove_file(&socket).unwrap();

        // A stale socket (nothing answers) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let mut d = start(&socket).await.unwrap();
        Client::new(&socket).version().await.unwrap();

        // A live one is not.
        let e = bind(&socket).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "another daemon is listening on {} — stop it first, or pass another --socket",
                socket.display()
            )
        );
        Client::new(&socket).version().await.unwrap();
        d.stop.take().unwrap().send(()).unwrap();
        d.task.take().unwrap().await.unwrap().unwrap();

        // serve(): graceful shutdown removes its socket.
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let socket = socket.clone();
            async move {
                serve_backend(Arc::new(Fake::default()), &socket, async {
                    let _ = rx.await;
                })
                .await
            }
        });
        let c = Client::new(&socket);
        let mut up = false;
        for _ in 0..100 {
            if c.version().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(up, "serve_backend did not come up");
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(!socket.exists());
        let e = c.version().await.unwrap_err();
        assert!(matches!(e, ClientError::DaemonDown { .. }), "{e:?}");
    }
}
