//! `netpath-bench`: the benchmark harness (`cargo xtask bench`).
//!
//! A [`Scenario`] has variants (netpath and the recipes it wants to beat) and runs one
//! variant at a time into a [`RunResult`]. The [`runner`] interleaves the variants over
//! several rounds (A B C A B C …), takes medians, and the [`report`] writes
//! `report.json`, `report.md` and SVG plots. Everything the bench creates is named with
//! a per-run prefix, held by guards, and swept and checked by [`cleanup`] at the end,
//! also after a failure or Ctrl-C.
//!
//! Adding a scenario: implement [`Scenario`] (build what it needs with [`topo`]) and
//! list it in [`all_scenarios`].

pub mod cleanup;
pub mod cni;
pub mod connrate;
pub mod cost;
pub mod ctx;
pub mod daemon;
pub mod docker;
pub mod endpoint;
pub mod family;
pub mod floor;
pub mod footprint;
pub mod masq;
pub mod observe;
pub mod pingpong;
pub mod plot;
pub mod policy;
pub mod proc;
pub mod progcost;
pub mod publish;
pub mod report;
pub mod router;
pub mod runner;
pub mod setup;
pub mod soak;
pub mod stats;
pub mod topo;

use std::{borrow::Cow, collections::BTreeMap, path::PathBuf};

use serde::Serialize;

pub use self::{
    ctx::{Build, Ctx},
    runner::run,
};

/// What `netpath-bench` was asked to do.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Fewer rounds, fewer endpoints, shorter traffic runs.
    pub quick: bool,
    /// Rounds per variant, if not the default.
    pub rounds: Option<usize>,
    /// Scenarios to run (all when empty).
    pub scenarios: Vec<String>,
    /// Where the report and plots go.
    pub out: PathBuf,
    /// The `netpath` binary to benchmark.
    pub netpath_bin: PathBuf,
    /// A `netpath` binary of an earlier commit, for the scenarios that measure this build
    /// against it in the same run (`cost`).
    pub baseline_bin: Option<PathBuf>,
}

impl Opts {
    /// Rounds per variant: as asked, else 3, or 2 with `--quick`.
    pub fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 2 } else { 3 })
    }
}

/// One way of doing what a scenario measures (e.g. netpath, a Linux bridge, CNI).
#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    /// Short key (`netpath`, `bridge`, …), used in file names and JSON.
    pub key: &'static str,
    /// Human label for the report ("direct veth").
    pub label: &'static str,
    /// How this variant is set up, one sentence for the report.
    pub how: String,
}

impl Variant {
    /// The key of [`Variant::earlier_build`].
    pub const EARLIER: &'static str = "previous";

    /// netpath as variant `netpath` sets it up, but with the daemon of an earlier
    /// commit (`cargo xtask bench --baseline REV`): the before of a before/after.
    pub fn earlier_build() -> Variant {
        Variant {
            key: Variant::EARLIER,
            label: "netpath, earlier build",
            how: "the `netpath` variant with the daemon of an earlier commit (`cargo xtask \
                  bench --baseline REV` builds it in a git worktree); the daemon is stopped \
                  and reset between builds."
                .into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    #[serde(rename = "Gbit/s")]
    Gbps,
    #[serde(rename = "ns")]
    Nanos,
    #[serde(rename = "us")]
    Micros,
    #[serde(rename = "ms")]
    Millis,
    #[serde(rename = "s")]
    Secs,
    /// New connections per second.
    #[serde(rename = "conn/s")]
    ConnPerSec,
    /// A dimensionless factor (e.g. a variant's value at 10,000 ports over its value at 0).
    #[serde(rename = "x")]
    Ratio,
    #[serde(rename = "MiB")]
    MiB,
    #[serde(rename = "KiB")]
    KiB,
    /// A plain count (requests, endpoints).
    #[serde(rename = "")]
    Count,
    /// Operations (requests) per second.
    #[serde(rename = "/s")]
    PerSec,
}

impl Unit {
    pub fn format(self, v: f64) -> String {
        let digits = |v: f64| {
            if v.abs() >= 100.0 {
                0
            } else if v.abs() >= 10.0 {
                1
            } else {
                2
            }
        };
        let (sym, d) = match self {
            Unit::Gbps => ("Gbit/s", digits(v)),
            Unit::Nanos => ("ns", 0),
            Unit::Micros => ("µs", digits(v).min(1)),
            Unit::Millis => ("ms", digits(v)),
            Unit::Secs => ("s", digits(v)),
            Unit::ConnPerSec => ("conn/s", 0),
            Unit::Ratio => return format!("{v:.2}×"),
            Unit::MiB => ("MiB", digits(v)),
            Unit::KiB => ("KiB", digits(v)),
            Unit::Count => return format!("{v:.0}"),
            Unit::PerSec => ("/s", 0),
        };
        format!("{v:.d$} {sym}")
    }
}

/// A target a variant's value should meet (printed next to the result).
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// The variant the target is for.
    pub variant: &'static str,
    /// The value must be below (`Better::Lower`) or above (`Better::Higher`) this.
    pub limit: f64,
    /// When set, `limit` is a factor: the value must be below or above `limit` times
    /// this variant's median of the same metric ("≥ 2.5× iptables").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_to: Option<&'static str>,
}

/// The address family a figure was measured over. Scenarios measure both in the same
/// run (dual-stack topologies) and key IPv6 figures as `<IPv4 key>_v6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The key of `base` (an IPv4 metric's key) measured over this family.
    pub fn key(self, base: &str) -> String {
        match self {
            Family::V4 => base.to_owned(),
            Family::V6 => format!("{base}_v6"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One number a scenario reports per variant.
#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    pub key: Cow<'static, str>,
    pub label: String,
    pub unit: Unit,
    pub better: Better,
    pub target: Option<Target>,
    /// The variant this metric's ratios are against, when not the scenario's
    /// [`Scenario::reference`] (e.g. throughput against a direct veth pair in a scenario
    /// whose other figures are against iptables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'static str>,
    /// For an IPv6 metric: the key of the same metric over IPv4. The report compares
    /// each variant's IPv6 ratio with its IPv4 ratio (see [`family::ratios`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v4_of: Option<Cow<'static, str>>,
}

impl Metric {
    /// A metric with no target, against the scenario's reference.
    pub fn new(
        key: impl Into<Cow<'static, str>>,
        label: impl Into<String>,
        unit: Unit,
        better: Better,
    ) -> Metric {
        Metric {
            key: key.into(),
            label: label.into(),
            unit,
            better,
            target: None,
            reference: None,
            v4_of: None,
        }
    }

    /// The same metric measured over IPv6 (key `<key>_v6`, label "… (IPv6)", the same
    /// reference and target), linked to this one for the IPv6 ÷ IPv4 comparison.
    pub fn v6(&self) -> Metric {
        Metric {
            key: Family::V6.key(&self.key).into(),
            label: format!("{} (IPv6)", self.label),
            v4_of: Some(self.key.clone()),
            ..self.clone()
        }
    }

    /// `metrics`, each followed by its IPv6 counterpart when `with_v6` says so.
    pub fn with_v6(metrics: Vec<Metric>, with_v6: impl Fn(&Metric) -> bool) -> Vec<Metric> {
        metrics
            .into_iter()
            .flat_map(|m| {
                let v6 = with_v6(&m).then(|| m.v6());
                std::iter::once(m).chain(v6)
            })
            .collect()
    }

    /// With an absolute target for `variant`.
    pub fn target(mut self, variant: &'static str, limit: f64) -> Metric {
        self.target = Some(Target {
            variant,
            limit,
            relative_to: None,
        });
        self
    }

    /// With a target for `variant` relative to `other`'s median (`factor`×).
    pub fn target_vs(mut self, variant: &'static str, factor: f64, other: &'static str) -> Metric {
        self.target = Some(Target {
            variant,
            limit: factor,
            relative_to: Some(other),
        });
        self
    }

    /// With ratios against `variant` instead of the scenario's reference.
    pub fn against(mut self, variant: &'static str) -> Metric {
        self.reference = Some(variant);
        self
    }
}

/// What one run of one variant measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunResult {
    /// Metric key → value.
    pub values: BTreeMap<String, f64>,
    /// Raw samples for distribution plots (e.g. per-endpoint latencies in ms).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, Vec<f64>>,
    /// Remarks (e.g. a few failed operations under the 1 % threshold).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Metric key → why this variant cannot measure it (e.g. a netpath feature that is
    /// not there yet): reported as "n/a: <reason>", not as a FAILED run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<String, String>,
}

impl RunResult {
    pub fn set(&mut self, key: &str, v: f64) {
        self.values.insert(key.to_owned(), v);
    }

    /// Marks every IPv6 metric of `metrics` as not measurable by this variant.
    pub fn v6_unavailable(&mut self, metrics: &[Metric], reason: &str) {
        for m in metrics.iter().filter(|m| m.v4_of.is_some()) {
            self.unavailable(&m.key, reason);
        }
    }

    /// Marks `key` as not measurable by this variant, for `reason`.
    pub fn unavailable(&mut self, key: &str, reason: impl Into<String>) {
        self.unavailable.insert(key.to_owned(), reason.into());
    }
}

/// A benchmark scenario. The runner calls [`Scenario::run`] once per variant and round,
/// interleaved, then [`Scenario::finish`]; every resource a run creates must be gone
/// when it returns (use the guards of [`topo`]), except shared ones that `finish` (or
/// dropping the [`Ctx`]) releases.
pub trait Scenario {
    /// Name used with `--scenario`.
    fn name(&self) -> &'static str;
    /// One-line title for the report.
    fn title(&self) -> String;
    /// What is measured and how, for the report (Markdown).
    fn method(&self) -> String;
    fn variants(&self) -> Vec<Variant>;
    /// Key of the variant the ratios are computed against.
    fn reference(&self) -> &'static str;
    fn metrics(&self) -> Vec<Metric>;
    /// Runs `variant` once. An `Err` is a FAILED run; its message is the reason.
    fn run(&mut self, ctx: &mut Ctx, variant: &str, round: usize) -> anyhow::Result<RunResult>;
    /// Releases whatever the runs shared.
    fn finish(&mut self, _ctx: &mut Ctx) {}
    /// Writes SVG plots into `dir`; returns (file name, caption) pairs.
    fn plots(
        &self,
        _result: &report::ScenarioResult,
        _dir: &std::path::Path,
    ) -> anyhow::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}

/// Every scenario, in run order.
pub fn all_scenarios(opts: &Opts) -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(setup::SetupScenario::new(opts)),
        Box::new(endpoint::EndpointScenario::new(opts)),
        Box::new(cost::CostScenario::new(opts)),
        Box::new(policy::PolicyScenario::new(opts)),
        Box::new(publish::PublishScenario::new(opts)),
        Box::new(masq::MasqScenario::new(opts)),
        Box::new(cni::CniScenario::new(opts)),
        Box::new(footprint::FootprintScenario::new(opts)),
        Box::new(soak::SoakScenario::new(opts)),
        // Last: dockerd's bridge driver changes host settings the others measure under.
        Box::new(docker::DockerScenario::new(opts)),
    ]
}
