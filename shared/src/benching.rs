//! Entry points for the in-process benchmark of ingest's first half (`shared/benches/plan.rs`):
//! parse, validate and plan one request of each dialect, with the catalog reads its planning
//! makes, on an embedded store seeded with what the seeds' example requests name. Nothing is
//! written or queued: that is ingest's second half, measured over HTTP.

use axum::body::Body;
use axum::http::Request;
use std::path::Path;
use tower::ServiceExt;

use crate::domain::{SendPlan, TenantId};
use crate::http::error::ApiError;
use crate::local::Local;

const TENANT: &str = "default";

fn tenant() -> TenantId {
    TenantId::new(TENANT)
}
const KEY: &str = "hk_benching_key_0123456789abcdef0123";

/// A single-recipient native request, as a newcomer's first call sends it.
pub const NATIVE: &str = r#"{"recipients": [{"phone": "+14155550123", "variables": {"name": "Ada"}}],
  "messages": [{"text": "Hi {{name}}, your order has shipped"}], "metadata": {"order": "A-1"}}"#;
/// Seed 000 (CSML Studio)'s request example.
pub const CSML: &str = r#"{"payload": {"content": {"flow_id": "myflow"}, "content_type": "flow_trigger"},
  "client": {"user_id": "some-user-id"}, "metadata": {"somekey": "somevalue"}}"#;
/// Seed 002 (SMAX) V2's example with a block.
pub const SMAX_V2: &str = r#"{"customer_id": "cus-1", "customer_email": "lan@example.com",
  "customer_phone": "84912345678", "customer_fbid": "2345678901", "block_id": "promo",
  "notification_messages_token": "token NTN", "one_time_notif_token": "token OTN",
  "messaging_tag": "CONFIRMED_EVENT_UPDATE", "priority": ["fbid", "phone", "email"]}"#;
/// Seed 003 (Invent)'s example, sent to broadcast `onboarding`.
pub const INVENT: &str = r#"{"contact_channel_id": "ct-1~sms", "contact_id": "ct-1",
  "phone": "+14155550123", "email": "ada@example.com", "name": "Ada", "variables": {},
  "template_ids": ["welcome"], "background": true}"#;
/// Seed 004 (Pabbly Chatflow)'s "send message" example.
pub const PABBLY: &str = r#"{"templateName": "festival_offer_template", "campaignName": "festival offer",
  "destination": "917697812345", "userName": "Jon", "headerParams": ["Sir"],
  "bodyParams": ["Christmas", "Thank You"], "source": "api",
  "link": "https://placehold.co/600x400/EEE/31343C.png", "filename": "filename",
  "defaultContactFieldValues": {"Country": "India"}}"#;

/// A native body's plan: strict JSON, validation, the plan.
pub fn native(body: &[u8]) -> Result<SendPlan, ApiError> {
    Ok(crate::http::extract::parse_json::<crate::domain::BroadcastBody>(body)?.validate()?)
}

/// A CSML body's plan.
pub fn csml(body: &[u8]) -> Result<SendPlan, ApiError> {
    crate::dialects::csml::plan_bytes(body)
}

/// The dialects whose planning reads the catalog, on a seeded store.
pub struct Planner {
    rt: tokio::runtime::Runtime,
    local: Local,
}

impl Planner {
    pub fn new(dir: &Path) -> Planner {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = rt
            .block_on(Local::open(dir, crate::Settings::default(), Default::default()))
            .expect("open the embedded store");
        let router = crate::http::router(local.herald.clone());
        rt.block_on(async {
            crate::service::keys::create_key(local.herald.keys.as_ref(), TENANT, Some(KEY)).await.expect("key");
            for (method, path, body) in [
                ("PUT", "/v1/contacts/cus-1", r#"{"name": "Lan"}"#),
                ("PUT", "/v1/templates/voucher", r#"{"body": "Hi {{name}}, your voucher is ready"}"#),
                ("PUT", "/v1/campaigns/promo", r#"{"name": "Promo", "template_ids": ["voucher"]}"#),
                ("PUT", "/v1/templates/welcome", r#"{"channel": "sms", "body": "Hi {{name}}, welcome"}"#),
                ("PUT", "/v1/campaigns/onboarding", r#"{"name": "Onboarding", "template_ids": ["welcome"]}"#),
                ("PUT", "/v1/contacts/ct-1", r#"{"name": "Ada", "phone": "+14155550123", "email": "ada@example.com"}"#),
                (
                    "PUT",
                    "/v1/templates/festival_offer_template",
                    r#"{"channel": "whatsapp", "header": {"type": "text", "text": "Dear {{1}}"},
                       "body": "Happy {{1}} from all of us in {{Country}}! {{2}}",
                       "whatsapp": {"name": "festival_offer_template", "language": "en"}}"#,
                ),
                (
                    "POST",
                    "/compat/pabbly/api/v1/broadcasts/api-campaigns",
                    r#"{"campaignName": "festival offer", "templateNames": ["festival_offer_template"]}"#,
                ),
            ] {
                let request = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .expect("request");
                let status = router.clone().oneshot(request).await.expect("router").status();
                assert!(status.is_success(), "seeding {method} {path}: {status}");
            }
        });
        Planner { rt, local }
    }

    pub fn smax_v2(&self, body: &[u8]) -> Result<SendPlan, ApiError> {
        self.rt.block_on(crate::http::compat::smax::v2_plan(&self.local.herald, &tenant(), body)).map(|(plan, _)| plan)
    }

    pub fn invent(&self, body: &[u8]) -> Result<SendPlan, ApiError> {
        self.rt.block_on(crate::http::compat::invent::plan(&self.local.herald, &tenant(), "onboarding", body))
    }

    pub fn pabbly(&self, body: &[u8]) -> Result<SendPlan, ApiError> {
        self.rt
            .block_on(crate::http::compat::pabbly::send_plan(&self.local.herald, &tenant(), body))
            .map(|(plan, _)| plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark measures success paths: every example must plan.
    #[test]
    fn every_example_plans() {
        let dir = tempfile::tempdir().unwrap();
        let p = Planner::new(dir.path());
        native(NATIVE.as_bytes()).unwrap();
        csml(CSML.as_bytes()).unwrap();
        assert_eq!(p.smax_v2(SMAX_V2.as_bytes()).unwrap().recipients.len(), 1);
        assert_eq!(p.invent(INVENT.as_bytes()).unwrap().recipients.len(), 1);
        assert_eq!(p.pabbly(PABBLY.as_bytes()).unwrap().recipients.len(), 1);
    }
}
