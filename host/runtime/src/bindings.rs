//! The one place that runs `bindgen!` over `wit/`. Capability modules import
//! the generated `Host` traits and types from here.
//!
//! `http`, `credentials` and `storage` are async on the host (they wait on the
//! network or the database) and trappable, so a host bug or an exceeded limit
//! can end the invocation; expected failures travel as the WIT `error`
//! variants. `log`, `config` and `invocation` are plain synchronous calls:
//! they cannot fail and are the cheapest round trip the host offers.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../../wit",
    imports: {
        "switchyard:plugin/log": trappable,
        "switchyard:plugin/config": trappable,
        "switchyard:plugin/invocation": trappable,
        default: async | trappable,
    },
    exports: { default: async },
});

pub use switchyard::plugin::{config, credentials, http, invocation, log, storage, types};
