//! The OpenAPI document's shapes. Handlers answer `json!` values, so these structs exist only to
//! describe them: each mirrors what its handler serves, field for field, and none is ever built.
//! The document itself is assembled by `http::api` from the handlers' `#[utoipa::path]`s.

#![allow(dead_code)]

pub(crate) mod dialects;
pub(crate) mod native;

use std::collections::BTreeMap;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The document's frame: info, security schemes, and the shapes every operation shares.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "One HTTP call, a message on any channel, tracked to its final status. \
            The native API lives under `/v1`; each vendor dialect under `/compat/{vendor}` answers \
            in that vendor's own shapes.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorDetail, FieldErrorDoc)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "native", description = "Herald's own API"),
        (name = "callbacks", description = "Provider status callbacks and inbound messages, signed by the provider"),
        (name = "csml", description = "CSML Studio's Broadcasts API"),
        (name = "smax", description = "SMAX.bot's Broadcasting API, V1 and V2"),
        (name = "invent", description = "Invent's transactional broadcasts"),
        (name = "pabbly", description = "Pabbly Chatflow's Broadcasts API"),
        (name = "twilio", description = "Twilio's Messages and Notify APIs"),
    )
)]
pub(crate) struct ApiDoc;

/// Security scheme names, as operations name them.
pub(crate) const BEARER: &str = "bearer";
pub(crate) const API_KEY: &str = "api_key";
pub(crate) const TWILIO_BASIC: &str = "twilio_basic";
pub(crate) const SMAX_BOT_TOKEN: &str = "smax_bot_token";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A Herald API key (`herald keys create`)"))
            .build();
        c.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
        c.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description("x-api-key", "A Herald API key"))),
        );
        let basic = HttpBuilder::new()
            .scheme(HttpAuthScheme::Basic)
            .description(Some("As Twilio's SDKs sign in: the tenant id or its account SID, and a Herald API key"))
            .build();
        c.add_security_scheme(TWILIO_BASIC, SecurityScheme::Http(basic));
        c.add_security_scheme(
            SMAX_BOT_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "bot_token",
                "SMAX V1's bot token: a Herald API key of the tenant the path's bot is",
            ))),
        );
    }
}

/// Herald's error body: every native refusal, and the CSML, Invent and Pabbly dialects'.
#[derive(ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable, machine-readable code (`validation_failed`, `not_found`, …).
    code: String,
    message: String,
    /// Each broken rule, by field; empty when the error is not about fields.
    fields: Vec<FieldErrorDoc>,
}

#[derive(ToSchema)]
#[schema(as = FieldError)]
pub(crate) struct FieldErrorDoc {
    field: String,
    message: String,
}

/// A response of `status` whose body is the component schema `schema`.
pub(crate) fn answer(description: &str, content_type: &str, schema: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(content_type, Content::new(Some(Ref::from_schema_name(schema))))
        .build()
        .into()
}

fn errors(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter().map(|(status, why)| (status.to_string(), answer(why, "application/json", "Error"))).collect()
}

/// What any authenticated native operation may answer: a query or path it cannot read, no or a
/// bad key, and Herald's own trouble (a 5xx is a bug or a store briefly away).
pub(crate) struct Refusals;

impl IntoResponses for Refusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (400, "A query, path segment or body Herald cannot read (a body not JSON of the expected shape)"),
            (401, "No API key, or one that is not valid"),
            (500, "Herald could not complete the request"),
            (503, "Herald's storage is briefly unavailable; retry (with the same Idempotency-Key)"),
        ])
    }
}

/// What an operation that reads a JSON body may answer besides [`Refusals`] (whose `400` covers
/// a body that is not JSON of the expected shape).
pub(crate) struct BodyRefusals;

impl IntoResponses for BodyRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (408, "The body came too slowly"),
            (413, "The body is larger than Herald takes"),
            (415, "The body is not JSON"),
            (422, "The body broke rules, each named in `fields`"),
        ])
    }
}

/// `404` of an operation on something named by its path.
pub(crate) struct Missing;

impl IntoResponses for Missing {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[(404, "Nothing of that id for this tenant")])
    }
}

/// What a sending operation may answer besides: its `Idempotency-Key` bound to another body or
/// still running, and the tenant over its sending rate.
pub(crate) struct SendRefusals;

impl IntoResponses for SendRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (409, "The Idempotency-Key was used with another body, or its first request is still running"),
            (429, "The tenant is over its sending rate; see Retry-After"),
        ])
    }
}

/// `501` of a feature a deployment may lack (CSV imports, status events).
pub(crate) struct NotHere;

impl IntoResponses for NotHere {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[(501, "This deployment does not have the feature")])
    }
}

/// The document as served: the frame above with every routed operation in it.
pub(crate) fn frame() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
