//! `GET /dashboard`: the operator's page and its assets, embedded in the binary so both shapes
//! (`herald serve`, the ingest Lambda) serve it with no build step and nothing fetched from
//! elsewhere. The files themselves are public: everything the page shows comes from ordinary
//! tenant-scoped API calls made with the key the operator types in.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Only the page's own files may run, style or be called; nothing may frame it, and no form may
/// post anywhere (the sign-in form is read by the script, so a key never leaves in a URL).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const PAGE: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../../assets/dashboard/index.html"),
};

/// What `/dashboard/{name}` serves. Text types only: `lambda_http` passes them through as text.
const ASSETS: [Asset; 2] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/dashboard/app.css"),
    },
];

/// The dashboard's routes, stateless so any router can merge them.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard", get(|headers: HeaderMap| async move { serve(&PAGE, &headers) }))
        // Relative, so the page's relative asset links also work under an API Gateway stage.
        .route("/dashboard/", get(|| async { Redirect::permanent("../dashboard") }))
        .route("/dashboard/{name}", get(asset))
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a, &headers),
        None => ApiError::NotFound(format!("the dashboard has no file \"{name}\"")).into_response(),
    }
}

/// The file with its security headers. `no-cache` with an ETag: a browser asks again each time,
/// and a release's new files are never hidden behind a cached old page.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(asset.body.as_bytes()))[..32]);
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
    });
    let mut response = match fresh {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => asset.body.into_response(),
    };
    let h = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}
