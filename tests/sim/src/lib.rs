//! Protocol-faithful simulators of the SaaS systems Switchyard's plugins
//! talk to, for tests and the demo.
//!
//! Each simulator speaks the wire protocol `../shared/api-facts.md`
//! describes — same paths, headers, authentication, paging, error bodies and
//! rate-limit answers — over real HTTP on a loopback port, so a plugin that
//! works against it has a real chance against the real system. Where the fact
//! sheet marks something unconfirmed ([U]), the simulator's module docs say
//! what it chose, in one place.
//!
//! Every simulator also has (see [`common`]):
//! - a **request log** (`control().requests()`, or `GET /_sim/requests`) so
//!   tests assert the exact requests a plugin sent;
//! - **fault injection** per endpoint (latency, status codes, rate limiting,
//!   malformed bodies, connection resets before or after the request is
//!   handled; token expiry where there are tokens), from Rust or
//!   `POST /_sim/faults`;
//! - **seeded data**: the same seed gives the same devices, users and
//!   records, and person `i` has the same email in every simulator.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchyard_sim::common::{Fault, FaultKind};
//! use switchyard_sim::uem::{Uem, UemConfig};
//!
//! let uem = Uem::start(UemConfig::default(), 7, 20).await?;
//! uem.control().inject(Fault::on("/api/mdm/devices", FaultKind::RateLimit { retry_after_secs: 2 }).times(1));
//! // ... drive a plugin at uem.url() ...
//! for r in uem.control().requests_to("/commands") {
//!     println!("{} {} {:?}", r.method, r.path, r.query);
//! }
//! # Ok(()) }
//! ```
//!
//! Standalone: `cargo run -p switchyard-sim -- all --seed 7` serves every
//! simulator with seeded data and prints their URLs and test credentials.

// Handlers answer errors as ready `Response`s; boxing them would only add
// noise to a test-support crate.
#![allow(clippy::result_large_err)]

pub mod beyondtrust;
pub mod common;
pub mod identity;
pub mod mtd;
pub mod servicenow;
pub mod slack;
pub mod uem;
