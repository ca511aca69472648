//! IPv6 against IPv4 in the same run: for every IPv6 metric (one with
//! [`Metric::v4_of`](super::Metric::v4_of)) and every variant, the variant's IPv6 ratio (against the metric's
//! reference) over its IPv4 ratio, checked against the target (within 0.95×),
//! and the report's table of them.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    Better,
    report::{ScenarioResult, VariantResult},
};

/// How close a variant's IPv6 ratio must come to its IPv4 ratio (issue): within 0.95×.
pub const FAMILY_TARGET: f64 = 0.95;

/// One variant's IPv6 ratio against its IPv4 ratio of the same run, for one metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FamilyRatio {
    /// The IPv6 metric's key (`tcp1_gbps_v6`).
    pub metric: String,
    pub variant: String,
    /// The reference both ratios are against.
    pub reference: String,
    /// variant ÷ reference over IPv4, and over IPv6.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v4_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v6_ratio: Option<f64>,
    /// IPv6 ratio ÷ IPv4 ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v6_over_v4: Option<f64>,
    /// The IPv6 ratio is within [`FAMILY_TARGET`] of the IPv4 one in the metric's good
    /// direction: ≥ 0.95 when higher is better, ≤ 1 / 0.95 when lower is; `None`
    /// when a figure is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
    /// Why a figure is missing (a FAILED or n/a variant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// For every IPv6 metric (one with [`Metric::v4_of`](super::Metric::v4_of)) and every variant but the
/// metric's reference: the variant's IPv6 ratio over its IPv4 ratio.
pub fn ratios(s: &ScenarioResult) -> Vec<FamilyRatio> {
    let mut out = Vec::new();
    for m in &s.metrics {
        let Some(k4) = m.v4_of.as_deref() else {
            continue;
        };
        let k6: &str = &m.key;
        let reference = m.reference.unwrap_or(&s.reference);
        let Some(r) = s.variant(reference) else {
            continue;
        };
        for v in s.variants.iter().filter(|v| v.key != reference) {
            let missing = |who: &VariantResult, key: &str| -> String {
                let what = who
                    .unavailable
                    .get(key)
                    .cloned()
                    .or_else(|| who.failed.as_ref().map(|_| "FAILED".to_owned()))
                    .unwrap_or_else(|| "not measured".to_owned());
                format!(
                    "{} {}: {what}",
                    who.label,
                    if key == k4 { "IPv4" } else { "IPv6" }
                )
            };
            let ratio_of = |key: &str| -> Result<f64, String> {
                let x = *v.median.get(key).ok_or_else(|| missing(v, key))?;
                let rx = *r.median.get(key).ok_or_else(|| missing(r, key))?;
                if rx == 0.0 {
                    return Err(format!("{} {key} is 0", r.label));
                }
                Ok(x / rx)
            };
            // A metric that does not apply to the variant in either family (no program
            // to time on a direct veth pair) has nothing to compare;
            // Likewise one it measures in neither family (a direct veth pair has no
            // published ports beyond level 0): only a FAILED variant is shown then.
            let measured = |k: &str| v.median.contains_key(k);
            if [k4, k6].iter().all(|k| v.unavailable.contains_key(*k))
                || (!measured(k4) && !measured(k6) && v.failed.is_none())
            {
                continue;
            }
            let (v4, v6) = (ratio_of(k4), ratio_of(k6));
            let both = v4.as_ref().ok().zip(v6.as_ref().ok());
            let v6_over_v4 = both.and_then(|(a, b)| (*a != 0.0).then(|| b / a));
            let met = v6_over_v4.map(|x| match m.better {
                Better::Higher => x >= FAMILY_TARGET,
                Better::Lower => x <= 1.0 / FAMILY_TARGET,
            });
            let missing = [&v4, &v6]
                .iter()
                .filter_map(|r| r.as_ref().err().cloned())
                .collect::<Vec<_>>();
            out.push(FamilyRatio {
                metric: k6.to_owned(),
                variant: v.key.clone(),
                reference: reference.to_owned(),
                v4_ratio: v4.ok(),
                v6_ratio: v6.ok(),
                v6_over_v4,
                met,
                missing: (!missing.is_empty()).then(|| missing.join("; ")),
            });
        }
    }
    out
}

/// The IPv6 ÷ IPv4 table of a scenario with IPv6 metrics: per metric and variant, both
/// ratios and their quotient against the [`FAMILY_TARGET`].
pub fn table(md: &mut String, s: &ScenarioResult) {
    if s.family_ratios.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nIPv6 against IPv4, same run: each variant's IPv6 ratio ÷ its IPv4 ratio (target: \
         the IPv6 ratio within {FAMILY_TARGET:.2}× of the IPv4 one, i.e. ≥ {FAMILY_TARGET:.2} \
         when higher is better, ≤ {:.2} when lower is).\n",
        1.0 / FAMILY_TARGET
    );
    let _ = writeln!(
        md,
        "| metric | variant | IPv4 ratio | IPv6 ratio | IPv6 ÷ IPv4 | target |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let x = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}×"));
    for f in &s.family_ratios {
        let Some(m) = s.metrics.iter().find(|m| m.key == f.metric) else {
            continue;
        };
        let label = s
            .variant(&f.variant)
            .map_or(f.variant.as_str(), |v| &v.label);
        let reference = s
            .variant(&f.reference)
            .map_or(f.reference.as_str(), |v| &v.label);
        let (sym, limit) = match m.better {
            Better::Higher => ("≥", FAMILY_TARGET),
            Better::Lower => ("≤", 1.0 / FAMILY_TARGET),
        };
        let verdict = match (f.met, &f.missing) {
            (Some(true), _) => "met ✅".to_owned(),
            (Some(false), _) => "MISSED ❌".to_owned(),
            (None, Some(why)) => format!("n/a ({why})"),
            (None, None) => "n/a".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} | {label} (vs {reference}) | {} | {} | {} | {sym} {limit:.2} — {verdict} |",
            m.label.trim_end_matches(" (IPv6)"),
            x(f.v4_ratio),
            x(f.v6_ratio),
            f.v6_over_v4.map_or("n/a".to_owned(), |v| format!("{v:.2}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Metric, RunResult, Unit,
        report::{RoundResult, figure, tests::variant_of},
    };

    fn scenario(metrics: Vec<Metric>, variants: Vec<VariantResult>) -> ScenarioResult {
        let mut s = ScenarioResult {
            name: "endpoint".into(),
            title: String::new(),
            method: String::new(),
            reference: "direct".into(),
            metrics,
            variants,
            plots: Vec::new(),
            family_ratios: Vec::new(),
        };
        s.family_ratios = ratios(&s);
        s
    }

    #[test]
    fn ipv6_ratios_are_divided_by_the_ipv4_ratios_of_the_same_run() {
        let metrics = Metric::with_v6(
            vec![
                Metric::new("gbps", "throughput", Unit::Gbps, Better::Higher),
                Metric::new("rtt", "RTT", Unit::Micros, Better::Lower),
                Metric::new("cost", "cost", Unit::Nanos, Better::Lower),
            ],
            |m| m.key != "cost",
        );
        let keys: Vec<&str> = metrics.iter().map(|m| &*m.key).collect();
        assert_eq!(keys, ["gbps", "gbps_v6", "rtt", "rtt_v6", "cost"]);
        assert_eq!(metrics[1].label, "throughput (IPv6)");
        assert_eq!(metrics[1].v4_of.as_deref(), Some("gbps"));
        let s = scenario(
            metrics,
            vec![
                variant_of(
                    "direct",
                    "direct veth",
                    &[
                        ("gbps", &[20.0, 20.0]),
                        ("gbps_v6", &[16.0, 16.0]),
                        ("rtt", &[10.0, 10.0]),
                        ("rtt_v6", &[10.0, 10.0]),
                    ],
                    &[],
                ),
                variant_of(
                    "netpath",
                    "netpath",
                    &[
                        // IPv4 0.90×, IPv6 0.80×: 0.89 of it, missed.
                        ("gbps", &[18.0, 18.0]),
                        ("gbps_v6", &[12.8, 12.8]),
                        // IPv4 1.20×, IPv6 1.26×: 1.05 ≤ 1/0.95, met.
                        ("rtt", &[12.0, 12.0]),
                        ("rtt_v6", &[12.6, 12.6]),
                    ],
                    &[],
                ),
                variant_of(
                    "bridge",
                    "Linux bridge",
                    &[("gbps", &[10.0]), ("rtt", &[20.0])],
                    &[("gbps_v6", "no IPv6 here"), ("rtt_v6", "no IPv6 here")],
                ),
            ],
        );
        let f = &s.family_ratios;
        assert_eq!(f.len(), 4);
        let netpath_gbps = &f[0];
        assert_eq!(
            (netpath_gbps.metric.as_str(), netpath_gbps.variant.as_str()),
            ("gbps_v6", "netpath")
        );
        assert!((netpath_gbps.v4_ratio.unwrap() - 0.9).abs() < 1e-9);
        assert!((netpath_gbps.v6_ratio.unwrap() - 0.8).abs() < 1e-9);
        assert!((netpath_gbps.v6_over_v4.unwrap() - 0.8 / 0.9).abs() < 1e-9);
        assert_eq!(netpath_gbps.met, Some(false));
        assert_eq!(f[1].variant, "bridge");
        assert_eq!(f[1].v4_ratio, Some(0.5));
        assert_eq!((f[1].v6_ratio, f[1].met), (None, None));
        assert_eq!(
            f[1].missing.as_deref(),
            Some("Linux bridge IPv6: no IPv6 here")
        );
        assert!((f[2].v6_over_v4.unwrap() - 1.05).abs() < 1e-9);
        assert_eq!(f[2].met, Some(true));
        // The n/a figure is shown with its reason, and the reference's ratio with it.
        assert_eq!(
            figure(&s, &s.variants[2], &s.metrics[1]),
            "Linux bridge n/a: no IPv6 here"
        );
        assert_eq!(
            s.variants[2].unavailable.get("gbps_v6").map(String::as_str),
            Some("no IPv6 here")
        );
        let md = {
            let mut md = String::new();
            table(&mut md, &s);
            md
        };
        assert!(
            md.contains(
                "| throughput | netpath (vs direct veth) | 0.90× | 0.80× | 0.89 | ≥ 0.95 — MISSED ❌ |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| RTT | netpath (vs direct veth) | 1.20× | 1.26× | 1.05 | ≤ 1.05 — met ✅ |"
            ),
            "{md}"
        );
        assert!(md.contains("n/a (Linux bridge IPv6: no IPv6 here)"), "{md}");
    }

    #[test]
    fn a_metric_that_applies_to_neither_family_gets_no_comparison() {
        let metrics = Metric::with_v6(
            vec![Metric::new("ns", "cost", Unit::Nanos, Better::Lower).against("floor")],
            |_| true,
        );
        let none = [("ns", "no program"), ("ns_v6", "no program")];
        let s = scenario(
            metrics,
            vec![
                variant_of("direct", "direct veth", &[], &none),
                variant_of(
                    "floor",
                    "floor",
                    &[("ns", &[80.0]), ("ns_v6", &[80.0])],
                    &[],
                ),
                variant_of(
                    "netpath",
                    "netpath",
                    &[("ns", &[200.0]), ("ns_v6", &[240.0])],
                    &[],
                ),
            ],
        );
        let rows: Vec<(&str, Option<f64>)> = s
            .family_ratios
            .iter()
            .map(|f| (f.variant.as_str(), f.v6_over_v4))
            .collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "netpath");
        assert!((rows[0].1.unwrap() - 1.2).abs() < 1e-9);
        assert_eq!(
            figure(&s, &s.variants[0], &s.metrics[0]),
            "direct veth n/a: no program"
        );
    }

    #[test]
    fn a_value_measured_in_one_round_is_not_unavailable() {
        let mut v = variant_of("netpath", "netpath", &[("x", &[1.0])], &[]);
        let mut r = RunResult::default();
        r.unavailable("x", "refused");
        r.unavailable("y", "refused");
        v.rounds.push(RoundResult {
            round: 2,
            seconds: 1.0,
            result: Some(r),
            error: None,
        });
        v.finalize();
        assert_eq!(v.median.get("x"), Some(&1.0));
        assert_eq!(v.unavailable.keys().collect::<Vec<_>>(), [&"y".to_owned()]);
    }
}
