//! The command line's grammar: every subcommand, argument and its help text (clap).

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use netpath::{
    config::{DEFAULT_BPFFS_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR},
    control::EPHEMERAL_PORTS,
    model::{Destination, HostAccess, Joining, MacAddr},
};

use super::{
    family::{self, PerFamily},
    ops::Output,
    select::{self, Filter},
};

/// The version and the commit it was built from, as `--version` prints them.
pub(crate) const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("NETPATH_COMMIT"), ")");

/// netpath: an eBPF/XDP + tc host datapath for containers and microVMs.
///
/// Start the daemon (it creates the default network 10.200.0.0/16 and loads the
/// datapath), then create networks, attach containers (veth into their network
/// namespace) and microVMs (TAP devices), and remove everything with `netpath reset`.
/// Endpoint ids may be shortened to any prefix that names one endpoint.
///
/// Examples:
///   sudo netpath daemon &
///   netpath network create web --subnet 10.50.0.0/24
///   netpath network create dual --subnet 10.51.0.0/24 --subnet fd51::/64
///   netpath network create v6 --subnet fd52::/64
///   netpath endpoint add web --netns /run/netns/c1
///   netpath tap add web --name fc-tap0 --uid 1000 --gid 1000
///   netpath port publish 3f2a -p 8080:80 -p 127.0.0.1::53/udp
///   netpath ls --filter network=web
///   netpath inspect web 3f2a tcp/0.0.0.0:8080
#[derive(Parser)]
#[command(
    name = "netpath",
    version = VERSION,
    propagate_version = true,
    verbatim_doc_comment
)]
pub(crate) struct Cli {
    /// The daemon's paths (global options).
    #[command(flatten)]
    pub(crate) paths: PathArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the daemon keeps its state, serves its API and pins the datapath: every
/// command takes them.
#[derive(Args)]
pub(crate) struct PathArgs {
    /// Directory of the daemon's state database and lock.
    #[arg(long, global = true, env = "NETPATH_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub(crate) state_dir: PathBuf,
    /// Unix socket of the daemon's HTTP/JSON API.
    #[arg(long, global = true, env = "NETPATH_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// bpffs directory where the datapath's maps, programs and links are pinned.
    #[arg(long, global = true, env = "NETPATH_BPFFS", default_value = DEFAULT_BPFFS_DIR)]
    pub(crate) bpffs: PathBuf,
}

/// The top-level commands.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the daemon in the foreground: load (or adopt) the pinned datapath, reconcile
    /// state with the kernel, create the default network, serve the API on --socket.
    /// Ctrl-C leaves the datapath running.
    Daemon {
        /// Load fresh eBPF programs even if a pinned datapath of this layout exists;
        /// pinned maps and attachments are kept and switched to the new programs. (Maps
        /// pinned with another layout are migrated without it; one that cannot be is
        /// refused, unless --reload replaces it, losing its entries.)
        #[arg(long)]
        reload: bool,
        /// Do not create the default network (10.200.0.0/16).
        #[arg(long)]
        no_default_network: bool,
        /// Host ports handed out for `-p GUESTPORT` (no host port given), FIRST-LAST.
        /// Keep it clear of the kernel's ephemeral range
        /// (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default), which
        /// masquerade and host sockets use.
        #[arg(long, value_name = "FIRST-LAST", default_value = "20000-29999", value_parser = port_range)]
        ephemeral_ports: (u16, u16),
        /// Serve the Docker plugin `netpath` (libnetwork remote network and IPAM
        /// driver) on this unix socket, where dockerd looks for it.
        #[arg(long, value_name = "PATH", default_value = netpath::docker::DEFAULT_SOCKET)]
        docker_plugin_socket: PathBuf,
        /// Do not serve the Docker plugin.
        #[arg(long, conflicts_with = "docker_plugin_socket")]
        no_docker_plugin: bool,
        /// Also serve `GET /metrics` (and nothing else) over TCP on this address, for a
        /// Prometheus that cannot reach the API socket: e.g. 127.0.0.1:9464. Off unless
        /// given; a non-loopback address needs --metrics-public.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Allow a --metrics-addr that is not a loopback address (whoever reaches it
        /// reads the metrics: endpoint ids, networks, traffic).
        #[arg(long, requires = "metrics_addr")]
        metrics_public: bool,
        /// The group whose members may use the API socket without sudo (it is 0660,
        /// owned by root and this group). Default: `netpath` if this host has that group
        /// (`sudo groupadd --system netpath`), else root only.
        #[arg(long, value_name = "GROUP")]
        socket_group: Option<String>,
    },
    /// Create, remove and list networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach containers: a veth pair with one end in the container's network namespace.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Attach microVMs: a TAP device owned by the VMM's uid/gid, the guest a /32.
    #[command(subcommand)]
    Tap(TapCmd),
    /// Publish ports of an endpoint to the host (DNAT in BPF, no proxy, no iptables).
    #[command(subcommand)]
    Port(PortCmd),
    /// List networks and endpoints (`-q`: endpoint ids only).
    Ls(EndpointListing),
    /// Show networks, endpoints and published ports as JSON, by network name, endpoint
    /// id (or prefix) or lease id (`tcp/0.0.0.0:8080`), as `docker inspect` does.
    Inspect {
        /// What to show: network names, endpoint ids (or prefixes), lease ids.
        #[arg(required = true, value_name = "NAME|ID|LEASE")]
        what: Vec<String>,
    },
    /// Remove everything this netpath instance created: attachments, pins, links,
    /// state. Refuses while the daemon runs.
    Reset {
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the datapath's counters: packets per hook and class, per endpoint, the fast
    /// path's forwards (endpoint → endpoint, uplink → endpoint, endpoint → uplink) and
    /// drops by reason. Asks the daemon on --socket; while it is down, reads the pinned
    /// maps under --bpffs (the datapath outlives the daemon).
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Include classes and drop reasons with zero packets.
        #[arg(long)]
        all: bool,
    },
    /// List the connections the datapath translates, as `conntrack -L` does: masqueraded
    /// ones (an endpoint's, out through an uplink), published ones (from outside to a
    /// published port) and hairpin ones (from an endpoint to a published port), with
    /// their tuples before and after translation, state, age, idle time and time left.
    /// Connections past their timeout are not shown.
    Flows {
        /// Only this endpoint's (an id or a unique prefix).
        #[arg(long, value_name = "ID")]
        endpoint: Option<String>,
        /// Only this protocol's (`icmp`: ICMP and ICMPv6 echo).
        #[arg(long, value_enum)]
        proto: Option<ProtoArg>,
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stream the datapath's events as they happen, a line each: every drop (reason,
    /// hook, endpoint, addresses) and, with `--type trace` or `--trace-every N`,
    /// forwarded packets (one in N). `lost` lines count events that did not make it
    /// (the datapath's ring was full, or this reader fell behind): the datapath never
    /// waits for a reader. Runs until Ctrl-C, or `--count` events.
    Monitor {
        /// Only drops, or only traced forwards.
        #[arg(long = "type", value_enum)]
        kind: Option<EventTypeArg>,
        /// Only this endpoint's (an id or a unique prefix).
        #[arg(long, value_name = "ID")]
        endpoint: Option<String>,
        /// Trace one forwarded packet in N (default with `--type trace`: each).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        trace_every: Option<u32>,
        /// Stop after N events (`lost` lines do not count).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Print each event as a JSON line.
        #[arg(long)]
        json: bool,
    },
    /// The datapath at a glance, refreshed every second: each endpoint's packet and bit
    /// rates both ways, drops per second by reason, the most recently active translated
    /// connections, the fullest tables, each program's cost per packet (while sysctl
    /// kernel.bpf_stats_enabled=1). No colours. `q` quits. Without a terminal (or with
    /// `--plain`) it prints text frames instead.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value = "1", value_name = "SECS")]
        interval: f64,
        /// Stop after N refreshes.
        #[arg(long, value_name = "N")]
        iterations: Option<u64>,
        /// Print text frames, one per refresh, instead of a full-screen view.
        #[arg(long)]
        plain: bool,
    },
    /// Print a shell completion script: `netpath completions bash >
    /// /etc/bash_completion.d/netpath` (zsh: into a directory of $fpath as `_netpath`;
    /// fish: ~/.config/fish/completions/netpath.fish).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), for `man -l -` or a man directory.
    #[command(hide = true)]
    Man,
}

/// `netpath network ...`.
#[derive(Subcommand)]
pub(crate) enum NetworkCmd {
    /// Create a network.
    Create {
        /// The network's name (as endpoints and `--filter network=` name it).
        name: String,
        /// The endpoints' subnet, e.g. 10.50.0.0/24; again with an IPv6 subnet
        /// (fd50::/64) for a dual-stack network, or an IPv6 subnet alone for an
        /// IPv6-only one. At most one per family.
        #[arg(long, required = true, value_name = "CIDR")]
        subnet: Vec<IpNet>,
        /// bridge: endpoints are ports of a Linux bridge; routed: a /32 route each.
        #[arg(long, value_enum, default_value = "bridge")]
        mode: ModeArg,
        /// Gateway address (default: the subnet's first host address); one per family.
        #[arg(long, value_name = "IP")]
        gateway: Vec<IpAddr>,
        /// Interface traffic leaves through (default: that of the default route).
        #[arg(long)]
        uplink: Option<String>,
        /// MTU of the network's devices (default 1500).
        #[arg(long)]
        mtu: Option<u32>,
        /// A destination the network's traffic reaches with the endpoints' own addresses,
        /// not masqueraded (other hosts' pod CIDRs, a routed LAN): an IPv4 or (on a
        /// dual-stack network) an IPv6 CIDR. Repeatable.
        #[arg(long, value_name = "CIDR")]
        no_masquerade: Vec<IpNet>,
        /// Policy: the endpoints do not reach each other directly (Docker's icc=false);
        /// a neighbour's published port through a host address still answers.
        #[arg(long)]
        isolate: bool,
        /// Policy: nothing leaves the network (Docker's --internal). Endpoints reach each
        /// other and their gateway only: no masquerade, no published ports.
        #[arg(long)]
        internal: bool,
        /// Policy: a destination outside the network its endpoints may not reach: a
        /// CIDR, or `private` (RFC 1918, 100.64/10, 169.254/16, fc00::/7, fe80::/10 and
        /// the host's own subnets). Repeatable; the longest matching rule wins.
        #[arg(long, value_name = "CIDR|private")]
        egress_deny: Vec<Destination>,
        /// Policy: an exception to --egress-deny (a longer prefix). Repeatable.
        #[arg(long, value_name = "CIDR")]
        egress_allow: Vec<IpNet>,
        /// Policy: what the endpoints may open on the host's own addresses: all (the
        /// default), none, or ports (53/udp,53/tcp,22). Published ports always answer.
        #[arg(long, value_name = "all|none|PORT[/PROTO],...")]
        host_access: Option<HostAccess>,
        /// A preset added to the rules given: `untrusted` (microVM tenants) is --isolate
        /// --egress-deny private --host-access none.
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
        /// Print the new network as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a network's policy on its running endpoints, e.g.
    /// `netpath network update web --isolate` or `--internal=false`. Rules not given stay.
    Update {
        /// The network's name.
        name: String,
        /// Endpoints do not reach each other directly (true when given alone).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        isolate: Option<bool>,
        /// Nothing leaves the network (true when given alone); refused while its
        /// endpoints have published ports.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        internal: Option<bool>,
        /// The new list of denied destinations (CIDR or `private`), replacing the old
        /// one. Repeatable.
        #[arg(long, value_name = "CIDR|private")]
        egress_deny: Vec<Destination>,
        /// The new list of exceptions, replacing the old one. Repeatable.
        #[arg(long, value_name = "CIDR")]
        egress_allow: Vec<IpNet>,
        /// Remove every egress rule (with neither list given).
        #[arg(long, conflicts_with_all = ["egress_deny", "egress_allow"])]
        clear_egress: bool,
        /// What the endpoints may open on the host's own addresses: all, none, or ports
        /// (53/udp,53/tcp,22).
        #[arg(long, value_name = "all|none|PORT[/PROTO],...")]
        host_access: Option<HostAccess>,
        /// A preset added to the rules: `untrusted` is --isolate --egress-deny private
        /// --host-access none.
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
        /// Print the network as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove networks (refused while one has endpoints, unless --force).
    Rm {
        /// Names of the networks to remove.
        #[arg(required = true)]
        names: Vec<String>,
        /// Also remove their endpoints.
        #[arg(long)]
        force: bool,
    },
    /// List networks.
    Ls {
        /// How to print them.
        #[command(flatten)]
        out: Output,
    },
}

/// How a network connects its endpoints (`--mode`; [`Mode`](netpath::model::Mode) in
/// the API). What each one means is `--mode`'s help: doc comments on these variants
/// would turn `network create --help` into clap's long layout.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ModeArg {
    Bridge,
    Routed,
}

/// `--profile` ([`Profile`](netpath::model::Profile) in the API).
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ProfileArg {
    Untrusted,
}

impl From<ProfileArg> for netpath::model::Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Untrusted => netpath::model::Profile::Untrusted,
        }
    }
}

/// `netpath flows --proto`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
}

/// `netpath monitor --type`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum EventTypeArg {
    Drop,
    Trace,
}

/// `netpath flows --kind`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum KindArg {
    Masq,
    Publish,
    Hairpin,
}

/// `netpath endpoint ...`.
#[derive(Subcommand)]
pub(crate) enum EndpointCmd {
    /// Attach a container: prints id, ip/prefix, mac, gateway and host interface.
    Add {
        /// The container's network namespace file (e.g. /run/netns/c1).
        #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
        netns: Option<PathBuf>,
        /// A process in the container (its /proc/PID/ns/net is used).
        #[arg(long)]
        pid: Option<u32>,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// The network, address, MAC and output form.
        #[command(flatten)]
        new: NewEndpoint,
    },
    /// Detach endpoints (container veths or TAPs) by id or unique id prefix.
    Rm(Ids),
    /// List endpoints (containers and TAPs).
    Ls {
        /// Only this network's (the same as --filter network=NAME).
        #[arg(long)]
        network: Option<String>,
        /// `--filter` and the output form.
        #[command(flatten)]
        listing: EndpointListing,
    },
}

/// `netpath port ...`.
#[derive(Subcommand)]
pub(crate) enum PortCmd {
    /// Publish: `-p [HOSTIP:][HOSTPORT[-END]:]GUESTPORT[-END][/tcp|/udp]` (Docker's
    /// syntax; no host port = one of the daemon's --ephemeral-ports; a host range for
    /// one guest port = the first free port of it). Repeatable: every -p is published,
    /// or none is.
    Publish {
        /// Endpoint id or unique prefix (container or TAP).
        endpoint: String,
        /// A port (range) to publish, in the syntax above. Repeatable.
        #[arg(short = 'p', long = "publish", required = true)]
        specs: Vec<String>,
        /// Print the new leases as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Unpublish: a lease id (`tcp/0.0.0.0:8080`, as `port ls` shows it), every port of
    /// an endpoint (its id), or both (the lease, only if it is that endpoint's).
    Rm {
        /// An endpoint id (or prefix), a lease id, or one of each.
        #[arg(required = true, num_args = 1..=2, value_name = "ENDPOINT|LEASE")]
        what: Vec<String>,
    },
    /// List published ports.
    Ls {
        /// Only leases matching KEY=VALUE: endpoint=ID, proto=tcp|udp, network=NAME.
        /// Repeatable.
        #[arg(long, value_name = "KEY=VALUE", value_parser = select::port_filter)]
        filter: Vec<Filter>,
        /// How to print them.
        #[command(flatten)]
        out: Output,
    },
}

/// `netpath tap ...`.
#[derive(Subcommand)]
pub(crate) enum TapCmd {
    /// Create a TAP for a microVM: prints id, guest ip, mac, gateway and the TAP.
    #[command(
        mut_arg("ip", |a| a.help("Guest address to lease (default: the lowest free one)")),
        mut_arg("mac", |a| a.help("Guest MAC (default: random, locally administered)"))
    )]
    Add {
        /// TAP device name (what the VMM opens).
        #[arg(long)]
        name: String,
        /// Owner allowed to open the TAP without privileges.
        #[arg(long)]
        uid: Option<u32>,
        /// Group allowed to open the TAP without privileges.
        #[arg(long)]
        gid: Option<u32>,
        /// Queues (a multiqueue TAP when > 1).
        #[arg(long)]
        queues: Option<u16>,
        /// The network, guest address, guest MAC and output form.
        #[command(flatten)]
        new: NewEndpoint,
    },
    /// Remove TAP endpoints by id or unique id prefix (container endpoints are refused:
    /// `netpath endpoint rm` removes those).
    Rm(Ids),
    /// List TAP endpoints.
    #[command(mut_arg("filter", |a| a.help(
        "Only TAPs matching KEY=VALUE: network=NAME, state=ready|creating, id=PREFIX. Repeatable"
    )))]
    Ls(EndpointListing),
}

/// What `endpoint add` and `tap add` both take: the network, the address and MAC to
/// give the endpoint (the guest's, for a TAP), and how to print it.
#[derive(Args)]
pub(crate) struct NewEndpoint {
    /// Name of the network to attach to.
    pub(crate) network: String,
    /// Address to lease (default: the lowest free one); one per family, the IPv6 one
    /// in a dual-stack network.
    #[arg(long, value_name = "IP")]
    pub(crate) ip: Vec<IpAddr>,
    /// MAC address (default: random, locally administered).
    #[arg(long)]
    pub(crate) mac: Option<MacAddr>,
    /// Print the new endpoint as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl NewEndpoint {
    /// The addresses asked for: (IPv4, IPv6), at most one of each.
    pub(crate) fn addresses(&self) -> anyhow::Result<PerFamily<IpAddr>> {
        family::by_family("ip", &self.ip)
    }

    /// The request (an endpoint's or a TAP's) with the network, addresses and MAC
    /// asked for; the caller sets the kind's own fields.
    pub(crate) fn request<R: Joining>(&self) -> anyhow::Result<R> {
        let (ip, ip6) = self.addresses()?;
        Ok(R::joining(self.network.clone(), ip, ip6, self.mac))
    }
}

/// What the endpoint listings (`ls`, `endpoint ls`, `tap ls`) take: which endpoints,
/// and how to print them.
#[derive(Args)]
pub(crate) struct EndpointListing {
    /// Only endpoints matching KEY=VALUE: network=NAME, kind=veth|tap,
    /// state=ready|creating, id=PREFIX. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = select::endpoint_filter)]
    pub(crate) filter: Vec<Filter>,
    /// How to print them.
    #[command(flatten)]
    pub(crate) out: Output,
}

/// The endpoints `endpoint rm` and `tap rm` remove.
#[derive(Args)]
pub(crate) struct Ids {
    /// Endpoint ids, or prefixes that each name one endpoint.
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
}

/// `FIRST-LAST`, a non-empty range of ports 1-65535.
pub(crate) fn port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| {
        format!(
            "expected FIRST-LAST, e.g. {}-{}",
            EPHEMERAL_PORTS.0, EPHEMERAL_PORTS.1
        )
    })?;
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
    };
    let (a, b) = (port(a)?, port(b)?);
    if b < a {
        return Err(format!("range {s} is reversed"));
    }
    Ok((a, b))
}
