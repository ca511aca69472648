//! Client of the daemon's HTTP/JSON API (see [`crate::api`]) over its unix socket.
//!
//! One HTTP/1.1 connection per request; each request (connect, send, read the answer)
//! is bounded by a timeout.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    body::Bytes,
    header::{ACCEPT, CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    api::Version,
    error::{self, UserError},
    model::{
        ApiErrorBody, Endpoint, EndpointCreate, EventFilter, Flow, FlowFilter, MonitorEvent,
        Network, NetworkCreate, NetworkUpdate, PortLease, PortPublish, StatsReport, TapCreate,
    },
};

/// Default bound on one request, connect to last byte of the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

const DAEMON_DOWN_HINT: &str =
    "start it with `sudo netpath daemon` (or `cargo xtask run`), or pass --socket";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (it does not exist, or connect was refused).
    #[error("the netpath daemon is not running (no answer on {})", socket.display())]
    DaemonDown { socket: PathBuf },
    /// The daemon answered with an error.
    #[error("{}", body.error)]
    Api { status: u16, body: ApiErrorBody },
    /// Any other failure to reach the socket (e.g. permission denied).
    #[error("cannot connect to the netpath daemon on {}", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed, or the daemon's answer was not the API's.
    #[error("bad exchange with the netpath daemon on {}", socket.display())]
    Protocol {
        socket: PathBuf,
        #[source]
        source: BoxError,
    },
    /// A successful answer did not have the expected shape.
    #[error("cannot decode the netpath daemon's answer to {method} {path}")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// No complete answer within the timeout.
    #[error(
        "the netpath daemon did not answer {method} {path} within {} s (on {})",
        after.as_secs(), socket.display()
    )]
    Timeout {
        socket: PathBuf,
        method: Method,
        path: String,
        after: Duration,
    },
}

impl ClientError {
    /// What to do about it, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::DaemonDown { .. } => Some(DAEMON_DOWN_HINT.into()),
            ClientError::Api { body, .. } => body.hint.clone(),
            ClientError::Io { source, socket }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                Some(refused_hint(socket_group(socket).as_deref()))
            }
            ClientError::Timeout { .. } => {
                Some("the daemon may be stuck: check its output, or restart it".into())
            }
            _ => None,
        }
    }

    /// HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What to do when the socket refused this user: it is open to root and to the members
/// of its group (`group`, `root` or unknown: root alone).
fn refused_hint(group: Option<&str>) -> String {
    match group {
        Some(g) if g != "root" => format!(
            "the API socket is open to root and the members of group {g} only: run with sudo, \
             or join the group (`sudo usermod -aG {g} $USER`, then log in again)"
        ),
        _ => "the API socket is open to root only: run with sudo (or start the daemon with \
              --socket-group GROUP to open it to a group)"
            .into(),
    }
}

/// The name of the group that owns `socket`, if it can be told.
fn socket_group(socket: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata(socket).ok()?.gid();
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).ok()??;
    Some(group.name)
}

/// The error as the CLI shows it: the message with its causes, and the hint for
/// `error::one_line`.
impl From<ClientError> for UserError {
    fn from(e: ClientError) -> Self {
        UserError {
            what: error::chain(&e),
            hint: e.hint(),
        }
    }
}

/// Talks to the daemon on `socket`.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Bounds each request (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path` with `body` as JSON and decodes the JSON answer as `T`.
    /// `path` is the origin-form target, e.g. `/v1/networks?x=y`, already encoded.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| self.protocol(e))?),
            None => None,
        };
        let exchange = self.exchange(method.clone(), path, body);
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    socket: self.socket.clone(),
                    method,
                    path: path.into(),
                    after: self.timeout,
                });
            }
        };
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
                method,
                path: path.into(),
                source,
            })
        } else {
            Err(self.refusal(&method, path, status, &bytes))
        }
    }

    /// The error of an answer with `status` (not a success) and body `bytes`.
    fn refusal(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        bytes: &[u8],
    ) -> ClientError {
        match serde_json::from_slice::<ApiErrorBody>(bytes) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                body,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(bytes);
                let text: String = text.chars().take(200).collect();
                self.protocol(format!(
                    "{method} {path} answered {status} without an API error body: {text:?}"
                ))
            }
        }
    }

    /// `GET /v1/events` with `filter`: hands each event to `on_event` as it arrives, until
    /// it returns `false` or the daemon ends the stream. No timeout: events come when
    /// they happen.
    pub async fn events(
        &self,
        filter: &EventFilter,
        mut on_event: impl FnMut(MonitorEvent) -> bool,
    ) -> Result<(), ClientError> {
        let path = with_query("/v1/events", filter);
        let (response, _sender) = self.send(Method::GET, &path, None).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| self.protocol(e))?
                .to_bytes();
            return Err(self.refusal(&Method::GET, &path, status, &bytes));
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.protocol(e))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event =
                    serde_json::from_slice(&line).map_err(|source| ClientError::Decode {
                        method: Method::GET,
                        path: path.clone(),
                        source,
                    })?;
                if !on_event(event) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (response, _sender) = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Connects, sends the request, and returns the answer as it starts (its body still
    /// to read), with the connection's sender: kept while the body is read.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, Sender), ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENOENT | libc::ECONNREFUSED) => ClientError::DaemonDown {
                    socket: self.socket.clone(),
                },
                _ => ClientError::Io {
                    socket: self.socket.clone(),
                    source,
                },
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        // Drives the connection; it ends when the answer is read and `sender` dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e))?;
        Ok((response, sender))
    }

    fn protocol(&self, e: impl Into<BoxError>) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            source: e.into(),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(Method::GET, path, None::<&()>).await
    }

    pub async fn version(&self) -> Result<Version, ClientError> {
        self.get("/v1/version").await
    }

    pub async fn list_networks(&self) -> Result<Vec<Network>, ClientError> {
        self.get("/v1/networks").await
    }

    pub async fn get_network(&self, name: &str) -> Result<Network, ClientError> {
        self.get(&format!("/v1/networks/{}", encode(name))).await
    }

    pub async fn create_network(&self, req: &NetworkCreate) -> Result<Network, ClientError> {
        self.request(Method::POST, "/v1/networks", Some(req)).await
    }

    pub async fn update_network(
        &self,
        name: &str,
        update: &NetworkUpdate,
    ) -> Result<Network, ClientError> {
        let path = format!("/v1/networks/{}", encode(name));
        self.request(Method::PATCH, &path, Some(update)).await
    }

    pub async fn remove_network(&self, name: &str, force: bool) -> Result<Network, ClientError> {
        let path = format!("/v1/networks/{}?force={force}", encode(name));
        self.request(Method::DELETE, &path, None::<&()>).await
    }

    pub async fn list_endpoints(
        &self,
        network: Option<&str>,
    ) -> Result<Vec<Endpoint>, ClientError> {
        match network {
            Some(n) => {
                self.get(&format!("/v1/endpoints?network={}", encode(n)))
                    .await
            }
            None => self.get("/v1/endpoints").await,
        }
    }

    pub async fn get_endpoint(&self, id: &str) -> Result<Endpoint, ClientError> {
        self.get(&format!("/v1/endpoints/{}", encode(id))).await
    }

    pub async fn add_endpoint(&self, req: &EndpointCreate) -> Result<Endpoint, ClientError> {
        self.request(Method::POST, "/v1/endpoints", Some(req)).await
    }

    pub async fn add_tap(&self, req: &TapCreate) -> Result<Endpoint, ClientError> {
        self.request(Method::POST, "/v1/taps", Some(req)).await
    }

    pub async fn remove_endpoint(&self, id: &str) -> Result<Endpoint, ClientError> {
        let path = format!("/v1/endpoints/{}", encode(id));
        self.request(Method::DELETE, &path, None::<&()>).await
    }

    /// `POST /v1/ports`: publish ports of an endpoint.
    pub async fn publish_ports(&self, req: &PortPublish) -> Result<Vec<PortLease>, ClientError> {
        self.request(Method::POST, "/v1/ports", Some(req)).await
    }

    /// `DELETE /v1/ports/{endpoint}`: unpublish every port of an endpoint.
    pub async fn unpublish_ports(&self, endpoint: &str) -> Result<Vec<PortLease>, ClientError> {
        self.request(
            Method::DELETE,
            &format!("/v1/ports/{}", encode(endpoint)),
            None::<&()>,
        )
        .await
    }

    /// `DELETE /v1/ports?endpoint=…&lease=…`: unpublish one lease, every port of an
    /// endpoint, or the lease only if it is that endpoint's.
    pub async fn unpublish(
        &self,
        endpoint: Option<&str>,
        lease: Option<&str>,
    ) -> Result<Vec<PortLease>, ClientError> {
        let mut query = Vec::new();
        if let Some(e) = endpoint {
            query.push(format!("endpoint={}", encode(e)));
        }
        if let Some(l) = lease {
            query.push(format!("lease={}", encode(l)));
        }
        let path = format!("/v1/ports?{}", query.join("&"));
        self.request(Method::DELETE, &path, None::<&()>).await
    }

    /// `GET /v1/ports`.
    pub async fn list_ports(&self) -> Result<Vec<PortLease>, ClientError> {
        self.get("/v1/ports").await
    }

    /// `GET /v1/stats`: every counter of the datapath.
    pub async fn stats(&self) -> Result<StatsReport, ClientError> {
        self.get("/v1/stats").await
    }

    /// `GET /v1/flows`: the translated connections `filter` selects.
    pub async fn flows(&self, filter: &FlowFilter) -> Result<Vec<Flow>, ClientError> {
        // The enums' names as serde writes them (`tcp`, `masq`).
        self.get(&with_query("/v1/flows", filter)).await
    }
}

/// `base` with the fields of `query` as its query string: a request struct serde writes
/// as an object of strings and numbers (the API's names for enums), its `None` fields
/// left out.
fn with_query(base: &str, query: &impl Serialize) -> String {
    let fields = match serde_json::to_value(query) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    let pairs: Vec<String> = (fields.iter())
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            format!("{k}={}", encode(&v))
        })
        .collect();
    match pairs.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", pairs.join("&")),
    }
}

/// The sending half of a connection to the daemon.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Percent-encodes `s` for a path segment or query value (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::{Json, Router, http::StatusCode, routing::get};

    use super::*;

    #[test]
    fn a_refused_client_is_told_the_socket_group_to_join() {
        let h = refused_hint(Some("netpath"));
        assert!(
            h.contains("members of group netpath") && h.contains("usermod -aG netpath"),
            "{h}"
        );
        for group in [None, Some("root")] {
            let h = refused_hint(group);
            assert!(
                h.contains("root only") && h.contains("--socket-group"),
                "{h}"
            );
        }
    }

    /// A socket path in a fresh temp dir (removed, with whatever is in it, on drop).
    struct TempSocket {
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl TempSocket {
        fn new(tag: &str) -> Self {
            let dir = tempfile::Builder::new()
                .prefix(&format!("netpath-{tag}-"))
                .tempdir()
                .unwrap();
            TempSocket {
                path: dir.path().join("api.sock"),
                _dir: dir,
            }
        }
    }

    #[tokio::test]
    async fn missing_socket_is_daemon_down_with_hint() {
        let e = Client::new("/nonexistent/x.sock")
            .list_networks()
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::DaemonDown { socket } if socket == Path::new("/nonexistent/x.sock")),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "the netpath daemon is not running (no answer on /nonexistent/x.sock)"
        );
        assert_eq!(e.hint().as_deref(), Some(DAEMON_DOWN_HINT));
    }

    #[tokio::test]
    async fn stale_socket_is_daemon_down() {
        let sock = TempSocket::new("client-stale");
        drop(std::os::unix::net::UnixListener::bind(&sock.path).unwrap());
        let e = Client::new(&sock.path).list_networks().await.unwrap_err();
        assert!(matches!(e, ClientError::DaemonDown { .. }), "{e:?}");
    }

    async fn conflict() -> (StatusCode, Json<ApiErrorBody>) {
        (
            StatusCode::CONFLICT,
            Json(ApiErrorBody {
                error: "network a already exists".into(),
                hint: Some("pick another name".into()),
            }),
        )
    }

    async fn slow() -> Json<Vec<Network>> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Json(vec![])
    }

    async fn not_json() -> (StatusCode, &'static str) {
        (StatusCode::BAD_GATEWAY, "oops")
    }

    fn spawn_server(sock: &TempSocket, app: Router) {
        let listener = tokio::net::UnixListener::bind(&sock.path).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    #[tokio::test]
    async fn error_answer_maps_to_api_error() {
        let sock = TempSocket::new("client-api");
        spawn_server(
            &sock,
            Router::new()
                .route("/v1/networks", get(conflict))
                .route("/v1/endpoints", get(not_json))
                .route("/v1/stats", get(slow)),
        );
        let client = Client::new(&sock.path);
        let e = client.list_networks().await.unwrap_err();
        match &e {
            ClientError::Api { status: 409, body } => {
                assert_eq!(body.error, "network a already exists");
            }
            other => panic!("expected Api 409, got {other:?}"),
        }
        assert_eq!(e.to_string(), "network a already exists");
        assert_eq!(e.hint().as_deref(), Some("pick another name"));
        let user = UserError::from(e);
        assert_eq!(user.hint.as_deref(), Some("pick another name"));

        let e = client.list_endpoints(None).await.unwrap_err();
        assert!(matches!(e, ClientError::Protocol { .. }), "{e:?}");
        let text = error::chain(&e);
        assert!(text.contains("502"), "{text}");

        let e = client
            .with_timeout(Duration::from_millis(200))
            .stats()
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        assert!(
            e.to_string().contains("did not answer GET /v1/stats"),
            "{e}"
        );
    }

    #[test]
    fn encoding_keeps_unreserved_only() {
        assert_eq!(encode("net-1_a.b~"), "net-1_a.b~");
        assert_eq!(encode("a b/c?d&e"), "a%20b%2Fc%3Fd%26e");
    }
}
