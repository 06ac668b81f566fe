//! Herald's end-to-end suites on the embedded shape, as one test binary: each module was a test
//! binary of its own, and each of those linked Herald and the AWS SDK again (about 100 CPU seconds
//! of a fresh clone's build). The suites that change the process's environment or install a
//! global log subscriber (`aws_emulator`, `lambda_handlers`, `logs`) stay apart.
//! Run one module with `cargo test -p herald-tests --test suites api::`.

mod api;
mod audiences;
mod aws_batching;
mod broadcasts_list;
mod callbacks;
mod contract_embedded;
mod corpus_dialects;
mod crash_window;
mod dashboard;
mod dead_letters;
mod deadlines;
mod dialect_twilio;
mod dialects;
mod dialects_audiences;
mod edge;
mod events;
mod fuzz_corpus;
mod idempotency;
mod imports;
mod isolation;
mod openapi;
mod providers;
mod scheduling;
mod segments;
mod store_faults;
mod validation;
