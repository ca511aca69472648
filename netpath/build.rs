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

/// Whether an executable `name` is on PATH.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-env=NETPATH_COMMIT={}", commit());
    // `cargo xtask` sets this: there, a missing eBPF toolchain is an error.
    println!("cargo:rerun-if-env-changed=NETPATH_REQUIRE_EBPF");
    if std::env::var_os("NETPATH_REQUIRE_EBPF").is_none() && !on_path("bpf-linker") {
        // A plain `cargo build/test` in a fresh clone: build without the eBPF object, so
        // the unit tests run; loading the datapath then fails, saying what to run.
        // (Rebuilt once bpf-linker is on PATH.)
        println!("cargo:rerun-if-env-changed=PATH");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("netpath");
        std::fs::write(&out, b"")?;
        println!(
            "cargo:warning=bpf-linker is not on PATH: netpath is built without its eBPF programs — \
             unit tests run, but the daemon and the root tests need `cargo xtask build` / `cargo xtask test`"
        );
        return Ok(());
    }
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
