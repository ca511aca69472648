//! The route table and its handlers, the middleware that detaches mutations from
//! their client, and the answers for unknown routes and methods.

use super::*;

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

pub(super) async fn list_networks<B: Backend>(
    State(b): Shared<B>,
) -> Result<Json<Vec<Network>>, ApiError> {
    Ok(Json(b.list_networks().await?))
}

pub(super) async fn create_network<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<NetworkCreate>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.create_network(req).await?)))
}

pub(super) async fn get_network<B: Backend>(
    State(b): Shared<B>,
    PathParam(name): PathParam,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(b.get_network(&name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveNetworkQuery {
    #[serde(default)]
    force: bool,
}

pub(super) async fn remove_network<B: Backend>(
    State(b): Shared<B>,
    PathParam(name): PathParam,
    QueryParams(q): QueryParams<RemoveNetworkQuery>,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(b.remove_network(&name, q.force).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListEndpointsQuery {
    #[serde(default)]
    network: Option<String>,
}

pub(super) async fn list_endpoints<B: Backend>(
    State(b): Shared<B>,
    QueryParams(q): QueryParams<ListEndpointsQuery>,
) -> Result<Json<Vec<Endpoint>>, ApiError> {
    Ok(Json(b.list_endpoints(q.network.as_deref()).await?))
}

pub(super) async fn add_endpoint<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<EndpointCreate>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.add_endpoint(req).await?)))
}

pub(super) async fn add_tap<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<TapCreate>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.add_tap(req).await?)))
}

pub(super) async fn get_endpoint<B: Backend>(
    State(b): Shared<B>,
    PathParam(id): PathParam,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(b.get_endpoint(&id).await?))
}

pub(super) async fn remove_endpoint<B: Backend>(
    State(b): Shared<B>,
    PathParam(id): PathParam,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(b.remove_endpoint(&id).await?))
}

pub(super) async fn stats<B: Backend>(State(b): Shared<B>) -> Result<Json<StatsReport>, ApiError> {
    Ok(Json(b.stats().await?))
}

pub(super) async fn publish_ports<B: Backend>(
    State(b): Shared<B>,
    JsonBody(req): JsonBody<PortPublish>,
) -> Result<(StatusCode, Json<Vec<PortLease>>), ApiError> {
    Ok((StatusCode::CREATED, Json(b.publish_ports(req).await?)))
}

pub(super) async fn unpublish_ports<B: Backend>(
    State(b): Shared<B>,
    PathParam(endpoint): PathParam,
) -> Result<Json<Vec<PortLease>>, ApiError> {
    Ok(Json(b.unpublish_ports(Some(&endpoint), None).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnpublishQuery {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    lease: Option<String>,
}

pub(super) async fn unpublish_selected<B: Backend>(
    State(b): Shared<B>,
    QueryParams(q): QueryParams<UnpublishQuery>,
) -> Result<Json<Vec<PortLease>>, ApiError> {
    Ok(Json(
        b.unpublish_ports(q.endpoint.as_deref(), q.lease.as_deref())
            .await?,
    ))
}

pub(super) async fn list_ports<B: Backend>(
    State(b): Shared<B>,
) -> Result<Json<Vec<PortLease>>, ApiError> {
    Ok(Json(b.list_ports().await?))
}

pub(super) const ROUTES_HINT: &str = "the API is under /v1: version, networks[/{name}], \
     endpoints[/{id}], taps, stats";

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
