//! Provider callbacks, after their signature was verified: status reports move rows forward,
//! inbound messages open the messaging window, an inbound STOP unsubscribes.

use std::sync::Arc;

use crate::domain::{Channel, ContactDraft, ContactKey, TenantId};
pub use crate::domain::{Inbound, StatusReport};
use crate::ports::{Contacts, RowLeases, StatusLookup, StoreError};

/// What applying callbacks needs, and nothing more. Built by `app`.
pub struct Callbacks {
    /// Finds the row a provider's message id belongs to.
    pub lookup: Arc<dyn StatusLookup>,
    /// Moves rows forward.
    pub rows: Arc<dyn RowLeases>,
    pub contacts: Arc<dyn Contacts>,
    /// The tenant inbound messages belong to (`HERALD_INBOUND_TENANT`).
    pub inbound_tenant: TenantId,
    /// Status events for the rows reports move.
    pub events: Option<Arc<super::events::Events>>,
}

/// What the callback changed, for the answer and the logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub moved: u32,
    /// Reports that were not forward (a late `sent` after `delivered`).
    pub ignored: u32,
    /// Reports naming a message id Herald does not know: acknowledged and logged.
    pub unknown: u32,
    pub inbound: u32,
    pub unsubscribed: u32,
}

/// Words that opt a contact out by SMS (the carriers' and Twilio's standard keywords).
const STOP_WORDS: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

pub async fn apply(
    h: &Callbacks,
    provider: &str,
    reports: &[StatusReport],
    inbound: &[Inbound],
) -> Result<Applied, StoreError> {
    let mut out = Applied::default();
    for r in reports {
        match h.lookup.find_by_external_id(provider, &r.external_id).await? {
            None => {
                tracing::info!(provider, external_id = %r.external_id, status = %r.status, "status for an unknown message; acknowledged");
                out.unknown += 1;
            }
            Some((tenant, row_id)) => {
                if h.rows.advance_row(&tenant, &row_id, r.status, r.at, r.error.clone()).await? {
                    out.moved += 1;
                    if let Some(ev) = &h.events {
                        ev.row_id_moved(&tenant, &row_id, r.status).await;
                    }
                } else {
                    out.ignored += 1;
                    if let Some(ev) = &h.events {
                        ev.row_id_reported_again(&tenant, &row_id, r.status).await;
                    }
                }
            }
        }
    }
    if out.moved > 0 {
        if let Err(e) = h.rows.flush_counts().await {
            tracing::warn!(provider, error = %e, "status counts not written; a recount repairs them");
        }
    }
    let tenant = h.inbound_tenant.clone();
    for m in inbound {
        let draft = match &m.from {
            ContactKey::Phone(p) => ContactDraft { phone: Some(p.clone()), ..Default::default() },
            ContactKey::Email(e) => ContactDraft { email: Some(e.clone()), ..Default::default() },
            ContactKey::User(Channel::Messenger, id) => {
                ContactDraft { messenger_psid: Some(id.clone()), ..Default::default() }
            }
            ContactKey::User(Channel::Telegram, id) => {
                ContactDraft { telegram_chat_id: Some(id.clone()), ..Default::default() }
            }
            ContactKey::User(Channel::Slack, id) => ContactDraft { slack_id: Some(id.clone()), ..Default::default() },
            ContactKey::User(_, id) => ContactDraft { webhook_user_id: Some(id.clone()), ..Default::default() },
        };
        let mut contact = match h.contacts.upsert_contact(&tenant, &draft, false).await {
            Ok((c, _)) => c,
            Err(crate::ports::ContactWriteError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "inbound message from a contact Herald could not record");
                continue;
            }
        };
        let newer = contact.last_inbound.get(&m.channel).is_none_or(|t| *t < m.at);
        if newer {
            contact.last_inbound.insert(m.channel, m.at);
        }
        let stop = m.channel == Channel::Sms
            && m.text.as_deref().is_some_and(|t| STOP_WORDS.contains(&t.trim().to_ascii_uppercase().as_str()));
        if stop && !contact.unsubscribed {
            contact.unsubscribed = true;
            out.unsubscribed += 1;
        }
        if newer || stop {
            contact.updated_at = crate::domain::now();
            if let Err(e) = h.contacts.put_contact(&tenant, &contact).await {
                tracing::warn!(contact_id = %contact.id, error = %e, "could not record an inbound message");
                continue;
            }
        }
        out.inbound += 1;
    }
    Ok(out)
}
