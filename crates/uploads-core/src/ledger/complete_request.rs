//! Validation of a `POST /uploads/{id}/complete` body as raw bytes, in OpenAI's message style
//! (the JSON-schema wording of its validator), every problem named by its `param`.

use serde_json::{Map, Value};

use crate::limits::{FieldError, NOT_JSON_MESSAGE, ValidationErrors, short_json, shortened};
use crate::types::PartId;

/// The fields a complete body may have.
const FIELDS: [&str; 2] = ["part_ids", "md5"];

/// The largest complete body a client sends for an Upload of `max_parts` Parts with ids this
/// ledger mints (`part_` and [`RANDOM_ID_LEN`](super::RANDOM_ID_LEN) characters), listing
/// every one and an md5, compactly encoded: a server's JSON body limit MUST be at least this.
pub fn max_complete_request_bytes(max_parts: u64) -> u64 {
    let per_part = ("\"part_\",".len() + super::RANDOM_ID_LEN) as u64;
    let frame = r#"{"part_ids":[],"md5":"0123456789abcdef0123456789abcdef"}"#.len() as u64;
    // No comma after the last id.
    let commas_saved = max_parts.min(1);
    max_parts
        .saturating_mul(per_part)
        .saturating_add(frame)
        .saturating_sub(commas_saved)
}

/// A valid complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CompleteRequest {
    /// The listed Parts, in File order (not yet checked against the Upload).
    pub(super) part_ids: Vec<PartId>,
    /// The md5 to check, normalised to lower-case hex.
    pub(super) md5: Option<String>,
}

/// Parses and validates a complete body; `Err` lists every problem in field order.
pub(super) fn parse_complete_request(body: &[u8]) -> Result<CompleteRequest, ValidationErrors> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ValidationErrors(vec![problem(None, NOT_JSON_MESSAGE.to_owned())]))?;
    let Value::Object(fields) = value else {
        return Err(ValidationErrors(vec![problem(
            None,
            format!("{} is not of type 'object'", short_json(&value)),
        )]));
    };
    let mut problems = Vec::new();
    let part_ids = parse_part_ids(&fields, &mut problems);
    let md5 = match fields.get("md5") {
        None | Some(Value::Null) => None,
        Some(Value::String(md5)) if is_md5(md5) => Some(md5.to_ascii_lowercase()),
        Some(Value::String(md5)) => {
            problems.push(problem(
                Some("md5"),
                format!(
                    "'{}' does not match '^[0-9a-fA-F]{{32}}$' - 'md5'",
                    shortened(md5)
                ),
            ));
            None
        }
        Some(other) => {
            problems.push(problem(
                Some("md5"),
                format!("{} is not of type 'string' - 'md5'", short_json(other)),
            ));
            None
        }
    };
    for name in fields
        .keys()
        .filter(|name| !FIELDS.contains(&name.as_str()))
    {
        problems.push(FieldError::unexpected(name));
    }
    match part_ids {
        Some(part_ids) if problems.is_empty() => Ok(CompleteRequest { part_ids, md5 }),
        _ => Err(ValidationErrors(problems)),
    }
}

fn parse_part_ids(
    fields: &Map<String, Value>,
    problems: &mut Vec<FieldError>,
) -> Option<Vec<PartId>> {
    let items = match fields.get("part_ids") {
        None | Some(Value::Null) => {
            problems.push(problem(
                Some("part_ids"),
                "'part_ids' is a required property".to_owned(),
            ));
            return None;
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.push(problem(
                Some("part_ids"),
                format!("{} is not of type 'array' - 'part_ids'", short_json(other)),
            ));
            return None;
        }
    };
    let before = problems.len();
    let part_ids: Vec<PartId> = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| match item {
            Value::String(id) => Some(PartId::new(id.as_str())),
            other => {
                problems.push(problem(
                    Some("part_ids"),
                    format!(
                        "{} is not of type 'string' - 'part_ids.{index}'",
                        short_json(other)
                    ),
                ));
                None
            }
        })
        .collect();
    (problems.len() == before).then_some(part_ids)
}

fn is_md5(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn problem(param: Option<&str>, message: String) -> FieldError {
    FieldError::new(param, message)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_largest_complete_body_is_counted_exactly() {
        use crate::ledger::{IdSource, RandomIds};
        let mut ids = RandomIds::new(|buffer: &mut [u8]| buffer.fill(7));
        let part_ids: Vec<String> = (0..3).map(|_| ids.part_id().to_string()).collect();
        let body = serde_json::json!({"part_ids": part_ids, "md5": "0".repeat(32)}).to_string();
        assert_eq!(max_complete_request_bytes(3), body.len() as u64);
    }

    use super::*;

    fn problems(body: &str) -> Vec<(Option<String>, String)> {
        match parse_complete_request(body.as_bytes()) {
            Ok(request) => panic!("expected problems, got {request:?}"),
            Err(errors) => errors.0.into_iter().map(|e| (e.param, e.message)).collect(),
        }
    }

    fn at(param: &str, message: &str) -> (Option<String>, String) {
        (Some(param.to_owned()), message.to_owned())
    }

    #[test]
    fn a_valid_body_parses_and_the_md5_is_lower_cased() {
        let request = parse_complete_request(
            br#"{"part_ids": ["part_2", "part_1"], "md5": "900150983CD24FB0D6963F7D28E17F72"}"#,
        )
        .unwrap();
        assert_eq!(
            request.part_ids,
            vec![PartId::new("part_2"), PartId::new("part_1")]
        );
        assert_eq!(
            request.md5.as_deref(),
            Some("900150983cd24fb0d6963f7d28e17f72")
        );
        let without = parse_complete_request(br#"{"part_ids": [], "md5": null}"#).unwrap();
        assert_eq!(without.md5, None);
        assert!(
            without.part_ids.is_empty(),
            "emptiness is the ledger's call"
        );
    }

    #[test]
    fn part_ids_is_required_and_must_be_an_array_of_strings() {
        assert_eq!(
            problems("{}"),
            vec![at("part_ids", "'part_ids' is a required property")]
        );
        assert_eq!(
            problems(r#"{"part_ids": "part_1"}"#),
            vec![at(
                "part_ids",
                "'part_1' is not of type 'array' - 'part_ids'"
            )]
        );
        assert_eq!(
            problems(r#"{"part_ids": ["part_1", 7]}"#),
            vec![at("part_ids", "7 is not of type 'string' - 'part_ids.1'")]
        );
    }

    #[test]
    fn md5_must_be_32_hex_characters() {
        assert_eq!(
            problems(r#"{"part_ids": ["part_1"], "md5": "abc"}"#),
            vec![at(
                "md5",
                "'abc' does not match '^[0-9a-fA-F]{32}$' - 'md5'"
            )]
        );
        let not_hex = format!(r#"{{"part_ids": [], "md5": "{}"}}"#, "g".repeat(32));
        assert_eq!(problems(&not_hex)[0].0.as_deref(), Some("md5"));
        assert_eq!(
            problems(r#"{"part_ids": [], "md5": 5}"#),
            vec![at("md5", "5 is not of type 'string' - 'md5'")]
        );
    }

    #[test]
    fn every_problem_is_reported_and_the_first_names_the_param() {
        let errors =
            parse_complete_request(br#"{"part_ids": 1, "md5": "x", "extra": true}"#).unwrap_err();
        let rejection = errors.to_rejection();
        assert_eq!(rejection.status, http::StatusCode::BAD_REQUEST);
        assert_eq!(rejection.param(), Some("part_ids"));
        assert_eq!(
            rejection.body.error.message,
            "1 is not of type 'array' - 'part_ids'; \
             'x' does not match '^[0-9a-fA-F]{32}$' - 'md5'; \
             Additional properties are not allowed ('extra' was unexpected)"
        );
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_refused() {
        assert_eq!(problems("nope"), vec![(None, NOT_JSON_MESSAGE.to_owned())]);
        assert_eq!(
            problems(r#"["part_1"]"#),
            vec![(None, "[\"part_1\"] is not of type 'object'".to_owned())]
        );
        let long = format!(r#""{}""#, "a".repeat(500));
        let message = &problems(&long)[0].1;
        assert!(
            message.len() < 150,
            "quoted values are cut short: {message}"
        );
    }
}
