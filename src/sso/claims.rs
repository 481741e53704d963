//! Claims as the edge reads them, whatever carried them (an ID token, an OIDC userinfo answer,
//! a plain OAuth 2 userinfo document): values as text, and fields found by a dotted path.

use serde_json::{Map, Value};

/// A claim as text values (strings, numbers and booleans; arrays of them).
pub(crate) fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) => a.iter().flat_map(texts).collect(),
        _ => Vec::new(),
    }
}

/// The field at `path` (`login`, or `data.attributes.uid` for nested objects): a top-level key
/// of that exact name first, so names with dots still work.
pub(crate) fn lookup<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = doc.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut here = doc.get(parts.next()?)?;
    for p in parts {
        here = here.as_object()?.get(p)?;
    }
    Some(here)
}

/// The first text value of the field at `path`, if it has a non-empty one.
pub(crate) fn first(doc: &Map<String, Value>, path: &str) -> Option<String> {
    lookup(doc, path)
        .and_then(|v| texts(v).into_iter().next())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_by_name_or_dotted_path_as_text() {
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{"id": 4242, "login": "octo", "a.b": "flat", "a": {"b": "nested"},
                "groups": ["x", 7], "empty": "", "obj": {}}"#,
        )
        .unwrap();
        assert_eq!(first(&doc, "id").as_deref(), Some("4242"));
        assert_eq!(first(&doc, "login").as_deref(), Some("octo"));
        assert_eq!(first(&doc, "a.b").as_deref(), Some("flat"));
        assert_eq!(texts(lookup(&doc, "groups").unwrap()), ["x", "7"]);
        assert_eq!(first(&doc, "empty"), None);
        assert_eq!(first(&doc, "obj"), None);
        assert_eq!(first(&doc, "missing.deeper"), None);
    }
}
