//! Retention of the tables that grow with use: the change log, usage counts,
//! notification deliveries, the environment access log and spent refresh
//! tokens. Each has a setting (days, or `forever`); a job prunes them every
//! hour on one replica (the `retention` job lock), and
//! `mockplane-control-plane prune` runs it once, dry or not. What the store
//! never deletes, whatever the setting, is listed in
//! `store::RetentionStore`'s module. (Audit events have their own
//! per-environment setting: `--audit-retention`.)

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config_stream::snapshot::HISTORY_REVISIONS;
use crate::store::Store;

/// How long rows of one table are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Days(u32),
    Forever,
}

/// At most a century: beyond it a cut-off date means nothing.
const MAX_DAYS: u32 = 36_500;

impl FromStr for Keep {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("forever") {
            return Ok(Keep::Forever);
        }
        match raw.parse::<u32>() {
            Ok(days) if (1..=MAX_DAYS).contains(&days) => Ok(Keep::Days(days)),
            _ => Err(format!(
                "`{raw}` is not a retention: give whole days from 1 to {MAX_DAYS}, or `forever`"
            )),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Days(days) => write!(f, "{days} days"),
            Keep::Forever => f.write_str("forever"),
        }
    }
}

/// The tables retention prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    ChangeLog,
    Usage,
    Deliveries,
    AccessLog,
    RefreshTokens,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::ChangeLog,
        Table::Usage,
        Table::Deliveries,
        Table::AccessLog,
        Table::RefreshTokens,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::ChangeLog => "change_log",
            Table::Usage => "usage",
            Table::Deliveries => "deliveries",
            Table::AccessLog => "access_log",
            Table::RefreshTokens => "refresh_tokens",
        }
    }
}

/// The retention of each table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Change-log rows older than this, and beyond the revisions the config
    /// stream computes deltas from.
    pub change_log: Keep,
    /// Per-minute usage counts.
    pub usage: Keep,
    /// Notifications delivered or given up on, with their attempts.
    pub deliveries: Keep,
    /// Environment access records (break-glass tokens), counted from their
    /// expiry; never those of environments that require a reason.
    pub access_log: Keep,
    /// Refresh tokens, counted from their expiry or revocation.
    pub refresh_tokens: Keep,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            change_log: Keep::Days(30),
            usage: Keep::Days(400),
            deliveries: Keep::Days(30),
            access_log: Keep::Days(365),
            refresh_tokens: Keep::Days(7),
        }
    }
}

impl Policy {
    pub fn keep(&self, table: Table) -> Keep {
        match table {
            Table::ChangeLog => self.change_log,
            Table::Usage => self.usage,
            Table::Deliveries => self.deliveries,
            Table::AccessLog => self.access_log,
            Table::RefreshTokens => self.refresh_tokens,
        }
    }
}

/// What one run did to one table.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub table: Table,
    /// Rows deleted (or, in a dry run, that would have been); `None` when
    /// the table is kept forever or the run failed.
    pub rows: Option<u64>,
    /// Why the run failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Prunes every table once, as of `now`. A table that fails does not stop
/// the others; its error is in its entry.
pub async fn run_once(
    store: &dyn Store,
    policy: &Policy,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Vec<Pruned> {
    let mut outcome = Vec::with_capacity(Table::ALL.len());
    for table in Table::ALL {
        let Keep::Days(days) = policy.keep(table) else {
            outcome.push(Pruned {
                table,
                rows: None,
                error: None,
            });
            continue;
        };
        let before = now - TimeDelta::days(i64::from(days));
        let result = prune(store, table, before, dry_run).await;
        outcome.push(match result {
            Ok(rows) => Pruned {
                table,
                rows: Some(rows),
                error: None,
            },
            Err(error) => Pruned {
                table,
                rows: None,
                error: Some(error),
            },
        });
    }
    outcome
}

async fn prune(
    store: &dyn Store,
    table: Table,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<u64, String> {
    let rows = match table {
        Table::ChangeLog => {
            store
                .prune_change_log(before, HISTORY_REVISIONS, dry_run)
                .await
        }
        Table::Usage => store.prune_usage(before, dry_run).await,
        Table::Deliveries => store.prune_deliveries(before, dry_run).await,
        Table::RefreshTokens => store.prune_refresh_tokens(before, dry_run).await,
        Table::AccessLog => {
            let mut total = 0;
            for org in store.org_ids().await.map_err(|e| e.to_string())? {
                let protected = crate::api::audit::protected_environments(store, org)
                    .await
                    .map_err(|e| e.to_string())?;
                total += store
                    .prune_access_log(org, before, &protected, dry_run)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(total)
        }
    };
    rows.map_err(|e| e.to_string())
}

/// Runs [`run_once`] every `every` (the first at once) on whichever replica
/// holds the job's lock, until `shutdown`.
pub async fn run_periodically(
    store: Arc<dyn Store>,
    policy: Policy,
    dry_run: bool,
    every: Duration,
    shutdown: CancellationToken,
) {
    if Table::ALL.iter().all(|t| policy.keep(*t) == Keep::Forever) {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(_lock) = crate::jobs::lead(&*store, "retention").await else {
            continue;
        };
        for pruned in run_once(&*store, &policy, dry_run, Utc::now()).await {
            match (pruned.rows, pruned.error) {
                (Some(rows), _) if rows > 0 => {
                    tracing::info!(
                        table = pruned.table.name(),
                        rows,
                        dry_run,
                        "retention pruned rows"
                    );
                }
                (_, Some(error)) => {
                    tracing::warn!(table = pruned.table.name(), %error, "retention failed; will retry");
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_say_what_is_wrong() {
        assert_eq!("30".parse::<Keep>(), Ok(Keep::Days(30)));
        assert_eq!(" Forever ".parse::<Keep>(), Ok(Keep::Forever));
        for bad in ["0", "-1", "36501", "30d", "", "never"] {
            let error = bad.parse::<Keep>().unwrap_err();
            assert!(error.contains("from 1 to 36500"), "{bad}: {error}");
            assert!(error.contains(&format!("`{}`", bad.trim())), "{error}");
        }
        assert_eq!(Keep::Days(7).to_string(), "7 days");
    }

    #[test]
    fn every_table_has_a_setting_and_a_name() {
        let policy = Policy::default();
        let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "change_log",
                "usage",
                "deliveries",
                "access_log",
                "refresh_tokens"
            ]
        );
        assert!(Table::ALL.iter().all(|t| policy.keep(*t) != Keep::Forever));
    }
}
