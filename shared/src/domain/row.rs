//! Recipient rows: one message to one contact on one channel for one template.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use super::address::Channel;
use super::request::RecipientSpec;
use super::status::Status;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRow {
    pub id: String,
    pub tenant_id: String,
    pub request_id: String,
    /// Position in the request (recipient-major, then message), for stable paging.
    pub seq: u32,
    pub recipient_index: u32,
    pub message_index: u32,
    #[serde(default)]
    pub template_id: Option<String>,
    pub recipient: RecipientSpec,
    pub status: Status,
    /// Provider attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the row reached each status.
    #[serde(default)]
    pub times: BTreeMap<Status, DateTime<Utc>>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub external_message_id: Option<String>,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Display name used for this send (override, else the contact's).
    #[serde(default)]
    pub name: Option<String>,
    /// The address the message went to (phone, email or channel user id).
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// While `sending`: until when the claiming worker owns the row.
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RecipientRow {
    pub fn new(tenant_id: &str, request_id: &str, seq: u32, recipient_index: u32, message_index: u32) -> Self {
        let now = super::now();
        RecipientRow {
            id: RecipientRow::id_for(request_id, seq),
            tenant_id: tenant_id.to_string(),
            request_id: request_id.to_string(),
            seq,
            recipient_index,
            message_index,
            template_id: None,
            recipient: RecipientSpec::default(),
            status: Status::Queued,
            attempts: 0,
            times: BTreeMap::from([(Status::Queued, now)]),
            error_message: None,
            external_message_id: None,
            channel: None,
            provider: None,
            contact_id: None,
            name: None,
            address: None,
            next_attempt_at: None,
            lease_until: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// A row's id follows from its request and position (`rcp_{request uuid}_{seq}`), so a store
    /// can find a request's rows without an index.
    pub fn id_for(request_id: &str, seq: u32) -> String {
        format!("rcp_{}_{seq}", request_id.strip_prefix("req_").unwrap_or(request_id))
    }

    /// Moves the row to `status` at `at`, stamping the main-line statuses it implies.
    pub fn set_status(&mut self, status: Status, at: DateTime<Utc>) {
        for s in status.implied() {
            self.times.entry(*s).or_insert(at);
        }
        self.times.insert(status, at);
        self.status = status;
        self.updated_at = at;
    }

    pub fn job(&self) -> Job {
        Job { tenant_id: self.tenant_id.clone(), request_id: self.request_id.clone(), row_id: self.id.clone() }
    }
}

/// The API view of a row: Invent's `BroadcastRecipient` shape plus Herald's own fields.
#[derive(Debug, Clone)]
pub struct RowView<'a> {
    pub row: &'a RecipientRow,
    pub broadcast_id: Option<&'a str>,
    pub broadcast_name: Option<&'a str>,
}

impl RowView<'_> {
    pub fn to_json(&self) -> Value {
        let r = self.row;
        let mut m = Map::new();
        m.insert("id".into(), json!(r.id));
        m.insert("request_id".into(), json!(r.request_id));
        m.insert("broadcast_id".into(), json!(self.broadcast_id));
        m.insert("broadcast_name".into(), json!(self.broadcast_name));
        m.insert("template_id".into(), json!(r.template_id));
        m.insert("recipient_index".into(), json!(r.recipient_index));
        m.insert("contact_id".into(), json!(r.contact_id.as_ref().or(r.recipient.contact_id.as_ref())));
        m.insert("user_id".into(), json!(r.contact_id.as_ref().or(r.recipient.contact_id.as_ref())));
        m.insert("name".into(), json!(r.name.as_ref().or(r.recipient.name.as_ref())));
        let phone = r.recipient.phone.as_ref().map(|p| p.to_string()).or_else(|| match r.channel {
            Some(Channel::Whatsapp | Channel::Sms) => r.address.clone(),
            _ => None,
        });
        let email = r.recipient.email.as_ref().map(|e| e.to_string()).or_else(|| match r.channel {
            Some(Channel::Email) => r.address.clone(),
            _ => None,
        });
        m.insert("phone".into(), json!(phone));
        m.insert("email".into(), json!(email));
        m.insert("channel".into(), json!(r.channel));
        m.insert("provider".into(), json!(r.provider));
        m.insert("status".into(), json!(r.status));
        m.insert("attempts".into(), json!(r.attempts));
        for s in Status::ALL {
            if s == Status::Retrying {
                continue;
            }
            let at = r.times.get(&s);
            m.insert(format!("is_{s}"), json!(at.is_some()));
            m.insert(format!("is_{s}_at"), json!(at));
        }
        m.insert("error_message".into(), json!(r.error_message));
        m.insert("external_message_id".into(), json!(r.external_message_id));
        m.insert("next_attempt_at".into(), json!(r.next_attempt_at));
        m.insert("created_at".into(), json!(r.created_at));
        m.insert("updated_at".into(), json!(r.updated_at));
        Value::Object(m)
    }
}

/// What the queue carries: a pointer to one recipient row. Small by design (SQS allows 1 MiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub tenant_id: String,
    pub request_id: String,
    pub row_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_implies_sent_in_the_view() {
        let mut row = RecipientRow::new("t", "req_1", 0, 0, 0);
        let t = super::super::now();
        row.set_status(Status::Delivered, t);
        let v = RowView { row: &row, broadcast_id: None, broadcast_name: None }.to_json();
        assert_eq!(v["is_sent"], json!(true));
        assert_eq!(v["is_delivered"], json!(true));
        assert_eq!(v["is_failed"], json!(false));
        assert_eq!(v["is_failed_at"], Value::Null);
        assert_eq!(v["status"], json!("delivered"));
    }
}
