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
pub mod ctx;
pub mod daemon;
pub mod endpoint;
pub mod floor;
pub mod footprint;
pub mod masq;
pub mod plot;
pub mod proc;
pub mod progcost;
pub mod publish;
pub mod report;
pub mod runner;
pub mod setup;
pub mod soak;
pub mod stats;
pub mod topo;

use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

pub use self::{ctx::Ctx, runner::run};

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

/// One number a scenario reports per variant.
#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    pub key: &'static str,
    pub label: String,
    pub unit: Unit,
    pub better: Better,
    pub target: Option<Target>,
    /// The variant this metric's ratios are against, when not the scenario's
    /// [`Scenario::reference`] (e.g. throughput against a direct veth pair in a scenario
    /// whose other figures are against iptables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'static str>,
}

impl Metric {
    /// A metric with no target, against the scenario's reference.
    pub fn new(key: &'static str, label: impl Into<String>, unit: Unit, better: Better) -> Metric {
        Metric {
            key,
            label: label.into(),
            unit,
            better,
            target: None,
            reference: None,
        }
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
}

impl RunResult {
    pub fn set(&mut self, key: &str, v: f64) {
        self.values.insert(key.to_owned(), v);
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
        Box::new(publish::PublishScenario::new(opts)),
        Box::new(masq::MasqScenario::new(opts)),
        Box::new(cni::CniScenario::new(opts)),
        Box::new(footprint::FootprintScenario::new(opts)),
        Box::new(soak::SoakScenario::new(opts)),
    ]
}
