//! The served OpenAPI document, made exact: what the handlers declare, plus what the edge
//! itself can answer on any operation, so that every status a client can meet is documented
//! with its body.
//!
//! - Optional headers are text or absent, never `null`.
//! - Every problem body is `application/problem+json` (the handlers name the `Problem`
//!   schema; this fixes the media type in one place).
//! - Operations with parameters or a body can answer 400 (malformed query, path or body);
//!   those with a body 408 (it did not arrive in time), 413 (too large) and 415 (not JSON);
//!   signed-in ones 401 and 403.
//! - Every operation can answer 503 (load shed or too slow, with `Retry-After`), and every API
//!   operation 500.

use serde_json::{Map, Value, json};

const PROBLEM_TYPE: &str = "application/problem+json";
const PROBLEM_REF: &str = "#/components/schemas/Problem";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document as served at `/openapi.json`.
pub fn exact(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for method in METHODS {
            if let Some(operation) = item.get_mut(method).and_then(Value::as_object_mut) {
                complete(path, operation);
            }
        }
    }
    doc
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { PROBLEM_TYPE: { "schema": { "$ref": PROBLEM_REF } } }
    })
}

fn retry_after(mut response: Value) -> Value {
    response["headers"] = json!({
        "Retry-After": {
            "description": "Whole seconds to wait before trying again",
            "schema": { "type": "integer", "minimum": 1 }
        }
    });
    response
}

/// A header is text or absent, never JSON `null`: an optional header's schema says only its
/// type (utoipa writes `["string", "null"]` for an `Option`).
fn headers_never_null(operation: &mut Map<String, Value>) {
    let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for parameter in parameters {
        if parameter.get("in").and_then(Value::as_str) != Some("header") {
            continue;
        }
        if let Some(types) = parameter
            .pointer_mut("/schema/type")
            .and_then(Value::as_array_mut)
        {
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                let only = only.clone();
                parameter["schema"]["type"] = only;
            }
        }
    }
}

fn complete(path: &str, operation: &mut Map<String, Value>) {
    headers_never_null(operation);
    let has_params = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let has_body = operation.contains_key("requestBody");
    let signed_in = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return;
    };
    for response in responses.values_mut() {
        problem_media_type(response);
    }
    let mut add = |status: &str, response: Value| {
        responses.entry(status.to_owned()).or_insert(response);
    };
    if has_params || has_body {
        add("400", problem("Malformed query, path or body"));
    }
    if has_body {
        add(
            "413",
            problem("The body is larger than this endpoint accepts"),
        );
        add("415", problem("The body is not JSON"));
        add(
            "408",
            problem("The body did not arrive within the request timeout"),
        );
    }
    if signed_in {
        add("401", problem("No valid access token"));
        add(
            "403",
            problem("The caller's role or ownership does not allow this"),
        );
    }
    if path.starts_with("/v1/") {
        add("500", problem("Internal error (logged, never detailed)"));
    }
    add(
        "503",
        retry_after(problem(
            "The service is at its limit of concurrent requests, or the request took too long",
        )),
    );
    if let Some(limited) = responses.get_mut("429")
        && limited.get("headers").is_none()
    {
        *limited = retry_after(limited.clone());
    }
}

/// A response whose body is the `Problem` schema is served as `application/problem+json`.
fn problem_media_type(response: &mut Value) {
    let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    let is_problem =
        |media: &Value| media.pointer("/schema/$ref").and_then(Value::as_str) == Some(PROBLEM_REF);
    if let Some(media) = content
        .get("application/json")
        .filter(|m| is_problem(m))
        .cloned()
    {
        content.remove("application/json");
        content.insert(PROBLEM_TYPE.to_owned(), media);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn problems_get_their_media_type_and_edge_statuses_are_added() {
        let mut doc = json!({"paths": {"/v1/x": {"post": {
            "security": [{"bearer": []}],
            "requestBody": {"content": {"application/json": {}}},
            "responses": {
                "201": {"description": "made", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Made"}}}},
                "429": {"description": "slow down", "content": {"application/json": {"schema": {"$ref": PROBLEM_REF}}}}
            }
        }}}});
        let operation = doc
            .pointer_mut("/paths/~1v1~1x/post")
            .and_then(Value::as_object_mut)
            .unwrap();
        complete("/v1/x", operation);
        let responses = &doc["paths"]["/v1/x"]["post"]["responses"];
        assert!(responses["201"]["content"]["application/json"].is_object());
        assert!(responses["429"]["content"][PROBLEM_TYPE].is_object());
        assert!(
            responses["429"]["content"]
                .get("application/json")
                .is_none()
        );
        assert!(responses["429"]["headers"]["Retry-After"].is_object());
        for status in ["400", "401", "403", "408", "413", "415", "500", "503"] {
            assert!(
                responses[status]["content"][PROBLEM_TYPE].is_object(),
                "{status}"
            );
        }
    }
}
