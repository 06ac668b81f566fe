use serde::{Deserialize, Serialize};
use std::fmt;

use super::limits::MAX_STRING;

/// A messaging channel. Each is served by one provider (the sandbox in local mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Whatsapp,
    Sms,
    Email,
    Messenger,
    Telegram,
    Slack,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::Whatsapp,
        Channel::Sms,
        Channel::Email,
        Channel::Messenger,
        Channel::Telegram,
        Channel::Slack,
        Channel::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Messenger => "messenger",
            Channel::Telegram => "telegram",
            Channel::Slack => "slack",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Result<Channel, String> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            format!("must be one of {}", Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "))
        })
    }

    /// The recipient field that carries this channel's address in the native API.
    pub fn address_field(self) -> &'static str {
        match self {
            Channel::Whatsapp | Channel::Sms => "phone",
            Channel::Email => "email",
            Channel::Messenger => "messenger_psid",
            Channel::Telegram => "telegram_chat_id",
            Channel::Slack => "slack_id",
            Channel::Webhook => "webhook_user_id",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phone number in E.164 (`+14155550123`), checked against libphonenumber's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Phone, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.len() > MAX_STRING {
            return Err(format!("must be at most {MAX_STRING} characters"));
        }
        let Some(rest) = trimmed.strip_prefix('+') else {
            return Err("must be in E.164 form with the country code, e.g. +14155550123".into());
        };
        // libphonenumber reads letters as keypad digits ("vanity numbers"); E.164 has none.
        if !rest.chars().all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')')) {
            return Err("may contain only digits after the +, with optional spaces, dashes, dots or parentheses".into());
        }
        let parsed = phonenumber::parse(None, trimmed)
            .map_err(|_| "is not a phone number; use E.164 form, e.g. +14155550123".to_string())?;
        if !phonenumber::is_valid(&parsed) {
            return Err("is not a valid phone number for its country code".into());
        }
        Ok(Phone(parsed.format().mode(phonenumber::Mode::E164).to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+1415•••••23`: enough to tell numbers apart in logs, not enough to reach anyone.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Phone::parse(&s)
    }
}
impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}
impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn mask_phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 6 {
        return "•".repeat(chars.len());
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 7))
}

/// An email address: one `@`, a non-empty local part, a dotted domain, no spaces. The domain is
/// lower-cased; the local part is kept as given (it may be case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("is not an email address (no '@')".into());
        };
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"');
        if local.is_empty() || local.len() > 64 || local.chars().any(bad_char) {
            return Err("is not an email address (bad local part)".into());
        }
        let domain_ok = !domain.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if !domain_ok {
            return Err("is not an email address (bad domain)".into());
        }
        Ok(Email(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `a•••@example.com`
    pub fn masked(&self) -> String {
        mask_email(&self.0)
    }
}

pub fn mask_email(s: &str) -> String {
    match s.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".into(),
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Email::parse(&s)
    }
}
impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A channel user id (Messenger PSID, Telegram chat id, Slack id, webhook user id).
pub fn check_user_id(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_STRING {
        return Err(format!("must be at most {MAX_STRING} characters"));
    }
    if v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_e164() {
        assert_eq!(Phone::parse("+1 415 555 0123").unwrap().as_str(), "+14155550123");
        assert_eq!(Phone::parse("+447911123456").unwrap().as_str(), "+447911123456");
        assert!(Phone::parse("4155550123").unwrap_err().contains("E.164"));
        assert!(Phone::parse("+1").is_err());
        assert!(Phone::parse("+999123").is_err());
        assert!(Phone::parse("hello").is_err());
        assert!(Phone::parse("+1415abcdefg").unwrap_err().contains("only digits"), "no vanity letters");
    }

    #[test]
    fn phones_and_emails_mask_for_logs() {
        assert_eq!(mask_phone("+14155550123"), "+1415•••••23");
        assert_eq!(mask_email("alice@example.com"), "a•••@example.com");
    }

    #[test]
    fn emails_are_checked() {
        assert_eq!(Email::parse("Ann@Example.COM").unwrap().as_str(), "Ann@example.com");
        for bad in ["", "no-at", "@x.com", "a@", "a@nodot", "a b@x.com", "a@x..com", "a@.x.com"] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn channels_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()).unwrap(), c);
        }
        assert!(Channel::parse("fax").unwrap_err().contains("whatsapp"));
    }
}
