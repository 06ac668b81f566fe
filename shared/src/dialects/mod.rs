//! Drop-in dialects: one module per seed API. Each parses its vendor's request into the native
//! send request and shapes the native outcome into its vendor's response; no dialect logic
//! leaks into the core. Mounted under `/compat/...` by [`routes`].

use axum::Router;
use std::sync::Arc;

use crate::app::Herald;

/// Every dialect's routes, merged into the main router.
pub fn routes() -> Router<Arc<Herald>> {
    Router::new()
}
