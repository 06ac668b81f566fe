//! Herald's library: everything both shapes (AWS Lambda and `herald serve`) share.
//!
//! - [`domain`]: validated newtypes, statuses, the native send request.
//! - [`ports`]: the small traits the use cases need (queue, stores, providers).
//! - [`service`]: the ingest and deliver use cases, generic over the ports.
//! - [`adapters`]: implementations of the ports (`embedded` = SQLite).
//! - [`providers`]: one module per channel provider.
//! - [`dialects`]: the vendor APIs Herald stands in for, as pure translations.
//! - [`api`]: the API error and strict JSON parsing, shared by `dialects` and `http`.
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
pub mod ports;
pub mod providers;
pub mod retry;
pub mod service;

pub use app::{Herald, Settings};
