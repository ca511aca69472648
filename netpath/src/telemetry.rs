//! The daemon's own metrics, counted as things happen (the datapath's are read from its
//! maps at scrape time instead, see `api::metrics`): API requests and their latency,
//! reconcile actions, and the daemon's start. One process-wide registry, gathered into
//! every scrape.

use std::{
    sync::LazyLock,
    time::{Duration, SystemTime},
};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, proto::MetricFamily};

/// Latency buckets of API requests, in seconds: 0.5 ms to 10 s (a network create with its
/// bridge and programs takes tens of milliseconds; a Docker Join under load, seconds).
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

struct Telemetry {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    reconcile: IntCounterVec,
    started: std::sync::OnceLock<SystemTime>,
}

/// Registers `metric` (built from constant, valid options) in `registry`.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("a metric of constant name registered once");
    metric
}

static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(|| {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("netpath_api_requests_total", "API requests answered"),
        &["route", "method", "status"],
    )
    .expect("valid options");
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "netpath_api_request_duration_seconds",
            "Time from an API request's arrival to its answer",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["route", "method"],
    )
    .expect("valid options");
    let reconcile = IntCounterVec::new(
        Opts::new(
            "netpath_reconcile_actions_total",
            "What reconciliation (at start, and the periodic sweep) repaired or released",
        ),
        &["action"],
    )
    .expect("valid options");
    // Every action is shown from the start, at 0, so a rate over it is defined before the
    // first repair (Prometheus's advice for label values known in advance).
    for action in ReconcileAction::ALL {
        reconcile.with_label_values(&[action.name()]);
    }
    Telemetry {
        requests: registered(&registry, requests),
        latency: registered(&registry, latency),
        reconcile: registered(&registry, reconcile),
        registry,
        started: std::sync::OnceLock::new(),
    }
});

/// An API request to `route` (the route's pattern, `/v1/endpoints/{id}`, not the path)
/// answered with `status` after `took`.
pub fn api_request(route: &str, method: &str, status: u16, took: Duration) {
    let t = &*TELEMETRY;
    let status = status.to_string();
    t.requests
        .with_label_values(&[route, method, &status])
        .inc();
    t.latency
        .with_label_values(&[route, method])
        .observe(took.as_secs_f64());
}

/// What reconciliation does, one counter per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileAction {
    /// A network's bridge was missing and was made again.
    RecreatedBridge,
    /// An endpoint was released (its devices or namespace were gone, or it was never
    /// finished).
    ReleasedEndpoint,
    /// An attachment pin of a device that no longer exists was removed.
    RemovedPin,
    /// A device netpath made that no record explains was removed.
    RemovedOrphan,
}

impl ReconcileAction {
    pub const ALL: [ReconcileAction; 4] = [
        Self::RecreatedBridge,
        Self::ReleasedEndpoint,
        Self::RemovedPin,
        Self::RemovedOrphan,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::RecreatedBridge => "recreated_bridge",
            Self::ReleasedEndpoint => "released_endpoint",
            Self::RemovedPin => "removed_pin",
            Self::RemovedOrphan => "removed_orphan",
        }
    }
}

/// Counts `n` reconcile actions of one kind.
pub fn reconciled(action: ReconcileAction, n: u64) {
    TELEMETRY
        .reconcile
        .with_label_values(&[action.name()])
        .inc_by(n);
}

/// Records the daemon's start (`netpath_start_time_seconds`); the first call counts.
pub fn mark_start() {
    TELEMETRY.started.get_or_init(SystemTime::now);
}

/// When the daemon started, if it has.
pub fn started() -> Option<SystemTime> {
    TELEMETRY.started.get().copied()
}

/// This process's metric families as they stand.
pub fn gather() -> Vec<MetricFamily> {
    TELEMETRY.registry.gather()
}
