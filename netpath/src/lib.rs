//! netpath: an eBPF/XDP + tc host datapath for containers and microVMs.
//!
//! Where things live:
//! * [`control`]: the control plane's operations (networks, endpoints, TAPs, ports,
//!   reconcile) over two seams, [`control::Host`] and [`control::Maps`].
//! * [`state`]: the state database (records, IP and port leases) in redb.
//! * [`api`] / [`client`]: the HTTP/JSON API on a unix socket, and its client.
//! * [`sandbox`] / [`tap`]: the kernel side of container namespaces and TAP devices.
//! * [`ebpf`]: the embedded eBPF object and its program names.
//! * [`datapath`]: loading, pinning, adopting and attaching the programs; reading maps.
//! * [`netlink`]: every rtnetlink operation (one place; no `ip` fork/exec).
//! * [`preflight`]: privilege and bpffs checks that turn into one clear error line.
//! * [`daemon`]: `netpath daemon` (sets up the default network and the datapath).
//! * [`reset`]: `netpath reset` (removes everything netpath created).
//! * [`cni`]: the `netpath-cni` CNI plugin (a client of the API).
//! * [`hostports`]: the host's own sockets on ports to publish (probe, owner).
//! * [`stats`]: the datapath's counters as one report (API and CLI).
//! * [`types`]: boundary types checked once (MAC addresses, interface names).
//! * [`config`]: defaults (paths, the embedded default network) and naming/tagging.

pub mod api;
pub mod client;
pub mod cni;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod docker;
pub mod ebpf;
pub mod error;
pub mod flows;
pub mod hostports;
pub mod model;
pub mod monitor;
pub mod netlink;
pub mod portspec;
pub mod preflight;
pub mod reset;
pub mod sandbox;
pub mod state;
pub mod stats;
pub mod sysctl;
pub mod tap;
pub mod telemetry;
pub mod types;
