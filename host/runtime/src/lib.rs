//! The Switchyard plugin runtime.
//!
//! One [`Runtime`] per process holds the wasmtime engine (async, pooling
//! allocator, epoch interruption ticked from a dedicated thread) and a
//! linker with Switchyard's WIT interfaces. [`Runtime::load`] compiles a
//! component once per version (cached on disk), pre-instantiates it and
//! reads its manifest. An [`Instance`] is that plugin enabled for one
//! tenant: its egress policy, credentials, storage namespace, configuration
//! and limits are built once; every call then gets a fresh, bounded Store.
//!
//! Host side of each interface, one module each: [`http`] (egress policy in
//! [`egress`]), [`credentials`], [`storage`], [`log`], [`config`],
//! [`invocation`].
//!
//! Modules use only modules below them, never the other way: `bindings`
//! (the one `bindgen!`), `clock`, `sched` (where guest code runs: long
//! runners move to a low-priority pool), `limits`, [`egress`], `call` (what
//! one invocation did), `net` (clients and the checking resolver), `error`;
//! the capabilities [`config`], [`invocation`], [`storage`], [`log`],
//! [`credentials`], [`http`]; `manifest`, `schema` (actions' input schemas, checked before a
//! call), [`grants`]; `state` (what a Store holds), `runtime` (engine and
//! compiled plugins), `instance` (a plugin enabled for a tenant).
//!
//! ```no_run
//! use std::sync::Arc;
//! use switchyard_runtime::{CallOptions, Instance, InstanceSpec, Runtime, RuntimeConfig};
//! use switchyard_store::SqliteStore;
//!
//! # async fn demo(wasm: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let plugin = runtime.load(wasm).await?;
//! let mut spec = InstanceSpec::new("acme", "echo-1");
//! spec.egress.push("https://api.example.com".into());
//! let store = Arc::new(SqliteStore::open_in_memory()?);
//! let instance = Instance::new(&runtime, plugin, spec, store)?;
//! let call = instance.invoke("echo", r#"{"text":"hi"}"#, CallOptions::default()).await;
//! println!("{}", call.result?);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

// Generated code: its docs come from the WIT comments, which do not cover
// every field.
#[allow(missing_docs)]
mod bindings;
mod call;
mod clock;
pub mod config;
pub mod credentials;
pub mod egress;
mod error;
pub mod grants;
pub mod http;
mod instance;
pub mod invocation;
mod limits;
pub mod log;
mod manifest;
mod migration;
mod net;
mod runtime;
mod sched;
mod schema;
mod state;
pub mod storage;

pub use bindings::types::{Header as WebhookHeader, WebhookRequest, WebhookResponse};
pub use call::{CallState, EGRESS_ITEMISED, RetryMark};
pub use clock::Clock;
pub use error::{InvokeError, PluginError};
pub use instance::{Actor, CallOptions, Instance, InstanceSpec, Invocation, Report, SpecError};
pub use limits::Limits;
pub use manifest::{
    ActionSpec, ConfigSpec, CredentialSlot, EgressNeed, JobSpec, Manifest, ValueSchema, WebhookSpec,
};
pub use migration::Migrated;
pub use runtime::{Compiled, LoadError, Plugin, Runtime, RuntimeConfig, SUPPORTED_IMPORTS};
