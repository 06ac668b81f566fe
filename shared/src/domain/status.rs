use serde::{Deserialize, Serialize};

/// A recipient row's status. It only ever moves forward:
/// `queued → sending → sent → delivered → read|opened|played`, or from `scheduled` (a row whose
/// due time was still ahead when it was made) to `sending`, with `retrying` as the pause between
/// attempts and the terminal branches `skipped`, `failed`, `bounced`, `complained`, `unsubscribed`
/// and `canceled` (its broadcast was canceled before the row was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Scheduled,
    Queued,
    Retrying,
    Sending,
    Sent,
    Delivered,
    Read,
    Opened,
    Played,
    Skipped,
    Failed,
    Bounced,
    Complained,
    Unsubscribed,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 15] = [
        Status::Scheduled,
        Status::Queued,
        Status::Retrying,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Read,
        Status::Opened,
        Status::Played,
        Status::Skipped,
        Status::Failed,
        Status::Bounced,
        Status::Complained,
        Status::Unsubscribed,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Retrying => "retrying",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Opened => "opened",
            Status::Played => "played",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::Bounced => "bounced",
            Status::Complained => "complained",
            Status::Unsubscribed => "unsubscribed",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Herald still has work to do on the row.
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Scheduled | Status::Queued | Status::Retrying | Status::Sending)
    }

    /// Waiting for a claim: nothing of the row has reached a provider (`scheduled`, `queued`).
    pub fn is_waiting(self) -> bool {
        matches!(self, Status::Scheduled | Status::Queued)
    }

    /// The send pipeline is done with the row (a provider may still report progress on `sent`).
    pub fn is_terminal(self) -> bool {
        !self.is_pending()
    }

    /// Position on the main line; `None` for the terminal branches.
    fn rank(self) -> Option<u8> {
        Some(match self {
            Status::Scheduled | Status::Queued => 0,
            Status::Retrying => 1,
            Status::Sending => 2,
            Status::Sent => 3,
            Status::Delivered => 4,
            Status::Read | Status::Opened | Status::Played => 5,
            _ => return None,
        })
    }

    /// Whether a row at `self` may move to `next` (provider callbacks and the pipeline alike).
    /// A late `sent` never overwrites `delivered`; a terminal branch is final; `failed` and
    /// `bounced` cannot follow a confirmed delivery; complaints and unsubscribes can follow it.
    pub fn can_advance_to(self, next: Status) -> bool {
        match (self.rank(), next.rank()) {
            (None, _) => false,
            (Some(a), Some(b)) => b > a,
            (Some(a), None) => match next {
                Status::Skipped => a <= 2,
                // Only a row no worker holds: one inside a provider call finishes that call.
                Status::Canceled => a <= 1,
                Status::Failed | Status::Bounced => a <= 3,
                Status::Complained | Status::Unsubscribed => true,
                _ => false,
            },
        }
    }

    /// Main-line statuses a row passed through on its way to `self` (for `is_<status>` flags).
    pub fn implied(self) -> &'static [Status] {
        match self {
            Status::Sending => &[Status::Queued],
            Status::Sent => &[Status::Queued, Status::Sending],
            Status::Delivered => &[Status::Queued, Status::Sending, Status::Sent],
            Status::Read | Status::Opened | Status::Played => {
                &[Status::Queued, Status::Sending, Status::Sent, Status::Delivered]
            }
            _ => &[],
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Queued.can_advance_to(Sending));
        assert!(Sending.can_advance_to(Sent));
        assert!(Sent.can_advance_to(Delivered));
        assert!(Delivered.can_advance_to(Read));
        assert!(!Delivered.can_advance_to(Sent), "a late sent must not overwrite delivered");
        assert!(!Read.can_advance_to(Delivered));
        assert!(!Read.can_advance_to(Opened), "read, opened and played share a rank");
        assert!(!Delivered.can_advance_to(Failed));
        assert!(Sent.can_advance_to(Bounced));
        assert!(Delivered.can_advance_to(Complained));
        assert!(!Failed.can_advance_to(Sent));
        assert!(!Skipped.can_advance_to(Queued));
        assert!(Sending.can_advance_to(Skipped));
        assert!(!Sent.can_advance_to(Skipped));
    }

    #[test]
    fn pending_and_terminal_split_every_status() {
        for s in super::Status::ALL {
            assert_ne!(s.is_pending(), s.is_terminal());
            assert_eq!(super::Status::parse(s.as_str()), Some(s));
        }
    }
}
