//! The eBPF object, built by `build.rs` from `netpath-ebpf` and embedded in the binary.

/// The ELF object holding every netpath XDP/tc program and map.
///
/// `include_bytes_aligned!` because the ELF parser needs the object 8-byte aligned.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

/// Program names in the object (the Rust function names of the entry points).
pub const XDP_PROG: &str = "netpath_xdp";
pub const TC_INGRESS_PROG: &str = "netpath_tc_ingress";
pub const UPLINK_EGRESS_PROG: &str = "netpath_tc_uplink_egress";
pub const UPLINK_INGRESS_PROG: &str = "netpath_tc_uplink_ingress";

/// Every program in the object, with its kind.
pub const PROGRAMS: [(&str, ProgramKind); 4] = [
    (XDP_PROG, ProgramKind::Xdp),
    (TC_INGRESS_PROG, ProgramKind::Tc),
    (UPLINK_EGRESS_PROG, ProgramKind::Tc),
    (UPLINK_INGRESS_PROG, ProgramKind::Tc),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    Xdp,
    /// A tc classifier (attached with tcx).
    Tc,
}
