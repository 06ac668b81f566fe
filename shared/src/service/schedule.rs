//! When each row of a request is due, and the jobs that bring rows when they are due. Rows are
//! given their due time as they are made (by ingest, or by fan-out a page at a time): the
//! request's `send_at` or `send_at_local` in the recipient's timezone, its throttle slot, and its
//! send window. A row due later than now is made `scheduled`, and its job waits on the queue.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::schedule::{due_at, recipient_timezone, SendWindow};
use crate::domain::{Contact, ContactKey, Job, RecipientRow, SendRequest};
use crate::ports::{ApiKeys, Contacts, OutgoingJob, StoreResult};

/// Contacts read at once for their timezones.
const CONTACT_READS_AT_ONCE: usize = 16;

/// What timing rows needs to read: the tenant's default timezone and the recipients' contacts.
pub struct Timing {
    pub tenants: Arc<dyn ApiKeys>,
    pub contacts: Arc<dyn Contacts>,
}

/// Whether a request's rows each need their recipient's timezone.
pub fn needs_timezone(request: &SendRequest) -> bool {
    request.send_at_local.is_some() || request.send_window.is_some()
}

/// Whether any row of a request may be due later than it is made.
pub fn is_timed(request: &SendRequest) -> bool {
    request.send_at.is_some() || request.throttle.is_some() || needs_timezone(request)
}

impl Timing {
    /// Gives each row its due time (and its recipient's timezone where the schedule depends on
    /// it); a row due after `now` becomes `scheduled`.
    pub async fn plan(&self, request: &SendRequest, rows: &mut [RecipientRow], now: DateTime<Utc>) -> StoreResult<()> {
        if !is_timed(request) {
            return Ok(());
        }
        let zones = match needs_timezone(request) {
            true => Some(self.zones(request, rows).await?),
            false => None,
        };
        let per = request.messages.len().max(1) as u64;
        for row in rows.iter_mut() {
            let tz = match zones.as_ref().and_then(|z| z.get(&row.recipient_index)) {
                Some(tz) => {
                    row.timezone = Some(tz.name().to_string());
                    *tz
                }
                None => chrono_tz::UTC,
            };
            let ordinal = u64::from(row.recipient_index) * per + u64::from(row.message_index);
            let throttle = request.throttle.map(|t| (t, ordinal));
            let window = request.send_window.as_ref();
            let due = due_at(now, request.created_at, request.send_at, request.send_at_local, tz, throttle, window);
            row.schedule(due, now);
        }
        Ok(())
    }

    /// Each recipient's timezone, by recipient index: their contacts are read a few at a time
    /// (a fan-out page names a thousand).
    async fn zones(&self, request: &SendRequest, rows: &[RecipientRow]) -> StoreResult<HashMap<u32, chrono_tz::Tz>> {
        let fallback = self.tenants.get_settings(&request.tenant_id).await?.tz();
        let mut first: HashMap<u32, &RecipientRow> = HashMap::new();
        for row in rows {
            first.entry(row.recipient_index).or_insert(row);
        }
        let firsts: Vec<&RecipientRow> = first.into_values().collect();
        let mut zones = HashMap::with_capacity(firsts.len());
        for chunk in firsts.chunks(CONTACT_READS_AT_ONCE) {
            for found in futures::future::join_all(chunk.iter().map(|row| self.zone_of(row, fallback))).await {
                let (index, tz) = found?;
                zones.insert(index, tz);
            }
        }
        Ok(zones)
    }

    /// A recipient's timezone, by its row.
    async fn zone_of(&self, row: &RecipientRow, fallback: chrono_tz::Tz) -> StoreResult<(u32, chrono_tz::Tz)> {
        let contact = self.contact_of(row).await?;
        let phone = row.recipient.phone.as_ref().map(|p| p.to_string());
        let phone = phone.or_else(|| contact.as_ref().and_then(|c| c.phone.as_ref()).map(|p| p.to_string()));
        let own = contact.as_ref().and_then(|c| c.timezone.as_deref());
        Ok((row.recipient_index, recipient_timezone(own, phone.as_deref(), fallback)))
    }

    /// The contact a row names or whose phone, email or channel id it gives, if one exists yet
    /// (a recipient new to Herald gets its contact at delivery).
    async fn contact_of(&self, row: &RecipientRow) -> StoreResult<Option<Contact>> {
        let spec = &row.recipient;
        let named = spec.contact_id.clone().or_else(|| {
            spec.contact_channel_id.as_deref().and_then(Contact::parse_channel_id).map(|(id, _)| id.to_string())
        });
        if let Some(id) = named {
            return self.contacts.get_contact(&row.tenant_id, &id).await;
        }
        let keys =
            spec.phone.clone().map(ContactKey::Phone).into_iter().chain(spec.email.clone().map(ContactKey::Email));
        for key in keys {
            if let Some(c) = self.contacts.find_contact(&row.tenant_id, &key).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// Rows that share a job: due from `first` to `last` (`None`: due at once).
struct Group {
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    job: Job,
}

impl Group {
    /// Whether a row due at `due` may join: the job has room, and it comes within a second.
    fn takes(&self, due: Option<DateTime<Utc>>) -> bool {
        let close = match (self.first, due) {
            (None, None) => true,
            (Some(a), Some(b)) => b.signed_duration_since(a) < chrono::Duration::seconds(1),
            _ => false,
        };
        close && self.job.row_ids.len() < Job::MAX_ROWS
    }
}

/// The jobs for rows of one request: rows due within a second of each other share a job (up to
/// [`Job::MAX_ROWS`]), delayed until the last of them is due, so none arrives before its row.
pub fn jobs_for<'a>(rows: impl IntoIterator<Item = &'a RecipientRow>, now: DateTime<Utc>) -> Vec<OutgoingJob> {
    let mut by_due: Vec<&RecipientRow> = rows.into_iter().collect();
    by_due.sort_by_key(|r| (r.next_attempt_at, r.seq));
    let mut groups: Vec<Group> = Vec::new();
    for row in by_due {
        let due = row.next_attempt_at;
        match groups.last_mut() {
            Some(g) if g.takes(due) => {
                g.job.row_ids.push(row.id.clone());
                g.last = due;
            }
            _ => groups.push(Group { first: due, last: due, job: row.job() }),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let delay = g.last.map(|t| (t - now).to_std().unwrap_or_default()).unwrap_or(Duration::ZERO);
            OutgoingJob { job: g.job, delay }
        })
        .collect()
}

/// Moves a time at which a row would be retried into its send window, if it has one.
pub fn in_window(window: Option<&SendWindow>, row: &RecipientRow, at: DateTime<Utc>) -> DateTime<Utc> {
    match (window, row.timezone.as_deref().and_then(|t| t.parse::<chrono_tz::Tz>().ok())) {
        (Some(w), Some(tz)) => w.next_open(at, tz),
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;

    #[test]
    fn rows_due_within_a_second_share_a_job_that_comes_when_the_last_is_due() {
        let now = crate::domain::now();
        let ms = |n: i64| Some(now + chrono::Duration::milliseconds(n));
        let dues = [ms(1_200), None, ms(0), ms(900), None, ms(500)];
        let rows: Vec<RecipientRow> = dues
            .iter()
            .enumerate()
            .map(|(i, due)| {
                let mut r = RecipientRow::new(&TenantId::new("t"), "req_1", i as u32, i as u32, 0);
                r.next_attempt_at = *due;
                r
            })
            .collect();
        let jobs = jobs_for(&rows, now);
        let shape: Vec<(Vec<u32>, u128)> = jobs
            .iter()
            .map(|j| {
                let seqs = j.job.row_ids.iter().map(|id| rows.iter().find(|r| &r.id == id).unwrap().seq).collect();
                (seqs, j.delay.as_millis())
            })
            .collect();
        assert_eq!(shape, vec![(vec![1, 4], 0), (vec![2, 5, 3], 900), (vec![0], 1_200)]);
    }
}
