//! The audit trail. Every write transaction of the store appends one event
//! describing its change, in that transaction, so a change and its record
//! commit or roll back together. Who acted (and why, and under which
//! request) comes from the [`AuditContext`] the API layer sets for the
//! request's task; writes made outside a request (first run, tools,
//! tests) are recorded as the system.
//!
//! Events of an org form a hash chain: `digest` is the SHA-256 of the
//! event's canonical content, `hash` the SHA-256 of `"<prev_hash>:<digest>"`.
//! Editing, removing or reordering an event breaks the chain, which
//! [`AuditStore::verify_audit`] reports. Pruning empties an event's content
//! but keeps its digest and hashes, so a pruned chain still verifies.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::tx::{Scope, now, page_limit};
use super::{Dialect, Page, SqlStore, StoreError, StoreResult};

/// The hash the first event of an org chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What pruning an event does: empties what it says (who, why, on what,
/// how), keeping what the chain covers (its sequence, digest and hashes) and
/// when, where and by which credential kind it happened.
pub(super) const PRUNE: &str = "actor = '', reason = '', summary = '', resource = '', pruned = 1";

/// Who is acting, for the events their writes append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditContext {
    /// `user:<uuid>`, `service:<uuid>` or `system`.
    pub actor_id: String,
    /// A readable name: the e-mail of a user, the name of a service account.
    pub actor: String,
    /// How they authenticated (`api_token`, `access_token`, …).
    pub credential: String,
    pub reason: String,
    pub request_id: String,
}

impl AuditContext {
    pub fn system() -> Self {
        Self {
            actor_id: "system".into(),
            actor: "system".into(),
            credential: "none".into(),
            ..Default::default()
        }
    }
}

tokio::task_local! {
    /// The caller of the request this task serves.
    pub static AUDIT_CONTEXT: AuditContext;
}

pub(super) fn current_context() -> AuditContext {
    AUDIT_CONTEXT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| AuditContext::system())
}

/// What a write changed.
#[derive(Debug, Clone)]
pub struct Change {
    pub org: Uuid,
    /// `<resource kind>.<verb>`, e.g. `workspace.update`.
    pub action: &'static str,
    /// `workspace/shop`, `route/<id>`, …
    pub resource: String,
    pub workspace: Option<Uuid>,
    /// The environment acted on; empty for none or all.
    pub environment: String,
    /// A short before/after summary (JSON).
    pub summary: serde_json::Value,
    /// Who acted, when the request's caller does not say (actor id,
    /// readable name, credential): sessions started by e-mail and password.
    pub actor: Option<(String, String, &'static str)>,
    /// The reason, when the request states it in its body rather than its
    /// metadata (an org's deletion).
    pub reason: Option<String>,
}

impl Change {
    pub fn new(org: Uuid, action: &'static str, resource: impl Into<String>) -> Self {
        Self {
            org,
            action,
            resource: resource.into(),
            workspace: None,
            environment: String::new(),
            summary: serde_json::Value::Null,
            actor: None,
            reason: None,
        }
    }

    #[must_use]
    pub fn by(mut self, actor_id: String, actor: String, credential: &'static str) -> Self {
        self.actor = Some((actor_id, actor, credential));
        self
    }

    #[must_use]
    pub fn workspace(mut self, id: Uuid) -> Self {
        self.workspace = Some(id);
        self
    }

    #[must_use]
    pub fn environment(mut self, name: impl Into<String>) -> Self {
        self.environment = name.into();
        self
    }

    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    #[must_use]
    pub fn summary(mut self, summary: serde_json::Value) -> Self {
        self.summary = summary;
        self
    }
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: String,
    pub actor: String,
    pub credential: String,
    pub action: String,
    pub resource: String,
    pub workspace_id: String,
    pub environment: String,
    pub reason: String,
    pub summary: String,
    pub request_id: String,
    pub pruned: i32,
    pub digest: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The content the digest covers, in a fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    org: Uuid,
    seq: i64,
    id: Uuid,
    at_micros: i64,
    actor_id: &'a str,
    actor: &'a str,
    credential: &'a str,
    action: &'a str,
    resource: &'a str,
    workspace_id: &'a str,
    environment: &'a str,
    reason: &'a str,
    summary: &'a str,
    request_id: &'a str,
}

fn digest_of(org: Uuid, e: &AuditRecord) -> String {
    let canonical = Canonical {
        org,
        seq: e.seq,
        id: e.id,
        at_micros: e.at.timestamp_micros(),
        actor_id: &e.actor_id,
        actor: &e.actor,
        credential: &e.credential,
        action: &e.action,
        resource: &e.resource,
        workspace_id: &e.workspace_id,
        environment: &e.environment,
        reason: &e.reason,
        summary: &e.summary,
        request_id: &e.request_id,
    };
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

fn chain(prev_hash: &str, digest: &str) -> String {
    hex::encode(Sha256::digest(format!("{prev_hash}:{digest}").as_bytes()))
}

/// Filters for listing events; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub workspace: Option<Uuid>,
    pub environment: String,
    pub actor_id: String,
    pub action_prefix: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// What verifying an org's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub events: u64,
    pub head_seq: i64,
    pub head_hash: String,
    /// The first event that does not verify, and why.
    pub broken: Option<(i64, String)>,
}

/// What a retention run did (or would do, dry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneOutcome {
    /// Environment → events pruned (or that would be).
    pub by_environment: Vec<(String, u64)>,
    /// Environments whose old events were kept because they are protected.
    pub protected: Vec<String>,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Newest first, starting below `before_seq`.
    async fn list_audit(
        &self,
        org: Uuid,
        filter: &AuditFilter,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<AuditRecord, i64>>;
    async fn verify_audit(&self, org: Uuid) -> StoreResult<Verification>;
    /// Empties the content of events older than their environment's
    /// retention. `retention` maps environment names to days;
    /// `protected` environments are never pruned; events of no
    /// environment are kept.
    async fn prune_audit(
        &self,
        org: Uuid,
        retention: &[(String, u32)],
        protected: &[String],
        dry_run: bool,
    ) -> StoreResult<PruneOutcome>;
    /// Every org, for jobs that walk them.
    async fn org_ids(&self) -> StoreResult<Vec<Uuid>>;
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// Appends the event for `change` in the caller's transaction. Call it
    /// before `bump_revision` (whose row lock is taken last).
    pub(super) async fn append(conn: &mut DB::Connection, change: Change) -> StoreResult<()> {
        let mut context = current_context();
        if let Some((actor_id, actor, credential)) = change.actor {
            context.actor_id = actor_id;
            context.actor = actor;
            context.credential = credential.to_owned();
        }
        if let Some(reason) = change.reason {
            context.reason = reason;
        }
        sqlx::query(
            "INSERT INTO audit_heads (org_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (org_id) DO NOTHING",
        )
        .bind(change.org)
        .bind(GENESIS.to_owned())
        .execute(&mut *conn)
        .await?;
        // The update takes the head's row lock: appends of one org serialize.
        let (seq, prev_hash): (i64, String) = sqlx::query_as(
            "UPDATE audit_heads SET seq = seq + 1 WHERE org_id = $1 RETURNING seq, hash",
        )
        .bind(change.org)
        .fetch_one(&mut *conn)
        .await?;
        // Holding the head's lock: a deleted org takes no more writes, even
        // from a request authorized before its deletion committed (every
        // write appends its event, so this is the one place to refuse).
        if change.action != "org.delete" {
            let deleted: Option<Option<DateTime<Utc>>> =
                sqlx::query_scalar("SELECT deleted_at FROM orgs WHERE id = $1")
                    .bind(change.org)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(Some(_)) = deleted {
                return Err(StoreError::NotFound(format!("org {}", change.org)));
            }
        }
        let mut event = AuditRecord {
            seq,
            id: Uuid::now_v7(),
            at: now(),
            actor_id: context.actor_id,
            actor: context.actor,
            credential: context.credential,
            action: change.action.to_owned(),
            resource: change.resource,
            workspace_id: change.workspace.map(|w| w.to_string()).unwrap_or_default(),
            environment: change.environment,
            reason: context.reason,
            summary: if change.summary.is_null() {
                String::new()
            } else {
                change.summary.to_string()
            },
            request_id: context.request_id,
            pruned: 0,
            digest: String::new(),
            prev_hash,
            hash: String::new(),
        };
        event.digest = digest_of(change.org, &event);
        event.hash = chain(&event.prev_hash, &event.digest);
        sqlx::query(
            "INSERT INTO audit_events (org_id, seq, id, at, actor_id, actor, credential, action, resource, \
             workspace_id, environment, reason, summary, request_id, pruned, digest, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, $15, $16, $17)",
        )
        .bind(change.org)
        .bind(event.seq)
        .bind(event.id)
        .bind(event.at)
        .bind(event.actor_id)
        .bind(event.actor)
        .bind(event.credential)
        .bind(event.action)
        .bind(event.resource)
        .bind(event.workspace_id)
        .bind(event.environment)
        .bind(event.reason)
        .bind(event.summary)
        .bind(event.request_id)
        .bind(event.digest)
        .bind(event.prev_hash)
        .bind(event.hash.clone())
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE audit_heads SET hash = $1 WHERE org_id = $2")
            .bind(event.hash)
            .bind(change.org)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

const SELECT_EVENT: &str = "SELECT seq, id, at, actor_id, actor, credential, action, resource, workspace_id, \
     environment, reason, summary, request_id, pruned, digest, prev_hash, hash FROM audit_events ";

#[async_trait]
impl<DB> AuditStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn list_audit(
        &self,
        org: Uuid,
        filter: &AuditFilter,
        before_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<AuditRecord, i64>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        // Bounds both backends can store.
        let far_past = DateTime::<Utc>::UNIX_EPOCH;
        let far_future = DateTime::parse_from_rfc3339("9999-12-31T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        let items: Vec<AuditRecord> = sqlx::query_as(&format!(
            "{SELECT_EVENT}WHERE org_id = $1 AND seq < $2 \
             AND ($3 = '' OR workspace_id = $3) AND ($4 = '' OR environment = $4) \
             AND ($5 = '' OR actor_id = $5) AND ($6 = '' OR action LIKE $7 ESCAPE '!') \
             AND at >= $8 AND at <= $9 ORDER BY seq DESC LIMIT $10"
        ))
        .bind(org)
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(filter.workspace.map(|w| w.to_string()).unwrap_or_default())
        .bind(filter.environment.clone())
        .bind(filter.actor_id.clone())
        .bind(filter.action_prefix.clone())
        // `_` and `%` in the prefix are literal (action names have `_`).
        .bind(format!(
            "{}%",
            filter
                .action_prefix
                .replace('!', "!!")
                .replace('%', "!%")
                .replace('_', "!_")
        ))
        .bind(filter.since.unwrap_or(far_past))
        .bind(filter.until.unwrap_or(far_future))
        .bind(page_limit(limit) + 1)
        .fetch_all(&mut *tx)
        .await?;
        Ok(Page::from_overfetch(items, limit, |e| e.seq))
    }

    async fn verify_audit(&self, org: Uuid) -> StoreResult<Verification> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let events: Vec<AuditRecord> =
            sqlx::query_as(&format!("{SELECT_EVENT}WHERE org_id = $1 ORDER BY seq"))
                .bind(org)
                .fetch_all(&mut *tx)
                .await?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE org_id = $1")
                .bind(org)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        let (head_seq, head_hash) = head.unwrap_or((0, GENESIS.to_owned()));
        let mut broken = None;
        let mut prev = GENESIS.to_owned();
        for (index, event) in events.iter().enumerate() {
            let expected_seq = i64::try_from(index).unwrap_or(i64::MAX) + 1;
            let problem = if event.seq != expected_seq {
                Some(format!(
                    "event {expected_seq} is missing (the next one is {})",
                    event.seq
                ))
            } else if event.prev_hash != prev {
                Some("it does not chain to the event before it".to_owned())
            } else if event.pruned == 0 && digest_of(org, event) != event.digest {
                Some("its content was changed after it was written".to_owned())
            } else if chain(&event.prev_hash, &event.digest) != event.hash {
                Some("its hash does not match its content".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                broken = Some((expected_seq, problem));
                break;
            }
            prev = event.hash.clone();
        }
        if broken.is_none() {
            let last = events.last().map(|e| e.seq).unwrap_or(0);
            if last != head_seq || prev != head_hash {
                broken = Some((
                    last + 1,
                    format!(
                        "the chain ends at event {last}, but the org's head is event {head_seq}: events were removed"
                    ),
                ));
            }
        }
        Ok(Verification {
            events: events.len() as u64,
            head_seq,
            head_hash,
            broken,
        })
    }

    async fn prune_audit(
        &self,
        org: Uuid,
        retention: &[(String, u32)],
        protected: &[String],
        dry_run: bool,
    ) -> StoreResult<PruneOutcome> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        // Every protected environment is reported, named in the retention
        // or not, so a caller sees what is never pruned.
        let mut outcome = PruneOutcome {
            protected: protected.to_vec(),
            ..Default::default()
        };
        for (environment, days) in retention {
            if protected.contains(environment) {
                continue;
            }
            let cutoff = now() - chrono::Duration::days(i64::from(*days));
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit_events WHERE org_id = $1 AND environment = $2 AND at < $3 AND pruned = 0",
            )
            .bind(org)
            .bind(environment.clone())
            .bind(cutoff)
            .fetch_one(&mut *tx)
            .await?;
            if !dry_run && count > 0 {
                sqlx::query(&format!(
                    "UPDATE audit_events SET {PRUNE} \
                     WHERE org_id = $1 AND environment = $2 AND at < $3 AND pruned = 0"
                ))
                .bind(org)
                .bind(environment.clone())
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            }
            outcome
                .by_environment
                .push((environment.clone(), u64::try_from(count).unwrap_or(0)));
        }
        if !dry_run {
            // Pruning is on the record too, with what it pruned.
            let pruned: serde_json::Map<String, serde_json::Value> = outcome
                .by_environment
                .iter()
                .map(|(environment, events)| (environment.clone(), (*events).into()))
                .collect();
            let days: serde_json::Map<String, serde_json::Value> = retention
                .iter()
                .map(|(environment, days)| (environment.clone(), (*days).into()))
                .collect();
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(org, "audit.prune", "audit").summary(serde_json::json!({
                    "retention_days": days,
                    "pruned": pruned,
                })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn org_ids(&self) -> StoreResult<Vec<Uuid>> {
        // For the retention job, which then works org by org.
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        // Deleted orgs' chains are pruned whole already.
        Ok(
            sqlx::query_scalar("SELECT id FROM orgs WHERE deleted_at IS NULL ORDER BY id")
                .fetch_all(&mut *tx)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_cover_every_field_and_hashes_chain() {
        let org = Uuid::now_v7();
        let event = AuditRecord {
            seq: 1,
            id: Uuid::now_v7(),
            at: now(),
            actor_id: "user:1".into(),
            actor: "ada@acme.io".into(),
            credential: "api_token".into(),
            action: "workspace.create".into(),
            resource: "workspace/shop".into(),
            workspace_id: String::new(),
            environment: String::new(),
            reason: String::new(),
            summary: "{}".into(),
            request_id: "r1".into(),
            pruned: 0,
            digest: String::new(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        let digest = digest_of(org, &event);
        let mut edited = event.clone();
        edited.summary = r#"{"x":1}"#.into();
        assert_ne!(digest_of(org, &edited), digest);
        let mut moved = event.clone();
        moved.seq = 2;
        assert_ne!(digest_of(org, &moved), digest);
        assert_ne!(digest_of(Uuid::now_v7(), &event), digest);
        assert_ne!(chain(GENESIS, &digest), chain(&digest, GENESIS));
        assert_eq!(chain(GENESIS, &digest).len(), 64);
    }
}
