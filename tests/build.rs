use std::fmt::Write;

/// Guests the integration tests load: the first-party plugins they exercise
/// and the test-only components under tests/guests.
const GUESTS: &[&str] = &[
    "plugin-echo",
    "guest-hostile",
    "guest-trivial",
    "guest-compat-0-1-0",
    "guest-clients",
    // The Rust twin of the Python and JavaScript examples (host/daemon's
    // polyglot tests and benchmark).
    "example-rust-incident-watch",
];

fn main() {
    let mut out = String::new();
    for (package, path) in switchyard_wasm_build::build(GUESTS) {
        let name = package.replace('-', "_").to_uppercase();
        writeln!(out, "/// Path of the `{package}` component.").unwrap();
        writeln!(
            out,
            "pub const {name}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(dest, out).unwrap();
}
