//! Log hygiene: addresses are masked before they reach a log line.

use crate::domain::{mask_email, mask_phone, Channel};

/// An address safe to log: emails as `a•••@example.com`, anything else as `+1415•••••23`.
pub fn mask_address(channel: Option<Channel>, address: &str) -> String {
    match channel {
        Some(Channel::Email) => mask_email(address),
        _ if address.contains('@') => mask_email(address),
        _ => mask_phone(address),
    }
}
