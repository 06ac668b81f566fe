//! Callback signatures: Meta's `X-Hub-Signature-256` and Twilio's `X-Twilio-Signature`, both
//! compared in constant time.

use base64::Engine;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// `sha256=<hex HMAC-SHA256 of the raw body>` with the app secret (WhatsApp, Messenger).
pub fn hub_signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Twilio's: base64 HMAC-SHA1 of the full URL followed by each POST parameter's name and value,
/// sorted by name, keyed with the account's auth token.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Constant-time equality of two signature strings.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_twilios_documented_example() {
        // From Twilio's "Webhooks security" documentation.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn hub_signature_is_hex_sha256_hmac() {
        // Computed independently with Python's hmac module.
        assert_eq!(
            hub_signature("app-secret", br#"{"object":"whatsapp_business_account"}"#),
            "sha256=0bf7374433906636bed1653bc7c64affb42fa5da9a39e251ab95c2e3a9c06923"
        );
        assert!(same("sha256=ab", "sha256=ab") && !same("sha256=ab", "sha256=ac") && !same("a", "ab"));
    }
}
