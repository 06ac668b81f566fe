//! The row transitions every store adapter applies, so SQLite and DynamoDB cannot disagree:
//! the store only has to make each read-decide-write atomic.

use chrono::{DateTime, Utc};

use crate::domain::{RecipientRow, Status};
use crate::ports::{Claim, Outcome};

/// Whether a row may be claimed at `now`, and how.
pub(crate) fn decide_claim(row: &RecipientRow, now: DateTime<Utc>) -> Claim {
    match row.status {
        // A queued row's next_attempt_at is its send_at: a job that arrives early waits.
        Status::Queued | Status::Retrying => match row.next_attempt_at {
            Some(t) if t > now => Claim::NotDue(t),
            _ => Claim::Claimed(row.clone()),
        },
        Status::Sending => match row.lease_until {
            Some(t) if t > now => Claim::Busy(t),
            _ => Claim::Reclaimed(row.clone()),
        },
        _ => Claim::Done(row.clone()),
    }
}

/// Claims the row in place if the rules allow; returns the claim to answer.
pub(crate) fn claim(row: &mut RecipientRow, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Claim {
    let decision = decide_claim(row, now);
    if !matches!(decision, Claim::Claimed(_) | Claim::Reclaimed(_)) {
        return decision;
    }
    row.attempts += 1;
    row.set_status(Status::Sending, now);
    row.lease_until = Some(lease_until);
    row.next_attempt_at = None;
    match decision {
        Claim::Reclaimed(_) => Claim::Reclaimed(row.clone()),
        _ => Claim::Claimed(row.clone()),
    }
}

/// Applies an attempt's outcome if the writer still owns the row; `false` if it does not.
pub(crate) fn finish(row: &mut RecipientRow, attempt: u32, o: Outcome, at: DateTime<Utc>) -> bool {
    if row.status != Status::Sending || row.attempts != attempt {
        return false;
    }
    if let Some(s) = o.status {
        row.set_status(s, at);
    }
    if o.refund_attempt {
        row.attempts = row.attempts.saturating_sub(1);
    }
    row.error_message = match o.status {
        Some(Status::Sent) => None,
        _ => o.error_message,
    };
    row.external_message_id = o.external_message_id.or(row.external_message_id.take());
    row.channel = o.channel.or(row.channel);
    row.provider = o.provider.or(row.provider.take());
    row.contact_id = o.contact_id.or(row.contact_id.take());
    row.name = o.name.or(row.name.take());
    row.address = o.address.or(row.address.take());
    row.next_attempt_at = o.next_attempt_at;
    row.lease_until = None;
    row.updated_at = at;
    true
}

/// Fails a pending row; `false` if it was no longer pending.
pub(crate) fn fail_pending(row: &mut RecipientRow, message: &str, at: DateTime<Utc>) -> bool {
    if !row.status.is_pending() {
        return false;
    }
    row.set_status(Status::Failed, at);
    row.error_message = Some(message.to_string());
    row.lease_until = None;
    row.next_attempt_at = None;
    true
}

/// A provider's report moves the row forward only.
pub(crate) fn advance(row: &mut RecipientRow, status: Status, at: DateTime<Utc>, error: Option<String>) -> bool {
    if !row.status.can_advance_to(status) {
        return false;
    }
    row.set_status(status, at);
    if error.is_some() {
        row.error_message = error;
    }
    row.lease_until = None;
    row.next_attempt_at = None;
    true
}
