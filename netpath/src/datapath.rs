//! The eBPF datapath in the kernel: load, pin, adopt, attach, read counters.
//!
//! Everything lives under one bpffs directory (the "pin root"):
//!
//! ```text
//! <root>/maps/<MAP>             every map (NETPATH_STATS, …)
//! <root>/progs/<program>        every program, so a restarted daemon can attach more
//!                               devices without reloading
//! <root>/links/<hook>:<ifindex>:<ifname>
//!                               every device attachment (tcx / XDP bpf_link), so
//!                               attachments outlive the daemon
//! <root>/cgroup/<program>       the socket hooks' links on the cgroup v2 root
//! ```
//!
//! The datapath is always used through its pins: a fresh load pins everything and then
//! reopens it from the pins, exactly like a restarted daemon adopting a running datapath.
//! One code path, exercised by every test.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues,
        lpm_trie::Key as LpmKey,
    },
    pin::PinError,
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType, Xdp,
        XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        tc::{NlOptions, TcAttachOptions, TcHandle, qdisc_add_clsact, qdisc_detach_program},
        xdp::XdpLink,
    },
};
use aya_obj::programs::XdpAttachType;
use netpath_common::{
    maps::{
        Counter, DROPS_MAP, DropReason, ENDPOINT_FLAG_PUBLISHED, ENDPOINTS_MAP, EP_STATS_MAP,
        EndpointCounters, EndpointKey, EndpointValue, FORWARDS_MAP, Forward, Hook, IFACES_MAP,
        STATS_MAP, stat_index,
    },
    nat::{
        DNAT_CT_MAP, HOST_NETNS_MAP, LOCAL_ADDRS_MAP, MASQ_SRC_MAP, NAT_AGE_MAP, NO_MASQ_MAP,
        NatAge, NatTarget, PUBLISH_MAP, PublishKey, RNAT_MAP, SNAT_MAP, SOCK_NAT_MAP, Tuple,
        UPLINKS_MAP, Uplink, no_masq_key,
    },
    packet::PacketClass,
};

use crate::ebpf::{
    OBJECT, PROGRAMS, ProgramKind, SOCK_PROGRAMS, TC_INGRESS_PROG, UPLINK_EGRESS_PROG,
    UPLINK_INGRESS_PROG, XDP_PROG,
};

/// Every map in the object; all are pinned.
pub const MAPS: [&str; 17] = [
    FORWARDS_MAP,
    NAT_AGE_MAP,
    HOST_NETNS_MAP,
    LOCAL_ADDRS_MAP,
    SOCK_NAT_MAP,
    PUBLISH_MAP,
    DNAT_CT_MAP,
    STATS_MAP,
    ENDPOINTS_MAP,
    IFACES_MAP,
    EP_STATS_MAP,
    DROPS_MAP,
    SNAT_MAP,
    RNAT_MAP,
    UPLINKS_MAP,
    MASQ_SRC_MAP,
    NO_MASQ_MAP,
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot create the bpffs directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the eBPF object does not load: {0}")]
    Object(#[source] aya::EbpfError),
    #[error(
        "this netpath was built without its eBPF programs (bpf-linker was not on PATH): build it with `cargo xtask build` (or run the suite with `cargo xtask test`)"
    )]
    NoObject,
    #[error("the kernel rejected eBPF program {program}: {detail}")]
    Verifier {
        program: &'static str,
        detail: String,
    },
    #[error("eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("cannot open pinned map {path}: {source}")]
    OpenMap {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("cannot open pinned link {path}: {source}")]
    OpenLink {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("cannot open {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach {program} to {ifname}: {source}")]
    Attach {
        program: &'static str,
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("bpf_link on {ifname}: {source}")]
    Link {
        ifname: String,
        #[source]
        source: LinkError,
    },
    #[error("reading map {map}: {source}")]
    ReadMap {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot size per-CPU values: {0}")]
    Cpus(#[source] io::Error),
    #[error("writing map {map}: {source}")]
    WriteMap {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = DatapathError> = std::result::Result<T, E>;

/// The pin layout under one bpffs directory.
#[derive(Clone, Debug)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Pins { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }
    /// Directory of the socket hooks' cgroup links (not per device, so apart from
    /// `links/`, which reconciliation sweeps by device).
    pub fn cgroup_links_dir(&self) -> PathBuf {
        self.root.join("cgroup")
    }
    /// Pin of the attachment of `hook` to the device (`ifname`, `ifindex`). The index
    /// makes a pin name unique per device instance: a recreated device with the same
    /// name gets a new index, so a stale pin is never mistaken for a live attachment.
    pub fn link(&self, hook: Hook, ifname: &str, ifindex: u32) -> PathBuf {
        // bpffs refuses names containing '.'; ':' cannot occur in interface names, so
        // the name splits back unambiguously.
        self.links_dir()
            .join(format!("{}:{ifindex}:{ifname}", hook.name()))
    }
    /// True if a datapath (programs and maps) is pinned here.
    pub fn complete(&self) -> bool {
        PROGRAMS.iter().all(|(p, _)| self.prog(p).exists())
            && MAPS.iter().all(|m| self.map(m).exists())
    }
}

/// How [`Datapath::open`] obtained the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Loaded into the kernel now and pinned.
    Loaded,
    /// Already pinned (a previous daemon's); adopted without reloading.
    Adopted,
}

/// How an attachment was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Newly attached and pinned.
    Attached,
    /// A pinned attachment already existed and was kept.
    Adopted,
    /// A pinned attachment existed and now runs the newly loaded program.
    Replaced,
}

/// Totals of one stats slot, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClassStat {
    pub hook: &'static str,
    pub class: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// The loaded datapath, opened through its pins.
pub struct Datapath {
    pins: Pins,
    origin: Origin,
    xdp: Xdp,
    /// The tc programs, by [`tc_hooks`] position.
    tc: [SchedClassifier; 3],
    stats: PerCpuArray<MapData, Counter>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    ifaces: HashMap<MapData, u32, EndpointValue>,
    ep_stats: PerCpuHashMap<MapData, u32, EndpointCounters>,
    drops: PerCpuArray<MapData, Counter>,
    forwards: PerCpuArray<MapData, Counter>,
    snat: HashMap<MapData, Tuple, NatTarget>,
    uplinks: HashMap<MapData, u32, Uplink>,
    masq_src: LpmTrie<MapData, [u8; 4], u32>,
    no_masq: LpmTrie<MapData, [u8; 8], u8>,
    publish: HashMap<MapData, PublishKey, NatTarget>,
    dnat_ct: HashMap<MapData, Tuple, NatTarget>,
    local_addrs: HashMap<MapData, [u8; 4], u8>,
    nat_age: HashMap<MapData, Tuple, NatAge>,
}

/// One endpoint's counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStat {
    pub ip: std::net::Ipv4Addr,
    pub ifindex: u32,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// Drops of one reason, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DropStat {
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// The fast path's forwards one way ([`Forward`]), summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ForwardStat {
    pub way: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Slot `slot` of a per-CPU counter array, summed over CPUs.
fn counter_sum(
    map: &PerCpuArray<MapData, Counter>,
    name: &'static str,
    slot: u32,
) -> Result<Counter> {
    map.get(&slot, 0)
        .map(|v| Counter::sum(v.iter()))
        .map_err(|source| DatapathError::ReadMap { map: name, source })
}

impl Datapath {
    /// Adopts the datapath pinned under `root`, or loads and pins it if there is none
    /// (or if `reload` asks for fresh programs; pinned maps are kept so state survives).
    pub fn open(root: impl Into<PathBuf>, reload: bool) -> Result<Self> {
        let pins = Pins::new(root);
        let origin = if pins.complete() && !reload {
            Origin::Adopted
        } else {
            load_and_pin(&pins)?;
            Origin::Loaded
        };
        let xdp =
            Xdp::from_pin(pins.prog(XDP_PROG), XdpAttachType::Interface).map_err(|source| {
                DatapathError::Program {
                    program: XDP_PROG,
                    source,
                }
            })?;
        let open_tc = |hook: Hook| {
            let program = tc_program(hook);
            SchedClassifier::from_pin(pins.prog(program))
                .map_err(|source| DatapathError::Program { program, source })
        };
        let [a, b, c] = TC_HOOKS;
        let tc = [open_tc(a)?, open_tc(b)?, open_tc(c)?];
        let stats = open_map(&pins, STATS_MAP)?;
        let stats = PerCpuArray::try_from(stats).map_err(|source| DatapathError::OpenMap {
            path: pins.map(STATS_MAP),
            source,
        })?;
        let typed_err = |name: &'static str| {
            let path = pins.map(name);
            move |source| DatapathError::OpenMap { path, source }
        };
        let endpoints =
            HashMap::try_from(open_map(&pins, ENDPOINTS_MAP)?).map_err(typed_err(ENDPOINTS_MAP))?;
        let ifaces =
            HashMap::try_from(open_map(&pins, IFACES_MAP)?).map_err(typed_err(IFACES_MAP))?;
        let ep_stats = PerCpuHashMap::try_from(open_map(&pins, EP_STATS_MAP)?)
            .map_err(typed_err(EP_STATS_MAP))?;
        let drops =
            PerCpuArray::try_from(open_map(&pins, DROPS_MAP)?).map_err(typed_err(DROPS_MAP))?;
        let forwards = PerCpuArray::try_from(open_map(&pins, FORWARDS_MAP)?)
            .map_err(typed_err(FORWARDS_MAP))?;
        let snat = HashMap::try_from(open_map(&pins, SNAT_MAP)?).map_err(typed_err(SNAT_MAP))?;
        let uplinks =
            HashMap::try_from(open_map(&pins, UPLINKS_MAP)?).map_err(typed_err(UPLINKS_MAP))?;
        let masq_src =
            LpmTrie::try_from(open_map(&pins, MASQ_SRC_MAP)?).map_err(typed_err(MASQ_SRC_MAP))?;
        let no_masq =
            LpmTrie::try_from(open_map(&pins, NO_MASQ_MAP)?).map_err(typed_err(NO_MASQ_MAP))?;
        let publish =
            HashMap::try_from(open_map(&pins, PUBLISH_MAP)?).map_err(typed_err(PUBLISH_MAP))?;
        let dnat_ct =
            HashMap::try_from(open_map(&pins, DNAT_CT_MAP)?).map_err(typed_err(DNAT_CT_MAP))?;
        let local_addrs = HashMap::try_from(open_map(&pins, LOCAL_ADDRS_MAP)?)
            .map_err(typed_err(LOCAL_ADDRS_MAP))?;
        let nat_age =
            HashMap::try_from(open_map(&pins, NAT_AGE_MAP)?).map_err(typed_err(NAT_AGE_MAP))?;
        Ok(Datapath {
            nat_age,
            local_addrs,
            publish,
            dnat_ct,
            snat,
            uplinks,
            masq_src,
            no_masq,
            pins,
            origin,
            xdp,
            tc,
            stats,
            endpoints,
            ifaces,
            ep_stats,
            drops,
            forwards,
        })
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }
    pub fn pins(&self) -> &Pins {
        &self.pins
    }
    pub fn xdp(&self) -> &Xdp {
        &self.xdp
    }
    /// The endpoint-facing tc ingress program.
    pub fn tc_ingress(&self) -> &SchedClassifier {
        self.tc_prog(Hook::TcIngress)
    }

    /// The tc program of `hook` (which must be a tc hook).
    pub fn tc_prog(&self, hook: Hook) -> &SchedClassifier {
        &self.tc[tc_slot(hook)]
    }

    /// Attaches the endpoint-facing tc ingress program to `ifname`.
    pub fn attach_tc_ingress(&mut self, ifname: &str, ifindex: u32) -> Result<Attachment> {
        self.attach_tc(Hook::TcIngress, ifname, ifindex)
    }

    /// Attaches the tc program of `hook` to `ifname` (ingress or egress as the hook
    /// says) with tcx (a bpf_link, kernel ≥ 6.6) and pins the link. An existing pinned
    /// attachment is kept, or switched to this datapath's program if it was just
    /// (re)loaded.
    pub fn attach_tc(&mut self, hook: Hook, ifname: &str, ifindex: u32) -> Result<Attachment> {
        let pin = self.pins.link(hook, ifname, ifindex);
        let program = tc_program(hook);
        let attach_type = match hook {
            Hook::UplinkEgress => TcAttachType::Egress,
            _ => TcAttachType::Ingress,
        };
        let prog = &mut self.tc[tc_slot(hook)];
        let attach_err = |source| DatapathError::Attach {
            program,
            ifname: ifname.to_owned(),
            source,
        };
        if let Some(old) = open_pinned_link(&pin)? {
            if self.origin == Origin::Adopted {
                return Ok(Attachment::Adopted);
            }
            let link = SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|source| link_err(ifname, source))?;
            let id = prog.attach_to_link(link).map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            pin_link(
                FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
                &pin,
            )?;
            return Ok(Attachment::Replaced);
        }
        let id = prog.attach(ifname, attach_type).map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        pin_link(
            FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
            &pin,
        )?;
        Ok(Attachment::Attached)
    }

    /// Attaches the socket-address hooks (host-local access to published ports) to the
    /// root of the cgroup v2 hierarchy at `cgroup_root`, so they see every process's
    /// sockets, and pins the links (`cgroup/<program>`). Existing pinned links are
    /// kept, or replaced by fresh ones when the programs were just (re)loaded. Other
    /// programs on the same hooks (systemd's, Docker's) keep running beside ours.
    pub fn attach_host_local(&mut self, cgroup_root: &Path) -> Result<Attachment> {
        let cgroup = fs::File::open(cgroup_root).map_err(|source| DatapathError::Cgroup {
            path: cgroup_root.to_owned(),
            source,
        })?;
        let dir = self.pins.cgroup_links_dir();
        fs::create_dir_all(&dir).map_err(|source| DatapathError::PinDir { path: dir, source })?;
        self.set_host_netns()?;
        let mut outcome = Attachment::Adopted;
        for (name, attach_type) in SOCK_PROGRAMS {
            let pin = self.pins.cgroup_links_dir().join(name);
            if open_pinned_link(&pin)?.is_some() {
                if self.origin == Origin::Adopted {
                    continue;
                }
                // Reloaded programs: drop the old attachment (unpinned, its last
                // reference goes away) and attach the new program below.
                remove_file_if_exists(&pin)?;
            }
            let attach_err = |source| DatapathError::Attach {
                program: name,
                ifname: cgroup_root.display().to_string(),
                source,
            };
            let mut prog =
                CgroupSockAddr::from_pin(self.pins.prog(name), attach_type).map_err(|source| {
                    DatapathError::Program {
                        program: name,
                        source,
                    }
                })?;
            // A cgroup bpf_link always coexists with other programs on the hook (the
            // kernel treats links as multi-attach and refuses any attach flag on
            // them), so `Single` here means "no flags", not exclusive.
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            let link = FdLink::try_from(link)
                .map_err(|source| link_err(&cgroup_root.display().to_string(), source))?;
            pin_link(link, &pin)?;
            outcome = Attachment::Attached;
        }
        Ok(outcome)
    }

    /// Records this process's network namespace (its netns cookie) as the host
    /// namespace, the only one whose sockets the socket hooks translate.
    fn set_host_netns(&mut self) -> Result<()> {
        let cookie = netns_cookie().map_err(|source| DatapathError::Cgroup {
            path: PathBuf::from("/proc/self/ns/net"),
            source,
        })?;
        let map = open_map(&self.pins, HOST_NETNS_MAP)?;
        let mut array: Array<MapData, u64> =
            Array::try_from(map).map_err(|source| DatapathError::OpenMap {
                path: self.pins.map(HOST_NETNS_MAP),
                source,
            })?;
        array
            .set(0, cookie, 0)
            .map_err(|source| DatapathError::WriteMap {
                map: HOST_NETNS_MAP,
                source,
            })
    }

    /// Makes `NETPATH_LOCAL_ADDRS` (the host addresses a 0.0.0.0 publish answers on for
    /// host processes) hold exactly `addrs`.
    pub fn set_local_addrs(&mut self, addrs: &[std::net::Ipv4Addr]) -> Result<()> {
        let want: std::collections::BTreeSet<[u8; 4]> = addrs.iter().map(|a| a.octets()).collect();
        let have: Vec<[u8; 4]> = self.local_addrs.keys().filter_map(|k| k.ok()).collect();
        for old in have.iter().filter(|a| !want.contains(*a)) {
            absent_ok(LOCAL_ADDRS_MAP, self.local_addrs.remove(old))?;
        }
        for new in want.iter().filter(|a| !have.contains(*a)) {
            self.local_addrs
                .insert(new, 1, 0)
                .map_err(|source| DatapathError::WriteMap {
                    map: LOCAL_ADDRS_MAP,
                    source,
                })?;
        }
        Ok(())
    }

    /// Attaches the endpoint program to an endpoint's host-side device (veth host end
    /// or TAP) as a netlink cls_bpf filter under a clsact qdisc, not with tcx.
    ///
    /// Why: a tcx attach waits for an RCU grace period (`bpf_mprog_commit` calls
    /// `synchronize_rcu`), measured 10-22 ms here against ~0.25 ms for clsact + cls_bpf,
    /// and endpoint setup is latency-critical. The filter is not a bpf_link, so it is
    /// not pinned: it lives as long as the device (an endpoint's device is deleted with
    /// the endpoint), survives the daemon, and a restarted daemon finds it in place.
    /// Bridges and uplinks keep pinned tcx links ([`Datapath::attach_tc`]).
    pub fn attach_tc_endpoint(&mut self, ifname: &str, ifindex: u32) -> Result<Attachment> {
        let _ = ifindex;
        let attach_err = |source| DatapathError::Attach {
            program: TC_INGRESS_PROG,
            ifname: ifname.to_owned(),
            source,
        };
        // Already present (e.g. a restart): fine; any real problem shows in the attach.
        let _ = qdisc_add_clsact(ifname);
        let options = || {
            TcAttachOptions::Netlink(NlOptions {
                priority: ENDPOINT_TC_PRIORITY,
                handle: TcHandle::from(1),
                ..Default::default()
            })
        };
        let prog = &mut self.tc[tc_slot(Hook::TcIngress)];
        let outcome = match prog.attach_with_options(ifname, TcAttachType::Ingress, options()) {
            Ok(id) => Ok((id, Attachment::Attached)),
            Err(e) if has_errno(&e, libc::EEXIST) => {
                if self.origin == Origin::Adopted {
                    return Ok(Attachment::Adopted);
                }
                // Reloaded programs: replace the old filter (found by its program name).
                let name = prog
                    .info()
                    .ok()
                    .and_then(|i| i.name_as_str().map(str::to_owned))
                    .unwrap_or_else(|| TC_INGRESS_PROG.to_owned());
                let _ = qdisc_detach_program(ifname, TcAttachType::Ingress, &name);
                let _ = qdisc_detach_program(ifname, TcAttachType::Ingress, TC_INGRESS_PROG);
                prog.attach_with_options(ifname, TcAttachType::Ingress, options())
                    .map(|id| (id, Attachment::Replaced))
            }
            Err(e) => Err(e),
        };
        let (id, attachment) = outcome.map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        // Dropping the link would detach the filter; it must outlive this process.
        std::mem::forget(link);
        Ok(attachment)
    }

    /// Attaches the XDP program to `ifname` as a bpf_link (driver mode if `native`,
    /// otherwise generic/skb mode) and pins the link; same adoption rules as tc.
    pub fn attach_xdp(&mut self, ifname: &str, ifindex: u32, native: bool) -> Result<Attachment> {
        let pin = self.pins.link(Hook::Xdp, ifname, ifindex);
        let attach_err = |source| DatapathError::Attach {
            program: XDP_PROG,
            ifname: ifname.to_owned(),
            source,
        };
        if let Some(old) = open_pinned_link(&pin)? {
            if self.origin == Origin::Adopted {
                return Ok(Attachment::Adopted);
            }
            let link =
                XdpLink::try_from(FdLink::from(old)).map_err(|source| link_err(ifname, source))?;
            let id = self.xdp.attach_to_link(link).map_err(attach_err)?;
            let link = self.xdp.take_link(id).map_err(attach_err)?;
            pin_link(
                FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
                &pin,
            )?;
            return Ok(Attachment::Replaced);
        }
        let mode = if native {
            XdpMode::Driver
        } else {
            XdpMode::Skb
        };
        let id = self
            .xdp
            .attach_to_if_index(ifindex, mode)
            .map_err(attach_err)?;
        let link = self.xdp.take_link(id).map_err(attach_err)?;
        pin_link(
            FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
            &pin,
        )?;
        Ok(Attachment::Attached)
    }

    /// Registers (or updates) an endpoint: by address (destination lookups), by
    /// host-side ifindex (source checks), and a zeroed counter entry if it has none.
    /// The ifindex entry goes in last, so the fast path never enforces for an endpoint
    /// it cannot also reach.
    /// Flags already set on the endpoint's entry are kept.
    pub fn upsert_endpoint(&mut self, mut value: EndpointValue) -> Result<()> {
        let write = |map: &'static str| move |source| DatapathError::WriteMap { map, source };
        if let Ok(old) = self.endpoints.get(&EndpointKey { ip: value.ip }, 0)
            && old.ifindex == value.ifindex
        {
            value.flags |= old.flags;
        }
        if self.ep_stats.get(&value.ifindex, 0).is_err() {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
            let zero = PerCpuValues::try_from(vec![EndpointCounters::default(); cpus])
                .map_err(DatapathError::Cpus)?;
            self.ep_stats
                .insert(value.ifindex, zero, 0)
                .map_err(write(EP_STATS_MAP))?;
        }
        self.endpoints
            .insert(EndpointKey { ip: value.ip }, value, 0)
            .map_err(write(ENDPOINTS_MAP))?;
        self.ifaces
            .insert(value.ifindex, value, 0)
            .map_err(write(IFACES_MAP))
    }

    /// Unregisters the endpoint with address `ip` from every map; absent is fine.
    pub fn remove_endpoint(&mut self, ip: std::net::Ipv4Addr) -> Result<()> {
        let key = EndpointKey { ip: ip.octets() };
        if let Ok(v) = self.endpoints.get(&key, 0) {
            absent_ok(IFACES_MAP, self.ifaces.remove(&v.ifindex))?;
            absent_ok(EP_STATS_MAP, self.ep_stats.remove(&v.ifindex))?;
        }
        absent_ok(ENDPOINTS_MAP, self.endpoints.remove(&key))
    }

    /// Makes `ifindex` an uplink whose masqueraded connections take `uplink.addr`.
    pub fn set_uplink(&mut self, ifindex: u32, uplink: Uplink) -> Result<()> {
        self.uplinks
            .insert(ifindex, uplink, 0)
            .map_err(|source| DatapathError::WriteMap {
                map: UPLINKS_MAP,
                source,
            })
    }

    /// Stops masquerading on `ifindex`; absent is fine.
    pub fn remove_uplink(&mut self, ifindex: u32) -> Result<()> {
        absent_ok(UPLINKS_MAP, self.uplinks.remove(&ifindex))
    }

    /// Masquerades traffic from `subnet` (network `network_id`) leaving an uplink.
    pub fn add_masq_subnet(&mut self, subnet: ipnet::Ipv4Net, network_id: u16) -> Result<()> {
        let key = LpmKey::new(u32::from(subnet.prefix_len()), subnet.network().octets());
        self.masq_src
            .insert(&key, u32::from(network_id), 0)
            .map_err(|source| DatapathError::WriteMap {
                map: MASQ_SRC_MAP,
                source,
            })
    }

    /// Stops masquerading `subnet`; absent is fine.
    pub fn remove_masq_subnet(&mut self, subnet: ipnet::Ipv4Net) -> Result<()> {
        let key = LpmKey::new(u32::from(subnet.prefix_len()), subnet.network().octets());
        absent_ok(MASQ_SRC_MAP, self.masq_src.remove(&key))
    }

    /// Sets the destinations network `network_id` reaches unmasqueraded to exactly
    /// `cidrs` (entries of that network not in `cidrs` go).
    pub fn set_no_masquerade(&mut self, network_id: u16, cidrs: &[ipnet::Ipv4Net]) -> Result<()> {
        let key = |c: &ipnet::Ipv4Net| {
            LpmKey::new(
                32 + u32::from(c.prefix_len()),
                no_masq_key(u32::from(network_id), c.network().octets()),
            )
        };
        let stale: Vec<LpmKey<[u8; 8]>> = self
            .no_masq
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| {
                k.data()[..4] == u32::from(network_id).to_be_bytes()
                    && !cidrs
                        .iter()
                        .any(|c| key(c).data() == k.data() && key(c).prefix_len() == k.prefix_len())
            })
            .collect();
        for k in stale {
            absent_ok(NO_MASQ_MAP, self.no_masq.remove(&k))?;
        }
        for c in cidrs {
            self.no_masq
                .insert(&key(c), 1, 0)
                .map_err(|source| DatapathError::WriteMap {
                    map: NO_MASQ_MAP,
                    source,
                })?;
        }
        Ok(())
    }

    /// Publishes `key` (protocol, host address or 0.0.0.0, host port) to `endpoint`,
    /// marking the endpoint first ([`Datapath::mark_published`]).
    pub fn publish(&mut self, key: PublishKey, endpoint: NatTarget) -> Result<()> {
        self.mark_published(endpoint.addr)?;
        self.publish
            .insert(key, endpoint, 0)
            .map_err(|source| DatapathError::WriteMap {
                map: PUBLISH_MAP,
                source,
            })
    }

    /// Sets [`ENDPOINT_FLAG_PUBLISHED`] on the endpoint with address `ip` (by address,
    /// then by ifindex: the one the program reads); no endpoint there is fine.
    pub fn mark_published(&mut self, ip: [u8; 4]) -> Result<()> {
        let Ok(mut value) = self.endpoints.get(&EndpointKey { ip }, 0) else {
            return Ok(());
        };
        if value.flags & ENDPOINT_FLAG_PUBLISHED != 0 {
            return Ok(());
        }
        value.flags |= ENDPOINT_FLAG_PUBLISHED;
        self.upsert_endpoint(value)
    }

    /// Stops publishing `key`; absent is fine.
    pub fn unpublish(&mut self, key: PublishKey) -> Result<()> {
        absent_ok(PUBLISH_MAP, self.publish.remove(&key))
    }

    /// Number of published ports.
    pub fn published_count(&self) -> usize {
        self.publish.keys().filter(|k| k.is_ok()).count()
    }

    /// The front (host address and port) a reply with endpoint-side tuple `reply`
    /// is translated to, if that connection is tracked.
    pub fn dnat_entry(&self, reply: &Tuple) -> Option<NatTarget> {
        self.dnat_ct.get(reply, 0).ok()
    }

    /// The masquerade mapping of connection `orig`, if one exists.
    pub fn snat_entry(&self, orig: &Tuple) -> Option<NatTarget> {
        self.snat.get(orig, 0).ok()
    }

    /// Number of masqueraded connections tracked.
    /// The activity record of the masqueraded connection whose replies look like `reply`.
    pub fn nat_age(&self, reply: &Tuple) -> Option<NatAge> {
        self.nat_age.get(reply, 0).ok()
    }

    /// Overwrites a connection's activity record (tests: age a connection).
    pub fn set_nat_age(&mut self, reply: &Tuple, age: NatAge) -> Result<()> {
        self.nat_age
            .insert(reply, age, 0)
            .map_err(|source| DatapathError::WriteMap {
                map: NAT_AGE_MAP,
                source,
            })
    }

    pub fn snat_count(&self) -> usize {
        self.snat.keys().filter(|k| k.is_ok()).count()
    }

    /// Every endpoint's counters.
    pub fn endpoint_stats(&self) -> Result<Vec<EndpointStat>> {
        let mut out = Vec::new();
        for entry in self.endpoints.iter() {
            let (_, v) = entry.map_err(|source| DatapathError::ReadMap {
                map: ENDPOINTS_MAP,
                source,
            })?;
            let c = self
                .ep_stats
                .get(&v.ifindex, 0)
                .map(|vals| EndpointCounters::sum(vals.iter()))
                .unwrap_or_default();
            out.push(EndpointStat {
                ip: std::net::Ipv4Addr::from(v.ip),
                ifindex: v.ifindex,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
            });
        }
        out.sort_by_key(|e| e.ip);
        Ok(out)
    }

    /// Counters of the endpoint behind host-side device `ifindex`.
    pub fn endpoint_counters(&self, ifindex: u32) -> Result<EndpointCounters> {
        self.ep_stats
            .get(&ifindex, 0)
            .map(|vals| EndpointCounters::sum(vals.iter()))
            .map_err(|source| DatapathError::ReadMap {
                map: EP_STATS_MAP,
                source,
            })
    }

    /// Drops by reason, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<DropStat>> {
        DropReason::ALL
            .iter()
            .map(|r| {
                let c = self.drop_counter(*r)?;
                Ok(DropStat {
                    reason: r.name(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
            })
            .collect()
    }

    /// One drop reason's counter, summed over CPUs.
    pub fn drop_counter(&self, reason: DropReason) -> Result<Counter> {
        counter_sum(&self.drops, DROPS_MAP, reason as u32)
    }

    /// The fast path's forwards, each way, summed over CPUs.
    pub fn forwards(&self) -> Result<Vec<ForwardStat>> {
        Forward::ALL
            .iter()
            .map(|w| {
                let c = counter_sum(&self.forwards, FORWARDS_MAP, *w as u32)?;
                Ok(ForwardStat {
                    way: w.name(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
            })
            .collect()
    }

    /// Every registered endpoint.
    pub fn endpoints(&self) -> Result<Vec<(std::net::Ipv4Addr, EndpointValue)>> {
        self.endpoints
            .iter()
            .map(|r| r.map(|(k, v)| (std::net::Ipv4Addr::from(k.ip), v)))
            .collect::<Result<_, _>>()
            .map_err(|source| DatapathError::ReadMap {
                map: ENDPOINTS_MAP,
                source,
            })
    }

    /// Removes the attachment pins of device (`ifname`, `ifindex`) — after the device
    /// is deleted, its links are dead; dropping the pins frees them.
    pub fn forget_links(&mut self, ifname: &str, ifindex: u32) -> Result<()> {
        for hook in Hook::ALL {
            remove_file_if_exists(&self.pins.link(hook, ifname, ifindex))?;
        }
        Ok(())
    }

    /// Removes attachment pins whose device (name and ifindex) no longer exists in
    /// `live`; returns how many were removed.
    pub fn sweep_link_pins(&mut self, live: &[crate::netlink::Link]) -> Result<usize> {
        let dir = self.pins.links_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(DatapathError::Remove { path: dir, source }),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // <hook>:<ifindex>:<ifname>
            let mut parts = name.splitn(3, ':');
            let (_, index, ifname) = (parts.next(), parts.next(), parts.next());
            let alive = match (index.and_then(|i| i.parse::<u32>().ok()), ifname) {
                (Some(i), Some(n)) => live.iter().any(|l| l.index == i && l.name == n),
                _ => false,
            };
            if !alive {
                remove_file_if_exists(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Per-(hook, class) packet and byte totals, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<ClassStat>> {
        let mut out = Vec::new();
        for hook in Hook::ALL {
            for class in PacketClass::ALL {
                let c = self.counter(hook, class)?;
                out.push(ClassStat {
                    hook: hook.name(),
                    class: class.name(),
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
        }
        Ok(out)
    }

    /// One stats slot, summed over CPUs.
    pub fn counter(&self, hook: Hook, class: PacketClass) -> Result<Counter> {
        let values = self
            .stats
            .get(&stat_index(hook, class), 0)
            .map_err(|source| DatapathError::ReadMap {
                map: STATS_MAP,
                source,
            })?;
        Ok(Counter::sum(values.iter()))
    }
}

/// Priority of the endpoint filter in the clsact ingress hook (first to run).
const ENDPOINT_TC_PRIORITY: u16 = 1;

/// True if `err` or one of its sources is an OS error `errno`.
fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The tc hooks, in the order of `Datapath::tc`.
const TC_HOOKS: [Hook; 3] = [Hook::TcIngress, Hook::UplinkEgress, Hook::UplinkIngress];

fn tc_slot(hook: Hook) -> usize {
    TC_HOOKS.iter().position(|h| *h == hook).expect("a tc hook")
}

fn tc_program(hook: Hook) -> &'static str {
    match hook {
        Hook::UplinkEgress => UPLINK_EGRESS_PROG,
        Hook::UplinkIngress => UPLINK_INGRESS_PROG,
        _ => TC_INGRESS_PROG,
    }
}

/// Loads the object into the kernel and pins every program and map under `pins`.
/// Maps already pinned there are reused (aya opens an existing pin instead of creating).
fn load_and_pin(pins: &Pins) -> Result<()> {
    if OBJECT.is_empty() {
        return Err(DatapathError::NoObject);
    }
    for dir in [
        pins.root().join("maps"),
        pins.root().join("progs"),
        pins.links_dir(),
    ] {
        fs::create_dir_all(&dir).map_err(|source| DatapathError::PinDir { path: dir, source })?;
    }
    let mut loader = EbpfLoader::new();
    for map in MAPS {
        loader.map_pin_path(map, pins.map(map));
    }
    let mut ebpf = loader.load(OBJECT).map_err(DatapathError::Object)?;
    for (name, kind) in PROGRAMS {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Verifier {
                program: name,
                detail: "not found in the eBPF object".into(),
            })?;
        let load_err = |source: ProgramError| match source {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => DatapathError::Verifier {
                program: name,
                detail: format!("{io_error}; verifier log:\n{verifier_log}"),
            },
            source => DatapathError::Program {
                program: name,
                source,
            },
        };
        match kind {
            ProgramKind::Xdp => {
                let p: &mut Xdp = program.try_into().map_err(load_err)?;
                p.load().map_err(load_err)?;
            }
            ProgramKind::Tc => {
                let p: &mut SchedClassifier = program.try_into().map_err(load_err)?;
                p.load().map_err(load_err)?;
            }
            ProgramKind::SockAddr => {
                let p: &mut CgroupSockAddr = program.try_into().map_err(load_err)?;
                p.load().map_err(load_err)?;
            }
        }
        // Replace an older pin (reload): the new program takes the name; links that
        // still use the old program keep it alive until they are switched over.
        let path = pins.prog(name);
        remove_file_if_exists(&path)?;
        program
            .pin(&path)
            .map_err(|source| DatapathError::Pin { path, source })?;
    }
    Ok(())
}

/// A delete of an absent key is success (aya reports it as KeyNotFound or ENOENT).
fn absent_ok(map: &'static str, r: Result<(), MapError>) -> Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(DatapathError::WriteMap { map, source }),
    }
}

fn link_err(ifname: &str, source: LinkError) -> DatapathError {
    DatapathError::Link {
        ifname: ifname.to_owned(),
        source,
    }
}

fn open_map(pins: &Pins, name: &'static str) -> Result<Map> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).map_err(|source| DatapathError::OpenMap {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| DatapathError::OpenMap { path, source })
}

/// The netns cookie of this thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14).
fn netns_cookie() -> io::Result<u64> {
    let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: a getsockopt on a socket we own, into a u64 whose size we pass.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

fn open_pinned_link(path: &Path) -> Result<Option<PinnedLink>> {
    match PinnedLink::from_pin(path) {
        Ok(link) => Ok(Some(link)),
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DatapathError::OpenLink {
            path: path.to_owned(),
            source,
        }),
    }
}

fn pin_link(link: FdLink, path: &Path) -> Result<()> {
    remove_file_if_exists(path)?;
    link.pin(path)
        .map(drop)
        .map_err(|source| DatapathError::Pin {
            path: path.to_owned(),
            source,
        })
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DatapathError::Remove {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Removes every pin under `root` (links first, so attachments are released before the
/// programs and maps) and the directory itself. Returns the number of pins removed.
/// A missing directory is not an error.
pub fn remove_pins(root: &Path) -> Result<usize> {
    let pins = Pins::new(root);
    let mut removed = 0;
    for dir in [
        pins.links_dir(),
        pins.cgroup_links_dir(),
        root.join("progs"),
        root.join("maps"),
    ] {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(DatapathError::Remove { path: dir, source }),
        };
        for entry in entries {
            let path = entry
                .map_err(|source| DatapathError::Remove {
                    path: dir.clone(),
                    source,
                })?
                .path();
            remove_file_if_exists(&path)?;
            removed += 1;
        }
        remove_dir_if_exists(&dir)?;
    }
    remove_dir_if_exists(root)?;
    Ok(removed)
}

fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DatapathError::Remove {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}
