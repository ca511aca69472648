//! `GET /metrics`: the datapath's counters and the control plane's records as
//! Prometheus metrics, read at scrape time and encoded by prometheus-client in the
//! OpenMetrics text format (which Prometheus negotiates; counters end in `_total`).
//!
//! | metric | labels |
//! |---|---|
//! | `netpath_forwarded_packets_total`, `netpath_forwarded_bytes_total` | `way` |
//! | `netpath_dropped_packets_total`, `netpath_dropped_bytes_total` | `reason` |
//! | `netpath_seen_packets_total`, `netpath_seen_bytes_total` | `hook`, `class` |
//! | `netpath_endpoint_packets_total`, `netpath_endpoint_bytes_total` | `endpoint`, `network`, `kind`, `direction` (`tx`: sent by the endpoint, `rx`: delivered to it) |
//! | `netpath_endpoints` | `network`, `kind` |
//! | `netpath_published_ports` | `network` |
//! | `netpath_networks` | |
//! | `netpath_build_info` | `version`, `commit` |
//! | `netpath_start_time_seconds` | (the daemon's start, Unix time) |

use std::{
    collections::BTreeMap,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::{Registry, Unit},
};

use crate::model::{Endpoint, EndpointKind, Network, PortLease, StatsReport};

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Records the daemon's start (`netpath_start_time_seconds`); the first call counts.
pub fn mark_start() {
    STARTED.get_or_init(SystemTime::now);
}

type Labels = Vec<(&'static str, String)>;

/// A family of counters of one kind of thing, registered under `name` (and its unit).
fn counters(
    reg: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    match unit {
        Some(unit) => reg.register_with_unit(name, help, unit, family.clone()),
        None => reg.register(name, help, family.clone()),
    }
    family
}

/// Packets and bytes of one counter table: `name_packets_total`, `name_bytes_total`.
fn packets_and_bytes(
    reg: &mut Registry,
    name: &str,
    what: &str,
    rows: impl Iterator<Item = (Labels, u64, u64)>,
) {
    let packets = counters(
        reg,
        &format!("{name}_packets"),
        &format!("Packets {what}"),
        None,
    );
    let bytes = counters(reg, name, &format!("Bytes {what}"), Some(Unit::Bytes));
    for (labels, p, b) in rows {
        packets.get_or_create(&labels).inc_by(p);
        bytes.get_or_create(&labels).inc_by(b);
    }
}

fn kind(k: EndpointKind) -> &'static str {
    match k {
        EndpointKind::Veth => "veth",
        EndpointKind::Tap => "tap",
    }
}

fn gauge(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    reg.register(name, help, family.clone());
    family
}

/// The exposition of one scrape.
pub fn render(
    stats: &StatsReport,
    networks: &[Network],
    endpoints: &[Endpoint],
    ports: &[PortLease],
) -> String {
    let mut reg = Registry::with_prefix("netpath");
    let rows = stats.forwards.iter();
    let rows = rows.map(|w| (vec![("way", w.way.clone())], w.packets, w.bytes));
    packets_and_bytes(
        &mut reg,
        "forwarded",
        "the fast path forwarded past the kernel's path",
        rows,
    );
    let rows = stats.drops.iter();
    let rows = rows.map(|d| (vec![("reason", d.reason.clone())], d.packets, d.bytes));
    packets_and_bytes(&mut reg, "dropped", "the datapath dropped", rows);
    let rows = stats.classes.iter().map(|c| {
        let labels = vec![("hook", c.hook.clone()), ("class", c.class.clone())];
        (labels, c.packets, c.bytes)
    });
    packets_and_bytes(&mut reg, "seen", "the datapath's programs saw", rows);
    let by_id: BTreeMap<&str, &Endpoint> = endpoints.iter().map(|e| (e.id.as_str(), e)).collect();
    let rows = stats.endpoints.iter().flat_map(|t| {
        let known = t.id.as_deref().and_then(|id| by_id.get(id));
        let labels = |direction: &str| {
            vec![
                ("endpoint", t.id.clone().unwrap_or_default()),
                ("network", t.network.clone().unwrap_or_default()),
                ("kind", known.map_or("", |e| kind(e.kind)).to_owned()),
                ("direction", direction.to_owned()),
            ]
        };
        [
            (labels("tx"), t.tx_packets, t.tx_bytes),
            (labels("rx"), t.rx_packets, t.rx_bytes),
        ]
    });
    packets_and_bytes(&mut reg, "endpoint", "of an endpoint", rows);

    let eps = gauge(&mut reg, "endpoints", "Endpoints per network and kind");
    for e in endpoints {
        let labels = vec![
            ("network", e.network.clone()),
            ("kind", kind(e.kind).to_owned()),
        ];
        eps.get_or_create(&labels).inc();
    }
    let published = gauge(&mut reg, "published_ports", "Published ports per network");
    for n in networks {
        // Every network shows, with 0 when it publishes nothing.
        published
            .get_or_create(&vec![("network", n.name.clone())])
            .set(0);
    }
    for p in ports {
        if let Some(e) = by_id.get(p.endpoint.as_str()) {
            published
                .get_or_create(&vec![("network", e.network.clone())])
                .inc();
        }
    }
    let count: Gauge = Gauge::default();
    count.set(networks.len() as i64);
    reg.register("networks", "Networks", count);
    let build = Info::new(vec![
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("commit", env!("NETPATH_COMMIT").to_owned()),
    ]);
    reg.register("build", "The daemon's build", build);
    if let Some(start) = STARTED.get() {
        let secs = start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let started: Gauge = Gauge::default();
        started.set(secs as i64);
        reg.register_with_unit(
            "start_time",
            "When the daemon started",
            Unit::Seconds,
            started,
        );
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &reg);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointTraffic, ReasonCount, WayCount};

    fn has_line(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }

    #[test]
    fn counters_and_records_become_metrics() {
        let stats = StatsReport {
            forwards: vec![WayCount {
                way: "endpoint_to_endpoint".into(),
                packets: 7,
                bytes: 700,
            }],
            drops: vec![ReasonCount {
                reason: "spoofed_ip".into(),
                packets: 3,
                bytes: 180,
            }],
            endpoints: vec![EndpointTraffic {
                id: Some("0123456789ab".into()),
                network: Some("web".into()),
                ip: "10.1.0.2".parse().unwrap(),
                ifindex: 9,
                tx_packets: 5,
                tx_bytes: 500,
                rx_packets: 4,
                rx_bytes: 400,
            }],
            ..StatsReport::default()
        };
        let text = render(&stats, &[], &[], &[]);
        for line in [
            "# TYPE netpath_forwarded_packets counter",
            "netpath_forwarded_packets_total{way=\"endpoint_to_endpoint\"} 7",
            "# TYPE netpath_forwarded_bytes counter",
            "# UNIT netpath_forwarded_bytes bytes",
            "netpath_forwarded_bytes_total{way=\"endpoint_to_endpoint\"} 700",
            "netpath_dropped_packets_total{reason=\"spoofed_ip\"} 3",
            "netpath_dropped_bytes_total{reason=\"spoofed_ip\"} 180",
            "netpath_endpoint_packets_total{endpoint=\"0123456789ab\",network=\"web\",kind=\"\",direction=\"tx\"} 5",
            "netpath_endpoint_bytes_total{endpoint=\"0123456789ab\",network=\"web\",kind=\"\",direction=\"rx\"} 400",
            "netpath_networks 0",
            "# EOF",
        ] {
            has_line(&text, line);
        }
        assert!(text.contains("netpath_build_info{version=\""), "{text}");
    }

    /// Over the real service on the recording fakes, through the API's router.
    #[tokio::test]
    async fn the_route_counts_the_records() {
        use axum::{body::Body, http::Request};
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        use crate::control::fake::{NETNS, UPLINK, service};
        let (svc, _world, _dir) = service();
        let svc = std::sync::Arc::new(svc);
        let net = crate::model::NetworkCreate {
            name: "web".into(),
            subnet: "10.77.0.0/24".parse().unwrap(),
            uplink: Some(UPLINK.into()),
            ..Default::default()
        };
        svc.create_network(net).await.unwrap();
        let ep = crate::model::EndpointCreate {
            network: "web".into(),
            netns: Some(NETNS.into()),
            ..Default::default()
        };
        let ep = svc.add_endpoint(ep).await.unwrap();
        let publish = crate::model::PortPublish {
            endpoint: ep.id,
            spec: Some("18400:80".into()),
            specs: vec![],
        };
        svc.publish_ports(publish).await.unwrap();
        let req = Request::get("/metrics").body(Body::empty()).unwrap();
        let res = crate::api::router(svc).oneshot(req).await.unwrap();
        assert_eq!(res.headers()["content-type"], CONTENT_TYPE);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for line in [
            "netpath_endpoints{network=\"web\",kind=\"veth\"} 1",
            "netpath_published_ports{network=\"web\"} 1",
            "netpath_networks 1",
        ] {
            has_line(&text, line);
        }
    }
}
