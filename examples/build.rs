//! Links the example programs with packed relative relocations (`-z pack-relative-relocs`,
//! RELR) where the linker and C library have them: the loader then reads a few kilobytes
//! of relocations at start instead of the 0.8 MB a binary with wasmtime carries, which
//! shows in the idle resident size of the edge hub.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux-gnu") || !links_with_relr() {
        return;
    }
    println!("cargo::rustc-link-arg-examples=-Wl,-z,pack-relative-relocs");
}

/// Whether the C compiler cargo links with accepts the option and the result runs (glibc
/// 2.36 or later reads RELR).
fn links_with_relr() -> bool {
    let Ok(out) = std::env::var("OUT_DIR") else {
        return false;
    };
    let dir = std::path::Path::new(&out);
    let source = dir.join("relr.c");
    let binary = dir.join("relr");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let linked = Command::new(cc)
        .arg("-Wl,-z,pack-relative-relocs")
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&binary).status().is_ok_and(|s| s.success())
}
