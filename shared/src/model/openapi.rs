//! OpenAPI 3 import: a document becomes routes, one per operation, each
//! answering with the operation's success response: its example when the
//! document has one, else a body derived from its schema.
//!
//! What is taken from the document:
//! - the path, with `{param}` typed from the parameter's schema (`integer`
//!   becomes `{param:int}`, `string` with `format: uuid` becomes
//!   `{param:uuid}`); server URLs are not prepended;
//! - the method, and `operationId` (else `METHOD path`) as the route name;
//! - the response: the lowest 2xx status (else `default`, as 200), its
//!   first media type (JSON preferred) as `content-type`, and its body:
//!   `example`, the first of `examples`, the schema's `example`, else one
//!   generated from the schema (`$ref`, `allOf`, `oneOf`/`anyOf`, enums,
//!   formats, defaults and minimums, bounded in depth).

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::model::error::FieldError;
use crate::model::route::{ResponseSpec, RouteSpec};

/// Most operations one document may import.
pub const MAX_OPERATIONS: usize = 2000;
/// How deep schema-derived bodies go before they stop at `null`.
const MAX_DEPTH: usize = 8;
/// Largest document accepted, in bytes of text.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// What an import produced: the routes, and the document's title and
/// description for the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub title: String,
    pub description: String,
    pub routes: Vec<RouteSpec>,
}

/// Parses an OpenAPI 3 document (YAML or JSON text) into routes. Errors
/// name the place in the document: `paths./pets/{id}.get.responses`.
pub fn import(text: &str) -> Result<Imported, FieldError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(FieldError::new(
            "",
            format!("at most {MAX_DOCUMENT_BYTES} bytes, got {}", text.len()),
        ));
    }
    crate::model::nesting::check(text).map_err(|e| FieldError::new("", e.to_string()))?;
    let document: Value = serde_yaml::from_str(text)
        .map_err(|e| FieldError::new("", format!("not valid YAML or JSON: {e}")))?;
    let Value::Object(root) = &document else {
        return Err(FieldError::new("", "must be an OpenAPI object"));
    };
    match root.get("openapi").and_then(Value::as_str) {
        Some(version) if version.starts_with("3.") => {}
        Some(version) => {
            return Err(FieldError::new(
                "openapi",
                format!("version {version:?} is not supported; import OpenAPI 3.0 or 3.1"),
            ));
        }
        None if root.contains_key("swagger") => {
            return Err(FieldError::new(
                "swagger",
                "Swagger 2.0 documents are not supported; convert it to OpenAPI 3 first",
            ));
        }
        None => {
            return Err(FieldError::new(
                "openapi",
                "is missing: this is not an OpenAPI 3 document",
            ));
        }
    }
    let Some(Value::Object(paths)) = root.get("paths") else {
        return Err(FieldError::new("paths", "is missing or not an object"));
    };
    let info = root.get("info");
    let text_of = |key: &str| {
        info.and_then(|i| i.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut routes = Vec::new();
    for (path, item) in paths {
        let Value::Object(item) = item else {
            return Err(FieldError::new(
                format!("paths.{path}"),
                "must be an object",
            ));
        };
        let shared_params = item.get("parameters");
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let field = format!("paths.{path}.{method}");
            if routes.len() >= MAX_OPERATIONS {
                return Err(FieldError::new(
                    "paths",
                    format!("at most {MAX_OPERATIONS} operations per import"),
                ));
            }
            let route = operation_route(&document, path, method, operation, shared_params)
                .map_err(|e| e.within(&field))?;
            routes.push(route);
        }
    }
    Ok(Imported {
        title: text_of("title"),
        description: text_of("description"),
        routes,
    })
}

fn operation_route(
    document: &Value,
    path: &str,
    method: &str,
    operation: &Value,
    shared_params: Option<&Value>,
) -> Result<RouteSpec, FieldError> {
    let template = typed_path(document, path, operation, shared_params);
    let name = operation
        .get("operationId")
        .and_then(Value::as_str)
        .map_or_else(
            || format!("{} {path}", method.to_uppercase()),
            str::to_owned,
        );
    let Some(Value::Object(responses)) = operation.get("responses") else {
        return Err(FieldError::new("responses", "is missing or not an object"));
    };
    let (status, response) = pick_response(responses)
        .ok_or_else(|| FieldError::new("responses", "has no response to answer with"))?;
    let response = resolve(document, response, 0);
    let (headers, body) = match response.get("content").and_then(Value::as_object) {
        None => (Vec::new(), Bytes::new()),
        Some(content) => {
            let (media, spec) = content
                .iter()
                .find(|(media, _)| media.contains("json"))
                .or_else(|| content.iter().next())
                .ok_or_else(|| {
                    FieldError::new(format!("responses.{status}.content"), "is empty")
                })?;
            let body = body_of(document, spec);
            let bytes = match (&body, media.contains("json")) {
                (Value::String(text), false) => Bytes::from(text.clone()),
                (value, _) => Bytes::from(value.to_string()),
            };
            (vec![("content-type".to_owned(), media.clone())], bytes)
        }
    };
    RouteSpec::parse(&name, &method.to_uppercase(), &template, || {
        ResponseSpec::parse(status, headers, body)
    })
}

/// `/pets/{petId}` with `petId` an integer becomes `/pets/{petId:int}`.
fn typed_path(document: &Value, path: &str, operation: &Value, shared: Option<&Value>) -> String {
    let mut kinds = std::collections::HashMap::new();
    for list in [shared, operation.get("parameters")].into_iter().flatten() {
        for param in list.as_array().into_iter().flatten() {
            let param = resolve(document, param, 0);
            if param.get("in").and_then(Value::as_str) != Some("path") {
                continue;
            }
            let Some(name) = param.get("name").and_then(Value::as_str) else {
                continue;
            };
            let schema = param
                .get("schema")
                .map(|s| resolve(document, s, 0))
                .unwrap_or(Value::Null);
            let kind = match (
                schema.get("type").and_then(Value::as_str),
                schema.get("format").and_then(Value::as_str),
            ) {
                (Some("integer"), _) => Some("int"),
                (Some("string"), Some("uuid")) => Some("uuid"),
                _ => None,
            };
            if let Some(kind) = kind {
                kinds.insert(name.to_owned(), kind);
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 8);
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + end];
        match kinds.get(name) {
            Some(kind) => out.push_str(&format!("{{{name}:{kind}}}")),
            None => out.push_str(&format!("{{{name}}}")),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The lowest 2xx response, else `default` (as 200), else the first.
fn pick_response(responses: &Map<String, Value>) -> Option<(u32, &Value)> {
    let mut codes: Vec<(u32, &Value)> = responses
        .iter()
        .filter_map(|(code, value)| code.parse::<u32>().ok().map(|c| (c, value)))
        .collect();
    codes.sort_by_key(|(code, _)| *code);
    codes
        .iter()
        .find(|(code, _)| (200..300).contains(code))
        .copied()
        .or_else(|| responses.get("default").map(|value| (200, value)))
        .or_else(|| codes.first().copied())
}

fn body_of(document: &Value, media: &Value) -> Value {
    if let Some(example) = media.get("example") {
        return example.clone();
    }
    if let Some(Value::Object(examples)) = media.get("examples")
        && let Some((_, first)) = examples.iter().next()
    {
        let first = resolve(document, first, 0);
        if let Some(value) = first.get("value") {
            return value.clone();
        }
    }
    match media.get("schema") {
        Some(schema) => generate(document, schema, 0, &mut BTreeSet::new()),
        None => Value::Null,
    }
}

/// Follows a local `$ref` (`#/components/...`), a few levels at most.
fn resolve(document: &Value, value: &Value, depth: usize) -> Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) if depth < MAX_DEPTH => match lookup(document, reference) {
            Some(target) => resolve(document, target, depth + 1),
            None => Value::Null,
        },
        _ => value.clone(),
    }
}

fn lookup<'d>(document: &'d Value, reference: &str) -> Option<&'d Value> {
    let pointer = reference.strip_prefix('#')?;
    document.pointer(pointer)
}

/// A value that fits a schema: its example or default, else one built
/// from its type. `seen` stops recursive schemas.
fn generate(document: &Value, schema: &Value, depth: usize, seen: &mut BTreeSet<String>) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        if !seen.insert(reference.to_owned()) {
            return Value::Null;
        }
        let value = lookup(document, reference).map_or(Value::Null, |target| {
            generate(document, target, depth + 1, seen)
        });
        seen.remove(reference);
        return value;
    }
    for key in ["example", "default", "const"] {
        if let Some(value) = schema.get(key) {
            return value.clone();
        }
    }
    if let Some(Value::Array(examples)) = schema.get("examples")
        && let Some(first) = examples.first()
    {
        return first.clone();
    }
    if let Some(Value::Array(values)) = schema.get("enum")
        && let Some(first) = values.first()
    {
        return first.clone();
    }
    if let Some(Value::Array(parts)) = schema.get("allOf") {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(fields) = generate(document, part, depth + 1, seen) {
                merged.extend(fields);
            }
        }
        return Value::Object(merged);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(options)) = schema.get(key)
            && let Some(first) = options.first()
        {
            return generate(document, first, depth + 1, seen);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // 3.1 allows a list of types: take the first that is not null.
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("items").is_some() => "array",
        _ => "",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (name, property) in properties {
                    object.insert(name.clone(), generate(document, property, depth + 1, seen));
                }
            }
            Value::Object(object)
        }
        "array" => match schema.get("items") {
            Some(items) => {
                let item = generate(document, items, depth + 1, seen);
                Value::Array(if item.is_null() {
                    Vec::new()
                } else {
                    vec![item]
                })
            }
            None => json!([]),
        },
        "integer" => schema
            .get("minimum")
            .filter(|m| m.is_i64() || m.is_u64())
            .cloned()
            .unwrap_or(json!(1)),
        "number" => schema.get("minimum").cloned().unwrap_or(json!(1.5)),
        "boolean" => json!(true),
        "string" => json!(match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => "2026-01-01T00:00:00Z",
            Some("date") => "2026-01-01",
            Some("email") => "user@example.com",
            Some("uuid") => "00000000-0000-4000-8000-000000000000",
            Some("uri" | "url") => "https://example.com",
            Some("ipv4") => "192.0.2.1",
            _ => "string",
        }),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r##"
openapi: 3.0.3
info: { title: Shop, description: A small shop }
paths:
  /items:
    get:
      operationId: listItems
      responses:
        "200":
          description: items
          content:
            application/json:
              schema: { type: array, items: { $ref: "#/components/schemas/Item" } }
    post:
      responses:
        "201":
          description: created
          content:
            application/json:
              examples:
                one: { value: { id: 9, name: new } }
        "400": { description: bad }
  /items/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: integer } }
    get:
      operationId: getItem
      responses:
        default:
          description: the item
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Item" }
    delete:
      responses:
        "204": { description: gone }
  /orders/{order}:
    get:
      parameters:
        - { name: order, in: path, schema: { type: string, format: uuid } }
      responses:
        "200":
          description: text
          content:
            text/plain:
              example: shipped
components:
  schemas:
    Item:
      type: object
      properties:
        id: { type: integer, minimum: 1 }
        name: { type: string, example: lamp }
        tags: { type: array, items: { type: string, enum: [new, sale] } }
        added: { type: string, format: date-time }
        parent: { $ref: "#/components/schemas/Item" }
"##;

    #[test]
    fn a_document_becomes_a_route_per_operation() {
        let imported = import(SPEC).unwrap();
        assert_eq!(imported.title, "Shop");
        let summary: Vec<(String, String, String, u16)> = imported
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.method.to_string(),
                    r.path.as_str().to_owned(),
                    r.response.status,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("listItems".into(), "GET".into(), "/items".into(), 200),
                ("POST /items".into(), "POST".into(), "/items".into(), 201),
                (
                    "getItem".into(),
                    "GET".into(),
                    "/items/{id:int}".into(),
                    200
                ),
                (
                    "DELETE /items/{id}".into(),
                    "DELETE".into(),
                    "/items/{id:int}".into(),
                    204
                ),
                (
                    "GET /orders/{order}".into(),
                    "GET".into(),
                    "/orders/{order:uuid}".into(),
                    200
                ),
            ]
        );
        let body = |i: usize| -> Value {
            serde_json::from_slice(&imported.routes[i].response.body).unwrap()
        };
        let item = json!({
            "id": 1, "name": "lamp", "tags": ["new"], "added": "2026-01-01T00:00:00Z", "parent": null
        });
        assert_eq!(body(0), json!([item]), "schema-derived, recursion stopped");
        assert_eq!(
            body(1),
            json!({ "id": 9, "name": "new" }),
            "the first example"
        );
        assert_eq!(body(2), item);
        assert!(imported.routes[3].response.body.is_empty());
        assert_eq!(&imported.routes[4].response.body[..], b"shipped");
        assert_eq!(
            imported.routes[4].response.headers,
            [("content-type".to_owned(), "text/plain".to_owned())]
        );
    }

    #[test]
    fn bad_documents_name_the_place() {
        let error = |text: &str| import(text).unwrap_err();
        assert_eq!(error("swagger: '2.0'\npaths: {}").field, "swagger");
        assert_eq!(error("openapi: 2.5\npaths: {}").field, "openapi");
        assert_eq!(error("info: {}").field, "openapi");
        assert_eq!(error("openapi: 3.0.0").field, "paths");
        assert_eq!(error("openapi: 3.0.0\npaths: [").field, "");
        let no_responses = error("openapi: 3.0.0\npaths:\n  /a:\n    get: {}");
        assert_eq!(no_responses.field, "paths./a.get.responses");
        let bad_path = error(
            "openapi: 3.0.0\npaths:\n  a/{b:\n    get: { responses: { '200': { description: x } } }",
        );
        assert_eq!(bad_path.field, "paths.a/{b.get.path", "{bad_path}");
    }
}
