//! Runs the chosen scenarios (variants interleaved over the rounds, a progress bar),
//! then the cleanup and its check, then writes the report and the plots.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{
    Ctx, Opts, Scenario, all_scenarios, cleanup,
    ctx::require_root,
    proc,
    report::{Header, Report, RoundResult, ScenarioResult, VariantResult, utc_now},
};

/// What the run amounted to.
pub struct Outcome {
    pub report_md: std::path::PathBuf,
    /// A scenario variant FAILED.
    pub failed: bool,
    /// Something was left behind after the sweep.
    pub leftovers: bool,
    pub interrupted: bool,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Short summary of a run's numbers for the log.
fn summary(s: &dyn Scenario, r: &super::RunResult) -> String {
    s.metrics()
        .iter()
        .filter_map(|m| {
            Some(format!(
                "{} {}",
                m.label,
                m.unit.format(*r.values.get(&*m.key)?)
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the bench; writes the report even when scenarios fail or Ctrl-C stops them.
pub fn run(opts: Opts) -> Result<Outcome> {
    require_root()?;
    let started = Instant::now();
    let (date, _) = utc_now();
    let mut scenarios = all_scenarios(&opts);
    if !opts.scenarios.is_empty() {
        let known: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
        for name in &opts.scenarios {
            if !known.contains(&name.as_str()) {
                bail!(
                    "unknown scenario {name:?}: choose from {}",
                    known.join(", ")
                );
            }
        }
        scenarios.retain(|s| opts.scenarios.iter().any(|n| n == s.name()));
    }
    if !opts.netpath_bin.is_file() {
        bail!(
            "no netpath binary at {}: build it (`cargo xtask build`) or pass --netpath-bin",
            opts.netpath_bin.display()
        );
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    proc::install_interrupt_handler()?;

    let stale = cleanup::sweep_stale(&opts.netpath_bin);
    if !stale.is_empty() {
        eprintln!(
            "netpath-bench: removed leftovers of earlier, killed runs: {}",
            stale.join(", ")
        );
    }

    let rounds = opts.rounds();
    let total: usize = scenarios.iter().map(|s| s.variants().len() * rounds).sum();
    let pb = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} runs · {msg} · ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    let mut ctx = Ctx::new(opts.clone(), pb.clone())?;
    let mut header = Header::collect(&ctx.opts, date);
    if let Some(v) = header.versions.get_mut("netpath") {
        v.push_str(&format!(
            "; {}, copied at start",
            opts.netpath_bin.display()
        ));
    }
    ctx.log(format!(
        "netpath-bench: {} rounds, scenarios {}; names start with {}, output in {}",
        rounds,
        scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        ctx.prefix,
        opts.out.display()
    ));

    let mut results = Vec::new();
    for s in scenarios.iter_mut() {
        let variants = s.variants();
        let mut vres: Vec<VariantResult> = variants
            .iter()
            .map(|v| VariantResult {
                key: v.key.into(),
                label: v.label.into(),
                how: v.how.clone(),
                rounds: Vec::new(),
                median: Default::default(),
                range: Default::default(),
                failed: None,
                unavailable: Default::default(),
            })
            .collect();
        'rounds: for round in 1..=rounds {
            for (vi, v) in variants.iter().enumerate() {
                if proc::interrupted() {
                    break 'rounds;
                }
                let done = pb.position() as usize;
                ctx.set_stage(format!(
                    "{} · {} · round {round}/{rounds} ({} runs left after this)",
                    s.name(),
                    v.label,
                    total - done - 1
                ));
                let t0 = Instant::now();
                let outcome = catch_unwind(AssertUnwindSafe(|| s.run(&mut ctx, v.key, round)))
                    .unwrap_or_else(|p| Err(anyhow::anyhow!("panicked: {}", panic_message(&*p))));
                let seconds = t0.elapsed().as_secs_f64();
                let line = match &outcome {
                    Ok(r) => format!(
                        "{} · {} · round {round}: {} ({seconds:.1} s)",
                        s.name(),
                        v.label,
                        summary(s.as_ref(), r)
                    ),
                    Err(e) => format!(
                        "{} · {} · round {round}: FAILED: {e:#} ({seconds:.1} s)",
                        s.name(),
                        v.label
                    ),
                };
                ctx.log(line);
                let (result, error) = match outcome {
                    Ok(r) => (Some(r), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                };
                vres[vi].rounds.push(RoundResult {
                    round,
                    seconds,
                    result,
                    error,
                });
                pb.inc(1);
            }
        }
        s.finish(&mut ctx);
        for v in &mut vres {
            v.finalize();
        }
        let mut result = ScenarioResult {
            name: s.name().into(),
            title: s.title(),
            method: s.method(),
            reference: s.reference().into(),
            metrics: s.metrics(),
            variants: vres,
            plots: Vec::new(),
            family_ratios: Vec::new(),
        };
        result.family_ratios = super::family::ratios(&result);
        results.push(result);
    }

    ctx.set_stage("cleanup".into());
    ctx.detail("stopping the daemon, sweeping and checking");
    let cleanup = cleanup::final_sweep(&mut ctx);
    pb.finish_and_clear();
    drop(ctx);

    for (s, r) in scenarios.iter().zip(results.iter_mut()) {
        match s.plots(r, &opts.out) {
            Ok(p) => r.plots = p,
            Err(e) => eprintln!("netpath-bench: plots of {}: {e:#}", s.name()),
        }
    }
    let report = Report {
        header,
        wall_time_s: started.elapsed().as_secs_f64(),
        interrupted: proc::interrupted(),
        scenarios: results,
        cleanup,
    };
    report.write(&opts.out)?;
    Ok(Outcome {
        report_md: opts.out.join("report.md"),
        failed: report.scenarios.iter().any(ScenarioResult::failed),
        leftovers: !report.cleanup.leftovers.is_empty(),
        interrupted: report.interrupted,
    })
}

/// The default output directory: `<workspace>/target/bench/<UTC date-time>`, with
/// `target/bench/latest` pointing at it.
pub fn default_out() -> Result<std::path::PathBuf> {
    let (_, stamp) = utc_now();
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench")
        .canonicalize()
        .or_else(|_| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
            std::fs::create_dir_all(&p)?;
            p.canonicalize()
        })
        .context("cannot create target/bench")?;
    let out = base.join(&stamp);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let latest = base.join("latest");
    let _ = std::fs::remove_file(&latest);
    std::os::unix::fs::symlink(&stamp, &latest)
        .with_context(|| format!("cannot link {}", latest.display()))?;
    Ok(out)
}
