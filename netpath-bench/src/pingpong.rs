//! TCP ping-pong round-trip times over either address family (sockperf 3.7, the
//! endpoint scenario's IPv4 latency tool, takes IPv4 addresses only): one connection, a
//! [`MSG_LEN`]-byte message echoed back, one round trip after the other for a fixed time,
//! after a warm-up — sockperf's `ping-pong --tcp` shape, on threads of the bench that
//! entered the namespaces (`setns`) like [`connrate`](super::connrate)'s.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{connrate::enter, proc, stats};

/// sockperf's default message size.
pub const MSG_LEN: usize = 14;
/// Round trips before this much time are not counted (sockperf: 400 ms).
const WARMUP: Duration = Duration::from_millis(400);
/// Bound on connect, each read and each write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the samples kept (a round trip takes ≥ a few µs: ~10 s of them).
const MAX_SAMPLES: usize = 2_000_000;

#[derive(Clone, Debug, PartialEq)]
pub struct PingPong {
    pub mean_us: f64,
    pub p99_us: f64,
    pub round_trips: u64,
}

/// Summary of round-trip times in ns; `None` if there are none.
pub fn summarize(rtt_ns: &[f64]) -> Option<PingPong> {
    if rtt_ns.is_empty() {
        return None;
    }
    let mean = rtt_ns.iter().sum::<f64>() / rtt_ns.len() as f64;
    Some(PingPong {
        mean_us: mean / 1e3,
        p99_us: stats::percentile(rtt_ns, 99.0)? / 1e3,
        round_trips: rtt_ns.len() as u64,
    })
}

/// The echo server: one connection, every message back until the client closes.
fn serve(l: &TcpListener) -> std::io::Result<()> {
    let (mut c, _) = l.accept()?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; MSG_LEN];
    loop {
        match c.read_exact(&mut buf) {
            Ok(()) => c.write_all(&buf)?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Round trips for `secs` (after the warm-up) from `client` to a server in `server` on
/// `addr`.
pub fn run(server: &Path, client: &Path, addr: SocketAddr, secs: u64) -> Result<PingPong> {
    let (tx, rx) = mpsc::channel();
    let path: PathBuf = server.to_owned();
    let srv = thread::Builder::new()
        .name("pingpong-srv".into())
        .spawn(move || -> Result<()> {
            let l = enter(&path).and_then(|()| {
                let l =
                    TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
                nix::sys::socket::setsockopt(
                    &l,
                    nix::sys::socket::sockopt::ReceiveTimeout,
                    &nix::sys::time::TimeVal::new(IO_TIMEOUT.as_secs() as _, 0),
                )
                .context("SO_RCVTIMEO on the listener")?;
                Ok(l)
            });
            let l = match l {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:#}")));
                    return Ok(());
                }
            };
            serve(&l).context("ping-pong server")
        })
        .context("cannot start a thread")?;
    rx.recv_timeout(Duration::from_secs(10))
        .context("the ping-pong server did not start")?
        .map_err(anyhow::Error::msg)?;
    let path: PathBuf = client.to_owned();
    let cli = thread::Builder::new()
        .name("pingpong-cli".into())
        .spawn(move || -> Result<Vec<f64>> {
            enter(&path)?;
            let mut c = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .with_context(|| format!("ping-pong: cannot connect to {addr}"))?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            c.set_write_timeout(Some(IO_TIMEOUT))?;
            let (msg, mut back) = ([b'p'; MSG_LEN], [0u8; MSG_LEN]);
            let start = Instant::now();
            let end = WARMUP + Duration::from_secs(secs);
            let mut rtt = Vec::new();
            while rtt.len() < MAX_SAMPLES {
                let t = Instant::now();
                let since = t - start;
                if since >= end || proc::interrupted() {
                    break;
                }
                c.write_all(&msg)
                    .and_then(|()| c.read_exact(&mut back))
                    .with_context(|| format!("ping-pong with {addr}"))?;
                if since >= WARMUP {
                    rtt.push(t.elapsed().as_nanos() as f64);
                }
            }
            Ok(rtt)
        })
        .context("cannot start a thread")?;
    let rtt = cli
        .join()
        .map_err(|_| anyhow::anyhow!("the ping-pong client panicked"))?;
    let served = srv
        .join()
        .map_err(|_| anyhow::anyhow!("the ping-pong server panicked"))?;
    let rtt = rtt?;
    served?;
    proc::check_interrupt()?;
    match summarize(&rtt) {
        Some(s) => Ok(s),
        None => bail!("ping-pong with {addr}: no round trip completed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_summarized_in_microseconds() {
        let mut ns: Vec<f64> = (1..=100).map(|i| f64::from(i) * 1000.0).collect();
        ns.reverse();
        let s = summarize(&ns).unwrap();
        assert_eq!(s.round_trips, 100);
        assert!((s.mean_us - 50.5).abs() < 1e-9);
        // Nearest rank: the 99th of 100.
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(summarize(&[]), None);
    }
}
