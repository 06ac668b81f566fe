//! Log hygiene and log volume: addresses are masked before they reach a log line, and the
//! per-request and per-row events are DEBUG, counted in [`ACTIVITY`] and summarised in one INFO
//! line a second ([`summarise`]), so a busy server writes a line a second, not one per message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::{mask_email, mask_phone, Channel};

/// What happened since the last summary line.
#[derive(Debug, Default)]
pub struct Activity {
    requests: AtomicU64,
    recipients: AtomicU64,
    sent: AtomicU64,
    retrying: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

/// The process's counters.
pub static ACTIVITY: Activity = Activity {
    requests: AtomicU64::new(0),
    recipients: AtomicU64::new(0),
    sent: AtomicU64::new(0),
    retrying: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    skipped: AtomicU64::new(0),
};

/// The end of one delivery attempt, as the summary counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Sent,
    Retrying,
    Failed,
    Skipped,
}

impl Activity {
    /// A send request was accepted with `recipients` rows.
    pub fn accepted(&self, recipients: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.recipients.fetch_add(recipients as u64, Ordering::Relaxed);
    }

    pub fn attempt(&self, end: Attempt) {
        let counter = match end {
            Attempt::Sent => &self.sent,
            Attempt::Retrying => &self.retrying,
            Attempt::Failed => &self.failed,
            Attempt::Skipped => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call, zeroed: (requests, recipients, sent, retrying, failed, skipped).
    pub fn take(&self) -> [u64; 6] {
        [&self.requests, &self.recipients, &self.sent, &self.retrying, &self.failed, &self.skipped]
            .map(|c| c.swap(0, Ordering::Relaxed))
    }
}

/// Logs one INFO line per `every` in which anything happened, for as long as the task runs.
pub async fn summarise(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(line) = summary(ACTIVITY.take(), every) {
            tracing::info!(target: "herald::activity", "{line}");
        }
    }
}

fn summary([requests, recipients, sent, retrying, failed, skipped]: [u64; 6], every: Duration) -> Option<String> {
    if requests + recipients + sent + retrying + failed + skipped == 0 {
        return None;
    }
    Some(format!(
        "last {} s: {requests} requests accepted ({recipients} recipients); attempts: {sent} sent, {retrying} retrying, \
         {failed} failed, {skipped} skipped",
        every.as_secs_f64()
    ))
}

/// An address safe to log: emails as `a•••@example.com`, anything else as `+1415•••••23`.
pub fn mask_address(channel: Option<Channel>, address: &str) -> String {
    match channel {
        Some(Channel::Email) => mask_email(address),
        _ if address.contains('@') => mask_email(address),
        _ => mask_phone(address),
    }
}

/// Free text safe to log (a provider's error message, which may quote the recipient: "… while
/// sending to +14155550123"): every email address and every phone-like run of digits (seven or
/// more, with an optional `+` and spaces, dots, dashes or brackets between) masked as above.
pub fn mask_text(text: &str) -> String {
    mask_phones(&text.split_inclusive(char::is_whitespace).map(mask_word).collect::<String>())
}

fn mask_word(word: &str) -> String {
    let core = word.trim_end_matches(char::is_whitespace);
    match core.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') => {
            let trailing = &word[core.len()..];
            let start = core.find(|c: char| c.is_alphanumeric()).unwrap_or(0);
            format!("{}{}{trailing}", &core[..start], mask_email(&core[start..]))
        }
        _ => word.to_string(),
    }
}

/// Masks each phone-like run: digits with at most single separators between them.
fn mask_phones(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts =
            chars[i].is_ascii_digit() || (chars[i] == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut end = i + 1;
        let mut digits = usize::from(chars[i].is_ascii_digit());
        while end < chars.len() {
            let c = chars[end];
            if c.is_ascii_digit() {
                digits += 1;
            } else if !(matches!(c, ' ' | '-' | '.' | '(' | ')')
                && chars.get(end + 1).is_some_and(char::is_ascii_digit))
            {
                break;
            }
            end += 1;
        }
        let run: String = chars[i..end].iter().collect();
        if digits >= 7 {
            let compact: String = run.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
            out.push_str(&mask_phone(&compact));
        } else {
            out.push_str(&run);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_is_summarised_once_and_then_starts_over() {
        let a = Activity::default();
        assert_eq!(summary(a.take(), Duration::from_secs(1)), None, "a quiet second writes nothing");
        a.accepted(1000);
        a.accepted(1);
        a.attempt(Attempt::Sent);
        a.attempt(Attempt::Failed);
        assert_eq!(
            summary(a.take(), Duration::from_secs(1)).unwrap(),
            "last 1 s: 2 requests accepted (1001 recipients); attempts: 1 sent, 0 retrying, 1 failed, 0 skipped"
        );
        assert_eq!(a.take(), [0; 6]);
    }

    #[test]
    fn phones_and_emails_in_free_text_are_masked() {
        assert_eq!(
            mask_text("[21211] Invalid 'To' Phone Number: +14155550123 (ann@example.com)"),
            "[21211] Invalid 'To' Phone Number: +1415•••••23 (a•••@example.com)"
        );
        assert_eq!(mask_text("to 415-555-0123."), "to 41555•••23.");
        assert_eq!(mask_text("HTTP 500 after 2 s"), "HTTP 500 after 2 s");
    }
}
