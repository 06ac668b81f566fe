//! CSML Studio's Broadcasts API (seeds 000 and 001): `POST /compat/csml/v1/api/broadcasts` with
//! `x-api-key`. A `flow_trigger` payload becomes a native flow send to the contact whose
//! `webhook_user_id` is `client.user_id`: the flow trigger reaches the bot backend through the
//! webhook channel. Errors use Herald's native body (the page shows none of its own).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{parse_at, required, validate, Renames};
use crate::api::error::ApiError;
use crate::api::parse_json;
use crate::domain::ids::{name_uuid, IdStyle};
use crate::domain::{BroadcastBody, Channel, FieldError, FieldErrors, FlowBody, RecipientBody};
use crate::domain::{MessageSource, SendPlan, SendRequest, TenantId};

/// The only payload kind the Broadcasts API documents.
const FLOW_TRIGGER: &str = "flow_trigger";
/// The channel a flow trigger travels on; the answer's `client.channel_id` names it.
const CHANNEL: Channel = Channel::Webhook;

pub(crate) const RENAMES: Renames = &[
    ("recipients[0].webhook_user_id", "client.user_id"),
    ("recipients", "client.user_id"),
    ("flow.flow_id", "payload.content.flow_id"),
    ("flow", "payload.content"),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    payload: Option<Payload>,
    client: Option<Client>,
    metadata: Option<Map<String, Value>>,
}

/// `content` stays raw until `content_type` says what it is, so an unknown kind is reported as
/// such rather than as a stray field inside its content.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    content_type: Option<String>,
    content: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowContent {
    flow_id: Option<String>,
    close_flows: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Client {
    user_id: Option<String>,
}

/// CSML's answer to a flow trigger Herald took (the plan's `source` and user, as they were before
/// the plan was taken): the user, the tenant's bot and channel, and the flow.
pub(crate) fn answer(
    tenant: &TenantId,
    source: &MessageSource,
    user_id: Option<&str>,
    request: &SendRequest,
) -> Result<Value, ApiError> {
    let MessageSource::Flow(flow) = source else {
        return Err(ApiError::Internal("a CSML plan carries a flow".into()));
    };
    Ok(json!({
        "request_id": request.id,
        "client": {"user_id": user_id, "bot_id": bot_id(tenant), "channel_id": channel_id(tenant, CHANNEL)},
        "payload": {
            "content_type": FLOW_TRIGGER,
            "content": {"flow_id": flow.flow_id, "close_flows": flow.close_flows},
        },
        "metadata": request.metadata,
    }))
}

/// CSML names its bots by UUID: the tenant's, stable across calls.
fn bot_id(tenant: &TenantId) -> String {
    name_uuid(&format!("bot/{tenant}")).hyphenated().to_string()
}

/// CSML names a bot's channels by UUID: the tenant's channel, stable across calls. `/` cannot
/// occur in a tenant id, so no two (tenant, channel) pairs share a name.
fn channel_id(tenant: &TenantId, channel: Channel) -> String {
    name_uuid(&format!("channel/{tenant}/{channel}")).hyphenated().to_string()
}

/// A request body as a native plan, whose request id is a UUID as CSML's are.
pub(crate) fn plan_bytes(body: &[u8]) -> Result<SendPlan, ApiError> {
    let mut plan = plan(parse_json::<Body>(body)?)?;
    plan.id_style = IdStyle::Uuid;
    Ok(plan)
}

/// The native plan: one recipient (the contact with `webhook_user_id` = `client.user_id`, found
/// or created) and one flow trigger, queued like every CSML broadcast.
fn plan(body: Body) -> Result<SendPlan, ApiError> {
    let payload = body.payload.unwrap_or_default();
    if payload.content_type.as_deref() != Some(FLOW_TRIGGER) {
        return Err(content_type_error(payload.content_type.as_deref()));
    }
    let content: FlowContent = parse_at(payload.content.unwrap_or_else(|| json!({})), "payload.content")?;
    let mut errs = FieldErrors::new();
    let flow_id = required(&mut errs, "payload.content.flow_id", content.flow_id);
    let user_id = required(&mut errs, "client.user_id", body.client.and_then(|c| c.user_id));
    // A missing flow id still goes through native validation (as empty, which `mine` already
    // reports), so every other broken rule is listed in the same answer.
    let native = BroadcastBody {
        recipients: user_id.map(|u| vec![RecipientBody { webhook_user_id: Some(u), ..Default::default() }]),
        flow: Some(FlowBody { flow_id: flow_id.unwrap_or_default(), close_flows: content.close_flows }),
        metadata: body.metadata,
        ..Default::default()
    };
    validate(native, errs, RENAMES)
}

fn content_type_error(given: Option<&str>) -> ApiError {
    let message = match given {
        None => format!("is required and must be \"{FLOW_TRIGGER}\""),
        Some(other) => format!("\"{other}\" is not supported: Herald's CSML broadcasts take \"{FLOW_TRIGGER}\" only"),
    };
    ApiError::BadRequest {
        code: "unsupported_content_type",
        message: format!("payload.content_type {message}"),
        fields: vec![FieldError { field: "payload.content_type".into(), message }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn plan_of(v: Value) -> Result<SendPlan, ApiError> {
        plan(parse_json(&serde_json::to_vec(&v).unwrap())?)
    }

    #[test]
    fn the_seed_request_is_a_flow_to_a_webhook_user() {
        let p = plan_of(json!({
            "payload": {"content": {"flow_id": "myflow"}, "content_type": "flow_trigger"},
            "client": {"user_id": "some-user-id"},
            "metadata": {"somekey": "somevalue"}
        }))
        .unwrap();
        assert_eq!(p.recipients[0].webhook_user_id.as_deref(), Some("some-user-id"));
        assert!(matches!(&p.source, MessageSource::Flow(f) if f.flow_id == "myflow" && f.close_flows));
        assert!(p.background);
        assert_eq!(p.metadata["somekey"], "somevalue");
    }

    #[test]
    fn another_content_type_is_a_400_naming_it() {
        let e = plan_of(
            json!({"payload": {"content_type": "text", "content": {"text": "hi"}}, "client": {"user_id": "u"}}),
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let (code, _, fields) = e.describe();
        assert_eq!((code, fields[0].field.as_str()), ("unsupported_content_type", "payload.content_type"));
    }

    #[test]
    fn missing_fields_are_named_in_csml_terms() {
        let e = plan_of(json!({"payload": {"content_type": "flow_trigger", "content": {}}})).unwrap_err();
        let (_, _, fields) = e.describe();
        let named: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(named, vec!["payload.content.flow_id", "client.user_id"]);
        let e = plan_of(json!({"payload": {"content_type": "flow_trigger", "content": {"flow_id": "f"}}, "client": {"user_id": "has space"}}))
            .unwrap_err();
        assert_eq!(e.describe().2[0].field, "client.user_id");
    }
}
