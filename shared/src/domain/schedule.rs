//! When each row is due: the recipient's timezone, a wall-clock `send_at_local`, a send window
//! (quiet hours) and a broadcast's throttle. Pure functions of their inputs and the time given,
//! so every rule is tested with the clock set by hand.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::OnceLock;

use super::error::FieldErrors;

/// A recipient's timezone: the contact's own, else the one zone of its phone number's country
/// (IANA's `zone1970.tab`: zones whose principal country it is), else the tenant's.
pub fn recipient_timezone(contact: Option<&str>, phone: Option<&str>, tenant: Tz) -> Tz {
    if let Some(tz) = contact.and_then(|c| c.parse::<Tz>().ok()) {
        return tz;
    }
    phone.and_then(phone_country).and_then(|c| single_zone(&c)).unwrap_or(tenant)
}

/// The ISO 3166 country of an E.164 number (`+1` numbers by their area code).
fn phone_country(phone: &str) -> Option<String> {
    let parsed = phonenumber::parse(None, phone).ok()?;
    let id = parsed.country().id()?;
    Some(format!("{id:?}"))
}

/// The zone of a country that has exactly one.
fn single_zone(country: &str) -> Option<Tz> {
    static ZONES: OnceLock<HashMap<String, Vec<&'static str>>> = OnceLock::new();
    let zones = ZONES.get_or_init(|| {
        let mut by_country: HashMap<String, Vec<&'static str>> = HashMap::new();
        for name in timezone_data::names() {
            let principal = timezone_data::meta(name).and_then(|m| m.countries().next().map(|c| c.code.to_string()));
            if let Some(code) = principal {
                by_country.entry(code).or_default().push(name);
            }
        }
        by_country
    });
    match zones.get(country).map(Vec::as_slice) {
        Some([one]) => one.parse().ok(),
        _ => None,
    }
}

/// The instant a wall-clock time names in `tz`. A time that happens twice (the hour a DST fold
/// repeats) is its first; one that never happens (a DST gap) moves forward to the first minute
/// that does, the instant the clocks jumped.
pub fn local_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut t = local;
    // Gaps last at most a few hours (the largest on record is a day, skipped by Samoa in 2011).
    for _ in 0..(26 * 60) {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => t += Duration::minutes(1),
        }
    }
    Utc.from_utc_datetime(&local)
}

/// Days of the week, as the API spells them.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `send_window` on the wire.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendWindowBody {
    pub days: Option<Vec<String>>,
    pub from: Option<String>,
    pub until: Option<String>,
}

/// When a recipient may be sent to, in their own timezone: on `days`, from `from` until (not
/// including) `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendWindow {
    /// Day numbers from Monday (0) to Sunday (6), sorted, no repeats.
    pub days: Vec<u8>,
    pub from: NaiveTime,
    pub until: NaiveTime,
}

impl SendWindowBody {
    /// A window, every broken rule named under `field`.
    pub fn validate(self, errs: &mut FieldErrors, field: &str) -> Option<SendWindow> {
        let before = errs.0.len();
        let mut days = Vec::new();
        match self.days {
            Some(list) if !list.is_empty() => {
                for (i, d) in list.iter().enumerate() {
                    match DAYS.iter().position(|x| x.eq_ignore_ascii_case(d.trim())) {
                        Some(n) => days.push(n as u8),
                        None => errs.push(format!("{field}.days[{i}]"), format!("must be one of {}", DAYS.join(", "))),
                    }
                }
            }
            _ => errs.push(format!("{field}.days"), "must name at least one day"),
        }
        days.sort_unstable();
        days.dedup();
        let mut time = |name: &str, v: Option<String>| -> Option<NaiveTime> {
            let Some(v) = v else {
                errs.push(format!("{field}.{name}"), "is required (HH:MM)");
                return None;
            };
            let t = NaiveTime::parse_from_str(v.trim(), "%H:%M").ok();
            if t.is_none() {
                errs.push(format!("{field}.{name}"), "must be a time of day as HH:MM, like 09:00");
            }
            t
        };
        let (from, until) = (time("from", self.from), time("until", self.until));
        if let (Some(f), Some(u)) = (from, until) {
            if u <= f {
                errs.push(format!("{field}.until"), "must be later in the day than from");
            }
        }
        match (from, until) {
            (Some(from), Some(until)) if errs.0.len() == before => Some(SendWindow { days, from, until }),
            _ => None,
        }
    }
}

impl SendWindow {
    /// `t` if it falls inside the window in `tz`, else the window's next opening after it.
    pub fn next_open(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = t.with_timezone(&tz).naive_local();
        let today = local.date();
        let open_on = |d: NaiveDate| self.days.contains(&(d.weekday().num_days_from_monday() as u8));
        if open_on(today) && local.time() >= self.from && local.time() < self.until {
            return t;
        }
        for ahead in 0..=7 {
            let day = today + Duration::days(ahead);
            if !open_on(day) {
                continue;
            }
            let opening = local_instant(tz, day.and_time(self.from));
            if opening > t {
                return opening;
            }
        }
        t
    }
}

/// `throttle` on a request: at most `per_minute` rows of the broadcast become due each minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    pub per_minute: u32,
}

impl Throttle {
    pub const MAX_PER_MINUTE: u32 = 1_000_000;

    /// How long after the broadcast's start the row at `ordinal` (0 for the first) is due.
    pub fn offset(&self, ordinal: u64) -> Duration {
        Duration::milliseconds((ordinal * 60_000 / u64::from(self.per_minute.max(1))) as i64)
    }
}

/// A row's due time: the request's `send_at`, or the wall-clock `send_at_local` in the row's
/// timezone, or the request's creation; plus the throttle's slot for the row's ordinal; never
/// before `now`; then moved into the send window.
pub fn due_at(
    now: DateTime<Utc>,
    created: DateTime<Utc>,
    send_at: Option<DateTime<Utc>>,
    send_at_local: Option<NaiveDateTime>,
    tz: Tz,
    throttle: Option<(Throttle, u64)>,
    window: Option<&SendWindow>,
) -> DateTime<Utc> {
    let start = match (send_at, send_at_local) {
        (_, Some(local)) => local_instant(tz, local),
        (Some(at), None) => at,
        (None, None) => created,
    };
    let paced = match throttle {
        Some((t, ordinal)) => start + t.offset(ordinal),
        None => start,
    }
    .max(now);
    match window {
        Some(w) => w.next_open(paced, tz),
        None => paced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn naive(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }

    #[test]
    fn a_phone_alone_gives_its_countrys_one_zone_and_several_give_the_tenants() {
        let tenant: Tz = "UTC".parse().unwrap();
        assert_eq!(recipient_timezone(None, Some("+81312345678"), tenant), chrono_tz::Asia::Tokyo);
        assert_eq!(recipient_timezone(None, Some("+4930123456"), tenant), chrono_tz::Europe::Berlin);
        assert_eq!(recipient_timezone(None, Some("+14155550100"), tenant), tenant, "the US has several");
        assert_eq!(recipient_timezone(Some("Asia/Kolkata"), Some("+4930123456"), tenant), chrono_tz::Asia::Kolkata);
        assert_eq!(recipient_timezone(None, None, chrono_tz::America::Chicago), chrono_tz::America::Chicago);
    }

    #[test]
    fn nine_oclock_local_is_each_recipients_own_nine_oclock() {
        let nine = naive("2026-12-24T09:00");
        let now = utc("2026-12-01T00:00:00Z");
        let at = |tz: Tz| due_at(now, now, None, Some(nine), tz, None, None);
        assert_eq!(at(chrono_tz::Asia::Tokyo), utc("2026-12-24T00:00:00Z"));
        assert_eq!(at(chrono_tz::Europe::Berlin), utc("2026-12-24T08:00:00Z"));
        assert_eq!(at(chrono_tz::America::New_York), utc("2026-12-24T14:00:00Z"));
        // Already past somewhere: due at once there.
        let late = utc("2026-12-24T10:00:00Z");
        assert_eq!(due_at(late, now, None, Some(nine), chrono_tz::Asia::Tokyo, None, None), late);
    }

    #[test]
    fn a_dst_gap_moves_forward_and_a_fold_takes_the_first_instant() {
        // 2027-03-14 02:30 does not happen in New York: the clocks go from 02:00 EST to 03:00 EDT.
        let gap = local_instant(chrono_tz::America::New_York, naive("2027-03-14T02:30"));
        assert_eq!(gap, utc("2027-03-14T07:00:00Z"), "03:00 EDT, the instant the clocks jumped");
        // 2026-11-01 01:30 happens twice in New York: first as EDT (05:30 UTC), then EST.
        let fold = local_instant(chrono_tz::America::New_York, naive("2026-11-01T01:30"));
        assert_eq!(fold, utc("2026-11-01T05:30:00Z"));
    }

    fn window(days: &[&str], from: &str, until: &str) -> SendWindow {
        let body = SendWindowBody {
            days: Some(days.iter().map(|d| d.to_string()).collect()),
            from: Some(from.into()),
            until: Some(until.into()),
        };
        let mut errs = FieldErrors::new();
        body.validate(&mut errs, "send_window").unwrap()
    }

    #[test]
    fn a_row_due_outside_its_window_waits_for_the_next_opening() {
        let weekdays = window(&["mon", "tue", "wed", "thu", "fri"], "09:00", "20:00");
        let berlin = chrono_tz::Europe::Berlin;
        // Tuesday 2026-12-01 22:00 in Berlin (21:00 UTC) → Wednesday 09:00 Berlin.
        assert_eq!(weekdays.next_open(utc("2026-12-01T21:00:00Z"), berlin), utc("2026-12-02T08:00:00Z"));
        // Friday 22:00 → Monday 09:00.
        assert_eq!(weekdays.next_open(utc("2026-12-04T21:00:00Z"), berlin), utc("2026-12-07T08:00:00Z"));
        // Inside: unchanged. Early morning: the same day's opening.
        assert_eq!(weekdays.next_open(utc("2026-12-01T10:00:00Z"), berlin), utc("2026-12-01T10:00:00Z"));
        assert_eq!(weekdays.next_open(utc("2026-12-01T05:00:00Z"), berlin), utc("2026-12-01T08:00:00Z"));
        // The end of the window is outside it.
        assert_eq!(weekdays.next_open(utc("2026-12-01T19:00:00Z"), berlin), utc("2026-12-02T08:00:00Z"));
    }

    #[test]
    fn a_window_is_checked_field_by_field() {
        let mut errs = FieldErrors::new();
        let body =
            SendWindowBody { days: Some(vec!["mon".into(), "someday".into()]), from: Some("9am".into()), until: None };
        assert!(body.validate(&mut errs, "send_window").is_none());
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["send_window.days[1]", "send_window.from", "send_window.until"]);
        let mut errs = FieldErrors::new();
        let backwards =
            SendWindowBody { days: Some(vec!["sat".into()]), from: Some("20:00".into()), until: Some("09:00".into()) };
        assert!(backwards.validate(&mut errs, "w").is_none());
        assert_eq!(errs.0[0].field, "w.until");
    }

    #[test]
    fn a_throttle_of_600_a_minute_spreads_3000_rows_over_five_minutes() {
        let now = utc("2026-12-01T12:00:00Z");
        let t = Throttle { per_minute: 600 };
        let due: Vec<DateTime<Utc>> =
            (0..3000).map(|i| due_at(now, now, None, None, chrono_tz::UTC, Some((t, i)), None)).collect();
        let span = (due[2999] - due[0]).num_milliseconds() as f64 / 60_000.0;
        assert!((span - 5.0).abs() <= 0.25, "{span} minutes");
        let first_minute = due.iter().filter(|d| **d < now + Duration::minutes(1)).count();
        assert_eq!(first_minute, 600);
    }
}
