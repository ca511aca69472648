//! What the fast path's tc program costs per run, from the kernel's own BPF statistics
//! (`BPF_ENABLE_STATS`: run count and run time of every program while enabled). On a
//! noisy machine this is steadier than the wall-clock figures around it, and it isolates
//! the program from the rest of the path.
//!
//! Only the programs attached to the devices of the topology under test are counted
//! (found by attachment, on each device, at sampling time). Counting by program name
//! instead took every `netpath_tc_ingress` on the host — other daemons', other tests'
//! — so a variant with no program on its path (the direct veth pair) could show another
//! netpath's cost (an 868 ns figure under "direct veth").

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::OwnedFd,
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use aya::{
    programs::{SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, loaded_programs},
    sys::{Stats, enable_stats},
};

use super::proc;

/// Keeps the kernel's run-time statistics on while alive; `None` if it refuses.
pub fn enable() -> Option<OwnedFd> {
    enable_stats(Stats::RunTime).ok()
}

/// The program ids in `tc filter show` output (`… direct-action not_in_hw id 42 name …`).
fn filter_ids(text: &str) -> Vec<u32> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "id")
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

/// Ids of the tc programs attached to `devs` (host devices): cls_bpf filters under
/// clsact and tcx links, ingress and egress.
pub fn attached(devs: &[String]) -> Result<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for dev in devs {
        for (dir, tcx) in [
            ("ingress", TcAttachType::Ingress),
            ("egress", TcAttachType::Egress),
        ] {
            let out = proc::run_ok(
                Command::new("tc").args(["filter", "show", "dev", dev, dir]),
                None,
                proc::CMD_TIMEOUT,
            )
            .with_context(|| format!("tc filter show dev {dev} {dir}"))?;
            ids.extend(filter_ids(&out));
            // No tcx on the device (or no tcx in the kernel) is none attached.
            if let Ok((_, progs)) = SchedClassifier::query_tcx(dev, tcx) {
                ids.extend(progs.iter().map(|p| p.id()));
            }
        }
    }
    Ok(ids)
}

/// The tc program that sees what leaves the endpoint behind host device `dev` (the one
/// attached to the device's ingress), as a handle for BPF_PROG_TEST_RUN.
pub fn ingress_program(dev: &str) -> Result<SchedClassifier> {
    let out = proc::run_ok(
        Command::new("tc").args(["filter", "show", "dev", dev, "ingress"]),
        None,
        proc::CMD_TIMEOUT,
    )
    .with_context(|| format!("tc filter show dev {dev} ingress"))?;
    let mut ids = filter_ids(&out);
    if let Ok((_, progs)) = SchedClassifier::query_tcx(dev, TcAttachType::Ingress) {
        ids.extend(progs.iter().map(|p| p.id()));
    }
    let Some(&id) = ids.first() else {
        bail!("no tc program on the ingress of {dev}");
    };
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .with_context(|| format!("program {id} on {dev} is not loaded"))?;
    SchedClassifier::from_program_info(info, format!("prog {id}").into())
        .with_context(|| format!("cannot open program {id} of {dev}"))
}

/// Offset of `ifindex` in `struct __sk_buff` (uapi/linux/bpf.h).
const SKB_IFINDEX: usize = 40;

/// BPF_PROG_TEST_RUN of `prog` with `frame` as if it arrived on device `ifindex`,
/// `repeat` times: (the verdict, the kernel's mean ns per run).
pub fn test_run(
    prog: &SchedClassifier,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, f64)> {
    let mut ctx = [0u8; 48];
    ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    // The kernel reports the mean over the repeats.
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

/// Instructions of loaded program `prog` after the kernel's rewrites (its xlated size).
pub fn xlated_insns(prog: &SchedClassifier) -> Result<u32> {
    let info = prog.info().context("BPF_OBJ_GET_INFO_BY_FD")?;
    info.size_translated()
        .map(|bytes| bytes / 8)
        .context("the kernel reports no xlated size")
}

/// Run count and run time (ns) of each loaded program in `ids`, by id.
pub fn snapshot(ids: &BTreeSet<u32>) -> HashMap<u32, (u64, u64)> {
    if ids.is_empty() {
        return HashMap::new();
    }
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .map(|p| (p.id(), (p.run_count(), p.run_time().as_nanos() as u64)))
        .collect()
}

/// Runs and nanoseconds per run between two snapshots, over the programs in both;
/// `None` if none ran.
pub fn per_run(
    before: &HashMap<u32, (u64, u64)>,
    after: &HashMap<u32, (u64, u64)>,
) -> Option<(u64, f64)> {
    let (mut runs, mut ns) = (0, 0);
    for (id, (r1, t1)) in after {
        if let Some((r0, t0)) = before.get(id) {
            runs += r1.saturating_sub(*r0);
            ns += t1.saturating_sub(*t0);
        }
    }
    (runs > 0).then(|| (runs, ns as f64 / runs as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_run_counts_only_programs_seen_twice() {
        let before = HashMap::from([(1, (100, 10_000)), (2, (0, 0))]);
        let after = HashMap::from([(1, (300, 70_000)), (2, (100, 40_000)), (3, (50, 5_000))]);
        // Program 1: 200 runs in 60 µs, program 2: 100 runs in 40 µs; 3 appeared since.
        assert_eq!(per_run(&before, &after), Some((300, 100_000.0 / 300.0)));
        assert_eq!(per_run(&before, &before), None);
    }

    #[test]
    fn attached_program_ids_are_read_from_tc() {
        let text = "filter protocol all pref 1 bpf chain 0 \n\
filter protocol all pref 1 bpf chain 0 handle 0x1 netpath_tc_ingress direct-action not_in_hw id 4242 name netpath_tc_ingr tag 0123456789abcdef jited \n";
        assert_eq!(filter_ids(text), [4242]);
        assert_eq!(filter_ids(""), Vec::<u32>::new());
    }

    #[test]
    fn no_device_means_no_program_and_no_figure() {
        // The direct veth pair: nothing attached, so nothing is sampled.
        assert!(snapshot(&BTreeSet::new()).is_empty());
        assert_eq!(per_run(&HashMap::new(), &HashMap::new()), None);
    }
}
