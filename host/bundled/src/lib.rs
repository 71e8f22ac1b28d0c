//! The first-party plugins, compiled to components from `plugins/` at build
//! time and embedded, so the `switchyard` binary runs them with no files
//! beside it.
//!
//! ```
//! let echo = switchyard_bundled::get("echo").expect("echo is bundled");
//! assert_eq!(&echo[..4], b"\0asm");
//! ```
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The component bytes of bundled plugin `name` (e.g. `echo`).
pub fn get(name: &str) -> Option<&'static [u8]> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
