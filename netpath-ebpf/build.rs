//! Rebuild the eBPF object when the linker changes (e.g. `cargo xtask setup` rebuilt it
//! against a new nightly LLVM).
use which::which;

fn main() {
    // Only relevant when building for the BPF target; the host build of the (empty)
    // library does not link anything.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        let linker = which("bpf-linker").expect(
            "bpf-linker not found on PATH: run `cargo xtask setup` (or any `cargo xtask` command)",
        );
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
