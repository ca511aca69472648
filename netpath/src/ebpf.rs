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

// Program names in the object (the Rust function names of the entry points).

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

/// `connect()` of a host process (TCP, connected UDP): to a published port, made to
/// the endpoint behind it.
pub const CONNECT4_PROG: &str = "netpath_connect4";
/// UDP `sendmsg()` of a host process: likewise, per datagram.
pub const SENDMSG4_PROG: &str = "netpath_sendmsg4";
/// UDP `recvmsg()`: the sender shown as the published address again.
pub const RECVMSG4_PROG: &str = "netpath_recvmsg4";
/// `getpeername()`: the peer shown as the published address again.
pub const GETPEERNAME4_PROG: &str = "netpath_getpeername4";
/// The same four for `AF_INET6` sockets reaching an IPv4 address v4-mapped
/// (`::ffff:127.0.0.1`): `connect()`,
pub const CONNECT6_PROG: &str = "netpath_connect6";
/// UDP `sendmsg()` (the kernel runs the IPv4 hook for a v4-mapped destination instead:
/// this one sees native IPv6 only, and leaves it),
pub const SENDMSG6_PROG: &str = "netpath_sendmsg6";
/// UDP `recvmsg()`,
pub const RECVMSG6_PROG: &str = "netpath_recvmsg6";
/// and `getpeername()`.
pub const GETPEERNAME6_PROG: &str = "netpath_getpeername6";

/// The cgroup socket-address hooks (host-local access to published ports).
pub const SOCK_PROGRAMS: [(&str, CgroupSockAddrAttachType); 8] = [
    (CONNECT4_PROG, CgroupSockAddrAttachType::Connect4),
    (SENDMSG4_PROG, CgroupSockAddrAttachType::UDPSendMsg4),
    (RECVMSG4_PROG, CgroupSockAddrAttachType::UDPRecvMsg4),
    (GETPEERNAME4_PROG, CgroupSockAddrAttachType::GetPeerName4),
    (CONNECT6_PROG, CgroupSockAddrAttachType::Connect6),
    (SENDMSG6_PROG, CgroupSockAddrAttachType::UDPSendMsg6),
    (RECVMSG6_PROG, CgroupSockAddrAttachType::UDPRecvMsg6),
    (GETPEERNAME6_PROG, CgroupSockAddrAttachType::GetPeerName6),
];

/// Programs added after layout 1, the oldest datapath an upgrade starts from: the object
/// of an older build (loaded through [`OBJECT_ENV`], as the upgrade test does) lacks
/// them, and its datapath runs without them. This build's own object holds every one of
/// [`PROGRAMS`] (a unit test checks it); a missing program of any other is an error.
pub const PROGRAMS_SINCE_LAYOUT1: [&str; 4] = [
    CONNECT6_PROG,
    SENDMSG6_PROG,
    RECVMSG6_PROG,
    GETPEERNAME6_PROG,
];

/// Every program in the object, with its kind.
pub const PROGRAMS: [(&str, ProgramKind); 12] = [
    (XDP_PROG, ProgramKind::Xdp),
    (TC_INGRESS_PROG, ProgramKind::Tc),
    (UPLINK_EGRESS_PROG, ProgramKind::Tc),
    (UPLINK_INGRESS_PROG, ProgramKind::Tc),
    (CONNECT4_PROG, ProgramKind::SockAddr),
    (SENDMSG4_PROG, ProgramKind::SockAddr),
    (RECVMSG4_PROG, ProgramKind::SockAddr),
    (GETPEERNAME4_PROG, ProgramKind::SockAddr),
    (CONNECT6_PROG, ProgramKind::SockAddr),
    (SENDMSG6_PROG, ProgramKind::SockAddr),
    (RECVMSG6_PROG, ProgramKind::SockAddr),
    (GETPEERNAME6_PROG, ProgramKind::SockAddr),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// How a program is attached.
pub enum ProgramKind {
    /// An XDP program (attached to a device).
    Xdp,
    /// A tc classifier (attached with tcx or cls_bpf).
    Tc,
    /// A cgroup socket-address hook (attach type from its ELF section).
    SockAddr,
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
        let mut loaded: Vec<&str> = PROGRAMS.iter().map(|(p, _)| *p).collect();
        loaded.sort_unstable();
        assert_eq!(progs, loaded, "programs in the object vs ebpf::PROGRAMS");
    }
}
