//! Herald's library: everything both shapes (AWS Lambda and `herald serve`) share. Every import
//! points down the layers, `domain` → `ports` → `service` → {`providers`, `adapters`} →
//! `dialects` → `http`; `app` only wires, and `net`, `retry` and `logging` serve every layer.
//!
//! - [`domain`]: validated newtypes, statuses, the native send request, status reports.
//! - [`ports`]: the small traits the use cases need (queue, stores split by capability, the
//!   provider port in [`ports::provider`]).
//! - [`service`]: the use cases, each over a context of only the ports it needs
//!   ([`service::ingest::Ingest`], [`service::deliver::Deliver`], [`service::callbacks::Callbacks`]).
//! - [`adapters`]: implementations of the ports (`embedded` = SQLite).
//! - [`providers`]: one module per channel provider, implementing the provider port.
//! - [`net`]: the SSRF guard and the signatures, shared by providers, service and http.
//! - [`dialects`]: the vendor APIs Herald stands in for, as pure translations.
//! - [`api`]: the API error and strict JSON parsing, shared by `dialects` and `http`.
//! - [`app`]: wiring: builds the contexts from the adapters; the router's state.
//! - [`http`]: the single `axum::Router` for the whole API.

pub mod adapters;
pub mod api;
pub mod app;
#[cfg(feature = "benching")]
#[doc(hidden)]
pub mod benching;
pub mod dialects;
pub mod domain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
#[cfg(feature = "embedded")]
pub mod local;
pub mod logging;
pub mod net;
pub mod ports;
pub mod providers;
pub mod retry;
pub mod service;

pub use app::{Herald, Settings};
