//! The vocabulary of DESIGN.md as types. Nothing here knows about HTTP, SQLite or AWS.

mod address;
mod catalog;
mod contact;
mod error;
pub mod events;
pub mod ids;
pub mod import;
pub mod json;
pub mod limits;
mod report;
mod request;
mod row;
pub mod schedule;
pub mod segment;
mod status;

pub(crate) use address::check_user_id;
pub use address::{mask_email, mask_phone, Channel, Email, Phone};
pub(crate) use catalog::{check_message_chars, check_text, parse_variables};
pub use catalog::{
    Campaign, CampaignBody, HeaderKind, Media, Template, TemplateBody, TemplateHeader, WhatsappTemplate,
};
pub use contact::{check_timezone, Contact, ContactBody, ContactChannel, ContactDraft, ContactKey};
pub use error::{FieldError, FieldErrors};
pub use ids::TenantId;
pub use report::{Inbound, StatusReport};
pub use request::{
    validate_metadata, Audience, AudienceBody, BroadcastBody, FlowBody, FlowTrigger, MessageBody, MessageSource,
    PlannedMessage, RecipientBody, RecipientSpec, SendPlan, SendRequest, TemplateRef, MESSAGING_TAGS,
};
pub use row::{Claim, FanOutStep, Job, Outcome, RecipientRow, RecountStep, RowView};
pub use segment::{MemberCursor, MembersBody, Segment, SegmentBody};
pub use status::Status;

/// A point in time, as Herald stores them (UTC, millisecond precision).
pub type DateTimeUtc = chrono::DateTime<chrono::Utc>;

/// Current time, truncated to milliseconds so that stored and returned times compare equal.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let n = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(n.timestamp_millis()).unwrap_or(n)
}
