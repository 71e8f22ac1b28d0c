//! Build-script helper: compiles workspace guest crates to `wasm32-wasip2`
//! components with a nested `cargo build`, so that plugins and test guests
//! are always built from source, never checked in.
//!
//! ```no_run
//! // build.rs
//! let built = switchyard_wasm_build::build(&["plugin-echo"]);
//! for (package, path) in built {
//!     println!("{package} -> {}", path.display());
//! }
//! ```
//!
//! The nested build uses its own target directory (`target/wasm`), so it
//! never waits on the outer build's lock, and is incremental across runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: the nearest ancestor of the calling crate's manifest
/// directory whose `Cargo.toml` declares `[workspace]`.
pub fn workspace_root() -> PathBuf {
    let start =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run from a build script"));
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.contains("[workspace]"))
        })
        .expect("no workspace root above CARGO_MANIFEST_DIR")
        .to_path_buf()
}

fn package_dir(root: &Path, package: &str) -> PathBuf {
    // Guest crates live in plugins/<name> (package `plugin-<name>`),
    // plugins/examples/<name> (package `example-<name>`) or
    // tests/guests/<name> (package `guest-<name>`).
    if let Some(name) = package.strip_prefix("plugin-") {
        root.join("plugins").join(name)
    } else if let Some(name) = package.strip_prefix("example-") {
        root.join("plugins/examples").join(name)
    } else if let Some(name) = package.strip_prefix("guest-") {
        root.join("tests/guests").join(name)
    } else {
        panic!(
            "guest package `{package}` must be named plugin-<name>, example-<name> or guest-<name>"
        )
    }
}

/// Compiles `packages` to components and returns `(package, wasm path)` for
/// each, in order. Emits `rerun-if-changed` for their sources, the SDK and
/// the WIT. Panics with the compiler's output if the build fails.
pub fn build(packages: &[&str]) -> Vec<(String, PathBuf)> {
    let root = workspace_root();
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm"),
        None => root.join("target/wasm"),
    };
    for dir in [root.join("sdk"), root.join("wit"), root.join("Cargo.lock")]
        .into_iter()
        .chain(packages.iter().map(|p| package_dir(&root, p)))
    {
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        // Guests ship without debug info: smaller files, same code. Function
        // names stay (the name section), so traps still show a backtrace.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        // Flags meant for the host build must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_LLVM_COV")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd.output().expect("running cargo for the wasm guests");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nhint: run `rustup target add wasm32-wasip2` (rust-toolchain.toml lists it)"
            } else {
                ""
            };
        panic!("building wasm guests {packages:?} failed:\n{stderr}{hint}");
    }
    packages
        .iter()
        .map(|p| {
            let file = format!("{}.wasm", p.replace('-', "_"));
            let path = target_dir.join("wasm32-wasip2/release").join(file);
            assert!(
                path.exists(),
                "cargo succeeded but {} is missing",
                path.display()
            );
            (p.to_string(), path)
        })
        .collect()
}
