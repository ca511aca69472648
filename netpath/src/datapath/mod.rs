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
//!
//! | module | owns |
//! |---|---|
//! | this one | [`Datapath`]: load or adopt, the open maps and programs |
//! | `pins` | the pin layout, pinning and removing pins |
//! | `attach` | attaching programs to devices and the cgroup root; detaching |
//! | `maps` | writes to the maps, point reads of NAT state |
//! | `counters` | counters summed over CPUs |
//! | [`layout`] | versioned pinned layouts; migrating maps pinned by another build |
//! | `error` | [`DatapathError`] |

mod attach;
mod batch;
mod convert;
mod counters;
mod error;
mod events;
mod fill;
mod flows;
mod frag;
pub mod layout;
mod maps;
mod nat66;
mod pins;

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
        tc::{
            NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle, qdisc_add_clsact,
            qdisc_detach_program,
        },
        xdp::XdpLink,
    },
};
use aya_obj::programs::XdpAttachType;
use netpath_common::{
    events::{EVENTS_LOST_MAP, EVENTS_MAP, LAST_DROP_MAP, MONITOR_MAP},
    maps::{
        Counter, DROPS_MAP, DropReason, EGRESS_MAP, EGRESS6_MAP, ENDPOINT_FLAG_NO_IPV4,
        ENDPOINT_FLAG_PUBLISHED, ENDPOINTS_MAP, ENDPOINTS6_MAP, EP_STATS_MAP, EndpointCounters,
        EndpointKey, EndpointKey6, EndpointValue, FORWARDS_MAP, FRAG_MAP, FRAG_WORK_MAP,
        FRAG_WORK6_MAP, FRAG6_MAP, Forward, HOST_ACCESS_MAP, Hook, HostAccessKey, IFACES_MAP,
        LAYOUT_MAP, NETWORKS_MAP, NetworkValue, POLICY_FLAGS, STATS_MAP, drop_index,
    },
    nat::{
        CtFront, CtFront6, DNAT_CT_MAP, DNAT_CT6_MAP, HOST_NETNS_MAP, LOCAL_ADDRS_MAP,
        LOCAL_ADDRS6_MAP, MASQ_SRC_MAP, MASQ_SRC6_MAP, NAT_AGE_MAP, NAT_AGE6_MAP,
        NAT66_SCRATCH_MAP, NO_MASQ_MAP, NO_MASQ6_MAP, NatAge, NatTarget, NatTarget6, PUBLISH_MAP,
        PUBLISH6_MAP, PublishKey, PublishKey6, RNAT_MAP, RNAT6_MAP, SNAT_MAP, SNAT6_MAP,
        SOCK_NAT_MAP, SOCK_NAT6_MAP, Tuple, Tuple6, UPLINKS_MAP, UPLINKS6_MAP, Uplink, Uplink6,
        no_masq_key, no_masq_key6,
    },
    packet::PacketClass,
    policy::{egress_key, egress_key6},
};

use self::pins::*;
pub use self::{
    counters::EndpointStat,
    error::DatapathError,
    events::{EventControl, EventRing, decode as decode_event},
    flows::{Tracked, Translation, nat_now},
    pins::{Pins, remove_pins},
};
use crate::ebpf::{
    PROGRAMS, ProgramKind, TC_INGRESS_PROG, UPLINK_EGRESS_PROG, UPLINK_INGRESS_PROG, XDP_PROG,
    sock_hooks,
};

/// Every map in the object; all are pinned.
pub const MAPS: [&str; 42] = [
    LAYOUT_MAP,
    FORWARDS_MAP,
    NAT_AGE_MAP,
    HOST_NETNS_MAP,
    LOCAL_ADDRS_MAP,
    SOCK_NAT_MAP,
    PUBLISH_MAP,
    DNAT_CT_MAP,
    STATS_MAP,
    ENDPOINTS_MAP,
    ENDPOINTS6_MAP,
    IFACES_MAP,
    EP_STATS_MAP,
    NETWORKS_MAP,
    EGRESS_MAP,
    EGRESS6_MAP,
    HOST_ACCESS_MAP,
    DROPS_MAP,
    SNAT_MAP,
    RNAT_MAP,
    UPLINKS_MAP,
    MASQ_SRC_MAP,
    NO_MASQ_MAP,
    SNAT6_MAP,
    RNAT6_MAP,
    NAT_AGE6_MAP,
    UPLINKS6_MAP,
    MASQ_SRC6_MAP,
    NO_MASQ6_MAP,
    NAT66_SCRATCH_MAP,
    PUBLISH6_MAP,
    DNAT_CT6_MAP,
    LOCAL_ADDRS6_MAP,
    SOCK_NAT6_MAP,
    FRAG_MAP,
    FRAG6_MAP,
    FRAG_WORK_MAP,
    FRAG_WORK6_MAP,
    MONITOR_MAP,
    EVENTS_LOST_MAP,
    LAST_DROP_MAP,
    EVENTS_MAP,
];

type Result<T, E = DatapathError> = std::result::Result<T, E>;

/// The egress rules' tries: IPv4's and IPv6's.
type EgressTries = (
    LpmTrie<MapData, [u8; 8], u8>,
    LpmTrie<MapData, [u8; 20], u8>,
);

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

/// The loaded datapath, opened through its pins.
pub struct Datapath {
    pins: Pins,
    /// Maps being carried over from another layout (see [`layout`]).
    migrations: Vec<layout::Migration>,
    origin: Origin,
    xdp: Xdp,
    /// The tc programs, by [`tc_hooks`] position.
    tc: [SchedClassifier; 3],
    stats: PerCpuArray<MapData, Counter>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    /// `None` on a datapath of an older layout (its object has no such map).
    endpoints6: Option<HashMap<MapData, EndpointKey6, EndpointValue>>,
    ifaces: HashMap<MapData, u32, EndpointValue>,
    ep_stats: PerCpuHashMap<MapData, u32, EndpointCounters>,
    /// `None` on a datapath of a layout before 8 (no network policy).
    networks: Option<HashMap<MapData, u32, NetworkValue>>,
    /// The egress rules' tries (keys: `policy::egress_key`), as `networks`.
    egress: Option<EgressTries>,
    /// The ports of restricted host access, as `networks`.
    host_access: Option<HashMap<MapData, HostAccessKey, u8>>,
    drops: PerCpuArray<MapData, Counter>,
    forwards: PerCpuArray<MapData, Counter>,
    snat: HashMap<MapData, Tuple, NatTarget>,
    uplinks: HashMap<MapData, u32, Uplink>,
    masq_src: LpmTrie<MapData, [u8; 4], u32>,
    no_masq: LpmTrie<MapData, [u8; 8], u8>,
    publish: HashMap<MapData, PublishKey, NatTarget>,
    /// `None` (as `nat_age`) on a datapath of a layout before 7, whose values were
    /// narrower (read by tests only: the programs keep these maps).
    dnat_ct: Option<HashMap<MapData, Tuple, CtFront>>,
    local_addrs: HashMap<MapData, [u8; 4], u8>,
    nat_age: Option<HashMap<MapData, Tuple, NatAge>>,
    /// `None` on a datapath of an older layout (its object has no NAT66 maps).
    nat66: Option<nat66::Nat66>,
    /// The IPv6 publish maps; `None` on a datapath whose object has none (it publishes
    /// on IPv4 only).
    publish6: Option<HashMap<MapData, PublishKey6, NatTarget6>>,
    dnat_ct6: Option<HashMap<MapData, Tuple6, CtFront6>>,
    local_addrs6: Option<HashMap<MapData, [u8; 16], u8>>,
}

impl Datapath {
    /// Adopts the datapath pinned under `root`, or loads and pins it if there is none
    /// (or if `reload` asks for fresh programs; pinned maps are kept so state survives).
    pub fn open(root: impl Into<PathBuf>, reload: bool) -> Result<Self> {
        let pins = Pins::new(root);
        let object = crate::ebpf::object().map_err(|source| DatapathError::ObjectFile {
            path: std::env::var_os(crate::ebpf::OBJECT_ENV)
                .unwrap_or_default()
                .into(),
            source,
        })?;
        if object.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let mut migrations = layout::prepare(&pins, object, reload)?;
        let origin = if pins.complete() && !reload && migrations.is_empty() {
            Origin::Adopted
        } else {
            load_and_pin(&pins, object)?;
            Origin::Loaded
        };
        for m in &mut migrations {
            m.copy(&pins, false)?;
        }
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
        Ok(Datapath {
            migrations,
            origin,
            xdp,
            tc,
            stats: open_typed(&pins, STATS_MAP)?,
            endpoints: open_typed(&pins, ENDPOINTS_MAP)?,
            endpoints6: open_typed_if_pinned(&pins, ENDPOINTS6_MAP)?,
            ifaces: open_typed(&pins, IFACES_MAP)?,
            ep_stats: open_typed(&pins, EP_STATS_MAP)?,
            networks: open_typed_if_pinned(&pins, NETWORKS_MAP)?,
            egress: open_typed_if_pinned(&pins, EGRESS_MAP)?
                .zip(open_typed_if_pinned(&pins, EGRESS6_MAP)?),
            host_access: open_typed_if_pinned(&pins, HOST_ACCESS_MAP)?,
            drops: open_typed(&pins, DROPS_MAP)?,
            forwards: open_typed(&pins, FORWARDS_MAP)?,
            snat: open_typed(&pins, SNAT_MAP)?,
            uplinks: open_typed(&pins, UPLINKS_MAP)?,
            masq_src: open_typed(&pins, MASQ_SRC_MAP)?,
            no_masq: open_typed(&pins, NO_MASQ_MAP)?,
            publish: open_typed(&pins, PUBLISH_MAP)?,
            dnat_ct: open_typed_if_shaped(&pins, DNAT_CT_MAP)?,
            local_addrs: open_typed(&pins, LOCAL_ADDRS_MAP)?,
            nat_age: open_typed_if_shaped(&pins, NAT_AGE_MAP)?,
            nat66: nat66::Nat66::open(&pins)?,
            publish6: open_typed_if_pinned(&pins, PUBLISH6_MAP)?,
            dnat_ct6: open_typed_if_shaped(&pins, DNAT_CT6_MAP)?,
            local_addrs6: open_typed_if_pinned(&pins, LOCAL_ADDRS6_MAP)?,
            pins,
        })
    }

    /// The maps being carried over from another layout until
    /// [`Datapath::finish_migrations`].
    pub fn migrating(&self) -> Vec<&'static str> {
        self.migrations.iter().map(|m| m.name).collect()
    }

    /// Ends the migrations [`Datapath::open`] started, once every attachment runs the
    /// new programs: the last entries are carried over and the old maps unpinned.
    /// Returns a line per map migrated.
    pub fn finish_migrations(&mut self) -> Result<Vec<String>> {
        layout::finish(&self.pins, &mut self.migrations)
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
fn load_and_pin(pins: &Pins, object: &[u8]) -> Result<()> {
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
    let mut ebpf = loader.load(object).map_err(DatapathError::Object)?;
    for def in PROGRAMS {
        let name = def.name;
        let path = pins.prog(name);
        let Some(program) = ebpf.program_mut(name) else {
            if !def.optional() {
                return Err(DatapathError::MissingProgram { program: name });
            }
            // An older build's object: its datapath runs without this program, so a
            // pin left by a newer one must not be attached (see `attach_host_local`).
            remove_file_if_exists(&path)?;
            continue;
        };
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
        match def.kind {
            ProgramKind::Xdp => {
                let p: &mut Xdp = program.try_into().map_err(load_err)?;
                p.load().map_err(load_err)?;
            }
            ProgramKind::Tc => {
                let p: &mut SchedClassifier = program.try_into().map_err(load_err)?;
                p.load().map_err(load_err)?;
            }
            ProgramKind::SockAddr(_) => {
                let p: &mut CgroupSockAddr = program.try_into().map_err(load_err)?;
                p.load().map_err(load_err)?;
            }
        }
        // Replace an older pin (reload): the new program takes the name; links that
        // still use the old program keep it alive until they are switched over.
        remove_file_if_exists(&path)?;
        program
            .pin(&path)
            .map_err(|source| DatapathError::Pin { path, source })?;
    }
    Ok(())
}

fn open_map(pins: &Pins, name: &'static str) -> Result<Map> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).map_err(|source| DatapathError::OpenMap {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| DatapathError::OpenMap { path, source })
}

/// The pinned map `name` as the typed aya map `T` (which checks its type and sizes).
/// [`open_typed`] for a map an older layout's object lacks: `None` when it is not pinned.
fn open_typed_if_pinned<T>(pins: &Pins, name: &'static str) -> Result<Option<T>>
where
    T: TryFrom<Map, Error = MapError>,
{
    if !pins.map(name).exists() {
        return Ok(None);
    }
    open_typed(pins, name).map(Some)
}

/// [`open_typed_if_pinned`], and `None` too for a map whose keys or values are not `T`'s:
/// one of an object of an older layout, which this build can run as it was pinned (the
/// upgrade test stands in for the previous build that way).
fn open_typed_if_shaped<T>(pins: &Pins, name: &'static str) -> Result<Option<T>>
where
    T: TryFrom<Map, Error = MapError>,
{
    match open_typed_if_pinned(pins, name) {
        Err(DatapathError::OpenMap {
            source: MapError::InvalidKeySize { .. } | MapError::InvalidValueSize { .. },
            ..
        }) => Ok(None),
        other => other,
    }
}

fn open_typed<T>(pins: &Pins, name: &'static str) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(open_map(pins, name)?).map_err(|source| DatapathError::OpenMap {
        path: pins.map(name),
        source,
    })
}
