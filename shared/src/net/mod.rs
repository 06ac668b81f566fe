//! Network safety shared by every layer that talks to or hears from the outside: the guard that
//! keeps tenant URLs off internal addresses, and the signatures providers and Herald sign with.
//! It knows nothing of Herald's use cases, so `providers`, `service` and `http` may all use it.

pub mod signatures;
pub mod ssrf;
