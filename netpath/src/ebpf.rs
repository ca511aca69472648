//! The eBPF object, built by `build.rs` from `netpath-ebpf` and embedded in the binary.

use aya::programs::CgroupSockAddrAttachType;

/// The ELF object holding every netpath XDP/tc program and map.
///
/// `include_bytes_aligned!` because the ELF parser needs the object 8-byte aligned.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

/// Names an eBPF object file for the daemon to load instead of [`OBJECT`]: the datapath
/// of another build (an upgrade test runs the previous layout's programs this way).
pub const OBJECT_ENV: &str = "NETPATH_OBJECT";

/// The object the datapath loads: [`OBJECT`], or the file [`OBJECT_ENV`] names.
pub fn object() -> std::io::Result<&'static [u8]> {
    let Some(path) = std::env::var_os(OBJECT_ENV) else {
        return Ok(OBJECT);
    };
    let bytes = std::fs::read(path)?;
    // The ELF parser needs the object 8-byte aligned, as `include_bytes_aligned!` makes
    // the embedded one: copy it into u64 words. Loaded once per process, so the buffer
    // is leaked rather than owned by the datapath.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `words` has at least `bytes.len()` bytes, and u8 has no alignment needs.
    let dst =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes.len()) };
    dst.copy_from_slice(&bytes);
    let words: &'static [u64] = Box::leak(words.into_boxed_slice());
    // SAFETY: the leaked buffer lives for the rest of the process and holds `bytes.len()`
    // initialized bytes.
    Ok(unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) })
}

// The programs of the object. Each is named by the Rust function name of its entry point.

/// The XDP entry: counts each frame by class and hands it to the kernel unchanged.
pub const XDP_PROG: &str = "netpath_xdp";
/// tc ingress on every endpoint's host-side device (and the bridge): anti-spoofing,
/// isolation and the fast path between endpoints.
pub const TC_INGRESS_PROG: &str = "netpath_tc_ingress";
/// tcx egress on an uplink: egress masquerade, and the replies of published ports.
pub const UPLINK_EGRESS_PROG: &str = "netpath_tc_uplink_egress";
/// tcx ingress on an uplink: replies to masqueraded connections and connections to
/// published ports, translated and handed straight to their endpoint.
pub const UPLINK_INGRESS_PROG: &str = "netpath_tc_uplink_ingress";

/// One program of the object.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub name: &'static str,
    pub kind: ProgramKind,
    /// The first map layout whose object holds it: the oldest datapath an upgrade starts
    /// from has layout 1, and the object of an older build (loaded through
    /// [`OBJECT_ENV`], as the upgrade test does) lacks the later ones — its datapath runs
    /// without them. This build's own object holds every program (a unit test checks
    /// it); a missing program that is not [`Program::optional`] is an error.
    pub since_layout: u32,
}

impl Program {
    /// Whether an older build's object may lack this program.
    pub const fn optional(&self) -> bool {
        self.since_layout > 1
    }
}

/// How a program is attached.
#[derive(Clone, Copy, Debug)]
pub enum ProgramKind {
    /// An XDP program (attached to a device).
    Xdp,
    /// A tc classifier (attached with tcx or cls_bpf).
    Tc,
    /// A cgroup socket-address hook, attached to the cgroup root as this.
    SockAddr(CgroupSockAddrAttachType),
}

const fn program(name: &'static str, kind: ProgramKind, since_layout: u32) -> Program {
    Program {
        name,
        kind,
        since_layout,
    }
}

/// A cgroup socket-address hook (host-local access to published ports).
const fn hook(name: &'static str, attach: CgroupSockAddrAttachType, since: u32) -> Program {
    program(name, ProgramKind::SockAddr(attach), since)
}

/// Every program in the object.
pub const PROGRAMS: [Program; 12] = {
    use CgroupSockAddrAttachType::*;
    [
        program(XDP_PROG, ProgramKind::Xdp, 1),
        program(TC_INGRESS_PROG, ProgramKind::Tc, 1),
        program(UPLINK_EGRESS_PROG, ProgramKind::Tc, 1),
        program(UPLINK_INGRESS_PROG, ProgramKind::Tc, 1),
        // `connect()` of a host process (TCP, connected UDP) to a published port: made
        // to the endpoint behind it.
        hook("netpath_connect4", Connect4, 1),
        // UDP `sendmsg()`: likewise, per datagram.
        hook("netpath_sendmsg4", UDPSendMsg4, 1),
        // UDP `recvmsg()`: the sender shown as the published address again.
        hook("netpath_recvmsg4", UDPRecvMsg4, 1),
        // `getpeername()`: the peer shown as the published address again.
        hook("netpath_getpeername4", GetPeerName4, 1),
        // The same four for `AF_INET6` sockets reaching an IPv4 address v4-mapped
        // (`::ffff:127.0.0.1`). The kernel runs the IPv4 `sendmsg` hook for a
        // v4-mapped destination instead, so `sendmsg6` sees native IPv6 only, and
        // leaves it.
        hook("netpath_connect6", Connect6, 3),
        hook("netpath_sendmsg6", UDPSendMsg6, 3),
        hook("netpath_recvmsg6", UDPRecvMsg6, 3),
        hook("netpath_getpeername6", GetPeerName6, 3),
    ]
};

/// The socket hooks of [`PROGRAMS`] and where each attaches.
pub fn sock_hooks() -> impl Iterator<Item = (&'static str, CgroupSockAddrAttachType)> {
    PROGRAMS.into_iter().filter_map(|p| match p.kind {
        ProgramKind::SockAddr(attach) => Some((p.name, attach)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object's maps and programs are exactly what the loader pins and attaches: a
    /// map added to the eBPF crate but not to `datapath::MAPS` would be left unpinned
    /// (lost at every restart), a renamed program never attached.
    #[test]
    fn the_object_holds_exactly_the_loaders_maps_and_programs() {
        if OBJECT.is_empty() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "built without the eBPF object in CI"
            );
            eprintln!(
                "SKIP: netpath was built without its eBPF object (bpf-linker missing); `cargo xtask test` runs this"
            );
            return;
        }
        let obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        // Sections the compiler makes (.rodata, .bss, …) are not netpath's maps.
        let mut maps: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|m| !m.starts_with('.'))
            .collect();
        maps.sort_unstable();
        let mut pinned = crate::datapath::MAPS.to_vec();
        pinned.sort_unstable();
        assert_eq!(maps, pinned, "maps in the object vs datapath::MAPS");
        let mut progs: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        progs.sort_unstable();
        let mut loaded: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
        loaded.sort_unstable();
        assert_eq!(progs, loaded, "programs in the object vs ebpf::PROGRAMS");
    }
}
