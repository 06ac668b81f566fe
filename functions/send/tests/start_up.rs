//! The send binary started as Lambda starts it, against a loopback runtime API: it asks for
//! its first event before it talks to AWS, and a missing setting still stops it at start-up.

const BIN: &str = env!("CARGO_BIN_EXE_send");
const NAME: &str = "herald-send";

include!("../../start_up_tests.rs");
