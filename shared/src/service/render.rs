//! Placeholder rendering: `{{field_name}}` from named values, `{{1}}`, `{{2}}` from positional ones.

/// A placeholder that had no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Named(String),
    Positional(usize),
}

enum Placeholder<'a> {
    Named(&'a str),
    Positional(usize),
}

fn classify(inner: &str) -> Option<Placeholder<'_>> {
    let inner = inner.trim();
    if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_digit()) {
        return inner.parse().ok().filter(|n| *n >= 1).map(Placeholder::Positional);
    }
    crate::domain::ids::check_field_name(inner).ok().map(|_| Placeholder::Named(inner))
}

/// Replaces every placeholder; text between braces that is not a placeholder stays as written.
pub fn render(text: &str, named: impl Fn(&str) -> Option<String>, positional: &[String]) -> Result<String, Missing> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else { break };
        let inner = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match classify(inner) {
            Some(Placeholder::Named(n)) => out.push_str(&named(n).ok_or_else(|| Missing::Named(n.to_string()))?),
            Some(Placeholder::Positional(i)) => {
                out.push_str(positional.get(i - 1).ok_or(Missing::Positional(i))?);
            }
            None => out.push_str(&rest[start..start + 4 + len]),
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The highest `{{n}}` in a text (0 when none): how many positional values it needs.
pub fn positional_needed(text: &str) -> usize {
    let mut max = 0;
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else { break };
        if let Some(Placeholder::Positional(i)) = classify(&rest[start + 2..start + 2 + len]) {
            max = max.max(i);
        }
        rest = &rest[start + 4 + len..];
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(n: &str) -> Option<String> {
        (n == "first_name").then(|| "Ada".to_string())
    }

    #[test]
    fn named_and_positional_placeholders_render() {
        let p = vec!["Christmas".to_string(), "Thank You".to_string()];
        assert_eq!(
            render("Hi {{ first_name }}, happy {{1}}! {{2}}", lookup, &p).unwrap(),
            "Hi Ada, happy Christmas! Thank You"
        );
        assert_eq!(render("no placeholders", lookup, &[]).unwrap(), "no placeholders");
        assert_eq!(render("{{not valid!}} and {{", lookup, &[]).unwrap(), "{{not valid!}} and {{");
    }

    #[test]
    fn missing_values_are_named() {
        assert_eq!(render("{{city}}", lookup, &[]), Err(Missing::Named("city".into())));
        assert_eq!(render("{{2}}", lookup, &["a".into()]), Err(Missing::Positional(2)));
        assert_eq!(positional_needed("{{1}} {{3}} {{name}}"), 3);
    }
}
