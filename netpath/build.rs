//! Builds the eBPF programs (`netpath-ebpf`, for `bpfel-unknown-none`) with the pinned
//! nightly and puts the object in OUT_DIR, where `src/ebpf.rs` embeds it.
//!
//! Needs what `cargo xtask setup` installs: the nightly named in `netpath-ebpf/NIGHTLY`
//! with `rust-src`, and `bpf-linker` on PATH. `cargo xtask build|test|run` set that up.

use aya_build::{Package, Toolchain};

/// Tells the crate the commit it is built from (`NETPATH_COMMIT`, for `--version` and
/// `/v1/version`): `git describe`'s short hash, `-dirty` with uncommitted changes, or
/// "unknown" outside a git checkout.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", dir.join("index").display());
    }
    git(&[
        "describe",
        "--always",
        "--dirty",
        "--abbrev=12",
        "--exclude=*",
    ])
    .unwrap_or_else(|| "unknown".into())
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-env=NETPATH_COMMIT={}", commit());
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
