//! The whole stack (socket, router, extractors, client) over an in-memory backend.

use std::{
    io, net::Ipv4Addr, os::unix::fs::PermissionsExt, path::PathBuf, sync::Mutex, time::Duration,
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
            gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
            subnet6: None,
            gateway6: None,
            mode: req.mode,
            uplink: req.uplink,
            mtu: req.mtu.unwrap_or(1500),
            bridge: None,
            no_masquerade: req.no_masquerade,
            policy: req.policy,
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
                count: crate::model::Count {
                    packets: 3,
                    bytes: 180,
                },
            }],
            ..Default::default()
        })
    }
}

/// The API served over a [`Fake`] on `socket`, until dropped.
struct Daemon {
    socket: PathBuf,
    fake: Arc<Fake>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

/// A fresh directory for a test's socket, removed with what is in it on drop.
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("netpath-api-")
        .tempdir()
        .unwrap()
}

async fn start(socket: &Path) -> Result<Daemon, SocketError> {
    let fake = Arc::new(Fake::default());
    let (tx, rx) = oneshot::channel();
    let listener = bind(socket, None).await?;
    let app = router(fake.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Daemon {
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
        subnet: Some("10.1.0.0/24".parse().unwrap()),
        mode: Mode::Routed,
        gateway: None,
        subnet6: None,
        gateway6: None,
        uplink: None,
        mtu: Some(9000),
        no_masquerade: Vec::new(),
        policy: Default::default(),
        profile: None,
    }
}

#[tokio::test]
async fn typed_client_round_trips() {
    let dir = temp_dir();
    let d = start(&dir.path().join("run/api.sock")).await.unwrap();
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
        (
            stats.classes[0].hook.as_str(),
            stats.classes[0].count.packets
        ),
        ("xdp", 3)
    );
    let e = c.get_endpoint("0123456789ab").await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 404, .. }), "{e:?}");
}

#[tokio::test]
async fn concurrent_requests() {
    let dir = temp_dir();
    let d = start(&dir.path().join("api.sock")).await.unwrap();
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
    let dir = temp_dir();
    let d = start(&dir.path().join("api.sock")).await.unwrap();
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
    let socket = dir.path().join("api.sock");

    // Something that is not a socket is left alone.
    std::fs::write(&socket, b"").unwrap();
    let e = bind(&socket, None).await.unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    std::fs::remove_file(&socket).unwrap();

    // A stale socket (nothing answers) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut d = start(&socket).await.unwrap();
    Client::new(&socket).version().await.unwrap();

    // A live one is not.
    let e = bind(&socket, None).await.unwrap_err();
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
