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
    fn phones_and_emails_in_free_text_are_masked() {
        assert_eq!(
            mask_text("[21211] Invalid 'To' Phone Number: +14155550123 (ann@example.com)"),
            "[21211] Invalid 'To' Phone Number: +1415•••••23 (a•••@example.com)"
        );
        assert_eq!(mask_text("to 415-555-0123."), "to 41555•••23.");
        assert_eq!(mask_text("HTTP 500 after 2 s"), "HTTP 500 after 2 s");
    }
}
