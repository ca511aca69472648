//! The route table and its handlers, the middleware that detaches mutations from
//! their client, and the answers for unknown routes and methods.

use super::*;

/// The API's routes over `backend`.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    let routes = backend_routes::<B>()
        .route("/v1/version", get(version))
        .route("/metrics", get(metrics::<B>))
        .route("/v1/events", get(super::events::events::<B>))
        // Must come after the routes: it is installed on each of them.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(observe))
        .with_state(backend);
    // Outside the routes: axum adds the `Allow` header of a 405 after the route's
    // layers have run, so the hint is added around the whole router.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::map_response(add_allow_hint))
        .layer(middleware::from_fn(detach_mutations))
}

/// Only `GET /metrics` over `backend`: what `netpath daemon --metrics-addr` serves over
/// TCP, where no other route may be reached.
pub fn metrics_router<B: Backend>(backend: Arc<B>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<B>))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics here\n") })
        .layer(middleware::from_fn(observe))
        .with_state(backend)
}

/// Counts every request under its route's pattern (`/v1/endpoints/{id}`; `unmatched`
/// for a path no route has), method and status, with its latency
/// ([`crate::telemetry::api_request`]).
pub(super) async fn observe(req: Request, next: middleware::Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>();
    let route = route.map_or("unmatched", |m| m.as_str()).to_owned();
    let method = req.method().clone();
    let start = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    crate::telemetry::api_request(&route, method.as_str(), status, start.elapsed());
    response
}

/// Runs every request that may change state (all but GET and HEAD) on a task of its own,
/// so it completes — or rolls back — whatever its client does. hyper drops a request's
/// future when its connection closes; dropped in the middle of an operation (between
/// leasing an IP and creating the devices, say), it would leave half-made state behind.
/// Detached, the operation runs to its end and only its answer is lost. A body the
/// client never finished sending fails to parse inside the task, so nothing changes.
pub(super) async fn detach_mutations(req: Request, next: middleware::Next) -> Response {
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

pub(super) async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: env!("NETPATH_COMMIT").into(),
    })
}

/// `GET /metrics` ([`super::metrics`]): everything read at this moment.
pub(super) async fn metrics<B: Backend>(State(b): Shared<B>) -> Result<Response, ApiError> {
    // Side by side: the datapath's counters and the records' reads.
    let (stats, networks, endpoints, ports) = tokio::join!(
        b.stats(),
        b.list_networks(),
        b.list_endpoints(None),
        b.list_ports()
    );
    let (stats, networks, endpoints) = (stats?, networks?, endpoints?);
    // A backend without ports (a stand-in) has none to count.
    let ports = ports.unwrap_or_default();
    let text = super::metrics::render(&stats, &networks, &endpoints, &ports, b.events_lost());
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        super::metrics::CONTENT_TYPE,
    )];
    Ok((content_type, text).into_response())
}

/// The query of `DELETE /v1/networks/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveNetworkQuery {
    /// `force`: remove the network's endpoints first, rather than refuse while it has
    /// some.
    #[serde(default)]
    force: bool,
}

/// The query of `GET /v1/endpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListEndpointsQuery {
    /// `network`: only the endpoints of this network.
    #[serde(default)]
    network: Option<String>,
}

/// The query of `DELETE /v1/ports`: either or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnpublishQuery {
    /// `endpoint`: every port of this endpoint (an id or unique prefix).
    #[serde(default)]
    endpoint: Option<String>,
    /// `lease`: this lease (`tcp/0.0.0.0:8080`); with `endpoint`, only if it is that
    /// endpoint's.
    #[serde(default)]
    lease: Option<String>,
}

/// Declares the routes that each hand their request to one [`Backend`] method and
/// answer with its result as JSON, under `status` (or with its error), one a line:
/// `method "path" => handler(Extractor(binding): Type, …) -> status Answer = call(…);`,
/// and `backend_routes` with them all. The methods of one path are allowed (`Allow`)
/// in the order they come in.
macro_rules! backend_api {
    ($(
        $(#[$doc:meta])*
        $on:ident $path:literal
            => $name:ident($($extractor:ident($binding:ident): $input:ty),*)
            -> $status:ident $answer:ty = $method:ident($($arg:expr),*);
    )*) => {
        $(
            $(#[$doc])*
            async fn $name<B: Backend>(
                State(b): Shared<B>,
                $($extractor($binding): $input),*
            ) -> Result<(StatusCode, Json<$answer>), ApiError> {
                Ok((StatusCode::$status, Json(b.$method($($arg),*).await?)))
            }
        )*

        /// Every route served by a [`Backend`] method.
        fn backend_routes<B: Backend>() -> Router<Arc<B>> {
            Router::new()$(.route($path, $on($name::<B>)))*
        }
    };
}

backend_api! {
    get "/v1/networks" => list_networks() -> OK Vec<Network> = list_networks();
    post "/v1/networks" => create_network(JsonBody(req): JsonBody<NetworkCreate>)
        -> CREATED Network = create_network(req);
    get "/v1/networks/{name}" => get_network(PathParam(name): PathParam)
        -> OK Network = get_network(&name);
    /// A [`NetworkUpdate`]: the policy rules to change.
    patch "/v1/networks/{name}" => update_network(
        PathParam(name): PathParam,
        JsonBody(update): JsonBody<NetworkUpdate>
    ) -> OK Network = update_network(&name, update);
    delete "/v1/networks/{name}" => remove_network(
        PathParam(name): PathParam,
        QueryParams(q): QueryParams<RemoveNetworkQuery>
    ) -> OK Network = remove_network(&name, q.force);
    get "/v1/endpoints" => list_endpoints(QueryParams(q): QueryParams<ListEndpointsQuery>)
        -> OK Vec<Endpoint> = list_endpoints(q.network.as_deref());
    post "/v1/endpoints" => add_endpoint(JsonBody(req): JsonBody<EndpointCreate>)
        -> CREATED Endpoint = add_endpoint(req);
    get "/v1/endpoints/{id}" => get_endpoint(PathParam(id): PathParam)
        -> OK Endpoint = get_endpoint(&id);
    delete "/v1/endpoints/{id}" => remove_endpoint(PathParam(id): PathParam)
        -> OK Endpoint = remove_endpoint(&id);
    post "/v1/taps" => add_tap(JsonBody(req): JsonBody<TapCreate>)
        -> CREATED Endpoint = add_tap(req);
    get "/v1/stats" => stats() -> OK StatsReport = stats();
    /// Any of `endpoint`, `proto` (`tcp`, `udp`, `icmp`), `kind` (`masq`, `publish`,
    /// `hairpin`).
    get "/v1/flows" => flows(QueryParams(q): QueryParams<FlowFilter>)
        -> OK Vec<Flow> = flows(q);
    get "/v1/ports" => list_ports() -> OK Vec<PortLease> = list_ports();
    post "/v1/ports" => publish_ports(JsonBody(req): JsonBody<PortPublish>)
        -> CREATED Vec<PortLease> = publish_ports(req);
    /// Either or both of `endpoint` and `lease`.
    delete "/v1/ports" => unpublish_selected(QueryParams(q): QueryParams<UnpublishQuery>)
        -> OK Vec<PortLease> = unpublish_ports(q.endpoint.as_deref(), q.lease.as_deref());
    /// Every port of the endpoint.
    delete "/v1/ports/{endpoint}" => unpublish_ports(PathParam(endpoint): PathParam)
        -> OK Vec<PortLease> = unpublish_ports(Some(&endpoint), None);
}

pub(super) const ROUTES_HINT: &str = "the API is under /v1: version, networks[/{name}], \
     endpoints[/{id}], taps, stats, flows, events, ports; and /metrics";

pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such API route: {method} {}", uri.path()),
    )
    .hint(ROUTES_HINT)
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// Completes 405 answers with the allowed methods, which axum only puts in the
/// `Allow` header after the fallback has run.
pub(super) async fn add_allow_hint(response: Response) -> Response {
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
