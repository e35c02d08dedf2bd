//! What a node counts for usage statistics: requests per workspace and
//! environment (test-key requests apart), and when each API key was last
//! presented. Reported to the control plane on the config stream.
//!
//! Counting costs one relaxed atomic add per request: every compiled
//! environment holds its counters ([`EnvUsage`]), and every compiled key its
//! last-use time ([`KeyUse`]). Both come from this registry when a config is
//! compiled, so they outlive table swaps; the registry's lock is taken when
//! compiling and reporting, never on the request path. Counts are cleared
//! only once a report holding them was handed to the stream: what a report
//! took is subtracted, so requests counted meanwhile stay for the next one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use mockplane_proto::v1;
use uuid::Uuid;

/// Requests one environment of a workspace answered.
#[derive(Debug, Default)]
pub struct EnvUsage {
    requests: AtomicU64,
    test_requests: AtomicU64,
    /// Requests the environment's limits refused (not in `requests`).
    limited: AtomicU64,
}

impl EnvUsage {
    /// Counts one request; `test`: it presented a test key.
    pub fn count(&self, test: bool) {
        let counter = if test {
            &self.test_requests
        } else {
            &self.requests
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request refused by the environment's limits.
    pub fn count_limited(&self) {
        self.limited.fetch_add(1, Ordering::Relaxed);
    }

    /// `(requests, test_requests, limited)` not yet reported.
    pub fn pending(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.test_requests.load(Ordering::Relaxed),
            self.limited.load(Ordering::Relaxed),
        )
    }
}

/// When a key was last presented, in Unix seconds (0: not since start).
#[derive(Debug, Default)]
pub struct KeyUse {
    last_used: AtomicU64,
    reported: AtomicU64,
}

impl KeyUse {
    /// Notes a use at `now` (Unix seconds). Writes only when the second
    /// changed, so a busy key's cache line is not bounced between cores.
    pub fn used(&self, now: u64) {
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn timestamp(unix: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(unix).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

#[derive(Debug, Default)]
struct Registry {
    environments: HashMap<(Uuid, Arc<str>), Arc<EnvUsage>>,
    keys: HashMap<Uuid, Arc<KeyUse>>,
    /// When the window of the next report began (Unix seconds).
    window_start: u64,
}

/// The node's usage counters, shared by every routing table it builds.
#[derive(Debug, Default)]
pub struct Usage {
    registry: Mutex<Registry>,
}

/// A report made and not yet known to be sent: what to clear once it is.
#[derive(Debug)]
pub struct Pending {
    pub report: v1::UsageReport,
    counted: Vec<(Arc<EnvUsage>, (u64, u64, u64))>,
    keys: Vec<(Arc<KeyUse>, u64)>,
    window_end: u64,
}

impl Usage {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of an environment (compile time).
    pub fn environment(&self, workspace: Uuid, name: &Arc<str>) -> Arc<EnvUsage> {
        self.registry()
            .environments
            .entry((workspace, name.clone()))
            .or_default()
            .clone()
    }

    /// The last-use time of a key (compile time).
    pub fn key(&self, id: Uuid) -> Arc<KeyUse> {
        self.registry().keys.entry(id).or_default().clone()
    }

    /// A report of everything counted and not yet reported; `None` when
    /// there is nothing to say. Nothing is cleared until [`Usage::sent`].
    pub fn report(&self, now: u64) -> Option<Pending> {
        let mut registry = self.registry();
        if registry.window_start == 0 {
            registry.window_start = now;
        }
        let mut counts = Vec::new();
        let mut counted = Vec::new();
        for ((workspace, environment), usage) in &registry.environments {
            let pending = usage.pending();
            if pending == (0, 0, 0) {
                continue;
            }
            let (requests, test_requests, limited_requests) = pending;
            counts.push(v1::UsageCount {
                workspace_id: workspace.to_string(),
                environment: environment.to_string(),
                requests,
                test_requests,
                limited_requests,
            });
            counted.push((usage.clone(), pending));
        }
        let mut key_uses = Vec::new();
        let mut keys = Vec::new();
        for (id, key) in &registry.keys {
            let last = key.last_used();
            if last > key.reported.load(Ordering::Relaxed) {
                key_uses.push(v1::KeyUse {
                    key_id: id.to_string(),
                    last_used_unix: last,
                });
                keys.push((key.clone(), last));
            }
        }
        if counts.is_empty() && key_uses.is_empty() {
            return None;
        }
        Some(Pending {
            report: v1::UsageReport {
                window_start: Some(timestamp(registry.window_start)),
                window_end: Some(timestamp(now)),
                counts,
                key_uses,
            },
            counted,
            keys,
            window_end: now,
        })
    }

    /// The report was handed to the stream: clears what it held (counts
    /// added since stay), and forgets counters no table uses any more.
    pub fn sent(&self, pending: Pending) {
        for (usage, (requests, test_requests, limited)) in &pending.counted {
            usage.requests.fetch_sub(*requests, Ordering::Relaxed);
            usage
                .test_requests
                .fetch_sub(*test_requests, Ordering::Relaxed);
            usage.limited.fetch_sub(*limited, Ordering::Relaxed);
        }
        for (key, last) in &pending.keys {
            key.reported.fetch_max(*last, Ordering::Relaxed);
        }
        drop(pending.counted);
        drop(pending.keys);
        let mut registry = self.registry();
        registry.window_start = pending.window_end;
        // Held only here: no compiled environment or key uses it, and it
        // has nothing left to report.
        registry
            .environments
            .retain(|_, usage| Arc::strong_count(usage) > 1 || usage.pending() != (0, 0, 0));
        registry.keys.retain(|_, key| {
            Arc::strong_count(key) > 1 || key.last_used() > key.reported.load(Ordering::Relaxed)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_cleared_only_once_sent() {
        let usage = Usage::default();
        let ws = Uuid::new_v4();
        let dev: Arc<str> = Arc::from("dev");
        let counter = usage.environment(ws, &dev);
        assert!(Arc::ptr_eq(&counter, &usage.environment(ws, &dev)));
        assert!(usage.report(100).is_none(), "nothing to say");
        counter.count(false);
        counter.count(false);
        counter.count(true);
        counter.count_limited();
        let first = usage.report(110).unwrap();
        assert_eq!(first.report.counts.len(), 1);
        let count = &first.report.counts[0];
        assert_eq!(
            (count.requests, count.test_requests, count.limited_requests),
            (2, 1, 1)
        );
        assert_eq!(count.environment, "dev");
        // Not sent (the stream broke): the next report has it all again,
        // with what came meanwhile.
        drop(first);
        counter.count(false);
        let second = usage.report(120).unwrap();
        assert_eq!(second.report.counts[0].requests, 3);
        assert_eq!(second.report.window_start.unwrap().seconds, 100);
        counter.count(true);
        usage.sent(second);
        assert_eq!(counter.pending(), (0, 1, 0), "counted while sending: kept");
        let third = usage.report(130).unwrap();
        assert_eq!(third.report.window_start.unwrap().seconds, 120);
        usage.sent(third);
        assert!(usage.report(140).is_none());
    }

    #[test]
    fn key_uses_are_reported_once_and_unused_counters_forgotten() {
        let usage = Usage::default();
        let id = Uuid::new_v4();
        let key = usage.key(id);
        key.used(1_000);
        key.used(999);
        assert_eq!(key.last_used(), 1_000);
        let pending = usage.report(1_001).unwrap();
        assert_eq!(pending.report.key_uses[0].last_used_unix, 1_000);
        usage.sent(pending);
        assert!(usage.report(1_002).is_none(), "already reported");
        key.used(1_005);
        assert!(usage.report(1_006).is_some());

        let gone = usage.environment(Uuid::new_v4(), &Arc::from("dev"));
        gone.count(false);
        drop(gone);
        drop(key);
        let pending = usage.report(1_010).unwrap();
        usage.sent(pending);
        let registry = usage.registry();
        assert!(registry.environments.is_empty());
        assert!(registry.keys.is_empty());
    }
}
