//! Twilio status callbacks: a row of a message made through the Twilio dialect with a
//! `StatusCallback` posts Twilio's status form there on each move, signed with
//! `X-Twilio-Signature` under the tenant's Twilio signing secret (the signer that checks Twilio's
//! own callbacks), so the customer's
//! `RequestValidator(secret)` accepts it. The posts ride the event jobs and their retry schedule;
//! like events, they go out only on moves the store confirmed, so once per move.

use std::time::Duration;

use crate::domain::events::{event_type, EventJob, TwilioCallback, TwilioForm, TWILIO_CALLBACK};
use crate::domain::{Job, RecipientRow, SendRequest};
use crate::net::signatures::twilio_signature;
use crate::net::ssrf;
use crate::ports::OutgoingJob;

use super::events::{Events, MAX_HOP};
use super::worker::JobResult;

/// The request's `StatusCallback`, when it is a Twilio message that gave one.
pub(super) fn callback_url(request: &SendRequest) -> Option<&str> {
    request.metadata.get(TWILIO_CALLBACK)?.as_str()
}

/// The callback jobs of rows of `request` that moved to a state Twilio reports, each with the
/// form `form` makes for it.
pub(super) fn jobs(form: TwilioForm, request: &SendRequest, rows: &[RecipientRow]) -> Vec<OutgoingJob> {
    let Some(url) = callback_url(request) else { return Vec::new() };
    let now = crate::domain::now();
    rows.iter()
        .filter(|r| event_type(r.status).is_some())
        .map(|row| {
            let form = form(request, row, now);
            let c = TwilioCallback { url: url.to_string(), form, attempts: 0, due_at: None };
            let job = Job::event(&request.tenant_id, &request.id, EventJob::Twilio(c));
            OutgoingJob { job, delay: Duration::ZERO }
        })
        .collect()
}

/// The URL as logs may show it: without its query, which may carry the customer's tokens.
pub(super) fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}{}", u.origin().ascii_serialization(), u.path()),
        Err(_) => "(not a URL)".into(),
    }
}

/// Posts the callback once it is due; on anything but a 2xx waits its turn in the events'
/// schedule, and after the last post gives up (Twilio keeps no failed callbacks either).
pub(super) async fn post(ev: &Events, job: &Job, c: &TwilioCallback) -> JobResult {
    let now = crate::domain::now();
    if let Some(due) = c.due_at.filter(|due| *due > now) {
        let wait = (due - now).to_std().unwrap_or_default().min(MAX_HOP);
        return JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: wait }]);
    }
    let secret = match ev.keys.get_settings(&job.tenant_id).await {
        Ok(s) => s.twilio_signing_secret,
        Err(e) => {
            tracing::warn!(request_id = %job.request_id, error = %e, "could not read the Twilio signing secret; trying again");
            return JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: Duration::from_secs(1) }]);
        }
    };
    let Some(secret) = secret else {
        tracing::info!(request_id = %job.request_id, "no Twilio signing secret: the status callback is not posted");
        return JobResult::Delete;
    };
    let status = match send(ev, c, &secret).await {
        Ok(()) => return JobResult::Delete,
        Err(why) => why,
    };
    let mut next = c.clone();
    next.attempts += 1;
    let url = shown(&c.url);
    let Some(wait) = ev.schedule.get(next.attempts as usize - 1).copied() else {
        tracing::warn!(request_id = %job.request_id, %url, attempts = next.attempts, %status, "Twilio status callback failed for good");
        return JobResult::Delete;
    };
    tracing::info!(request_id = %job.request_id, %url, attempt = next.attempts, %status, "Twilio status callback not taken; will retry");
    next.due_at = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
    let again = Job::event(&job.tenant_id, &job.request_id, EventJob::Twilio(next));
    JobResult::Replace(vec![OutgoingJob { job: again, delay: wait.min(MAX_HOP) }])
}

/// One signed post of the form, checked against SSRF first; why it failed otherwise.
async fn send(ev: &Events, c: &TwilioCallback, secret: &str) -> Result<(), String> {
    let url = ssrf::check_url(&c.url, ev.allow_loopback).map_err(|e| format!("URL refused: {}", e.0))?;
    // DNS can change: check where the host points now (the client's resolver checks again).
    ssrf::check_resolved(&url, ev.allow_loopback).await.map_err(|e| format!("URL refused: {}", e.0))?;
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&c.form).finish();
    let answer = ev
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", twilio_signature(secret, &c.url, &c.form))
        .body(body)
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(e) if e.is_timeout() => Err("no answer within the timeout".into()),
        Err(e) => Err(format!("could not post: {}", crate::logging::mask_text(&e.to_string()))),
    }
}
