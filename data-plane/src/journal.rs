//! The request journal: the latest requests of each workspace and
//! environment on this node, what answered them, and, for those nothing
//! answered, the closest routes and why each refused. The control plane
//! queries it through the ops listener (`GET /journal/{workspace}`).
//!
//! Bounded: each (workspace, environment) keeps its last
//! [`PER_RING`] requests, entries are cut to a few KiB, and the node keeps
//! at most [`MAX_BYTES`] of them; past that, the rings written longest ago
//! are dropped whole. Recording takes one short lock, never across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mockplane_shared::model::keys::KEY_HEADER;
use serde::Serialize;
use uuid::Uuid;

/// Requests kept per workspace and environment.
pub const PER_RING: usize = 200;
/// Bytes of entries one node keeps, about.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;
const MAX_TEXT: usize = 1024;
const MAX_HEADERS: usize = 2048;

/// One request as the journal keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub environment: Arc<str>,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// `name: value` lines, cut at 2 KiB.
    pub headers: String,
    /// The start of the body, when the node read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub status: u16,
    /// `matched`, `chaos`, `no_route`, `method_not_allowed`…
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_name: Option<Arc<str>>,
    /// For requests nothing answered: the error the node sent, with its
    /// near misses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miss: Option<serde_json::Value>,
    /// The request presented a temporary test key: not usage.
    pub test_key: bool,
    /// The API key the request presented, when it was valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Uuid>,
    #[serde(skip)]
    miss_raw: Option<Bytes>,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        environment: Arc<str>,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
        body: Option<&[u8]>,
        status: u16,
        outcome: &'static str,
        route: Option<(Uuid, Arc<str>)>,
        miss: Option<Bytes>,
    ) -> Self {
        let mut lines = String::new();
        for (name, value) in headers {
            if lines.len() >= MAX_HEADERS {
                break;
            }
            lines.push_str(name.as_str());
            lines.push_str(": ");
            if name.as_str() == KEY_HEADER {
                // A key is a secret: whoever reads the journal must not
                // learn it. `api_key` names it instead.
                lines.push_str("(redacted)");
            } else {
                lines.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
            lines.push('\n');
        }
        let (route, route_name) = match route {
            Some((id, name)) => (Some(id), Some(name)),
            None => (None, None),
        };
        Self {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            environment,
            method: method.to_owned(),
            path: cut(path),
            query: query.map(cut),
            headers: cut_to(lines, MAX_HEADERS),
            body: body
                .filter(|b| !b.is_empty())
                .map(|b| cut(&String::from_utf8_lossy(b))),
            status,
            outcome,
            route,
            route_name,
            miss: None,
            test_key: false,
            api_key: None,
            miss_raw: miss,
        }
    }

    /// The API key the request presented (its id, and whether it is a
    /// test key).
    #[must_use]
    pub fn with_key(mut self, key: Option<(Uuid, bool)>) -> Self {
        if let Some((id, test)) = key {
            self.api_key = Some(id);
            self.test_key = test;
        }
        self
    }

    fn size(&self) -> usize {
        200 + self.path.len()
            + self.query.as_ref().map_or(0, String::len)
            + self.headers.len()
            + self.body.as_ref().map_or(0, String::len)
            + self.miss_raw.as_ref().map_or(0, Bytes::len)
    }

    /// The entry as a query returns it: the miss parsed for reading.
    fn shown(&self) -> Entry {
        let mut shown = self.clone();
        shown.miss = self
            .miss_raw
            .as_ref()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(raw).ok())
            .map(|v| v["error"].clone());
        shown
    }
}

fn cut(text: &str) -> String {
    cut_to(text.to_owned(), MAX_TEXT)
}

fn cut_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// What a query keeps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub environment: Option<String>,
    pub method: Option<String>,
    /// Paths starting with this.
    pub path_prefix: Option<String>,
    pub status: Option<u16>,
    /// Only requests no route answered.
    pub unmatched: bool,
    /// Only requests at or after this time.
    pub since_ms: Option<u64>,
    pub limit: usize,
}

impl Filter {
    fn keeps(&self, entry: &Entry) -> bool {
        self.environment
            .as_deref()
            .is_none_or(|e| *entry.environment == *e)
            && self
                .method
                .as_deref()
                .is_none_or(|m| entry.method.eq_ignore_ascii_case(m))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| entry.path.starts_with(p))
            && self.status.is_none_or(|s| entry.status == s)
            && (!self.unmatched || entry.route.is_none())
            && self.since_ms.is_none_or(|t| entry.at_ms >= t)
    }
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    last_write: u64,
}

#[derive(Debug, Default)]
struct Inner {
    rings: HashMap<(Uuid, Arc<str>), Ring>,
    bytes: usize,
    writes: u64,
}

#[derive(Debug)]
pub struct Journal {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl Default for Journal {
    fn default() -> Self {
        Self::with_budget(MAX_BYTES)
    }
}

impl Journal {
    pub fn with_budget(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    /// Whether requests are recorded at all (a budget of 0 turns it off).
    pub fn is_on(&self) -> bool {
        self.max_bytes > 0
    }

    pub fn record(&self, workspace: Uuid, entry: Entry) {
        if !self.is_on() {
            return;
        }
        let size = entry.size();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.writes += 1;
        let writes = inner.writes;
        let ring = inner
            .rings
            .entry((workspace, entry.environment.clone()))
            .or_default();
        ring.last_write = writes;
        ring.bytes += size;
        ring.entries.push_back(entry);
        let mut freed = 0;
        while ring.entries.len() > PER_RING {
            if let Some(old) = ring.entries.pop_front() {
                freed += old.size();
            }
        }
        ring.bytes -= freed;
        inner.bytes = inner.bytes + size - freed;
        if inner.bytes > self.max_bytes {
            // Drop the rings written longest ago, down to 90% of the
            // budget, so the scan is paid once per many writes.
            let mut order: Vec<((Uuid, Arc<str>), u64)> = inner
                .rings
                .iter()
                .map(|(key, ring)| (key.clone(), ring.last_write))
                .collect();
            order.sort_by_key(|(_, last)| *last);
            for (key, _) in order {
                if inner.bytes <= self.max_bytes / 10 * 9 {
                    break;
                }
                if let Some(ring) = inner.rings.remove(&key) {
                    inner.bytes -= ring.bytes;
                }
            }
        }
    }

    /// The workspace's entries that pass the filter, newest first.
    pub fn query(&self, workspace: Uuid, filter: &Filter) -> Vec<Entry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<&Entry> = inner
            .rings
            .iter()
            .filter(|((id, _), _)| *id == workspace)
            .flat_map(|(_, ring)| ring.entries.iter())
            .filter(|entry| filter.keeps(entry))
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        found.truncate(filter.limit.max(1));
        found.into_iter().map(Entry::shown).collect()
    }

    /// Forgets a workspace (it left the table).
    pub fn forget(&self, keep: impl Fn(&Uuid) -> bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut freed = 0;
        inner.rings.retain(|(id, _), ring| {
            let kept = keep(id);
            if !kept {
                freed += ring.bytes;
            }
            kept
        });
        inner.bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(env: &str, path: &str, status: u16, matched: bool) -> Entry {
        Entry::new(
            Arc::from(env),
            "GET",
            path,
            Some("q=1"),
            &http::HeaderMap::new(),
            None,
            status,
            if matched { "matched" } else { "no_route" },
            matched.then(|| (Uuid::nil(), Arc::from("r"))),
            (!matched).then(|| {
                Bytes::from_static(br#"{"error":{"code":"no_route_matched","near_misses":[]}}"#)
            }),
        )
    }

    #[test]
    fn keeps_the_latest_per_environment_and_filters() {
        let journal = Journal::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for i in 0..(PER_RING + 50) {
            journal.record(a, entry("dev", &format!("/items/{i}"), 200, true));
        }
        journal.record(a, entry("test", "/missing", 404, false));
        journal.record(b, entry("dev", "/other", 200, true));
        let all = Filter {
            limit: 10_000,
            ..Default::default()
        };
        let found = journal.query(a, &all);
        assert_eq!(
            found.len(),
            PER_RING + 1,
            "the ring keeps its last {PER_RING}"
        );
        assert!(found.iter().all(|e| e.path != "/items/0"), "oldest dropped");
        let misses = journal.query(
            a,
            &Filter {
                unmatched: true,
                ..all.clone()
            },
        );
        assert_eq!(misses.len(), 1);
        assert_eq!(misses[0].miss.as_ref().unwrap()["code"], "no_route_matched");
        let dev_prefix = journal.query(
            a,
            &Filter {
                environment: Some("dev".into()),
                path_prefix: Some("/items/249".into()),
                ..all.clone()
            },
        );
        assert_eq!(dev_prefix.len(), 1);
        assert_eq!(journal.query(b, &all).len(), 1, "workspaces apart");
        journal.forget(|id| *id != a);
        assert!(journal.query(a, &all).is_empty());
    }

    #[test]
    fn keys_are_flagged_by_id_and_never_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert(KEY_HEADER, http::HeaderValue::from_static("mpk_secret"));
        headers.insert("accept", http::HeaderValue::from_static("*/*"));
        let key = Uuid::new_v4();
        let entry = Entry::new(
            Arc::from("prod"),
            "GET",
            "/w/shop/a",
            None,
            &headers,
            None,
            200,
            "matched",
            None,
            None,
        )
        .with_key(Some((key, true)));
        assert!(!entry.headers.contains("mpk_secret"), "{}", entry.headers);
        assert!(entry.headers.contains("x-mockplane-key: (redacted)"));
        assert!(entry.headers.contains("accept: */*"));
        let shown = serde_json::to_value(&entry).unwrap();
        assert_eq!(shown["test_key"], true);
        assert_eq!(shown["api_key"], key.to_string());
        let plain = entry.clone().with_key(None);
        assert!(plain.test_key, "with_key(None) changes nothing");
    }

    #[test]
    fn the_byte_budget_drops_the_stalest_rings() {
        let journal = Journal::with_budget(100_000);
        let stale = Uuid::new_v4();
        journal.record(stale, entry("dev", "/old", 200, true));
        for i in 0..2000 {
            journal.record(Uuid::new_v4(), entry("dev", &format!("/{i}"), 200, true));
        }
        let all = Filter {
            limit: 10,
            ..Default::default()
        };
        assert!(journal.query(stale, &all).is_empty());
        let inner = journal.inner.lock().unwrap();
        assert!(inner.bytes <= 100_000);
    }
}
