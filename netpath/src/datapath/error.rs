//! Why a datapath operation failed.

use super::*;

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
    #[error("cannot read the eBPF object {path}: {source}")]
    ObjectFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pinned map layouts: {detail}")]
    Layout { detail: String },
    #[error(
        "the pinned map {name} has {pinned}, this netpath expects {wanted}: its entries cannot be carried over; start the daemon with --reload to replace the map (its entries are lost)"
    )]
    LayoutRefused {
        name: &'static str,
        pinned: String,
        wanted: String,
    },
    #[error("moving {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}
