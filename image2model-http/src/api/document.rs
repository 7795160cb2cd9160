//! The OpenAPI document as served: poem-openapi's, refined where its derives
//! cannot say what the server does.
//!
//! The document is fuzzed against the running server (`.ci/schemathesis`):
//! every request it allows must be accepted, every refusal and response
//! must be in it. Most of that is said by the types (`#[oai(nullable)]`,
//! validators); the rest is said here, each refinement a function that
//! fails loudly (see [`refine`]) when what it refines is gone:
//!
//! - unsigned integers get their bounds (poem-openapi names `uint32`, which
//!   JSON Schema does not know, and parsing refuses `-1` and `2^32`);
//! - every operation with a JSON body documents **413** (the 64 KiB body
//!   limit) and **415** (a body that is not JSON);
//! - the upload's `model` lists the models this server offers (anything
//!   else is `unknown_model`), its `files` parts name their media types
//!   (`encoding`), which a schema of bytes cannot, and other fields are
//!   refused (`unexpected_field`);
//! - an event stream is described event by event, as OpenAPI before 3.2
//!   reads a `text/event-stream` schema (poem-openapi writes an array of
//!   the `data` payloads): an `event`, an `id` and a `data` string holding
//!   the JSON payload;
//! - the `Idempotency-Key` header, key names and callback URLs get the
//!   patterns their handlers check (kept out of the types so that a refusal
//!   keeps its own code, e.g. `invalid_key_name`, not poem's
//!   `invalid_request`);
//! - links from a new job (and a new key) to the operations that take its
//!   ids, for stateful testing (upload → job → model).

use serde_json::{Map, Value, json};

use crate::state::AppState;

/// The ULID pattern of job, item and delivery ids (canonical, upper case).
pub const ULID_PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$";

/// The pattern of key ids (`ApiKeyId::parse`).
pub const KEY_ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

/// Unicode white space as Rust's `str::trim` sees it (`White_Space`).
const WHITE: &str = r"\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Control characters (`char::is_control`, category Cc).
const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";

/// A key name: after trimming white space, 1 to 64 characters, none a
/// control character (`KeyRegistry::create_with_limits`). Spelled with
/// explicit classes: `\s` means different things to ECMA, Python and Rust.
#[must_use]
pub fn key_name_pattern() -> String {
    let edge = format!("[^{WHITE}{CONTROL}]");
    format!("^[{WHITE}]*{edge}(?:[^{CONTROL}]{{0,62}}{edge})?[{WHITE}]*$")
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// The media types an upload's `files` parts may be (`ImageKind`).
const IMAGE_TYPES: &str = "image/png, image/jpeg, image/webp";

/// What the refinements need to know of this server.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The models offered (`model`'s values).
    pub models: Vec<String>,
    /// Whether plain `http` callback URLs are accepted.
    pub allow_http: bool,
}

impl Facts {
    /// The facts of a running server.
    #[must_use]
    pub fn of(state: &AppState) -> Self {
        Self {
            models: state
                .pipeline
                .models()
                .into_iter()
                .map(|m| m.name.to_string())
                .collect(),
            allow_http: state.config.webhooks.allow_http,
        }
    }
}

/// The document served at `/api/v1/openapi.json`.
#[must_use]
pub fn document(state: &AppState) -> Value {
    let spec = super::service(state).spec();
    let mut doc: Value = serde_json::from_str(&spec).unwrap_or(Value::Null);
    for failure in refine(&mut doc, &Facts::of(state)) {
        // The unit test `every_refinement_applies` keeps this from happening.
        tracing::warn!(failure, "an OpenAPI refinement did not apply");
    }
    doc
}

/// The document as JSON text, as served.
#[must_use]
pub fn spec_json(state: &AppState) -> String {
    serde_json::to_string_pretty(&document(state)).unwrap_or_default()
}

/// Applies every refinement to `doc`; what did not apply, each with why.
pub fn refine(doc: &mut Value, facts: &Facts) -> Vec<String> {
    let steps: [(&str, Refinement<'_>); 8] = [
        ("unsigned bounds", &|d| {
            unsigned_bounds(d);
            Ok(())
        }),
        ("JSON body refusals", &json_body_refusals),
        ("event streams", &event_streams),
        ("upload form", &|d| upload_form(d, facts)),
        ("idempotency key", &idempotency_key),
        ("key names", &key_names),
        ("callback URLs", &|d| webhook_settings(d, facts)),
        ("links", &links),
    ];
    let mut failures = Vec::new();
    for (name, step) in steps {
        if let Err(why) = step(doc) {
            failures.push(format!("{name}: {why}"));
        }
    }
    failures
}

type Refinement<'a> = &'a dyn Fn(&mut Value) -> Result<(), String>;

/// The object at `pointer` (a JSON pointer), or why not.
fn at<'a>(doc: &'a mut Value, pointer: &str) -> Result<&'a mut Map<String, Value>, String> {
    doc.pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("no object at {pointer}"))
}

/// `~` and `/` escaped for a JSON pointer.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Bounds for every integer of an unsigned format, where none is given.
fn unsigned_bounds(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let max = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some(u64::from(u8::MAX)),
                Some("uint16") => Some(u64::from(u16::MAX)),
                Some("uint32") => Some(u64::from(u32::MAX)),
                Some("uint64") => Some(u64::MAX),
                _ => None,
            };
            if let Some(max) = max
                && map.get("type").and_then(Value::as_str) == Some("integer")
            {
                map.entry("minimum").or_insert(json!(0));
                map.entry("maximum").or_insert(json!(max));
            }
            map.values_mut().for_each(unsigned_bounds);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}

/// The error envelope response `status` with `description`.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/json; charset=utf-8": {
                "schema": { "$ref": "#/components/schemas/ErrorBody" }
            }
        }
    })
}

/// 413 and 415 for every operation with a JSON body.
fn json_body_refusals(doc: &mut Value) -> Result<(), String> {
    let paths = at(doc, "/paths")?;
    let mut found = 0;
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|ops| ops.values_mut())
    {
        let json_body = operation
            .pointer("/requestBody/content")
            .and_then(Value::as_object)
            .is_some_and(|c| c.keys().any(|k| k.starts_with("application/json")));
        if !json_body {
            continue;
        }
        found += 1;
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            return Err("an operation without responses".into());
        };
        responses
            .entry("413")
            .or_insert_with(|| error_response("`request_too_large`: the body is over 64 KiB."));
        responses.entry("415").or_insert_with(|| {
            error_response("`unsupported_media_type`: the body is not `application/json`.")
        });
    }
    if found == 0 {
        return Err("no operation takes a JSON body".into());
    }
    Ok(())
}

/// Every `text/event-stream` response: one event as the server writes it.
fn event_streams(doc: &mut Value) -> Result<(), String> {
    let paths = at(doc, "/paths")?;
    let mut found = 0;
    for content in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|ops| ops.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("content").and_then(Value::as_object_mut))
    {
        let Some(stream) = content.get_mut("text/event-stream") else {
            continue;
        };
        let Some(payload) = stream.pointer("/schema/items").cloned() else {
            return Err("an event stream without the schema of its payloads".into());
        };
        found += 1;
        stream["schema"] = json!({
            "type": "object",
            "description": "One event (keep-alive comments between events carry none).",
            "required": ["event", "data"],
            "properties": {
                "event": { "type": "string", "description": "The event's type." },
                "id": { "type": "string", "description": "The event's id." },
                "data": {
                    "type": "string",
                    "description": "The payload, as JSON.",
                    "contentMediaType": "application/json",
                    "contentSchema": payload,
                },
            },
        });
    }
    if found == 0 {
        return Err("no event stream".into());
    }
    Ok(())
}

/// The upload form: the models offered, the files' media types, no other
/// fields.
fn upload_form(doc: &mut Value, facts: &Facts) -> Result<(), String> {
    let form = at(
        doc,
        &format!(
            "/paths/~1upload/post/requestBody/content/{}",
            escape("multipart/form-data")
        ),
    )?;
    form.insert(
        "encoding".into(),
        json!({ "files": { "contentType": IMAGE_TYPES } }),
    );
    let schema = form
        .get_mut("schema")
        .and_then(Value::as_object_mut)
        .ok_or("the upload form has no schema")?;
    schema.insert("additionalProperties".into(), json!(false));
    let model = at(
        doc,
        &format!(
            "/paths/~1upload/post/requestBody/content/{}/schema/properties/model",
            escape("multipart/form-data")
        ),
    )?;
    model.insert("enum".into(), json!(facts.models));
    Ok(())
}

/// The `Idempotency-Key` header of an upload.
fn idempotency_key(doc: &mut Value) -> Result<(), String> {
    let params = doc
        .pointer_mut("/paths/~1upload/post/parameters")
        .and_then(Value::as_array_mut)
        .ok_or("the upload has no parameters")?;
    let header = params
        .iter_mut()
        .find(|p| p["name"] == "Idempotency-Key")
        .and_then(|p| p.get_mut("schema"))
        .and_then(Value::as_object_mut)
        .ok_or("the upload has no Idempotency-Key")?;
    header.insert("pattern".into(), json!(IDEMPOTENCY_KEY_PATTERN));
    Ok(())
}

/// A key's name when it is made.
fn key_names(doc: &mut Value) -> Result<(), String> {
    let name = at(doc, "/components/schemas/CreateKey/properties/name")?;
    name.insert("pattern".into(), json!(key_name_pattern()));
    Ok(())
}

/// The callback URL of an upload and a key's default one: what their
/// parser checks (`CallbackUrl::parse`). Whether the host is a public
/// address is decided when it is resolved, which no schema can say.
fn webhook_settings(doc: &mut Value, facts: &Facts) -> Result<(), String> {
    let scheme = if facts.allow_http {
        "^[Hh][Tt][Tt][Pp][Ss]?://"
    } else {
        "^[Hh][Tt][Tt][Pp][Ss]://"
    };
    for pointer in [
        format!(
            "/paths/~1upload/post/requestBody/content/{}/schema/properties/callback_url",
            escape("multipart/form-data")
        ),
        "/components/schemas/WebhookSettingsChange/properties/default_url".to_owned(),
    ] {
        let url = at(doc, &pointer)?;
        url.insert("format".into(), json!("uri"));
        url.insert("maxLength".into(), json!(2048));
        url.insert("pattern".into(), json!(scheme));
    }
    Ok(())
}

/// Links from the responses that make an id to the operations taking it.
fn links(doc: &mut Value) -> Result<(), String> {
    // A job's own body (an upload's answer, a job read): its id and its
    // first item's. (Not from the job list: its pages are mostly empty.)
    let job = || -> Value {
        let job_id = "$response.body#/job_id";
        let item_id = "$response.body#/items/0/item_id";
        let job_only = json!({ "job_id": job_id });
        let item = json!({ "job_id": job_id, "item_id": item_id });
        json!({
            "GetJob": { "operationId": "get_job", "parameters": job_only },
            "FollowJob": { "operationId": "job_events", "parameters": job_only },
            "DeleteJob": { "operationId": "delete_job", "parameters": job_only },
            "GetJobWebhook": { "operationId": "get_job_webhook", "parameters": job_only },
            "DownloadModel": { "operationId": "download_model", "parameters": item },
            "DownloadPreview": { "operationId": "download_preview", "parameters": item },
            "CreateDownloadLink": { "operationId": "create_download_link", "parameters": item },
        })
    };
    let key = json!({
        "RevokeKey": {
            "operationId": "admin_revoke_key",
            "parameters": { "key_id": "$response.body#/key_id" }
        },
        "SetKeyLimits": {
            "operationId": "admin_set_key_limits",
            "parameters": { "key_id": "$response.body#/key_id" }
        },
    });
    for (pointer, links) in [
        ("/paths/~1upload/post/responses/202", job()),
        ("/paths/~1jobs~1{job_id}/get/responses/200", job()),
        ("/paths/~1admin~1keys/post/responses/201", key),
    ] {
        at(doc, pointer)?.insert("links".into(), links);
    }
    // Every link names an operation that exists.
    let ids: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
        .filter_map(Value::as_object)
        .flat_map(|ops| ops.values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    let linked: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
        .filter_map(Value::as_object)
        .flat_map(|ops| ops.values())
        .filter_map(|op| op["responses"].as_object())
        .flat_map(|r| r.values())
        .filter_map(|r| r["links"].as_object())
        .flat_map(|l| l.values())
        .filter_map(|l| l["operationId"].as_str().map(str::to_owned))
        .collect();
    match linked.iter().find(|id| !ids.contains(id)) {
        Some(id) => Err(format!("a link names no operation: {id}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use image2model_core::domain::{ApiKeyId, JobId};
    use regex::Regex;

    use super::*;

    #[test]
    fn the_ulid_pattern_is_the_id_parser() {
        let ulid = Regex::new(ULID_PATTERN).unwrap();
        let fresh = JobId::new().to_string();
        for text in [
            fresh.as_str(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "01arz3ndektsv4rrffq69g5fav",
            "01ARZ3NDEKTSV4RRFFQ69G5FAI",
            "01ARZ3NDEKTSV4RRFFQ69G5FAL",
            "01ARZ3NDEKTSV4RRFFQ69G5FAO",
            "01ARZ3NDEKTSV4RRFFQ69G5FAU",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",
            "01ARZ3NDEKTSV4RRFFQ69G5FAVV",
            "",
        ] {
            assert_eq!(ulid.is_match(text), JobId::parse(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn the_key_id_pattern_is_the_id_parser() {
        let pattern = Regex::new(KEY_ID_PATTERN).unwrap();
        let long = "a".repeat(64);
        let longer = "a".repeat(65);
        for text in [
            "bootstrap-user",
            "key_01m8z0hjnkj6xnyhjf221tbnmh",
            "0",
            long.as_str(),
            longer.as_str(),
            "",
            "_a",
            "-a",
            "Key",
            "a b",
            "a.b",
        ] {
            assert_eq!(
                pattern.is_match(text),
                ApiKeyId::parse(text).is_ok(),
                "{text:?}"
            );
        }
    }

    /// The rule of `KeyRegistry::create_with_limits`.
    fn name_ok(name: &str) -> bool {
        let name = name.trim();
        !name.is_empty() && name.chars().count() <= 64 && !name.chars().any(char::is_control)
    }

    #[test]
    fn the_key_name_pattern_is_the_registry_rule() {
        let pattern = Regex::new(&key_name_pattern()).unwrap();
        let long = "é".repeat(64);
        let longer = "é".repeat(65);
        let padded = format!("  {long}\u{3000}\t");
        for text in [
            "ci",
            "a b",
            " a ",
            "\ta\n",
            "\u{85}a\u{a0}",
            long.as_str(),
            longer.as_str(),
            padded.as_str(),
            "",
            "   ",
            "\t\n",
            "a\tb",
            "a\u{1}b",
            "\u{1c}a",
            "a\u{7f}",
            "a\u{9f}",
            "\u{feff}a",
            "a\u{200b}",
            "😀",
        ] {
            assert_eq!(pattern.is_match(text), name_ok(text), "{text:?}");
        }
    }

    #[test]
    fn unsigned_integers_get_their_bounds_and_keep_their_own() {
        let mut doc = json!({
            "a": { "type": "integer", "format": "uint32" },
            "b": [{ "type": "integer", "format": "uint64", "minimum": 1.0 }],
            "c": { "type": "integer", "format": "int32" },
        });
        unsigned_bounds(&mut doc);
        assert_eq!(doc["a"]["minimum"], 0);
        assert_eq!(doc["a"]["maximum"], u64::from(u32::MAX));
        assert_eq!(doc["b"][0]["minimum"], 1.0);
        assert_eq!(doc["b"][0]["maximum"], u64::MAX);
        assert!(doc["c"].get("minimum").is_none());
    }
}
