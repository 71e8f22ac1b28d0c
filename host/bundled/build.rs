use std::fmt::Write;

/// First-party plugins embedded in the `switchyard` binary.
const PLUGINS: &[&str] = &[
    "plugin-echo",
    "plugin-uem-actions",
    "plugin-session-import",
    "plugin-access-tickets",
    "plugin-mtd-tagging",
    "plugin-app-approval",
];

fn main() {
    let mut out = String::new();
    writeln!(
        out,
        "/// Every bundled plugin: (plugin crate name, component bytes)."
    )
    .unwrap();
    writeln!(out, "pub const ALL: &[(&str, &[u8])] = &[").unwrap();
    for (package, path) in switchyard_wasm_build::build(PLUGINS) {
        let name = package.trim_start_matches("plugin-");
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled.rs");
    std::fs::write(dest, out).unwrap();
}
