//! Why a datapath operation failed. Each message says what failed; the reason is its
//! `source` (see `error::chain`).

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot create the bpffs directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the eBPF object does not load")]
    Object(#[source] aya::EbpfError),
    #[error(
        "this netpath was built without its eBPF programs (bpf-linker was not on PATH): build it with `cargo xtask build` (or run the suite with `cargo xtask test`)"
    )]
    NoObject,
    /// The kernel's verifier refused the program; `detail` holds its log.
    #[error("the kernel rejected eBPF program {program}: {detail}")]
    Verifier {
        program: &'static str,
        detail: String,
    },
    /// The object has no program of this name (an object of another build, say):
    /// nothing was asked of the kernel's verifier.
    #[error("the eBPF object has no program {program}")]
    MissingProgram { program: &'static str },
    /// The running datapath (an older build's) lacks a map this operation needs.
    #[error("the running datapath has no map {map}: restart the daemon with this build's datapath")]
    MissingMap { map: &'static str },
    #[error("eBPF program {program}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("cannot open pinned map {path}")]
    OpenMap {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("cannot open pinned link {path}")]
    OpenLink {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error("cannot open {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach {program} to {ifname}")]
    Attach {
        program: &'static str,
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("bpf_link on {ifname}")]
    Link {
        ifname: String,
        #[source]
        source: LinkError,
    },
    #[error("reading map {map}")]
    ReadMap {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot size per-CPU values")]
    Cpus(#[source] io::Error),
    #[error("writing map {map}")]
    WriteMap {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the eBPF object {path}")]
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
    #[error("moving {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DatapathError {
    /// For `map_err`: a failed read of map `map`.
    pub fn reading(map: &'static str) -> impl Fn(MapError) -> DatapathError + Copy {
        move |source| DatapathError::ReadMap { map, source }
    }

    /// For `map_err`: a failed write (insert, delete) of map `map`.
    pub fn writing(map: &'static str) -> impl Fn(MapError) -> DatapathError + Copy {
        move |source| DatapathError::WriteMap { map, source }
    }
}
