//! What the fast path's tc program costs per run, from the kernel's own BPF statistics
//! (`BPF_ENABLE_STATS`: run count and run time of every program while enabled). On a
//! noisy machine this is steadier than the wall-clock figures around it, and it isolates
//! the program from the rest of the path.

use std::{collections::HashMap, os::fd::OwnedFd};

use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};

/// The programs whose cost is the fast path's, by the names the kernel keeps (at most 15
/// characters): netpath's endpoint program and the floor's bare redirect.
const NAMES: [&str; 2] = ["netpath_tc_ingr", "bench_floor"];

/// Keeps the kernel's run-time statistics on while alive; `None` if it refuses.
pub fn enable() -> Option<OwnedFd> {
    enable_stats(Stats::RunTime).ok()
}

/// Run count and run time (ns) of each loaded program named in [`NAMES`], by id.
pub fn snapshot() -> HashMap<u32, (u64, u64)> {
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| NAMES.contains(&n)))
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
}
