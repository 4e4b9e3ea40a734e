//! Form type: an explicit `form_type` / `formType` field wins; else the first matching
//! presence rule; else `generic`.
//!
//! A rule matches when every field in `all` is present and non-empty, at least one of `any`
//! is (when `any` is given), and, with `only`, no other field is present (the `trace_id` field
//! and the honeypot field are not counted). Default rules, in order:
//! - `demo_request`: `company` plus one of `demo`, `demo_date`, `phone`;
//! - `contact`: a `message`;
//! - `newsletter`: an `email` and nothing else.
//!
//! Rules from the TOML file come first and the built-in ones follow, so an operator who adds
//! a rule adds one; the file replaces the built-in rules only when it says so
//! (`replace_builtin_form_type_rules = true`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const GENERIC: &str = "generic";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(rename = "type")]
    pub form_type: String,
    #[serde(default)]
    pub all: Vec<String>,
    #[serde(default)]
    pub any: Vec<String>,
    #[serde(default)]
    pub only: bool,
    /// One of [`default_rules`] (shown as such by `config check`), not read from the file.
    #[serde(skip)]
    pub builtin: bool,
}

pub fn default_rules() -> Vec<Rule> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        Rule {
            form_type: "demo_request".into(),
            all: s(&["company"]),
            any: s(&["demo", "demo_date", "phone"]),
            only: false,
            builtin: true,
        },
        Rule {
            form_type: "contact".into(),
            all: s(&["message"]),
            any: vec![],
            only: false,
            builtin: true,
        },
        Rule {
            form_type: "newsletter".into(),
            all: s(&["email"]),
            any: vec![],
            only: true,
            builtin: true,
        },
    ]
}

/// The rules in force: the file's first, then the built-in ones unless `replace`.
pub fn effective(file: Vec<Rule>, replace: bool) -> Vec<Rule> {
    let mut rules = file;
    if !replace {
        rules.extend(default_rules());
    }
    rules
}

/// The rules as `config check` prints them: numbered in the order they are tried.
pub fn describe(rules: &[Rule]) -> String {
    let mut out = String::from(
        "form type rules, first match wins (a form_type or formType field wins over them all):\n",
    );
    for (i, r) in rules.iter().enumerate() {
        let mut parts = vec![];
        if !r.all.is_empty() {
            parts.push(format!("all of {}", r.all.join(", ")));
        }
        if !r.any.is_empty() {
            parts.push(format!("any of {}", r.any.join(", ")));
        }
        if r.only {
            parts.push("no other field".to_owned());
        }
        let origin = if r.builtin { "built-in" } else { "config file" };
        let line = format!("  {}. {:<14} {}", i + 1, r.form_type, parts.join("; "));
        out.push_str(&format!("{line:<70} # {origin}\n"));
    }
    out.push_str(&format!("  otherwise {GENERIC}\n"));
    out
}

/// A form type must be a short token: it becomes part of routes, metrics labels and logs.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the {0} field must be 1 to 64 characters of A-Z a-z 0-9 _ - .")]
pub struct InvalidFormType(pub &'static str);

/// A field counts as present when it holds something: not null, blank or an empty array.
fn is_filled(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

fn present(fields: &Map<String, Value>, name: &str) -> bool {
    fields.get(name).is_some_and(is_filled)
}

/// Decides the form type of a submission.
pub fn detect(
    fields: &Map<String, Value>,
    rules: &[Rule],
    ignored: &[&str],
) -> Result<String, InvalidFormType> {
    for key in ["form_type", "formType"] {
        match fields.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if is_valid_name(s) => return Ok(s.clone()),
            Some(_) => {
                return Err(InvalidFormType(if key == "form_type" {
                    "form_type"
                } else {
                    "formType"
                }))
            }
        }
    }
    let matched = rules.iter().find(|r| {
        r.all.iter().all(|f| present(fields, f))
            && (r.any.is_empty() || r.any.iter().any(|f| present(fields, f)))
            && (!r.only
                || fields.iter().all(|(k, v)| {
                    ignored.contains(&k.as_str())
                        || k == "trace_id"
                        || r.all.contains(k)
                        || r.any.contains(k)
                        || !is_filled(v)
                }))
    });
    Ok(matched.map_or(GENERIC, |r| r.form_type.as_str()).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(v: Value) -> String {
        detect(v.as_object().unwrap(), &default_rules(), &["website"]).unwrap()
    }

    #[test]
    fn explicit_field_wins_over_rules() {
        assert_eq!(
            d(json!({"form_type": "careers", "message": "hi"})),
            "careers"
        );
        assert_eq!(d(json!({"formType": "quote", "email": "a@b.c"})), "quote");
    }

    #[test]
    fn default_rules_table() {
        let cases = [
            (
                json!({"company": "ACME", "phone": "123", "message": "x"}),
                "demo_request",
            ),
            (json!({"company": "ACME", "demo": "yes"}), "demo_request"),
            (json!({"company": "ACME", "message": "hello"}), "contact"),
            (
                json!({"name": "Jo", "email": "a@b.c", "message": "hello"}),
                "contact",
            ),
            (json!({"email": "a@b.c"}), "newsletter"),
            (
                json!({"email": "a@b.c", "trace_id": "abcdefgh", "website": ""}),
                "newsletter",
            ),
            (json!({"email": "a@b.c", "name": "Jo"}), "generic"),
            (json!({"message": "   "}), "generic"),
            (json!({"anything": 1}), "generic"),
        ];
        for (v, want) in cases {
            assert_eq!(d(v.clone()), want, "{v}");
        }
    }

    #[test]
    fn file_rules_come_before_the_built_in_ones_unless_they_replace_them() {
        let quote: Rule =
            toml::from_str("type = \"quote\"\nall = [\"company\", \"budget\"]").unwrap();
        let types = |rules: Vec<Rule>| rules.into_iter().map(|r| r.form_type).collect::<Vec<_>>();
        assert_eq!(
            types(effective(vec![quote.clone()], false)),
            ["quote", "demo_request", "contact", "newsletter"]
        );
        assert_eq!(types(effective(vec![quote.clone()], true)), ["quote"]);
        let rules = effective(vec![quote], false);
        let f = json!({"email": "a@b.c", "message": "hi"});
        assert_eq!(
            detect(f.as_object().unwrap(), &rules, &[]).unwrap(),
            "contact"
        );
        let f = json!({"company": "ACME", "budget": "1k", "phone": "1"});
        assert_eq!(
            detect(f.as_object().unwrap(), &rules, &[]).unwrap(),
            "quote"
        );
    }

    #[test]
    fn an_unusable_explicit_type_is_an_error() {
        let v = json!({"form_type": "has spaces and /"});
        assert_eq!(
            detect(v.as_object().unwrap(), &[], &[]),
            Err(InvalidFormType("form_type"))
        );
        let v = json!({"formType": 3});
        assert!(detect(v.as_object().unwrap(), &[], &[]).is_err());
    }
}
