//! Herald's API vocabulary, below both the native routes (`http`) and the vendor dialects
//! (`dialects`): the one error every answer can carry, and strict JSON parsing whose errors name
//! the offending field. Both layers build their answers from these; neither imports the other.

pub mod error;

use serde::de::DeserializeOwned;

use crate::domain::FieldError;
use error::ApiError;

/// Parses a JSON object into `T`. A syntax error answers `400` on `body`; a value of the wrong
/// shape answers `400` naming its path (`recipients[2].phone`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bad = |field: String, message: String| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("{field} {message}"),
        fields: vec![FieldError { field, message }],
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("body".into(), "is empty; send a JSON object".into()));
    }
    let value =
        crate::domain::json::parse_value(bytes).map_err(|e| bad("body".into(), format!("is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(crate::domain::json::Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() { "body".to_string() } else { path };
        bad(field, strip_position(&e.into_inner().to_string()))
    })
}

/// serde_json appends " at line 1 column 12"; the field path already says where.
fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}
