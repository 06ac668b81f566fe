//! Contacts: people, their channel addresses and fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::address::{check_user_id, Channel, Email, Phone};
use super::catalog::{check_text, parse_variables};
use super::error::FieldErrors;
use super::limits::MAX_STRING;

/// A person a tenant messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub phone: Option<Phone>,
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub messenger_psid: Option<String>,
    #[serde(default)]
    pub telegram_chat_id: Option<String>,
    #[serde(default)]
    pub slack_id: Option<String>,
    #[serde(default)]
    pub webhook_user_id: Option<String>,
    /// IANA timezone name (`Europe/Berlin`), checked against the timezone database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub unsubscribed: bool,
    /// Last inbound message per channel: the start of the messaging window.
    #[serde(default)]
    pub last_inbound: BTreeMap<Channel, DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One way to reach a contact. Its id is `{contact_id}~{channel}`, so it needs no index of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactChannel {
    pub id: String,
    pub channel: Channel,
    pub address: String,
}

/// A unique handle on a contact inside a tenant: at most one contact has a given key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactKey {
    Phone(Phone),
    Email(Email),
    User(Channel, String),
}

impl ContactKey {
    pub fn as_key(&self) -> String {
        match self {
            ContactKey::Phone(p) => format!("phone:{p}"),
            ContactKey::Email(e) => format!("email:{e}"),
            ContactKey::User(c, id) => format!("{c}:{id}"),
        }
    }
    /// The native API field this key came from, for error messages.
    pub fn field(&self) -> &'static str {
        match self {
            ContactKey::Phone(_) => "phone",
            ContactKey::Email(_) => "email",
            ContactKey::User(c, _) => c.address_field(),
        }
    }
}

impl Contact {
    pub fn new(id: String) -> Contact {
        let now = super::now();
        Contact {
            id,
            name: None,
            phone: None,
            email: None,
            messenger_psid: None,
            telegram_chat_id: None,
            slack_id: None,
            webhook_user_id: None,
            timezone: None,
            fields: BTreeMap::new(),
            blocked: false,
            unsubscribed: false,
            last_inbound: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The address for a channel, if the contact has one.
    pub fn address(&self, channel: Channel) -> Option<String> {
        match channel {
            Channel::Whatsapp | Channel::Sms => self.phone.as_ref().map(|p| p.to_string()),
            Channel::Email => self.email.as_ref().map(|e| e.to_string()),
            Channel::Messenger => self.messenger_psid.clone(),
            Channel::Telegram => self.telegram_chat_id.clone(),
            Channel::Slack => self.slack_id.clone(),
            Channel::Webhook => self.webhook_user_id.clone(),
        }
    }

    pub fn channels(&self) -> Vec<ContactChannel> {
        Channel::ALL
            .into_iter()
            .filter_map(|c| {
                self.address(c).map(|address| ContactChannel { id: format!("{}~{c}", self.id), channel: c, address })
            })
            .collect()
    }

    /// Every unique key this contact holds.
    pub fn keys(&self) -> Vec<ContactKey> {
        let mut keys = Vec::new();
        if let Some(p) = &self.phone {
            keys.push(ContactKey::Phone(p.clone()));
        }
        if let Some(e) = &self.email {
            keys.push(ContactKey::Email(e.clone()));
        }
        for (c, v) in [
            (Channel::Messenger, &self.messenger_psid),
            (Channel::Telegram, &self.telegram_chat_id),
            (Channel::Slack, &self.slack_id),
            (Channel::Webhook, &self.webhook_user_id),
        ] {
            if let Some(v) = v {
                keys.push(ContactKey::User(c, v.clone()));
            }
        }
        keys
    }

    /// The API view: the stored contact plus its channels.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("channels".into(), serde_json::to_value(self.channels()).unwrap_or_default());
        }
        v
    }

    /// Copies every field the draft sets onto this contact (fields are merged key by key).
    pub fn apply(&mut self, d: &ContactDraft) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &d.$f { self.$f = Some(v.clone()); } )* };
        }
        set!(name, phone, email, messenger_psid, telegram_chat_id, slack_id, webhook_user_id, timezone);
        self.fields.extend(d.fields.clone());
        if let Some(b) = d.blocked {
            self.blocked = b;
        }
        if let Some(u) = d.unsubscribed {
            self.unsubscribed = u;
        }
        self.updated_at = super::now();
    }

    /// Splits a contact channel id into the contact id and the channel.
    pub fn parse_channel_id(id: &str) -> Option<(&str, Channel)> {
        let (contact, channel) = id.rsplit_once('~')?;
        Some((contact, Channel::parse(channel).ok()?))
    }
}

/// The body of `PUT /v1/contacts/{id}` and `POST /v1/contacts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub messenger_psid: Option<String>,
    pub telegram_chat_id: Option<String>,
    pub slack_id: Option<String>,
    pub webhook_user_id: Option<String>,
    pub timezone: Option<String>,
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    pub blocked: Option<bool>,
    pub unsubscribed: Option<bool>,
}

/// A validated contact body: every field optional, applied onto a new or existing contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactDraft {
    pub name: Option<String>,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    pub messenger_psid: Option<String>,
    pub telegram_chat_id: Option<String>,
    pub slack_id: Option<String>,
    pub webhook_user_id: Option<String>,
    pub timezone: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub blocked: Option<bool>,
    pub unsubscribed: Option<bool>,
}

impl ContactBody {
    pub fn validate(self) -> Result<ContactDraft, FieldErrors> {
        let mut errs = FieldErrors::new();
        check_text(&mut errs, "name", self.name.as_deref(), MAX_STRING);
        let phone = self.phone.as_deref().and_then(|p| errs.take("phone", Phone::parse(p)));
        let email = self.email.as_deref().and_then(|e| errs.take("email", Email::parse(e)));
        let mut user = |field: &str, v: Option<String>| v.and_then(|v| errs.take(field, check_user_id(&v)));
        let messenger_psid = user("messenger_psid", self.messenger_psid);
        let telegram_chat_id = user("telegram_chat_id", self.telegram_chat_id);
        let slack_id = user("slack_id", self.slack_id);
        let webhook_user_id = user("webhook_user_id", self.webhook_user_id);
        let timezone = self.timezone.as_deref().and_then(|t| errs.take("timezone", check_timezone(t)));
        let fields = parse_variables(&mut errs, "fields", self.fields.as_ref());
        errs.finish(ContactDraft {
            name: self.name,
            phone,
            email,
            messenger_psid,
            telegram_chat_id,
            slack_id,
            webhook_user_id,
            timezone,
            fields,
            blocked: self.blocked,
            unsubscribed: self.unsubscribed,
        })
    }
}

/// An IANA timezone name as the timezone database spells it (`America/New_York`, `UTC`).
pub fn check_timezone(value: &str) -> Result<String, String> {
    let v = value.trim();
    match v.parse::<chrono_tz::Tz>() {
        Ok(tz) => Ok(tz.name().to_string()),
        Err(_) => Err(format!(
            "\"{}\" is not an IANA timezone name (like Europe/Berlin)",
            v.chars().take(64).collect::<String>()
        )),
    }
}

impl ContactDraft {
    /// Every unique key the draft sets, in the order a contact lists them.
    pub fn keys(&self) -> Vec<ContactKey> {
        let mut probe = Contact::new(String::new());
        probe.apply(self);
        probe.keys()
    }

    /// Whether the draft holds an identifier a contact can be found or created by.
    pub fn has_key(&self) -> bool {
        self.phone.is_some()
            || self.email.is_some()
            || self.messenger_psid.is_some()
            || self.telegram_chat_id.is_some()
            || self.slack_id.is_some()
            || self.webhook_user_id.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_name_the_contact_and_channel() {
        let mut c = Contact::new("ct.1".into());
        c.phone = Some(Phone::parse("+14155550123").unwrap());
        let ids: Vec<String> = c.channels().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec!["ct.1~whatsapp", "ct.1~sms"]);
        assert_eq!(Contact::parse_channel_id("ct.1~sms"), Some(("ct.1", Channel::Sms)));
        assert_eq!(Contact::parse_channel_id("ct.1~fax"), None);
    }

    #[test]
    fn contact_body_names_every_bad_field() {
        let body = ContactBody {
            phone: Some("12".into()),
            email: Some("nope".into()),
            slack_id: Some("has space".into()),
            ..Default::default()
        };
        let errs = body.validate().unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["phone", "email", "slack_id"]);
    }
}
