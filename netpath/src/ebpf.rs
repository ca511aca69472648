//! The eBPF object, built by `build.rs` from `netpath-ebpf` and embedded in the binary.

/// The ELF object holding every netpath XDP/tc program and map.
///
/// `include_bytes_aligned!` because the ELF parser needs the object 8-byte aligned.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

/// Program names in the object (the Rust function names of the entry points).
pub const XDP_PROG: &str = "netpath_xdp";
pub const TC_INGRESS_PROG: &str = "netpath_tc_ingress";

/// Every program in the object, with its kind.
pub const PROGRAMS: [(&str, ProgramKind); 2] = [
    (XDP_PROG, ProgramKind::Xdp),
    (TC_INGRESS_PROG, ProgramKind::TcIngress),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    Xdp,
    TcIngress,
}
