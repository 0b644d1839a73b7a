//! Link-time layout of the release binary (issue 14, memory at rest): its code ordered by
//! use, and its relocations packed.
//!
//! The kernel maps a program's code in 64 KiB blocks around each page it first runs
//! ("fault-around"). With the functions in the compiler's order, the ~3.6 MiB of code a
//! server runs at start and under everyday load is spread over most of the 16 MiB of
//! `.text`, so nearly all of it ends up resident. `packaging/code-order/TARGET.ld` is a
//! linker script naming the functions that run (measured by `scripts/code-order`); the
//! linker places them together at the start of `.text`, so the same code fits in far fewer
//! pages. Names are matched without their build hashes (which differ between `cargo build`
//! and `cargo bench`, and after dependency updates) wherever that still names one function.
//!
//! Only where the linker is LLD (Rust's default for x86_64 Linux since 1.90), only in the
//! release profile, and only when the list for the target exists: anywhere else the build is
//! exactly what it would be without this file. A list that no longer matches the code (after
//! a dependency update) costs memory, never correctness: names that match nothing are
//! skipped, and everything not named keeps the compiler's order after the named ones.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HEARTH_LINK_MAP");
    println!("cargo:rerun-if-env-changed=HEARTH_NO_CODE_ORDER");
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if profile != "release" || !links_with_lld(&target) {
        return;
    }
    if let Ok(map) = std::env::var("HEARTH_LINK_MAP") {
        // For scripts/code-order: where each function landed, to name the ones that ran.
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
    }
    if host_glibc_has_relr(&target) {
        // Relative relocations packed (DT_RELR): the dynamic loader reads ~10 KiB at start
        // instead of a 0.6 MiB table, which otherwise stays mapped for the process's life.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&manifest)
        .join("packaging/code-order")
        .join(format!("{target}.ld"));
    println!("cargo:rerun-if-changed={}", order.display());
    if order.is_file() && std::env::var_os("HEARTH_NO_CODE_ORDER").is_none() {
        let order = std::fs::canonicalize(&order).unwrap_or(order);
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", order.display());
    }
}

/// Whether rustc links `target` with LLD by default: x86_64 Linux from Rust 1.90, unless a
/// linker of one's own is configured for it.
fn links_with_lld(target: &str) -> bool {
    if target != "x86_64-unknown-linux-gnu" {
        return false;
    }
    // RUSTC_LINKER: the linker Cargo resolved for the target from its config or environment.
    if std::env::var_os("RUSTC_LINKER").is_some()
        || std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|flags| flags.contains("link"))
    {
        return false;
    }
    rustc_minor_version().is_some_and(|minor| minor >= 90)
}

/// Whether the binary is built for this machine and its glibc reads packed relocations
/// (2.36 and later: Debian 12, Raspberry Pi OS 12, Ubuntu 22.10): a binary linked with them
/// does not start on an older glibc.
fn host_glibc_has_relr(target: &str) -> bool {
    if std::env::var("HOST").ok().as_deref() != Some(target) {
        return false;
    }
    let Ok(output) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut version = text.trim().trim_start_matches("glibc ").split('.');
    let major: u32 = version.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let minor: u32 = version.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 36)
}

/// The `N` of the compiler's `1.N.x`, from `rustc -V`.
fn rustc_minor_version() -> Option<u32> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    version.split('.').nth(1)?.parse().ok()
}
