//! Crash safety: the daemon is SIGKILLed at random moments while a client loops over
//! 500 endpoint adds/removes, and restarted each time. Afterwards: no duplicate IP, no
//! record without its devices, no netpath device without a record.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use netpath_tests::{Daemon, NetNs, host_links, require_root, unique};

const OPS: usize = 500;
const DEADLINE: Duration = Duration::from_secs(240);

/// xorshift64*: a tiny seeded generator, so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn kill9_during_500_adds_and_removes_leaves_consistent_state() {
    require_root!();
    let seed = std::env::var("NETPATH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed} (replay with NETPATH_CRASH_SEED={seed})");
    let d = Arc::new(Mutex::new(Daemon::start()));
    let net = unique("cr");
    d.lock()
        .unwrap()
        .ok(&["network", "create", &net, "--subnet", "10.220.0.0/24"]);
    // The pool stays owned by this thread, so it is removed even if the test panics
    // while the worker still runs; the worker only gets the paths.
    let pool: Vec<NetNs> = (0..12).map(|_| NetNs::new("cr")).collect();
    let pool_paths: Vec<String> = pool
        .iter()
        .map(|n| n.path().display().to_string())
        .collect();
    let cli = {
        let d = d.lock().unwrap();
        (netpath_tests::netpath_bin(), d.paths.args())
    };

    let done = Arc::new(AtomicBool::new(false));
    let attempted = Arc::new(AtomicUsize::new(0));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (done, attempted, succeeded, pool, net) = (
            done.clone(),
            attempted.clone(),
            succeeded.clone(),
            pool_paths,
            net.clone(),
        );
        let mut rng = Rng(seed);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut known: Vec<String> = Vec::new();
            let mut n = 0u64;
            while attempted.load(Ordering::Relaxed) < OPS && start.elapsed() < DEADLINE {
                let args: Vec<String> = if known.is_empty() || rng.below(10) < 6 {
                    n += 1;
                    let ns = &pool[rng.below(pool.len() as u64) as usize];
                    vec![
                        "endpoint".into(),
                        "add".into(),
                        net.clone(),
                        "--netns".into(),
                        ns.clone(),
                        "--ifname".into(),
                        format!("e{n}"),
                        "--json".into(),
                    ]
                } else {
                    let id = known.swap_remove(rng.below(known.len() as u64) as usize);
                    vec!["endpoint".into(), "rm".into(), id]
                };
                let out = std::process::Command::new(&cli.0)
                    .args(&args)
                    .args(&cli.1)
                    .output()
                    .unwrap();
                attempted.fetch_add(1, Ordering::Relaxed);
                if out.status.success() {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                    if args[1] == "add" {
                        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                        known.push(v["id"].as_str().unwrap().to_owned());
                    }
                } else {
                    // Daemon down or killed mid-request: wait for the restart.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut kills = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        if done.load(Ordering::Relaxed) {
            break;
        }
        let mut guard = d.lock().unwrap();
        guard.kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.below(50)));
        guard.restart();
    }
    worker.join().unwrap();
    let attempted = attempted.load(Ordering::Relaxed);
    eprintln!(
        "{attempted} operations ({} succeeded), {kills} kill -9 + restart",
        succeeded.load(Ordering::Relaxed)
    );
    assert!(
        attempted >= OPS,
        "only {attempted} operations before the deadline"
    );
    assert!(kills >= 5, "only {kills} kills");

    // One more crash and restart, then check the invariants.
    let mut d = d.lock().unwrap();
    d.kill9();
    d.restart();
    let ls = d.ls();
    let eps = ls["endpoints"].as_array().unwrap();
    let ips: Vec<&str> = eps.iter().map(|e| e["ip"].as_str().unwrap()).collect();
    let unique_ips: HashSet<&str> = ips.iter().copied().collect();
    assert_eq!(ips.len(), unique_ips.len(), "duplicate IPs: {ips:?}");
    for e in eps {
        assert_eq!(
            e["state"], "ready",
            "unfinished record after reconcile: {e}"
        );
    }
    // Every record has its devices…
    let links = host_links();
    let mut by_ns: HashMap<String, HashSet<String>> = HashMap::new();
    for e in eps {
        let host = e["host_ifname"].as_str().unwrap();
        assert!(
            links.contains(&host.to_owned()),
            "record {} without host device {host}",
            e["id"]
        );
        by_ns
            .entry(e["netns"].as_str().unwrap().to_owned())
            .or_default()
            .insert(e["ifname"].as_str().unwrap().to_owned());
    }
    // …and every netpath device has its record: tagged host links are exactly the
    // bridge and the endpoints' host ends; no temporary peer is left in the host.
    let mut tagged: Vec<String> = d.tagged_links();
    tagged.sort();
    let mut expected: Vec<String> = eps
        .iter()
        .map(|e| e["host_ifname"].as_str().unwrap().to_owned())
        .collect();
    expected.push(format!("np-{net}"));
    expected.sort();
    assert_eq!(tagged, expected, "tagged links differ from records");
    assert!(
        !links.iter().any(|l| l.starts_with("npp")),
        "temporary veth peer left: {links:?}"
    );
    // Inside each namespace, the interfaces are exactly the records'.
    for ns in pool.iter() {
        let out = ns.exec(&["ip", "-j", "link", "show"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: HashSet<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .filter(|n| n != "lo")
            .collect();
        let want = by_ns
            .get(&ns.path().display().to_string())
            .cloned()
            .unwrap_or_default();
        assert_eq!(got, want, "interfaces in {}", ns.name());
    }
    eprintln!("{} endpoints consistent after the last restart", eps.len());
}
