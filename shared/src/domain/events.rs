//! Status events pushed to a tenant's own URLs (`/v1/event-subscriptions`), signed per the
//! Standard Webhooks spec: the event types, what a subscription asks for, and the queue job that
//! carries one event to one subscription.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FieldErrors, Status, TenantId};

/// Every event type a subscription may name, besides the wildcards `message.*` and `*`.
pub const EVENT_TYPES: [&str; 7] = [
    "message.sent",
    "message.delivered",
    "message.read",
    "message.failed",
    "message.skipped",
    "message.canceled",
    "broadcast.completed",
];

/// The type of a completed send request's event.
pub const COMPLETED: &str = "broadcast.completed";

/// Most event types (or wildcards) one subscription may list.
const MAX_EVENTS: usize = 16;
/// Longest subscription URL.
pub const MAX_URL: usize = 2048;

/// The event a row's move to `status` produces, if any: pending states produce none, and the
/// terminal branches share the type their customer acts on.
pub fn event_type(status: Status) -> Option<&'static str> {
    Some(match status {
        Status::Scheduled | Status::Queued | Status::Retrying | Status::Sending => return None,
        Status::Sent => "message.sent",
        Status::Delivered => "message.delivered",
        Status::Read | Status::Opened | Status::Played => "message.read",
        Status::Failed | Status::Bounced | Status::Complained => "message.failed",
        Status::Skipped | Status::Unsubscribed => "message.skipped",
        Status::Canceled => "message.canceled",
    })
}

/// A tenant's subscription: where its events go and which ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSubscription {
    pub id: String,
    pub url: String,
    /// Event types and wildcards, as given.
    pub events: Vec<String>,
    /// `whsec_<base64>`: kept as is, since Herald signs with it; shown once, on creation.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EventSubscription {
    /// Whether this subscription asks for events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind || (e == "message.*" && kind.starts_with("message.")))
    }

    /// The API view: never the secret.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// `PUT /v1/event-subscriptions/{id}`'s body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionBody {
    pub url: String,
    pub events: Vec<String>,
}

impl SubscriptionBody {
    /// Checks the id and the event types, naming each broken field; the URL's own check (SSRF)
    /// is the caller's, since it resolves names.
    pub fn check(&self, id: &str) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::new();
        errs.take("id", super::ids::check_id(id));
        if self.url.is_empty() {
            errs.push("url", "must not be empty");
        } else if self.url.len() > MAX_URL {
            errs.push("url", format!("must be at most {MAX_URL} characters"));
        }
        if self.events.is_empty() {
            errs.push("events", "must name at least one event type");
        } else if self.events.len() > MAX_EVENTS {
            errs.push("events", format!("may name at most {MAX_EVENTS} event types"));
        }
        for (i, e) in self.events.iter().enumerate() {
            if !(EVENT_TYPES.contains(&e.as_str()) || e == "message.*" || e == "*") {
                let known = EVENT_TYPES.join(", ");
                errs.push(
                    format!("events[{i}]"),
                    format!("unknown event type \"{e}\"; use one of {known}, message.* or *"),
                );
            }
        }
        errs.finish(())
    }
}

/// An event on its way to one subscription: what the event-delivery job carries from attempt to
/// attempt. The body is kept as the exact text posted, so every attempt signs the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDelivery {
    pub subscription_id: String,
    /// `msg_…`: the `webhook-id`, the same for every attempt and every posting of the event.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub body: String,
    /// Posts made so far.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// When the next post is due; a wait longer than the queue's longest delay hops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

/// What an event job does: post one event, or look for rows a bulk cancel ended and emit their
/// events a page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventJob {
    Deliver(EventDelivery),
    /// Rows canceled by the cancel at `at`, from after `seq` `after`.
    Canceled {
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u32>,
    },
    /// Whether the request has completed (all rows terminal, fan-out over).
    Completion,
    /// A Twilio status callback on its way to a message's `StatusCallback` URL.
    Twilio(TwilioCallback),
}

/// The request metadata key holding a Twilio-made message's `StatusCallback` URL.
pub const TWILIO_CALLBACK: &str = "twilio_status_callback";

/// Twilio's status callback form for a row of a Twilio-made request (the dialect's; given to
/// the events at wiring, so the status events need not know the dialects).
pub type TwilioForm = fn(&super::SendRequest, &super::RecipientRow, DateTime<Utc>) -> Vec<(String, String)>;

/// A Twilio-made message's status callback: the form as posted, so every attempt sends (and
/// signs) the same parameters. The signature is made at each post with the tenant's secret then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioCallback {
    pub url: String,
    /// The form's parameters, in the order posted.
    pub form: Vec<(String, String)>,
    /// Posts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next post is due; a wait longer than the queue's longest delay hops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

/// A dead letter: an event that used up its retry schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFailure {
    pub subscription_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The event as it was posted (JSON text).
    pub body: String,
    pub attempts: u32,
    pub last_error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    pub first_attempt_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    /// The request the event is about, so a redelivery's job names it again.
    #[serde(default)]
    pub request_id: String,
}

impl EventFailure {
    pub fn to_json(&self) -> serde_json::Value {
        let event: serde_json::Value = serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "event_id": self.event_id,
            "type": self.kind,
            "event": event,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_status": self.last_status,
            "first_attempt_at": self.first_attempt_at,
            "last_attempt_at": self.last_attempt_at,
        })
    }
}

/// The `webhook-id` of an event: the same for the same (subscription, subject, what happened),
/// so a second posting of one event (a job redelivered after a crash) carries the id a receiver
/// already has, and it drops the repeat.
pub fn event_id(tenant: &TenantId, subscription: &str, subject: &str, what: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant.as_str(), subscription, subject, what] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("msg_{}", &hex::encode(h.finalize())[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_their_types_only() {
        let now = crate::domain::now();
        let mut s = EventSubscription {
            id: "s".into(),
            url: "https://example.com".into(),
            events: vec!["message.*".into()],
            secret: String::new(),
            created_at: now,
            updated_at: now,
        };
        assert!(s.wants("message.sent") && !s.wants(COMPLETED));
        s.events = vec!["*".into()];
        assert!(s.wants(COMPLETED));
        s.events = vec!["message.failed".into()];
        assert!(s.wants("message.failed") && !s.wants("message.sent"));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let t = TenantId::new("t");
        assert_eq!(event_id(&t, "s", "r", "sent"), event_id(&t, "s", "r", "sent"));
        assert_ne!(event_id(&t, "s", "r", "sent"), event_id(&t, "s", "r", "delivered"));
        assert_ne!(event_id(&t, "s", "r", "sent"), event_id(&TenantId::new("u"), "s", "r", "sent"));
        assert!(event_id(&t, "s", "r", "sent").starts_with("msg_"));
    }
}
