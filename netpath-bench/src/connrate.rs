//! New TCP connections per second: a tiny request/response server and a client with a
//! few concurrent workers, each on threads of the bench that entered a network namespace
//! the bench created (`setns`; sockets belong to the namespace they were made in).
//!
//! One connection: connect, send a [`REQUEST_LEN`]-byte request, read the
//! [`RESPONSE_LEN`]-byte response, read the server's close, close. The server accepts,
//! reads the request, writes the response and closes (so the TIME_WAIT state stays on
//! the server's side, as with a short-lived HTTP/1.0 exchange).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::sched::{CloneFlags, setns};

pub const REQUEST_LEN: usize = 64;
pub const RESPONSE_LEN: usize = 128;
/// Bound on one connection's connect, and on each read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often blocked accepts look at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(200);

/// Enters the network namespace at `netns` (the calling thread only).
pub(crate) fn enter(netns: &Path) -> Result<()> {
    let f = fs::File::open(netns).with_context(|| format!("cannot open {}", netns.display()))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter {}", netns.display()))
}

/// The server: `threads` threads accepting on one listener in a namespace. Stopped (and
/// its threads joined) on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    served: Arc<AtomicU64>,
    /// The source address of the first connection accepted (what a translation left).
    first_peer: Arc<Mutex<Option<SocketAddr>>>,
}

impl Server {
    /// Listens on `bind` inside `netns`; returns once it listens.
    pub fn start(netns: &Path, bind: impl Into<SocketAddr>, threads: usize) -> Result<Server> {
        let bind: SocketAddr = bind.into();
        let path: PathBuf = netns.to_owned();
        let (tx, rx) = mpsc::channel();
        // The listener is made on a thread that entered the namespace and never leaves it.
        thread::Builder::new()
            .name("connrate-bind".into())
            .spawn(move || {
                let r = enter(&path).and_then(|()| {
                    let l = TcpListener::bind(bind)
                        .with_context(|| format!("cannot listen on {bind}"))?;
                    nix::sys::socket::setsockopt(
                        &l,
                        nix::sys::socket::sockopt::ReceiveTimeout,
                        &nix::sys::time::TimeVal::new(0, ACCEPT_POLL.as_micros() as _),
                    )
                    .context("SO_RCVTIMEO on the listener")?;
                    Ok(l)
                });
                let _ = tx.send(r);
            })
            .context("cannot start a thread")?;
        let listener = rx
            .recv_timeout(Duration::from_secs(10))
            .context("the connection-rate server did not start")??;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let first_peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let l = listener.try_clone()?;
            let (stop, served, peer) = (stop.clone(), served.clone(), first_peer.clone());
            handles.push(
                thread::Builder::new()
                    .name(format!("connrate-srv{i}"))
                    .spawn(move || serve(&l, &stop, &served, &peer))
                    .context("cannot start a thread")?,
            );
        }
        Ok(Server {
            stop,
            threads: handles,
            served,
            first_peer,
        })
    }

    /// Connections answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The source address the first accepted connection came from.
    pub fn first_peer(&self) -> Option<SocketAddr> {
        *self.first_peer.lock().expect("not poisoned")
    }
}

fn serve(
    l: &TcpListener,
    stop: &AtomicBool,
    served: &AtomicU64,
    first_peer: &Mutex<Option<SocketAddr>>,
) {
    let response = [b'r'; RESPONSE_LEN];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut c, peer)) = l.accept() else {
            // Timeout (the stop check) or a connection reset before accept.
            continue;
        };
        first_peer.lock().expect("not poisoned").get_or_insert(peer);
        let _ = c.set_read_timeout(Some(IO_TIMEOUT));
        let _ = c.set_write_timeout(Some(IO_TIMEOUT));
        let mut req = [0u8; REQUEST_LEN];
        if c.read_exact(&mut req).is_ok() && c.write_all(&response).is_ok() {
            served.fetch_add(1, Ordering::Relaxed);
        }
        // Dropped: the server closes first.
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one client run did.
#[derive(Clone, Debug, Default)]
pub struct ConnStats {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// The run stopped at the time bound before all connections were made.
    pub cut_short: bool,
}

impl ConnStats {
    /// Completed connections per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `Err` (a FAILED run) when nothing got through or more than 1 % failed.
    pub fn check(&self, what: &str) -> Result<()> {
        let total = self.ok + self.failed;
        if self.ok == 0 {
            bail!(
                "{what}: no connection completed ({} failed; first: {})",
                self.failed,
                self.first_error.as_deref().unwrap_or("none")
            );
        }
        if self.failed * 100 > total {
            bail!(
                "{what}: {} of {total} connections failed (> 1 %); first: {}",
                self.failed,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }

    /// A note for the report when some (≤ 1 %) connections failed or the run was cut
    /// short by its time bound.
    pub fn note(&self, what: &str) -> Option<String> {
        let mut parts = Vec::new();
        if self.failed > 0 {
            parts.push(format!(
                "{} of {} connections failed (first: {})",
                self.failed,
                self.ok + self.failed,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if self.cut_short {
            parts.push(format!(
                "stopped at the time bound after {} connections",
                self.ok + self.failed
            ));
        }
        (!parts.is_empty()).then(|| format!("{what}: {}", parts.join("; ")))
    }
}

/// One connection: connect, request, response, the server's close.
fn one(target: SocketAddr, request: &[u8]) -> std::io::Result<()> {
    let mut c = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    c.set_nodelay(true)?;
    c.write_all(request)?;
    let mut resp = [0u8; RESPONSE_LEN];
    c.read_exact(&mut resp)?;
    let mut rest = [0u8; 1];
    match c.read(&mut rest)? {
        0 => Ok(()),
        _ => Err(std::io::Error::other("more response bytes than expected")),
    }
}

/// Makes `total` connections to `target` from inside `netns` with `workers` concurrent
/// workers, stopping early at `time_bound`.
pub fn run_clients(
    netns: &Path,
    target: impl Into<SocketAddr>,
    total: usize,
    workers: usize,
    time_bound: Duration,
) -> Result<ConnStats> {
    let target: SocketAddr = target.into();
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let cut = Arc::new(AtomicBool::new(false));
    // Workers enter the namespace, then wait for the common start.
    let barrier = Arc::new(std::sync::Barrier::new(workers + 1));
    let start_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut handles = Vec::new();
    for i in 0..workers {
        let path = netns.to_owned();
        let (next, ok, failed, first_error, cut, barrier, start_at) = (
            next.clone(),
            ok.clone(),
            failed.clone(),
            first_error.clone(),
            cut.clone(),
            barrier.clone(),
            start_at.clone(),
        );
        handles.push(
            thread::Builder::new()
                .name(format!("connrate-cli{i}"))
                .spawn(move || -> Result<()> {
                    let entered = enter(&path);
                    barrier.wait();
                    entered?;
                    let start = start_at.lock().expect("not poisoned").expect("set");
                    let request = [b'q'; REQUEST_LEN];
                    loop {
                        if super::proc::interrupted() {
                            cut.store(true, Ordering::Relaxed);
                            break;
                        }
                        if start.elapsed() > time_bound {
                            cut.store(true, Ordering::Relaxed);
                            break;
                        }
                        if next.fetch_add(1, Ordering::Relaxed) >= total {
                            break;
                        }
                        match one(target, &request) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let mut f = first_error.lock().expect("not poisoned");
                                if f.is_none() {
                                    *f = Some(format!("{target}: {e}"));
                                }
                            }
                        }
                    }
                    Ok(())
                })
                .context("cannot start a thread")?,
        );
    }
    *start_at.lock().expect("not poisoned") = Some(Instant::now());
    let start = Instant::now();
    barrier.wait();
    let mut problems = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("{e:#}")),
            Err(_) => problems.push("a client thread panicked".into()),
        }
    }
    let elapsed = start.elapsed();
    if let Some(p) = problems.first() {
        bail!("connection-rate client: {p}");
    }
    super::proc::check_interrupt()?;
    let first_error = first_error.lock().expect("not poisoned").clone();
    Ok(ConnStats {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        first_error,
        cut_short: cut.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_checked() {
        let s = ConnStats {
            ok: 990,
            failed: 10,
            elapsed: Duration::from_secs(2),
            first_error: Some("x: refused".into()),
            cut_short: false,
        };
        assert!(s.check("t").is_ok());
        assert_eq!(s.rate(), 495.0);
        assert!(s.note("t").unwrap().contains("10 of 1000"));
        let bad = ConnStats {
            failed: 11,
            ..s.clone()
        };
        assert!(bad.check("t").unwrap_err().to_string().contains("> 1 %"));
        let none = ConnStats { ok: 0, ..s };
        assert!(none.check("t").is_err());
    }
}
