//! Release builds of the `tern` binary lay its code out with the functions it runs first and
//! together (src/symbol-order.txt, written by benches/symbol-order.sh), so that the pages the
//! kernel maps around each instruction fetch hold code that runs rather than code that does not:
//! resident memory falls by several megabytes (docs/architecture.md, "Peak memory under load").
//!
//! Only where the linker is LLD (Rust 1.90 and later link x86_64 Linux binaries with it unless
//! told otherwise) and nobody chose another linker: the GNU linkers do not know the option.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if env::var("PROFILE").as_deref() != Ok("release") || !links_with_lld() {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    if glibc_has_relr() {
        // Relative relocations packed (RELR): the loader reads about 10 KB of them at start
        // instead of a 520 KB table, which stayed resident.
        println!("cargo:rustc-link-arg-bin=tern=-Wl,-z,pack-relative-relocs");
    }
    let order = format!("{dir}/src/symbol-order.txt");
    if std::path::Path::new(&order).is_file() {
        println!("cargo:rustc-link-arg-bin=tern=-Wl,--symbol-ordering-file={order}");
        // A name the binary lacks (the file is older than the code) is skipped quietly.
        println!("cargo:rustc-link-arg-bin=tern=-Wl,--no-warn-symbol-ordering");
    }
}

/// glibc 2.36 or later (it reads packed relative relocations), on the machine that builds for
/// itself.
fn glibc_has_relr() -> bool {
    if env::var("TARGET").ok() != env::var("HOST").ok() {
        return false;
    }
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(Some(major)), Some(Some(minor))) if (major, minor) >= (2, 36))
}

/// rustc's own default for x86_64 Linux since 1.90, unless a linker or linker flavour is set.
fn links_with_lld() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (…)"
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
