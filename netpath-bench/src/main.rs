//! `netpath-bench`: benchmarks netpath against the recipes it wants to beat and writes a
//! report (`cargo xtask bench` builds and runs it). Needs root.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use netpath_bench::{self as bench, Opts, all_scenarios, runner};

#[derive(Parser)]
#[command(
    name = "netpath-bench",
    about = "Benchmark netpath against direct veth, Linux bridge, `ip` commands and CNI; \
             writes report.json, report.md and SVG plots (needs root)"
)]
struct Cli {
    /// Fewer rounds (2), fewer endpoints (200) and shorter traffic runs (3 s).
    #[arg(long)]
    quick: bool,
    /// Rounds per variant (default 3, 2 with --quick): medians over more rounds are
    /// steadier on a noisy machine, at the cost of time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=50))]
    rounds: Option<u16>,
    /// Run only these scenarios (default: all).
    #[arg(long = "scenario", value_name = "NAME", num_args = 1..)]
    scenarios: Vec<String>,
    /// Output directory (default: target/bench/<UTC date-time>, linked from target/bench/latest).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The netpath binary to benchmark (default: target/release/netpath).
    #[arg(long, value_name = "PATH")]
    netpath_bin: Option<PathBuf>,
    /// A netpath binary of an earlier commit (`cargo xtask bench --baseline REV` builds
    /// one): the `cost` scenario measures this build's programs against its programs.
    #[arg(long, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netpath-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut opts = Opts {
        quick: cli.quick,
        rounds: cli.rounds.map(usize::from),
        scenarios: cli.scenarios,
        out: PathBuf::new(),
        netpath_bin: cli
            .netpath_bin
            .unwrap_or_else(|| workspace.join("target/release/netpath")),
        baseline_bin: cli.baseline_bin,
    };
    if cli.list {
        for s in all_scenarios(&opts) {
            println!("{:<10} {}", s.name(), s.title());
        }
        return Ok(ExitCode::SUCCESS);
    }
    bench::ctx::require_root()?;
    opts.out = match cli.out {
        Some(dir) => std::path::absolute(dir)?,
        None => runner::default_out()?,
    };
    let outcome = bench::run(opts)?;
    let md = std::fs::read_to_string(&outcome.report_md)?;
    println!("{md}");
    println!("netpath-bench: report in {}", outcome.report_md.display());
    if outcome.interrupted {
        eprintln!("netpath-bench: interrupted; the report covers what ran");
        return Ok(ExitCode::from(130));
    }
    let mut code = ExitCode::SUCCESS;
    if outcome.failed {
        eprintln!("netpath-bench: some variants FAILED (see the report)");
        code = ExitCode::FAILURE;
    }
    if outcome.leftovers {
        eprintln!("netpath-bench: the cleanup check found leftovers (see the report)");
        code = ExitCode::FAILURE;
    }
    Ok(code)
}
