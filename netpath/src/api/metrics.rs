//! `GET /metrics`: the datapath's counters and tables, the control plane's records and
//! the daemon's own metrics ([`crate::telemetry`]) in the Prometheus text format 0.0.4,
//! the datapath's read from its maps at scrape time.
//!
//! | metric | labels |
//! |---|---|
//! | `netpath_forwarded_packets_total`, `netpath_forwarded_bytes_total` | `way` |
//! | `netpath_dropped_packets_total`, `netpath_dropped_bytes_total` | `hook`, `reason` |
//! | `netpath_seen_packets_total`, `netpath_seen_bytes_total` | `hook`, `class` |
//! | `netpath_endpoint_packets_total`, `netpath_endpoint_bytes_total` | `endpoint`, `network`, `kind`, `direction` (`tx`: sent by the endpoint, `rx`: delivered to it) |
//! | `netpath_masquerade_port_claim_failures_total` | (drops for `nat_ports_exhausted`) |
//! | `netpath_map_entries`, `netpath_map_capacity`, `netpath_map_pressure` | `map` (every table; pressure = entries ÷ capacity) |
//! | `netpath_nat_entries` | `kind` (`masquerade`, `publish`, `host_local`, `fragment`), `family` |
//! | `netpath_program_runs_total`, `netpath_program_run_time_seconds_total` | `program` (while `kernel.bpf_stats_enabled` is 1) |
//! | `netpath_endpoints` | `network`, `kind` |
//! | `netpath_published_ports` | `network` |
//! | `netpath_networks` | |
//! | `netpath_build_info` | `version`, `commit` (always 1) |
//! | `netpath_start_time_seconds` | (the daemon's start, Unix time) |
//! | `netpath_api_requests_total` | `route`, `method`, `status` |
//! | `netpath_api_request_duration_seconds` | `route`, `method` (a histogram) |
//! | `netpath_reconcile_actions_total` | `action` |
//! | `netpath_monitor_events_lost_total` | (events the ring could not take) |

use std::{collections::BTreeMap, time::UNIX_EPOCH};

use netpath_common::{
    maps::{DropReason, FRAG_MAP, FRAG6_MAP},
    nat::{DNAT_CT_MAP, DNAT_CT6_MAP, SNAT_MAP, SNAT6_MAP, SOCK_NAT_MAP, SOCK_NAT6_MAP},
};
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, core::Collector,
};

use crate::{
    model::{Count, Endpoint, EndpointKind, Network, PortLease, StatsReport},
    telemetry,
};

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The tables that hold translated connections, by what translates them.
const NAT_TABLES: [(&str, &str, &str); 8] = [
    (SNAT_MAP, "masquerade", "ipv4"),
    (SNAT6_MAP, "masquerade", "ipv6"),
    (DNAT_CT_MAP, "publish", "ipv4"),
    (DNAT_CT6_MAP, "publish", "ipv6"),
    (SOCK_NAT_MAP, "host_local", "ipv4"),
    (SOCK_NAT6_MAP, "host_local", "ipv6"),
    (FRAG_MAP, "fragment", "ipv4"),
    (FRAG6_MAP, "fragment", "ipv6"),
];

/// One scrape's metrics, registered as they are made.
struct Scrape(Registry);

impl Scrape {
    fn add<M: Collector + Clone + 'static>(&self, metric: M) -> M {
        // Each name is registered once per scrape, with constant valid options.
        self.0
            .register(Box::new(metric.clone()))
            .expect("a metric registered once");
        metric
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid options"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid options"))
    }

    fn gauge(&self, name: &str, help: &str, value: i64) {
        let g = self.add(IntGauge::new(name, help).expect("valid options"));
        g.set(value);
    }

    /// `netpath_<name>_packets_total` and `netpath_<name>_bytes_total` of one counter
    /// table, `rows` giving each row's label values, packets and bytes.
    fn packets_and_bytes<'a>(
        &self,
        name: &str,
        what: &str,
        labels: &[&str],
        rows: impl Iterator<Item = (Vec<&'a str>, Count)>,
    ) {
        let packets = self.counters(
            &format!("netpath_{name}_packets_total"),
            &format!("Packets {what}"),
            labels,
        );
        let bytes = self.counters(
            &format!("netpath_{name}_bytes_total"),
            &format!("Bytes {what}"),
            labels,
        );
        for (values, c) in rows {
            packets.with_label_values(&values).inc_by(c.packets);
            bytes.with_label_values(&values).inc_by(c.bytes);
        }
    }
}

fn kind(k: EndpointKind) -> &'static str {
    match k {
        EndpointKind::Veth => "veth",
        EndpointKind::Tap => "tap",
    }
}

/// The exposition of one scrape.
pub fn render(
    stats: &StatsReport,
    networks: &[Network],
    endpoints: &[Endpoint],
    ports: &[PortLease],
    events_lost: u64,
) -> String {
    let scrape = Scrape(Registry::new());
    datapath_counters(&scrape, stats, endpoints);
    let lost = scrape.add(
        IntCounter::new(
            "netpath_monitor_events_lost_total",
            "Events the datapath's ring could not take (nobody read them in time)",
        )
        .expect("valid options"),
    );
    lost.inc_by(events_lost);
    tables(&scrape, stats);
    records(&scrape, networks, endpoints, ports);
    scrape.gauge("netpath_networks", "Networks", networks.len() as i64);
    let build = scrape.gauges(
        "netpath_build_info",
        "The daemon's build (always 1)",
        &["version", "commit"],
    );
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("NETPATH_COMMIT")])
        .set(1);
    if let Some(start) = telemetry::started() {
        let secs = start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        scrape.gauge(
            "netpath_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch",
            secs as i64,
        );
    }
    let mut families = scrape.0.gather();
    families.extend(telemetry::gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut text = Vec::new();
    // Encoding into a Vec cannot fail, and the text format writes UTF-8.
    let _ = TextEncoder::new().encode(&families, &mut text);
    String::from_utf8_lossy(&text).into_owned()
}

/// The programs' packet counters.
fn datapath_counters(scrape: &Scrape, stats: &StatsReport, endpoints: &[Endpoint]) {
    let rows = stats.forwards.iter();
    let rows = rows.map(|w| (vec![w.way.as_str()], w.count));
    scrape.packets_and_bytes(
        "forwarded",
        "the fast path forwarded past the kernel's path",
        &["way"],
        rows,
    );
    let rows = stats.drops_by_hook.iter();
    let rows = rows.map(|d| (vec![d.hook.as_str(), d.reason.as_str()], d.count));
    scrape.packets_and_bytes("dropped", "the datapath dropped", &["hook", "reason"], rows);
    let exhausted = DropReason::NatPortsExhausted.name();
    let failures = (stats.drops.iter())
        .filter(|d| d.reason == exhausted)
        .map(|d| d.count.packets)
        .sum();
    let claims = scrape.add(
        IntCounter::new(
            "netpath_masquerade_port_claim_failures_total",
            "Packets of new masqueraded connections that found no free port (and were dropped)",
        )
        .expect("valid options"),
    );
    claims.inc_by(failures);
    let rows = stats.classes.iter();
    let rows = rows.map(|c| (vec![c.hook.as_str(), c.class.as_str()], c.count));
    scrape.packets_and_bytes(
        "seen",
        "the datapath's programs saw",
        &["hook", "class"],
        rows,
    );
    let by_id: BTreeMap<&str, &Endpoint> = endpoints.iter().map(|e| (e.id.as_str(), e)).collect();
    let rows = stats.endpoints.iter().flat_map(|t| {
        let id = t.id.as_deref().unwrap_or_default();
        let network = t.network.as_deref().unwrap_or_default();
        let kind = by_id.get(id).map_or("", |e| kind(e.kind));
        [
            (vec![id, network, kind, "tx"], t.tx()),
            (vec![id, network, kind, "rx"], t.rx()),
        ]
    });
    scrape.packets_and_bytes(
        "endpoint",
        "of an endpoint",
        &["endpoint", "network", "kind", "direction"],
        rows,
    );
    let runs = scrape.counters(
        "netpath_program_runs_total",
        "Runs of a datapath program (counted while kernel.bpf_stats_enabled is 1)",
        &["program"],
    );
    let time = scrape.add(
        prometheus::CounterVec::new(
            Opts::new(
                "netpath_program_run_time_seconds_total",
                "Time spent in a datapath program (counted while kernel.bpf_stats_enabled is 1)",
            ),
            &["program"],
        )
        .expect("valid options"),
    );
    for p in &stats.programs {
        runs.with_label_values(&[&p.program]).inc_by(p.run_count);
        time.with_label_values(&[&p.program])
            .inc_by(p.run_time_ns as f64 / 1e9);
    }
}

/// How full the datapath's tables are, and the translated connections among them.
fn tables(scrape: &Scrape, stats: &StatsReport) {
    let entries = scrape.gauges(
        "netpath_map_entries",
        "Entries of a datapath table",
        &["map"],
    );
    let capacity = scrape.gauges(
        "netpath_map_capacity",
        "Entries a datapath table can hold",
        &["map"],
    );
    let pressure = scrape.add(
        GaugeVec::new(
            Opts::new(
                "netpath_map_pressure",
                "How full a datapath table is: entries / capacity (an LRU at 1 evicts its oldest)",
            ),
            &["map"],
        )
        .expect("valid options"),
    );
    let nat = scrape.gauges(
        "netpath_nat_entries",
        "Translated connections (and fragment trackers) held, by what translates them",
        &["kind", "family"],
    );
    for m in &stats.maps {
        entries.with_label_values(&[&m.map]).set(m.entries as i64);
        capacity
            .with_label_values(&[&m.map])
            .set(i64::from(m.capacity));
        let ratio = m.entries as f64 / f64::from(m.capacity.max(1));
        pressure.with_label_values(&[&m.map]).set(ratio);
        if let Some((_, kind, family)) = NAT_TABLES.iter().find(|(t, ..)| *t == m.map) {
            nat.with_label_values(&[kind, family]).set(m.entries as i64);
        }
    }
}

/// Endpoints and published ports, from the records.
fn records(scrape: &Scrape, networks: &[Network], endpoints: &[Endpoint], ports: &[PortLease]) {
    let eps = scrape.gauges(
        "netpath_endpoints",
        "Endpoints per network and kind",
        &["network", "kind"],
    );
    for e in endpoints {
        eps.with_label_values(&[&e.network, kind(e.kind)]).inc();
    }
    let published = scrape.gauges(
        "netpath_published_ports",
        "Published ports per network",
        &["network"],
    );
    for n in networks {
        // Every network shows, with 0 when it publishes nothing.
        published.with_label_values(&[&n.name]).set(0);
    }
    let network_of: BTreeMap<&str, &str> = (endpoints.iter())
        .map(|e| (e.id.as_str(), e.network.as_str()))
        .collect();
    for p in ports {
        if let Some(network) = network_of.get(p.endpoint.as_str()) {
            published.with_label_values(&[network]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        EndpointTraffic, HookDropCount, MapFill, ProgramCost, ReasonCount, WayCount,
    };

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
                count: Count {
                    packets: 7,
                    bytes: 700,
                },
            }],
            drops: vec![ReasonCount {
                reason: "nat_ports_exhausted".into(),
                count: Count {
                    packets: 3,
                    bytes: 180,
                },
            }],
            drops_by_hook: vec![HookDropCount {
                hook: "uplink_egress".into(),
                reason: "nat_ports_exhausted".into(),
                count: Count {
                    packets: 3,
                    bytes: 180,
                },
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
            maps: vec![MapFill {
                map: SNAT_MAP.into(),
                entries: 65_536,
                capacity: 262_144,
            }],
            programs: vec![ProgramCost {
                program: "netpath_tc_ingress".into(),
                run_count: 1000,
                run_time_ns: 250_000,
            }],
            ..StatsReport::default()
        };
        let text = render(&stats, &[], &[], &[], 0);
        for line in [
            "# TYPE netpath_forwarded_packets_total counter",
            "netpath_forwarded_packets_total{way=\"endpoint_to_endpoint\"} 7",
            "# HELP netpath_forwarded_bytes_total Bytes the fast path forwarded past the kernel's path",
            "netpath_forwarded_bytes_total{way=\"endpoint_to_endpoint\"} 700",
            "netpath_dropped_packets_total{hook=\"uplink_egress\",reason=\"nat_ports_exhausted\"} 3",
            "netpath_dropped_bytes_total{hook=\"uplink_egress\",reason=\"nat_ports_exhausted\"} 180",
            "netpath_masquerade_port_claim_failures_total 3",
            "netpath_endpoint_packets_total{direction=\"tx\",endpoint=\"0123456789ab\",kind=\"\",network=\"web\"} 5",
            "netpath_endpoint_bytes_total{direction=\"rx\",endpoint=\"0123456789ab\",kind=\"\",network=\"web\"} 400",
            "netpath_map_entries{map=\"NETPATH_SNAT\"} 65536",
            "netpath_map_capacity{map=\"NETPATH_SNAT\"} 262144",
            "netpath_map_pressure{map=\"NETPATH_SNAT\"} 0.25",
            "netpath_nat_entries{family=\"ipv4\",kind=\"masquerade\"} 65536",
            "netpath_program_runs_total{program=\"netpath_tc_ingress\"} 1000",
            "netpath_program_run_time_seconds_total{program=\"netpath_tc_ingress\"} 0.00025",
            "# TYPE netpath_networks gauge",
            "netpath_networks 0",
        ] {
            has_line(&text, line);
        }
        assert!(text.contains("netpath_build_info{commit=\""), "{text}");
        // Families come sorted by name, each with its HELP and TYPE.
        let names: Vec<&str> = (text.lines())
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(helps, names.len(), "{text}");
    }

    /// Over the real service on the recording fakes, through the API's router: the
    /// records, and the requests the router itself counted.
    #[tokio::test]
    async fn the_route_counts_the_records_and_the_requests() {
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
            endpoint: ep.id.clone(),
            spec: Some("18400:80".into()),
            specs: vec![],
        };
        svc.publish_ports(publish).await.unwrap();
        let get = |uri: String| {
            let app = crate::api::router(svc.clone());
            async move {
                let req = Request::get(uri).body(Body::empty()).unwrap();
                app.oneshot(req).await.unwrap()
            }
        };
        // The process's counters are shared by every test: compare before and after.
        let route = "netpath_api_requests_total{method=\"GET\",route=\"/v1/endpoints/{id}\",status=\"200\"}";
        let count = |text: &str| {
            (text.lines())
                .find_map(|l| l.strip_prefix(route))
                .map_or(0, |v| v.trim().parse::<u64>().unwrap())
        };
        let text = |res: axum::response::Response| async {
            let body = res.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        };
        let before = count(&text(get("/metrics".into()).await).await);
        for _ in 0..3 {
            assert_eq!(get(format!("/v1/endpoints/{}", ep.id)).await.status(), 200);
        }
        let res = get("/metrics".into()).await;
        assert_eq!(res.headers()["content-type"], CONTENT_TYPE);
        let text = text(res).await;
        for line in [
            "netpath_endpoints{kind=\"veth\",network=\"web\"} 1",
            "netpath_published_ports{network=\"web\"} 1",
            "netpath_networks 1",
        ] {
            has_line(&text, line);
        }
        assert!(count(&text) >= before + 3, "{before} then\n{text}");
        assert!(
            text.contains("netpath_api_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/endpoints/{id}\",le=\"0.0005\"}"),
            "{text}"
        );
    }
}
