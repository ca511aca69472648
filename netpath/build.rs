//! Builds the eBPF programs (`netpath-ebpf`, for `bpfel-unknown-none`) with the pinned
//! nightly and puts the object in OUT_DIR, where `src/ebpf.rs` embeds it.
//!
//! Needs what `cargo xtask setup` installs: the nightly named in `netpath-ebpf/NIGHTLY`
//! with `rust-src`, and `bpf-linker` on PATH. `cargo xtask build|test|run` set that up.

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../netpath-ebpf");
    let nightly = include_str!("../netpath-ebpf/NIGHTLY").trim();
    println!("cargo:rerun-if-changed={ebpf_dir}/NIGHTLY");
    aya_build::build_ebpf(
        [Package {
            name: "netpath-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(nightly),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "building the eBPF programs failed ({e:#}); run `cargo xtask setup` to install \
             the pinned nightly, rust-src and bpf-linker, or build through `cargo xtask build`"
        )
    })
}
