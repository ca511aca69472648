//! Results and the report: `report.json` (everything, per round) and `report.md` (medians,
//! each with its reference and ratio, targets, FAILED reasons, plots, cleanup check).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{Better, Metric, Opts, RunResult, cleanup::CleanupReport, proc, stats};

/// The UTC time now: (`2026-05-21 14:03:07 UTC`, `2026-05-21T14-03-07Z` for paths).
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: both pointers are valid; gmtime_r fills `tm`.
    let ok = !unsafe { libc::gmtime_r(&secs, tm.as_mut_ptr()) }.is_null();
    // SAFETY: zero-initialised, and filled by gmtime_r when it succeeded.
    let tm = unsafe { tm.assume_init() };
    if !ok {
        return ("unknown".into(), format!("t{secs}"));
    }
    let (y, mo, d, h, mi, s) = (
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
    );
    (
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}-{mi:02}-{s:02}Z"),
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct Header {
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute load averages when the bench started.
    pub load_at_start: String,
    /// Tool → version line.
    pub versions: BTreeMap<String, String>,
    pub quick: bool,
    pub rounds: usize,
    pub command: String,
}

/// First line of a command's stdout (or stderr), bounded; `unknown` if it fails.
fn version_of(program: &str, args: &[&str], cwd: Option<&Path>) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    match proc::run_bounded(&mut cmd, None, Duration::from_secs(20)) {
        Ok(out) if out.status.success() => {
            let line = proc::first_line(&out.stdout);
            if line.is_empty() {
                proc::first_line(&out.stderr)
            } else {
                line
            }
        }
        _ => "unknown".into(),
    }
}

impl Header {
    pub fn collect(opts: &Opts, date: String) -> Header {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let bin = opts.netpath_bin.to_string_lossy().into_owned();
        let mut netpath = version_of(&bin, &["--version"], None);
        let commit = version_of("git", &["rev-parse", "--short", "HEAD"], Some(&root));
        if commit != "unknown" {
            let dirty = proc::run_bounded(
                Command::new("git")
                    .args(["status", "--porcelain", "--untracked-files=no"])
                    .current_dir(&root),
                None,
                Duration::from_secs(20),
            )
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
            let _ = write!(
                netpath,
                " (git {commit}{})",
                if dirty {
                    ", with uncommitted changes"
                } else {
                    ""
                }
            );
        }
        let sockperf = version_of("sockperf", &["--version"], None);
        let cni = version_of(
            "dpkg-query",
            &["-W", "-f", "${Version}", "containernetworking-plugins"],
            None,
        );
        let versions = BTreeMap::from([
            ("netpath".to_owned(), netpath),
            (
                "iperf3".to_owned(),
                version_of("iperf3", &["--version"], None),
            ),
            (
                "sockperf".to_owned(),
                sockperf
                    .split_once("version ")
                    .map_or(sockperf.clone(), |(_, v)| format!("sockperf {v}")),
            ),
            (
                "rustc".to_owned(),
                version_of("rustc", &["--version"], Some(&root)),
            ),
            (
                "CNI plugins".to_owned(),
                if cni == "unknown" {
                    cni
                } else {
                    format!("containernetworking-plugins {cni} (Debian)")
                },
            ),
            ("iproute2".to_owned(), version_of("ip", &["-V"], None)),
            (
                "Docker".to_owned(),
                version_of(netpath_tests::engine::DOCKER, &["--version"], None),
            ),
        ]);
        let load_at_start = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into());
        Header {
            date,
            kernel: version_of("uname", &["-r"], None),
            cpus,
            cpu_model,
            load_at_start,
            versions,
            quick: opts.quick,
            rounds: opts.rounds(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

/// One run of one variant.
#[derive(Clone, Debug, Serialize)]
pub struct RoundResult {
    pub round: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
    /// Why the run FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VariantResult {
    pub key: String,
    pub label: String,
    pub how: String,
    pub rounds: Vec<RoundResult>,
    /// Median over the rounds, per metric (empty when FAILED).
    pub median: BTreeMap<String, f64>,
    /// Smallest and largest value over the rounds, per metric.
    pub range: BTreeMap<String, (f64, f64)>,
    /// Why the variant is reported as FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Metric key → why no round could measure it ("n/a: <reason>").
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<String, String>,
}

impl VariantResult {
    /// Medians and ranges over the rounds; FAILED if any round failed, or none ran.
    pub fn finalize(&mut self) {
        self.median.clear();
        self.range.clear();
        self.unavailable.clear();
        let errors: Vec<String> = self
            .rounds
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("round {}: {e}", r.round)))
            .collect();
        if self.rounds.is_empty() {
            self.failed = Some("not run".into());
            return;
        }
        if !errors.is_empty() {
            self.failed = Some(if errors.len() == 1 {
                errors[0].clone()
            } else {
                format!(
                    "{} of {} rounds failed; {}",
                    errors.len(),
                    self.rounds.len(),
                    errors.join("; ")
                )
            });
            return;
        }
        self.failed = None;
        let mut by_key: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for r in self.rounds.iter().filter_map(|r| r.result.as_ref()) {
            for (k, v) in &r.values {
                by_key.entry(k).or_default().push(*v);
            }
        }
        for (k, vs) in by_key {
            if let (Some(m), Some(lo), Some(hi)) =
                (stats::median(&vs), stats::min(&vs), stats::max(&vs))
            {
                self.median.insert(k.to_owned(), m);
                self.range.insert(k.to_owned(), (lo, hi));
            }
        }
        // A metric no round measured, with the first round's reason.
        for r in self.rounds.iter().filter_map(|r| r.result.as_ref()) {
            for (k, why) in &r.unavailable {
                if !self.median.contains_key(k) {
                    self.unavailable
                        .entry(k.clone())
                        .or_insert_with(|| why.clone());
                }
            }
        }
    }

    /// "n/a: <reason>" when `key` could not be measured by this variant.
    pub(crate) fn not_available(&self, key: &str) -> Option<String> {
        self.unavailable.get(key).map(|why| format!("n/a: {why}"))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub title: String,
    pub method: String,
    pub reference: String,
    pub metrics: Vec<Metric>,
    pub variants: Vec<VariantResult>,
    /// (SVG file name, caption).
    pub plots: Vec<(String, String)>,
    /// IPv6 ratios against IPv4 ratios ([`super::family::ratios`]), filled once the
    /// variants are final.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub family_ratios: Vec<super::family::FamilyRatio>,
}

impl ScenarioResult {
    pub fn variant(&self, key: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.key == key)
    }

    pub fn failed(&self) -> bool {
        self.variants.iter().any(|v| v.failed.is_some())
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub header: Header,
    pub wall_time_s: f64,
    pub interrupted: bool,
    pub scenarios: Vec<ScenarioResult>,
    pub cleanup: CleanupReport,
}

/// `value / reference` as `0.87×`.
fn ratio(value: f64, reference: f64) -> String {
    if reference == 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}×", value / reference)
    }
}

fn fmt_wall(secs: f64) -> String {
    let whole = secs as u64;
    if whole >= 60 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{secs:.1}s")
    }
}

/// The figure for one variant and metric: "netpath 12.3 Gbit/s — direct veth 14.1 Gbit/s
/// — 0.87×", or "direct veth 14.1 Gbit/s (reference)", or FAILED.
pub fn figure(s: &ScenarioResult, v: &VariantResult, m: &Metric) -> String {
    let Some(value) = v.median.get(&*m.key).copied() else {
        return if v.failed.is_some() {
            format!("**{} FAILED** (reason below)", v.label)
        } else if let Some(na) = v.not_available(&m.key) {
            format!("{} {na}", v.label)
        } else {
            format!("{} —", v.label)
        };
    };
    let shown = format!("{} {}", v.label, m.unit.format(value));
    let reference = m.reference.unwrap_or(&s.reference);
    if s.variants.len() == 1 {
        return format!("{shown} (absolute figure: no reference exists)");
    }
    if v.key == reference {
        return format!("{shown} (reference)");
    }
    match s.variant(reference) {
        Some(r) => match r.median.get(&*m.key) {
            Some(&rv) => format!(
                "{shown} — {} {} — {}",
                r.label,
                m.unit.format(rv),
                ratio(value, rv)
            ),
            None => match r.not_available(&m.key) {
                Some(na) => format!("{shown} — {} {na} — ratio n/a", r.label),
                None => format!("{shown} — {} FAILED — ratio n/a", r.label),
            },
        },
        None => shown,
    }
}

fn target_cell(s: &ScenarioResult, v: &VariantResult, m: &Metric) -> String {
    let Some(t) = m.target.as_ref().filter(|t| t.variant == v.key) else {
        return String::new();
    };
    // A relative target: `limit` times the other variant's median.
    let (limit, shown) = match t.relative_to {
        Some(other) => {
            let o = s.variant(other);
            let label = o.map_or(other, |o| o.label.as_str());
            match o.and_then(|o| o.median.get(&*m.key)) {
                Some(&ov) => (
                    Some(t.limit * ov),
                    format!(
                        "{:.2}× {label} (= {})",
                        t.limit,
                        m.unit.format(t.limit * ov)
                    ),
                ),
                None => (None, format!("{:.2}× {label} (FAILED)", t.limit)),
            }
        }
        None => (Some(t.limit), m.unit.format(t.limit)),
    };
    let (sym, met) = match (m.better, v.median.get(&*m.key), limit) {
        (Better::Lower, Some(&x), Some(l)) => ("<", Some(x < l)),
        (Better::Higher, Some(&x), Some(l)) => (">", Some(x > l)),
        (Better::Lower, _, _) => ("<", None),
        (Better::Higher, _, _) => (">", None),
    };
    let verdict = match met {
        Some(true) => "met ✅",
        Some(false) => "MISSED ❌",
        None => "n/a",
    };
    format!("{sym} {shown} — {verdict}")
}

impl Report {
    pub fn markdown(&self) -> String {
        let h = &self.header;
        let mut md = String::new();
        let _ = writeln!(md, "# netpath benchmark report\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| date | {} |", h.date);
        let _ = writeln!(md, "| kernel | {} |", h.kernel);
        let _ = writeln!(md, "| CPUs | {} × {} |", h.cpus, h.cpu_model);
        let busy = h
            .load_at_start
            .split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .is_some_and(|l| l > 0.5 * h.cpus as f64);
        let _ = writeln!(
            md,
            "| load average at start | {}{} |",
            h.load_at_start,
            if busy {
                " (the host was busy: expect noisy numbers)"
            } else {
                ""
            }
        );
        for (tool, version) in &h.versions {
            let _ = writeln!(md, "| {tool} | {version} |");
        }
        let _ = writeln!(
            md,
            "| mode | {}{} rounds per variant, interleaved (A B C A B C …); medians over the rounds |",
            if h.quick { "--quick: " } else { "" },
            h.rounds
        );
        let _ = writeln!(md, "| wall time | {} |", fmt_wall(self.wall_time_s));
        let _ = writeln!(md, "| command | `{}` |", h.command);
        if self.interrupted {
            let _ = writeln!(
                md,
                "\n**INTERRUPTED** (Ctrl-C/SIGTERM): the numbers cover only the rounds that ran; a \
                 variant with no round, or whose round was cut short, is FAILED."
            );
        }
        for s in &self.scenarios {
            let _ = writeln!(md, "\n## {} — {}\n", s.name, s.title);
            let _ = writeln!(md, "{}\n", s.method);
            for v in &s.variants {
                let _ = writeln!(md, "- **{}**: {}", v.label, v.how);
            }
            let _ = writeln!(
                md,
                "\n| metric | result — reference — ratio | rounds (min … max) | target |"
            );
            let _ = writeln!(md, "|---|---|---|---|");
            for m in &s.metrics {
                let better = match m.better {
                    Better::Higher => "higher is better",
                    Better::Lower => "lower is better",
                };
                for (i, v) in s.variants.iter().enumerate() {
                    let label = if i == 0 {
                        format!("{} ({better})", m.label)
                    } else {
                        String::new()
                    };
                    let range = v
                        .range
                        .get(&*m.key)
                        .map(|(lo, hi)| format!("{} … {}", m.unit.format(*lo), m.unit.format(*hi)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        md,
                        "| {label} | {} | {range} | {} |",
                        figure(s, v, m),
                        target_cell(s, v, m)
                    );
                }
            }
            super::family::table(&mut md, s);
            let failed: Vec<&VariantResult> =
                s.variants.iter().filter(|v| v.failed.is_some()).collect();
            if !failed.is_empty() {
                let _ = writeln!(md);
                for v in failed {
                    let _ = writeln!(
                        md,
                        "- **{} FAILED**: {}",
                        v.label,
                        v.failed.as_deref().unwrap_or_default()
                    );
                }
            }
            let notes: Vec<String> = s
                .variants
                .iter()
                .flat_map(|v| {
                    v.rounds.iter().flat_map(move |r| {
                        r.result.iter().flat_map(move |res| {
                            res.notes
                                .iter()
                                .map(move |n| format!("{}, round {}: {n}", v.label, r.round))
                        })
                    })
                })
                .collect();
            if !notes.is_empty() {
                let _ = writeln!(md, "\nNotes:");
                for n in notes {
                    let _ = writeln!(md, "- {n}");
                }
            }
            for (file, caption) in &s.plots {
                let _ = writeln!(
                    md,
                    "\n![{caption}]({file})\n\n*{caption}* ([{file}]({file}))"
                );
            }
        }
        let _ = writeln!(md, "\n## Cleanup\n");
        let c = &self.cleanup;
        if c.leftovers.is_empty() {
            let _ = writeln!(
                md,
                "✅ Nothing left behind. Checked: {}.",
                c.checked.join(", ")
            );
        } else {
            let _ = writeln!(md, "❌ Left behind after the sweep:");
            for l in &c.leftovers {
                let _ = writeln!(md, "- {l}");
            }
        }
        if !c.restored.is_empty() {
            let _ = writeln!(md, "\nRestored: {}.", c.restored.join("; "));
        }
        if !c.swept.is_empty() {
            let _ = writeln!(
                md,
                "\nThe final sweep removed (guards had missed, or a run was interrupted): {}.",
                c.swept.join(", ")
            );
        }
        if !c.problems.is_empty() {
            let _ = writeln!(md, "\nProblems during cleanup:");
            for p in &c.problems {
                let _ = writeln!(md, "- {p}");
            }
        }
        md
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).context("encoding report.json")?;
        std::fs::write(dir.join("report.json"), json + "\n")
            .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
        std::fs::write(dir.join("report.md"), self.markdown())
            .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Target, Unit};

    fn variant(key: &str, label: &str, values: &[f64], error: Option<&str>) -> VariantResult {
        let mut v = variant_of(key, label, &[("x", values)], &[]);
        if let Some(e) = error {
            v.rounds.push(RoundResult {
                round: v.rounds.len() + 1,
                seconds: 1.0,
                result: None,
                error: Some(e.into()),
            });
            v.finalize();
        }
        v
    }

    /// A variant whose rounds measured `values` (key, value per round) and could not
    /// measure the keys of `na`.
    pub(crate) fn variant_of(
        key: &str,
        label: &str,
        values: &[(&str, &[f64])],
        na: &[(&str, &str)],
    ) -> VariantResult {
        let n = values.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
        let rounds = (0..n)
            .map(|i| {
                let mut r = RunResult::default();
                for (k, vs) in values {
                    r.set(k, vs[i]);
                }
                for (k, why) in na {
                    r.unavailable(k, *why);
                }
                RoundResult {
                    round: i + 1,
                    seconds: 1.0,
                    result: Some(r),
                    error: None,
                }
            })
            .collect();
        let mut v = VariantResult {
            key: key.into(),
            label: label.into(),
            how: String::new(),
            rounds,
            median: BTreeMap::new(),
            range: BTreeMap::new(),
            failed: None,
            unavailable: BTreeMap::new(),
        };
        v.finalize();
        v
    }

    #[test]
    fn figures_carry_reference_and_ratio() {
        let metric = Metric {
            target: Some(Target {
                variant: "netpath",
                limit: 10.0,
                relative_to: None,
            }),
            ..Metric::new("x", "throughput", Unit::Gbps, Better::Higher)
        };
        let s = ScenarioResult {
            name: "endpoint".into(),
            title: String::new(),
            method: String::new(),
            reference: "direct".into(),
            metrics: vec![metric.clone()],
            variants: vec![
                variant("direct", "direct veth", &[14.0, 14.2, 14.1], None),
                variant("netpath", "netpath", &[12.3, 12.0, 12.5], None),
                variant("bridge", "Linux bridge", &[9.0], Some("iperf3: 0 bytes")),
            ],
            plots: Vec::new(),
            family_ratios: Vec::new(),
        };
        assert_eq!(
            figure(&s, &s.variants[1], &metric),
            "netpath 12.3 Gbit/s — direct veth 14.1 Gbit/s — 0.87×"
        );
        assert_eq!(
            figure(&s, &s.variants[0], &metric),
            "direct veth 14.1 Gbit/s (reference)"
        );
        assert!(figure(&s, &s.variants[2], &metric).contains("FAILED"));
        assert_eq!(
            s.variants[2].failed.as_deref(),
            Some("round 2: iperf3: 0 bytes")
        );
        assert_eq!(
            target_cell(&s, &s.variants[1], &metric),
            "> 10.0 Gbit/s — met ✅"
        );
        assert_eq!(target_cell(&s, &s.variants[0], &metric), "");
        assert!(s.failed());
    }

    #[test]
    fn utc_is_formatted() {
        let (shown, path) = utc_now();
        assert!(shown.ends_with(" UTC") && shown.len() == 23, "{shown}");
        assert!(path.ends_with('Z') && !path.contains(':'), "{path}");
    }
}
