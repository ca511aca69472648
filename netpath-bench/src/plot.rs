//! SVG plots (plotters, SVG backend only): latency CDFs and per-metric bar panels.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::Unit;

/// Colour of the `i`-th variant (the same in every plot).
fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
    ];
    COLORS[i % COLORS.len()]
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// One CDF line per series over a log-scale x axis.
pub fn cdf(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let all = series.iter().flat_map(|(_, v)| v.iter().copied());
    let lo = all
        .clone()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let hi = all.fold(0.0, f64::max);
    if !lo.is_finite() || hi <= 0.0 {
        return Err(anyhow!("no positive samples to plot"));
    }
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(err)?;
    for (i, (label, samples)) in series.iter().enumerate() {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| *v > 0.0).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                sorted
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| (x, (k + 1) as f64 / n)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One line (with point markers) per series of (x, y) points, linear axes from 0.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let points = series.iter().flat_map(|(_, v)| v.iter().copied());
    let x_hi = points.clone().map(|p| p.0).fold(0.0, f64::max);
    let y_hi = points.map(|p| p.1).fold(0.0, f64::max);
    if y_hi <= 0.0 {
        return Err(anyhow!("no positive values to plot"));
    }
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..(x_hi * 1.05).max(1.0), 0f64..y_hi * 1.2)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One bar chart: a metric's value per variant (`None`: the variant FAILED).
pub struct Panel {
    pub title: String,
    pub unit: Unit,
    pub bars: Vec<(String, Option<f64>)>,
}

/// The panels side by side (two per row) in one SVG.
pub fn bars(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let rows = panels.len().div_ceil(2).max(1);
    let root = SVGBackend::new(path, (1100, 60 + 330 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let areas = root.split_evenly((rows, 2));
    for (panel, area) in panels.iter().zip(&areas) {
        bar_panel(area, panel)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn bar_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel) -> Result<()> {
    let n = panel.bars.len().max(1) as u32;
    let top = panel
        .bars
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.2;
    let unit = unit_symbol(panel.unit);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} ({unit})", panel.title), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..top)
        .map_err(err)?;
    let labels: Vec<String> = panel.bars.iter().map(|(l, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                labels.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(err)?;
    for (i, (_, value)) in panel.bars.iter().enumerate() {
        let i = i as u32;
        let c = color(i as usize);
        match value {
            Some(v) => {
                chart
                    .draw_series(
                        Histogram::vertical(&chart)
                            .style(c.filled())
                            .margin(25)
                            .data([(i, *v)]),
                    )
                    .map_err(err)?;
                chart
                    .draw_series([Text::new(
                        panel.unit.format(*v),
                        (SegmentValue::CenterOf(i), *v + top * 0.02),
                        ("sans-serif", 14)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )])
                    .map_err(err)?;
            }
            None => {
                chart
                    .draw_series([Text::new(
                        "FAILED",
                        (SegmentValue::CenterOf(i), top * 0.05),
                        ("sans-serif", 14)
                            .into_font()
                            .color(&RED)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )])
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

fn unit_symbol(unit: Unit) -> &'static str {
    match unit {
        Unit::Gbps => "Gbit/s",
        Unit::Nanos => "ns",
        Unit::Micros => "µs",
        Unit::Millis => "ms",
        Unit::Secs => "s",
        Unit::ConnPerSec => "conn/s",
        Unit::Ratio => "×",
        Unit::MiB => "MiB",
        Unit::KiB => "KiB",
        Unit::Count => "",
        Unit::PerSec => "/s",
    }
}

/// A scenario's latency CDF plot: what [`millis_series`] finds under `key`, drawn into
/// `dir/file` with [`cdf`].
pub struct LatencyCdf<'a> {
    pub key: &'a str,
    pub file: &'a str,
    pub title: String,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub caption: &'a str,
}

impl LatencyCdf<'_> {
    /// Draws it; returns the (file name, caption) pair for [`super::Scenario::plots`], or
    /// nothing when no variant has samples (all FAILED).
    pub fn draw(
        &self,
        result: &super::report::ScenarioResult,
        dir: &Path,
    ) -> Result<Vec<(String, String)>> {
        let series = millis_series(result, self.key);
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let path = dir.join(self.file);
        cdf(&path, &self.title, self.x_desc, self.y_desc, &series)?;
        Ok(vec![(self.file.to_owned(), self.caption.to_owned())])
    }
}

/// One CDF series per variant from the samples each round recorded under `key`, all
/// rounds pooled, labelled with the variant and its median in milliseconds. Variants
/// without samples (FAILED) are left out.
pub fn millis_series(result: &super::report::ScenarioResult, key: &str) -> Vec<(String, Vec<f64>)> {
    result
        .variants
        .iter()
        .filter_map(|v| {
            let samples: Vec<f64> = v
                .rounds
                .iter()
                .filter_map(|r| r.result.as_ref())
                .flat_map(|r| r.samples.get(key).into_iter().flatten().copied())
                .collect();
            (!samples.is_empty()).then(|| {
                let median = super::stats::median(&samples).unwrap_or_default();
                (
                    format!(
                        "{} (median {})",
                        v.label,
                        super::Unit::Millis.format(median)
                    ),
                    samples,
                )
            })
        })
        .collect()
}

/// The IPv6 ÷ IPv4 plot of a scenario (`<name>-v6-vs-v4.svg`): one panel per IPv6
/// metric, one bar per variant (its IPv6 ratio over its IPv4 ratio, same run; the target
/// is ≥ 0.95 when higher is better, ≤ 1/0.95 when lower is). `None` when the scenario
/// has no IPv6 metric.
pub fn family_ratios(
    result: &super::report::ScenarioResult,
    dir: &Path,
) -> Result<Option<(String, String)>> {
    if result.family_ratios.is_empty() {
        return Ok(None);
    }
    let panels: Vec<Panel> = result
        .metrics
        .iter()
        .filter(|m| m.v4_of.is_some())
        .map(|m| Panel {
            title: format!("{}: IPv6 ÷ IPv4 ratio", m.label.trim_end_matches(" (IPv6)")),
            unit: Unit::Ratio,
            bars: result
                .family_ratios
                .iter()
                .filter(|f| f.metric == m.key)
                .map(|f| {
                    let label = result
                        .variant(&f.variant)
                        .map_or(f.variant.clone(), |v| v.label.clone());
                    (label, f.v6_over_v4)
                })
                .collect(),
        })
        .collect();
    let file = format!("{}-v6-vs-v4.svg", result.name);
    bars(
        &dir.join(&file),
        &format!("{}: IPv6 ratio ÷ IPv4 ratio, same run", result.name),
        &panels,
    )?;
    Ok(Some((
        file,
        "Each variant's IPv6 ratio over its IPv4 ratio (1.00× = IPv6 as good as IPv4 \
         relative to the reference; target ≥ 0.95× when higher is better, ≤ 1.05× when \
         lower is; missing bar = n/a)"
            .into(),
    )))
}
