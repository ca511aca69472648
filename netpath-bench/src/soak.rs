//! `soak`: the control plane under clients that hang up. 10,000 API requests (2,000 with
//! `--quick`) from four concurrent clients — endpoint adds and removes, port publishes
//! and unpublishes, listings — each left at a random moment (halfway through the
//! request, right after it, 0–20 ms into the operation, or after the whole answer).
//! Afterwards the daemon must still answer, and its records, the host's links, the
//! namespaces' interfaces and the datapath's maps must agree exactly
//! ([`netpath_tests::consistency`]); a disagreement fails the run. Absolute figures: nothing to
//! compare them with.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netpath_tests::consistency;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use super::{
    Better, Ctx, Metric, Opts, RunResult, Scenario, Unit, Variant,
    topo::{NetpathNetwork, NsSet},
};

const CLIENTS: usize = 4;
const NAMESPACES: usize = 8;
/// Bound on the whole load phase.
const BUDGET: Duration = Duration::from_secs(600);
/// How long the state may take to settle once the load stops (operations whose clients
/// left finish on their own).
const SETTLE: Duration = Duration::from_secs(20);
/// A client that waits for its answer gives up after this.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SoakScenario {
    requests: usize,
}

impl SoakScenario {
    pub fn new(opts: &Opts) -> Self {
        SoakScenario {
            requests: if opts.quick { 2_000 } else { 10_000 },
        }
    }
}

/// How one request's client leaves.
#[derive(Clone, Copy)]
enum Leave {
    Halfway,
    AfterRequest,
    During(Duration),
    AfterAnswer,
}

/// Counts of what the clients did.
#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    hung_up: AtomicUsize,
    answered: AtomicUsize,
}

/// Sends one request and leaves as `how` says; returns the answer's body if it waited
/// for it.
fn request(socket: &Path, method: &str, path: &str, body: &str, how: Leave) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: netpath\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let bytes = req.as_bytes();
    match how {
        Leave::Halfway => {
            let _ = s.write_all(&bytes[..bytes.len() / 2]);
            None
        }
        Leave::AfterRequest => {
            let _ = s.write_all(bytes);
            None
        }
        Leave::During(d) => {
            let _ = s.write_all(bytes);
            std::thread::sleep(d);
            None
        }
        Leave::AfterAnswer => {
            s.write_all(bytes).ok()?;
            s.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).ok()?;
            answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
        }
    }
}

/// One client's loop: random operations until `total` requests were sent (by all).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct of the same fields would only rename them"
)]
fn client(
    seed: u64,
    socket: PathBuf,
    network: String,
    namespaces: Vec<PathBuf>,
    known: Arc<Mutex<Vec<String>>>,
    tally: Arc<Tally>,
    total: usize,
    deadline: Instant,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while tally.sent.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        let how = match rng.random_range(0..4) {
            0 => Leave::Halfway,
            1 => Leave::AfterRequest,
            2 => Leave::During(Duration::from_micros(rng.random_range(0..20_000))),
            _ => Leave::AfterAnswer,
        };
        let pick = |rng: &mut StdRng| {
            let k = known.lock().unwrap_or_else(|p| p.into_inner());
            (!k.is_empty()).then(|| k[rng.random_range(0..k.len())].clone())
        };
        let (method, path, body) = match rng.random_range(0..100) {
            // Endpoint adds; a few interface names per namespace, so some collide (409).
            0..35 => {
                let ns = &namespaces[rng.random_range(0..namespaces.len())];
                let body = format!(
                    r#"{{"network":"{network}","netns":"{}","ifname":"s{}"}}"#,
                    ns.display(),
                    rng.random_range(0..4)
                );
                ("POST", "/v1/endpoints".to_owned(), body)
            }
            35..55 => match pick(&mut rng) {
                Some(id) => ("DELETE", format!("/v1/endpoints/{id}"), String::new()),
                None => continue,
            },
            55..70 => match pick(&mut rng) {
                Some(id) => {
                    let port = rng.random_range(18600..18700);
                    let body =
                        format!(r#"{{"endpoint":"{id}","specs":["{port}:80","{port}:53/udp"]}}"#);
                    ("POST", "/v1/ports".to_owned(), body)
                }
                None => continue,
            },
            70..80 => match pick(&mut rng) {
                Some(id) => ("DELETE", format!("/v1/ports?endpoint={id}"), String::new()),
                None => continue,
            },
            _ => ("GET", "/v1/endpoints".to_owned(), String::new()),
        };
        // Claim one of the `total` requests (several clients race for the last ones).
        if tally.sent.fetch_add(1, Ordering::Relaxed) >= total {
            break;
        }
        let answer = request(&socket, method, &path, &body, how);
        match &answer {
            Some(_) => tally.answered.fetch_add(1, Ordering::Relaxed),
            None => tally.hung_up.fetch_add(1, Ordering::Relaxed),
        };
        // Learn ids from answers that list or create endpoints.
        let Some(v) = answer.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
        else {
            continue;
        };
        let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = v.as_array().filter(|_| method == "GET") {
            *k = list
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect();
        } else if let Some(id) = v["id"].as_str() {
            k.push(id.to_owned());
        }
    }
}

impl Scenario for SoakScenario {
    fn name(&self) -> &'static str {
        "soak"
    }

    fn title(&self) -> String {
        format!(
            "Control plane soak: {} API requests from clients that hang up at random",
            self.requests
        )
    }

    fn method(&self) -> String {
        format!(
            "{CLIENTS} concurrent clients send {} requests over the API socket — endpoint adds \
             (35 %) and removes (20 %), publishes of two ports (15 %), unpublishes (10 %), \
             listings (20 %) — against one bridge network and {NAMESPACES} namespaces. Each \
             client leaves a request at random: halfway through it, right after it, 0–20 ms \
             into the operation, or after the whole answer (a quarter each). Afterwards the \
             daemon must answer and, within {} s, every record must be ready and the tagged \
             host links, the namespaces' interfaces, the datapath's endpoint map and the port \
             leases must agree exactly with the records; otherwise the run fails.",
            self.requests,
            SETTLE.as_secs()
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![Variant {
            key: "netpath",
            label: "netpath",
            how: "the netpath daemon on its API socket".into(),
        }]
    }

    fn reference(&self) -> &'static str {
        "netpath"
    }

    fn metrics(&self) -> Vec<Metric> {
        vec![
            Metric::new("requests", "requests sent", Unit::Count, Better::Higher),
            Metric::new(
                "hung_up",
                "requests left before the answer",
                Unit::Count,
                Better::Higher,
            ),
            Metric::new("rate", "requests per second", Unit::PerSec, Better::Higher),
            Metric::new(
                "endpoints_after",
                "endpoints at the end",
                Unit::Count,
                Better::Higher,
            ),
            Metric::new(
                "settle_s",
                "time until state, links and maps agreed",
                Unit::Secs,
                Better::Lower,
            ),
        ]
    }

    fn run(&mut self, ctx: &mut Ctx, _variant: &str, round: usize) -> Result<RunResult> {
        let mut r = RunResult::default();
        ctx.client()?;
        let (socket, tag) = {
            let d = ctx.daemon()?;
            (
                d.paths.socket.clone(),
                format!("netpath:{}:", d.paths.instance()),
            )
        };
        let network = NetpathNetwork::create(ctx, ctx.subnets.soak_netpath)?;
        let nss = NsSet::create(ctx, "s", NAMESPACES)?;
        let namespaces: Vec<PathBuf> = (0..NAMESPACES).map(|i| nss.path(i)).collect();
        let known = Arc::new(Mutex::new(Vec::new()));
        let tally = Arc::new(Tally::default());
        let start = Instant::now();
        let deadline = start + BUDGET;
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (socket, network, namespaces, known, tally) = (
                    socket.clone(),
                    network.name.clone(),
                    namespaces.clone(),
                    known.clone(),
                    tally.clone(),
                );
                let seed = 0x736f_616b ^ ((round as u64) << 8) ^ c as u64;
                let total = self.requests;
                std::thread::spawn(move || {
                    client(
                        seed, socket, network, namespaces, known, tally, total, deadline,
                    )
                })
            })
            .collect();
        while workers.iter().any(|w| !w.is_finished()) {
            ctx.check()?;
            let sent = tally.sent.load(Ordering::Relaxed).min(self.requests);
            ctx.detail(&format!("{sent}/{} requests", self.requests));
            std::thread::sleep(Duration::from_millis(200));
        }
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        }
        let elapsed = start.elapsed();
        let (hung_up, answered) = (
            tally.hung_up.load(Ordering::Relaxed),
            tally.answered.load(Ordering::Relaxed),
        );
        let sent = hung_up + answered;
        if sent < self.requests {
            bail!(
                "only {sent} of {} requests within {} s",
                self.requests,
                BUDGET.as_secs()
            );
        }
        ctx.daemon()?
            .check_alive()
            .context("the daemon died during the soak")?;

        ctx.detail("checking state, links and maps");
        let client = network.client().clone();
        let settle = Instant::now();
        let snapshot = |ctx: &Ctx| -> Result<consistency::Snapshot> {
            let e = |e: netpath::client::ClientError| anyhow::anyhow!("netpath API: {e}");
            Ok(consistency::Snapshot {
                networks: ctx.block_on(client.list_networks()).map_err(e)?,
                endpoints: ctx.block_on(client.list_endpoints(None)).map_err(e)?,
                ports: ctx.block_on(client.list_ports()).map_err(e)?,
                stats: ctx.block_on(client.stats()).map_err(e)?,
            })
        };
        let endpoints = loop {
            let snap = snapshot(ctx)?;
            match consistency::check(&snap, &tag, &namespaces) {
                Ok(()) => break snap.endpoints.len(),
                Err(e) if settle.elapsed() > SETTLE => {
                    bail!("inconsistent {} s after the soak: {e}", SETTLE.as_secs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        r.set("requests", sent as f64);
        r.set("hung_up", hung_up as f64);
        r.set("rate", sent as f64 / elapsed.as_secs_f64());
        r.set("endpoints_after", endpoints as f64);
        r.set("settle_s", settle.elapsed().as_secs_f64());
        r.notes.push(format!(
            "{sent} requests in {:.1} s, {hung_up} left before their answer; state, links, \
             namespaces and maps agreed, {endpoints} endpoints",
            elapsed.as_secs_f64()
        ));
        network.remove()?;
        drop(nss);
        Ok(r)
    }
}
