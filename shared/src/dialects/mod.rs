//! Drop-in dialects: one module per seed API, pure translation. Each reads its vendor's request
//! into the native send request, shapes the native outcome into its vendor's answer, and renders
//! errors in its vendor's shape; no dialect logic leaks into the core, and no dialect reads a
//! store or serves a route (their handlers live in `http::compat`, under `/compat/...`).
//! `docs/dialects.md` maps every field and says what Herald does where a vendor's page is silent.

pub(crate) mod csml;
pub(crate) mod invent;
pub(crate) mod pabbly;
pub(crate) mod smax;
pub mod twilio;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::parse_json;
use crate::domain::limits::MAX_STRING;
use crate::domain::{BroadcastBody, FieldError, FieldErrors, Phone, SendPlan};

/// Native field paths and the names a dialect's caller knows them by, most specific first.
pub(crate) type Renames = &'static [(&'static str, &'static str)];

/// Renames the fields of a validation error to the dialect's names, so an error names the field
/// the caller sent (`recipients[0].phone` → `destination`).
pub(crate) fn rename(e: ApiError, names: Renames) -> ApiError {
    match e {
        ApiError::Validation(fields) => {
            ApiError::Validation(fields.into_iter().map(|f| rename_field(f, names)).collect())
        }
        ApiError::BadRequest { code, message, fields } => {
            ApiError::BadRequest { code, message, fields: fields.into_iter().map(|f| rename_field(f, names)).collect() }
        }
        other => other,
    }
}

fn rename_field(f: FieldError, names: Renames) -> FieldError {
    let mut message = f.message;
    // Messages name native fields too ("give at least 2 body_params"); plain words such as
    // `recipients` are prose there, not field names.
    for (from, to) in names.iter().filter(|(from, _)| !from.contains('[') && from.contains(['_', '.'])) {
        message = message.replace(from, to);
    }
    FieldError { field: rename_path(&f.field, names), message }
}

fn rename_path(path: &str, names: Renames) -> String {
    for (from, to) in names {
        if let Some(rest) = path.strip_prefix(from) {
            if rest.is_empty() || rest.starts_with('.') || rest.starts_with('[') {
                return format!("{to}{rest}");
            }
        }
    }
    path.to_string()
}

/// Runs the native validation of a body a dialect built, reporting under the dialect's names.
/// `mine` holds the dialect's own findings (required fields, enums, formats); a native error on
/// a field `mine` already names (or on its parent or child) is the same complaint in native
/// words, so it is dropped and the caller reads each problem once.
pub(crate) fn validate(native: BroadcastBody, mine: FieldErrors, names: Renames) -> Result<SendPlan, ApiError> {
    let mut errs = mine;
    match native.validate() {
        Ok(plan) if errs.is_empty() => return Ok(plan),
        Ok(_) => {}
        Err(native) => {
            let before = errs.0.len();
            for f in native.0.into_iter().map(|f| rename_field(f, names)) {
                if !errs.0[..before].iter().any(|m| related(&m.field, &f.field)) {
                    errs.0.push(f);
                }
            }
        }
    }
    Err(ApiError::Validation(errs.0))
}

/// Whether two field paths are the same field, or one lies inside the other.
fn related(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        inner.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    inside(a, b) || inside(b, a)
}

/// Keeps a required value, or records that it is missing.
pub(crate) fn required<T>(errs: &mut FieldErrors, field: &str, value: Option<T>) -> Option<T> {
    if value.is_none() {
        errs.push(field, "is required");
    }
    value
}

/// A JSON value found inside a body (read as `Value` until its kind was known), parsed as
/// strictly as a whole body, with error paths under `at`.
fn parse_at<T: DeserializeOwned>(value: Value, at: &str) -> Result<T, ApiError> {
    let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
    parse_json(&bytes).map_err(|e| match e {
        ApiError::BadRequest { code, fields, .. } => {
            let fields: Vec<FieldError> = fields
                .into_iter()
                .map(|f| FieldError {
                    field: if f.field == "body" { at.to_string() } else { format!("{at}.{}", f.field) },
                    message: f.message,
                })
                .collect();
            let message = fields.first().map(|f| format!("{} {}", f.field, f.message)).unwrap_or_default();
            ApiError::BadRequest { code, message, fields }
        }
        other => other,
    })
}

/// A phone written with its dialling code, with or without the `+` (`917697812345`,
/// `+1 415 555 0123`, `0044 7911 123456`), as E.164. Vendors that take "the number with its
/// dialling code" mean this; a national number (`0912…`) cannot be placed and is refused.
pub(crate) fn dialling_phone(raw: &str) -> Result<Phone, String> {
    let t = raw.trim();
    if t.chars().count() > MAX_STRING {
        return Err(format!("must be at most {MAX_STRING} characters"));
    }
    let e164 = match (t.strip_prefix('+'), t.strip_prefix("00")) {
        (Some(_), _) => t.to_string(),
        (None, Some(rest)) => format!("+{rest}"),
        (None, None) => format!("+{t}"),
    };
    Phone::parse(&e164).map_err(|_| {
        format!("\"{t}\" is not a phone number with its dialling code (e.g. 917697812345 or +14155550123)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Renames =
        &[("recipients[0].phone", "destination"), ("recipients", "destination"), ("body_params", "bodyParams")];

    #[test]
    fn paths_and_messages_take_the_dialects_names() {
        let f = |field: &str, message: &str| FieldError { field: field.into(), message: message.into() };
        let renamed = rename_field(f("recipients[0].phone", "must be in E.164 form"), NAMES);
        assert_eq!(renamed.field, "destination");
        let renamed = rename_field(f("body_params", "give at least 2 body_params"), NAMES);
        assert_eq!((renamed.field.as_str(), renamed.message.as_str()), ("bodyParams", "give at least 2 bodyParams"));
        assert_eq!(rename_path("body_params[3]", NAMES), "bodyParams[3]");
        assert_eq!(rename_path("body_paramsx", NAMES), "body_paramsx", "only whole path segments");
    }

    #[test]
    fn a_native_error_on_a_field_already_reported_is_dropped() {
        let mut mine = FieldErrors::new();
        mine.push("destination", "is required");
        let native = BroadcastBody { messages: Some(vec![]), ..Default::default() };
        let Err(ApiError::Validation(fields)) = validate(native, mine, NAMES) else { panic!("validated") };
        let named: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(named, vec!["destination", "messages"], "native `recipients is required` is the same complaint");
        assert!(related("destinations", "destinations[2]") && !related("destination", "destinations"));
    }

    #[test]
    fn phones_with_their_dialling_code_become_e164() {
        assert_eq!(dialling_phone("917697812345").unwrap().as_str(), "+917697812345");
        assert_eq!(dialling_phone("+1 415 555 0123").unwrap().as_str(), "+14155550123");
        assert_eq!(dialling_phone("00447911123456").unwrap().as_str(), "+447911123456");
        assert!(dialling_phone("0912345678").is_err(), "a national number has no country");
        assert!(dialling_phone("9176978xxxxx").is_err());
        assert!(dialling_phone(&"1".repeat(257)).unwrap_err().contains("256"));
    }
}
