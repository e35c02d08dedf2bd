//! Usage reports from nodes: what arrives on the config stream
//! (`UsageReport`), checked and added to the store.
//!
//! Nodes are trusted in this protocol version: a report's counts are kept
//! against the workspaces it names, whatever their org (the store takes the
//! org from the workspace). What does not parse is dropped and logged, the
//! rest kept.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use mockplane_proto::v1;
use mockplane_shared::Slug;
use uuid::Uuid;

use crate::store::{Store, UsageCount, UsageReport};

/// Most entries (counts plus key uses) one report may carry; the rest is
/// dropped.
pub const MAX_REPORT_ENTRIES: usize = 100_000;

/// A report's counts are kept under the minute its window ended, when the
/// node's clock is within this of ours; otherwise under the minute it
/// arrived.
const CLOCK_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

fn time_of(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
}

/// Checks a node's report; `dropped` counts the entries that did not parse.
pub fn parse_report(report: &v1::UsageReport, now: DateTime<Utc>) -> (UsageReport, usize) {
    let end = time_of(report.window_end.as_ref())
        .filter(|at| *at <= now + CLOCK_TOLERANCE && *at >= now - TimeDelta::days(1))
        .map_or(now, |at| at.min(now));
    let mut dropped = 0;
    let mut merged: HashMap<(Uuid, String), (u64, u64, u64)> = HashMap::new();
    for count in report.counts.iter().take(MAX_REPORT_ENTRIES) {
        let (Ok(workspace), Ok(environment)) = (
            Uuid::try_parse(&count.workspace_id),
            Slug::parse(&count.environment),
        ) else {
            dropped += 1;
            continue;
        };
        let entry = merged
            .entry((workspace, environment.to_string()))
            .or_default();
        entry.0 = entry.0.saturating_add(count.requests);
        entry.1 = entry.1.saturating_add(count.test_requests);
        entry.2 = entry.2.saturating_add(count.limited_requests);
    }
    let mut counts: Vec<UsageCount> = merged
        .into_iter()
        .filter(|(_, counts)| *counts != (0, 0, 0))
        .map(
            |((workspace_id, environment), (requests, test_requests, limited_requests))| {
                UsageCount {
                    workspace_id,
                    environment,
                    requests,
                    test_requests,
                    limited_requests,
                }
            },
        )
        .collect();
    counts.sort_by(|a, b| (a.workspace_id, &a.environment).cmp(&(b.workspace_id, &b.environment)));
    let room = MAX_REPORT_ENTRIES.saturating_sub(report.counts.len());
    let mut key_uses: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for used in report.key_uses.iter().take(room) {
        let at = i64::try_from(used.last_used_unix)
            .ok()
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0));
        let (Ok(id), Some(at)) = (Uuid::try_parse(&used.key_id), at) else {
            dropped += 1;
            continue;
        };
        let at = at.min(now);
        let latest = key_uses.entry(id).or_insert(at);
        *latest = (*latest).max(at);
    }
    dropped += report.counts.len().saturating_sub(MAX_REPORT_ENTRIES);
    dropped += report.key_uses.len().saturating_sub(room);
    let mut key_uses: Vec<(Uuid, DateTime<Utc>)> = key_uses.into_iter().collect();
    key_uses.sort();
    (
        UsageReport {
            minute: end.timestamp().div_euclid(60) * 60,
            counts,
            key_uses,
        },
        dropped,
    )
}

/// Stores a node's report. Failures are logged: the node has cleared its
/// counts, so they are lost (a report covers one interval, 10 s by default).
pub async fn record(store: &dyn Store, node: &str, report: &v1::UsageReport) {
    let (parsed, dropped) = parse_report(report, Utc::now());
    if dropped > 0 {
        tracing::warn!(
            node,
            dropped,
            "a usage report had entries that do not parse; dropped them"
        );
    }
    if let Err(error) = store.record_usage(&parsed).await {
        tracing::warn!(node, %error, counts = parsed.counts.len(), "could not store a usage report");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(workspace: &str, env: &str, requests: u64, tests: u64) -> v1::UsageCount {
        v1::UsageCount {
            workspace_id: workspace.into(),
            environment: env.into(),
            requests,
            test_requests: tests,
            limited_requests: 0,
        }
    }

    #[test]
    fn reports_are_checked_merged_and_bucketed() {
        let now = DateTime::from_timestamp(10_000, 0).unwrap();
        let ws = Uuid::new_v4().to_string();
        let key = Uuid::new_v4();
        let report = v1::UsageReport {
            window_start: Some(prost_types::Timestamp {
                seconds: 9_950,
                nanos: 0,
            }),
            window_end: Some(prost_types::Timestamp {
                seconds: 9_990,
                nanos: 0,
            }),
            counts: vec![
                count(&ws, "dev", 3, 1),
                count(&ws, "dev", 2, 0),
                count(&ws, "prod", 0, 0),
                count("not-a-uuid", "dev", 1, 0),
                count(&ws, "Bad Env", 1, 0),
            ],
            key_uses: vec![
                v1::KeyUse {
                    key_id: key.to_string(),
                    last_used_unix: 9_980,
                },
                v1::KeyUse {
                    key_id: key.to_string(),
                    last_used_unix: 9_985,
                },
                v1::KeyUse {
                    key_id: "nope".into(),
                    last_used_unix: 1,
                },
            ],
        };
        let (parsed, dropped) = parse_report(&report, now);
        assert_eq!(dropped, 3);
        assert_eq!(parsed.minute, 9_960);
        assert_eq!(parsed.counts.len(), 1, "zero counts are not stored");
        assert_eq!(
            (parsed.counts[0].requests, parsed.counts[0].test_requests),
            (5, 1)
        );
        assert_eq!(
            parsed.key_uses,
            vec![(key, DateTime::from_timestamp(9_985, 0).unwrap())]
        );
    }

    #[test]
    fn a_far_off_clock_is_not_believed() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let report = v1::UsageReport {
            window_end: Some(prost_types::Timestamp {
                seconds: 5_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(parse_report(&report, now).0.minute, 999_960);
        let (none, _) = parse_report(&v1::UsageReport::default(), now);
        assert_eq!(none.minute, 999_960);
    }
}
