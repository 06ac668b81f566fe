//! What providers report back, after the message left: a status for a message they took, or a
//! message a contact sent in. Providers parse their callbacks into these; `service::callbacks`
//! applies them.

use chrono::{DateTime, Utc};

use super::{Channel, ContactKey, Status};

/// A provider's word on one message it took.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub external_id: String,
    pub status: Status,
    pub at: DateTime<Utc>,
    pub error: Option<String>,
}

/// A message a contact sent in.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub channel: Channel,
    pub from: ContactKey,
    pub at: DateTime<Utc>,
    pub text: Option<String>,
}
