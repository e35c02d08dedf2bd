//! What the CLI prints: a readable table by default, or JSON for scripts.
//! Both come from the same views, so they always agree.

use mockplane_proto::v1;
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Serialize)]
pub struct WorkspaceView {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub routes: u32,
    pub etag: String,
    pub created: String,
    pub updated: String,
}

impl From<&v1::Workspace> for WorkspaceView {
    fn from(w: &v1::Workspace) -> Self {
        Self {
            id: w.id.clone(),
            slug: w.slug.clone(),
            name: w.name.clone(),
            description: w.description.clone(),
            routes: w.route_count,
            etag: w.etag.clone(),
            created: time(w.create_time.as_ref()),
            updated: time(w.update_time.as_ref()),
        }
    }
}

#[derive(Serialize)]
pub struct RouteView {
    pub id: String,
    pub name: String,
    pub method: String,
    pub path: String,
    /// The matchers in mock-file form; absent when the route has none.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<mockplane_shared::RequestMatch>,
    pub priority: u32,
    /// Latency and chaos in mock-file form; absent when the route has none.
    #[serde(flatten)]
    pub realism: mockplane_shared::realism::Realism,
    pub status: u32,
    pub headers: Vec<[String; 2]>,
    /// The body as text when it is UTF-8, else `base64:` and its encoding.
    pub body: String,
    pub etag: String,
}

impl From<&v1::Route> for RouteView {
    fn from(r: &v1::Route) -> Self {
        let response = r.response.clone().unwrap_or_default();
        let body = match String::from_utf8(response.body) {
            Ok(text) => text,
            Err(bytes) => {
                use base64::Engine as _;
                format!(
                    "base64:{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes())
                )
            }
        };
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            method: r.method.clone(),
            path: r.path.clone(),
            matcher: mockplane_proto::convert::parse_request_match(r.request_match.as_ref())
                .ok()
                .filter(|m| !m.is_empty()),
            priority: r.priority,
            realism: mockplane_proto::convert::parse_realism(r.latency.as_ref(), r.chaos.as_ref())
                .unwrap_or_default(),
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|h| [h.name, h.value])
                .collect(),
            body,
            etag: r.etag.clone(),
        }
    }
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Prints rows as a table with the given columns (keys of the JSON view),
/// or the rows as a JSON array.
pub fn list<T: Serialize>(format: Format, rows: &[T], columns: &[&str]) {
    match format {
        Format::Json => json(&rows),
        Format::Table => {
            let values: Vec<Value> = rows
                .iter()
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                .collect();
            print!("{}", table(&values, columns));
        }
    }
}

/// Prints one object: `field  value` lines, or JSON.
pub fn one<T: Serialize>(format: Format, item: &T) {
    match format {
        Format::Json => json(item),
        Format::Table => {
            let value = serde_json::to_value(item).unwrap_or(Value::Null);
            if let Value::Object(map) = value {
                let width = map.keys().map(String::len).max().unwrap_or(0);
                for (key, value) in map {
                    println!("{key:width$}  {}", cell(&value));
                }
            }
        }
    }
}

pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: cannot print JSON: {error}"),
    }
}

fn cell(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    // Keep each row on one line.
    text.replace(['\n', '\r'], " ")
}

pub fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[*c])).collect())
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let mut out = String::new();
    for line in std::iter::once(&headers).chain(cells.iter()) {
        let parts: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(text, width)| {
                let clipped: String = if text.chars().count() > *width {
                    text.chars()
                        .take(width.saturating_sub(1))
                        .chain(['…'])
                        .collect()
                } else {
                    text.clone()
                };
                format!("{clipped:width$}")
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_and_clip() {
        let rows = vec![
            json!({"slug": "demo", "name": "Demo", "routes": 3}),
            json!({"slug": "a-much-longer-slug", "name": "x\ny", "routes": 12}),
        ];
        let text = table(&rows, &["slug", "name", "routes"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "SLUG                NAME  ROUTES");
        assert_eq!(lines[1], "demo                Demo  3");
        assert_eq!(lines[2], "a-much-longer-slug  x y   12");
        let long = vec![json!({"path": "/".repeat(100)})];
        assert!(
            table(&long, &["path"])
                .lines()
                .nth(1)
                .unwrap()
                .ends_with('…')
        );
    }
}
