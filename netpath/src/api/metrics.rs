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

use std::{
    collections::BTreeMap,
    fmt::{Display, Write as _},
    time::UNIX_EPOCH,
};

use netpath_common::{
    maps::{DropReason, FRAG_MAP, FRAG6_MAP},
    nat::{DNAT_CT_MAP, DNAT_CT6_MAP, SNAT_MAP, SNAT6_MAP, SOCK_NAT_MAP, SOCK_NAT6_MAP},
};
use prometheus::{Encoder, TextEncoder};

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

/// One metric family of a scrape, written in the text format as it is made: its HELP and
/// TYPE lines, then a line per sample. The scrape-time families are written here rather
/// than through a `prometheus` registry, which allocates a message per series at every
/// gather: at 1,000 endpoints, 8,000 series a scrape, and 20 MiB of RSS left behind
/// over five scrapes (bench `footprint`).
struct Family {
    name: String,
    text: String,
    samples: usize,
}

impl Family {
    /// A `counter` or `gauge` family.
    fn new(name: impl Into<String>, kind: &str, help: &str) -> Family {
        let name = name.into();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(text, "# TYPE {name} {kind}");
        Family {
            name,
            text,
            samples: 0,
        }
    }

    /// A sample; `labels` by name in order, as a registry would sort them.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        debug_assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "{labels:?}");
        self.text.push_str(&self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_value(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self.samples += 1;
    }
}

/// A HELP text as the format wants it: `\` and newlines escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape_value(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return s.into();
    }
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
        .into()
}

/// One scrape's families.
#[derive(Default)]
struct Scrape(Vec<Family>);

impl Scrape {
    fn add(&mut self, f: Family) {
        self.0.push(f);
    }

    /// A gauge without labels.
    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        let mut f = Family::new(name, "gauge", help);
        f.sample(&[], value);
        self.add(f);
    }

    /// `netpath_<name>_packets_total` and `netpath_<name>_bytes_total` of one counter
    /// table, `rows` giving each row's labels (by name in order), packets and bytes.
    fn packets_and_bytes<'a>(
        &mut self,
        name: &str,
        what: &str,
        rows: impl Iterator<Item = (Vec<(&'a str, &'a str)>, Count)>,
    ) {
        let mut packets = Family::new(
            format!("netpath_{name}_packets_total"),
            "counter",
            &format!("Packets {what}"),
        );
        let mut bytes = Family::new(
            format!("netpath_{name}_bytes_total"),
            "counter",
            &format!("Bytes {what}"),
        );
        for (labels, c) in rows {
            packets.sample(&labels, c.packets);
            bytes.sample(&labels, c.bytes);
        }
        self.add(packets);
        self.add(bytes);
    }

    /// The text of every family with samples, the daemon's own ([`telemetry`]) among
    /// them, sorted by name.
    fn finish(mut self) -> String {
        for family in telemetry::gather() {
            let mut text = Vec::new();
            // Encoding into a Vec cannot fail, and the text format writes UTF-8.
            let _ = TextEncoder::new().encode(std::slice::from_ref(&family), &mut text);
            self.0.push(Family {
                name: family.name().to_owned(),
                text: String::from_utf8_lossy(&text).into_owned(),
                samples: family.get_metric().len(),
            });
        }
        // As a registry does: a family without samples is left out.
        self.0.retain(|f| f.samples > 0);
        self.0.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = String::with_capacity(self.0.iter().map(|f| f.text.len()).sum());
        for f in &self.0 {
            out.push_str(&f.text);
        }
        out
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
    let mut scrape = Scrape::default();
    datapath_counters(&mut scrape, stats, endpoints);
    let mut lost = Family::new(
        "netpath_monitor_events_lost_total",
        "counter",
        "Events the datapath's ring could not take (nobody read them in time)",
    );
    lost.sample(&[], events_lost);
    scrape.add(lost);
    tables(&mut scrape, stats);
    records(&mut scrape, networks, endpoints, ports);
    scrape.gauge("netpath_networks", "Networks", networks.len());
    let mut build = Family::new(
        "netpath_build_info",
        "gauge",
        "The daemon's build (always 1)",
    );
    build.sample(
        &[
            ("commit", env!("NETPATH_COMMIT")),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    scrape.add(build);
    if let Some(start) = telemetry::started() {
        let secs = start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        scrape.gauge(
            "netpath_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch",
            secs,
        );
    }
    scrape.finish()
}

/// The programs' packet counters.
fn datapath_counters(scrape: &mut Scrape, stats: &StatsReport, endpoints: &[Endpoint]) {
    let rows = stats.forwards.iter();
    let rows = rows.map(|w| (vec![("way", w.way.as_str())], w.count));
    scrape.packets_and_bytes(
        "forwarded",
        "the fast path forwarded past the kernel's path",
        rows,
    );
    let rows = stats.drops_by_hook.iter();
    let rows = rows.map(|d| {
        (
            vec![("hook", d.hook.as_str()), ("reason", d.reason.as_str())],
            d.count,
        )
    });
    scrape.packets_and_bytes("dropped", "the datapath dropped", rows);
    let exhausted = DropReason::NatPortsExhausted.name();
    let failures: u64 = (stats.drops.iter())
        .filter(|d| d.reason == exhausted)
        .map(|d| d.count.packets)
        .sum();
    let mut claims = Family::new(
        "netpath_masquerade_port_claim_failures_total",
        "counter",
        "Packets of new masqueraded connections that found no free port (and were dropped)",
    );
    claims.sample(&[], failures);
    scrape.add(claims);
    let rows = stats.classes.iter();
    let rows = rows.map(|c| {
        (
            vec![("class", c.class.as_str()), ("hook", c.hook.as_str())],
            c.count,
        )
    });
    scrape.packets_and_bytes("seen", "the datapath's programs saw", rows);
    let by_id: BTreeMap<&str, &Endpoint> = endpoints.iter().map(|e| (e.id.as_str(), e)).collect();
    let rows = stats.endpoints.iter().flat_map(|t| {
        let id = t.id.as_deref().unwrap_or_default();
        let network = t.network.as_deref().unwrap_or_default();
        let kind = by_id.get(id).map_or("", |e| kind(e.kind));
        let labels = |direction| {
            vec![
                ("direction", direction),
                ("endpoint", id),
                ("kind", kind),
                ("network", network),
            ]
        };
        [(labels("tx"), t.tx()), (labels("rx"), t.rx())]
    });
    scrape.packets_and_bytes("endpoint", "of an endpoint", rows);
    let mut runs = Family::new(
        "netpath_program_runs_total",
        "counter",
        "Runs of a datapath program (counted while kernel.bpf_stats_enabled is 1)",
    );
    let mut time = Family::new(
        "netpath_program_run_time_seconds_total",
        "counter",
        "Time spent in a datapath program (counted while kernel.bpf_stats_enabled is 1)",
    );
    for p in &stats.programs {
        runs.sample(&[("program", &p.program)], p.run_count);
        time.sample(&[("program", &p.program)], p.run_time_ns as f64 / 1e9);
    }
    scrape.add(runs);
    scrape.add(time);
}

/// How full the datapath's tables are, and the translated connections among them.
fn tables(scrape: &mut Scrape, stats: &StatsReport) {
    let mut entries = Family::new(
        "netpath_map_entries",
        "gauge",
        "Entries of a datapath table",
    );
    let mut capacity = Family::new(
        "netpath_map_capacity",
        "gauge",
        "Entries a datapath table can hold",
    );
    let mut pressure = Family::new(
        "netpath_map_pressure",
        "gauge",
        "How full a datapath table is: entries / capacity (an LRU at 1 evicts its oldest)",
    );
    let mut nat = Family::new(
        "netpath_nat_entries",
        "gauge",
        "Translated connections (and fragment trackers) held, by what translates them",
    );
    for m in &stats.maps {
        let map = [("map", m.map.as_str())];
        entries.sample(&map, m.entries);
        capacity.sample(&map, m.capacity);
        pressure.sample(&map, m.entries as f64 / f64::from(m.capacity.max(1)));
        if let Some((_, kind, family)) = NAT_TABLES.iter().find(|(t, ..)| *t == m.map) {
            nat.sample(&[("family", family), ("kind", kind)], m.entries);
        }
    }
    for f in [entries, capacity, pressure, nat] {
        scrape.add(f);
    }
}

/// Endpoints and published ports, from the records.
fn records(scrape: &mut Scrape, networks: &[Network], endpoints: &[Endpoint], ports: &[PortLease]) {
    let mut by_kind: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for e in endpoints {
        *by_kind
            .entry((e.network.as_str(), kind(e.kind)))
            .or_default() += 1;
    }
    let mut eps = Family::new(
        "netpath_endpoints",
        "gauge",
        "Endpoints per network and kind",
    );
    for ((network, kind), n) in by_kind {
        eps.sample(&[("kind", kind), ("network", network)], n);
    }
    scrape.add(eps);
    // Every network shows, with 0 when it publishes nothing.
    let mut published: BTreeMap<&str, u64> =
        networks.iter().map(|n| (n.name.as_str(), 0)).collect();
    let network_of: BTreeMap<&str, &str> = (endpoints.iter())
        .map(|e| (e.id.as_str(), e.network.as_str()))
        .collect();
    for p in ports {
        if let Some(network) = network_of.get(p.endpoint.as_str()) {
            *published.entry(network).or_default() += 1;
        }
    }
    let mut f = Family::new(
        "netpath_published_ports",
        "gauge",
        "Published ports per network",
    );
    for (network, n) in published {
        f.sample(&[("network", network)], n);
    }
    scrape.add(f);
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
                ip: Some("10.1.0.2".parse().unwrap()),
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

    #[test]
    fn label_values_and_help_are_escaped_and_empty_families_left_out() {
        let mut f = Family::new("netpath_x", "gauge", "a \\ b\nc");
        f.sample(&[("a", "q\"t\\n\nl"), ("b", "plain")], 1.5);
        assert_eq!(
            f.text,
            "# HELP netpath_x a \\\\ b\\nc\n# TYPE netpath_x gauge\nnetpath_x{a=\"q\\\"t\\\\n\\nl\",b=\"plain\"} 1.5\n"
        );
        let mut scrape = Scrape::default();
        scrape.add(Family::new("netpath_empty", "counter", "none"));
        scrape.add(f);
        let text = scrape.finish();
        assert!(!text.contains("netpath_empty"), "{text}");
        assert!(text.contains("netpath_x{"), "{text}");
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
            subnet: Some("10.77.0.0/24".parse().unwrap()),
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
