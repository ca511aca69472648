//! The eBPF object, built by `build.rs` from `netpath-ebpf` and embedded in the binary.

use aya::programs::CgroupSockAddrAttachType;

/// The ELF object holding every netpath XDP/tc program and map.
///
/// `include_bytes_aligned!` because the ELF parser needs the object 8-byte aligned.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

/// Program names in the object (the Rust function names of the entry points).
pub const XDP_PROG: &str = "netpath_xdp";
pub const TC_INGRESS_PROG: &str = "netpath_tc_ingress";
pub const UPLINK_EGRESS_PROG: &str = "netpath_tc_uplink_egress";
pub const UPLINK_INGRESS_PROG: &str = "netpath_tc_uplink_ingress";

pub const CONNECT4_PROG: &str = "netpath_connect4";
pub const SENDMSG4_PROG: &str = "netpath_sendmsg4";
pub const RECVMSG4_PROG: &str = "netpath_recvmsg4";
pub const GETPEERNAME4_PROG: &str = "netpath_getpeername4";

/// The cgroup socket-address hooks (host-local access to published ports).
pub const SOCK_PROGRAMS: [(&str, CgroupSockAddrAttachType); 4] = [
    (CONNECT4_PROG, CgroupSockAddrAttachType::Connect4),
    (SENDMSG4_PROG, CgroupSockAddrAttachType::UDPSendMsg4),
    (RECVMSG4_PROG, CgroupSockAddrAttachType::UDPRecvMsg4),
    (GETPEERNAME4_PROG, CgroupSockAddrAttachType::GetPeerName4),
];

/// Every program in the object, with its kind.
pub const PROGRAMS: [(&str, ProgramKind); 8] = [
    (XDP_PROG, ProgramKind::Xdp),
    (TC_INGRESS_PROG, ProgramKind::Tc),
    (UPLINK_EGRESS_PROG, ProgramKind::Tc),
    (UPLINK_INGRESS_PROG, ProgramKind::Tc),
    (CONNECT4_PROG, ProgramKind::SockAddr),
    (SENDMSG4_PROG, ProgramKind::SockAddr),
    (RECVMSG4_PROG, ProgramKind::SockAddr),
    (GETPEERNAME4_PROG, ProgramKind::SockAddr),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
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
