//! The store as a whole (its backend, job locks, closing) and orgs: the
//! first run's bootstrap, creating one, adding an owner token, reading and
//! changing an org's settings, and the quotas every create checks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::governance::access::OrgRole;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use mockplane_shared::model::org::{OrgSettings, Quota, parse_delete_reason, parse_display_name};

use super::audit::Change;
use super::tx::{Scope, SqlStore, check_version, db_error, now, to_u64};
use super::{Bootstrapped, Dialect, NewPrincipal, PrincipalKind, Store, StoreError, StoreResult};
use serde_json::json;

#[async_trait]
impl<DB> Store for SqlStore<DB>
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
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn watch_config_changes(
        &self,
        wake: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        // This replica's commits, told by the transactions themselves.
        let local = self.committed.add(wake.clone());
        DB::watch_changes(self.pool.clone(), wake, shutdown.clone()).await;
        shutdown.cancelled().await;
        self.committed.remove(local);
    }

    async fn job_lock(&self, job: &str) -> StoreResult<Option<super::JobLock>> {
        Ok(DB::try_job_lock(self.pool.clone(), super::dialect::job_key(job)).await?)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn bootstrap(
        &self,
        org_name: &str,
        admin: &NewPrincipal,
        token_hash: &str,
    ) -> StoreResult<Option<Bootstrapped>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orgs")
            .fetch_one(&mut *tx)
            .await?;
        if orgs > 0 {
            return Ok(None);
        }
        let now = now();
        let org_id = match SqlStore::<DB>::insert_org(&mut tx, org_name, now).await {
            Ok(id) => id,
            // Another replica bootstrapped between our count and our insert.
            Err(StoreError::AlreadyExists(_)) => return Ok(None),
            Err(other) => return Err(other),
        };
        let owner = SqlStore::<DB>::insert_principal(&mut tx, org_id, admin, now).await?;
        // The first run's owner holds the platform role above orgs.
        sqlx::query("UPDATE principals SET platform_admin = 1 WHERE id = $1")
            .bind(owner.id)
            .execute(&mut *tx)
            .await?;
        SqlStore::<DB>::insert_token(&mut tx, org_id, owner.id, "admin", token_hash, now, None)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org_id, "org.bootstrap", format!("org/{org_name}"))
                .summary(json!({"owner": owner.id.to_string()})),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Bootstrapped {
            org_id,
            org_name: org_name.to_owned(),
            admin_id: owner.id,
        }))
    }

    async fn create_org(&self, name: &str) -> StoreResult<Uuid> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let id = SqlStore::<DB>::insert_org(&mut tx, name, now()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn add_token(
        &self,
        org_name: &str,
        token_name: &str,
        token_hash: &str,
    ) -> StoreResult<Uuid> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let org_id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1 AND deleted_at IS NULL")
                .bind(org_name.to_owned())
                .fetch_optional(&mut *tx)
                .await?;
        let org_id = org_id.ok_or_else(|| StoreError::NotFound(format!("org '{org_name}'")))?;
        let now = now();
        let owner = SqlStore::<DB>::insert_principal(
            &mut tx,
            org_id,
            &NewPrincipal {
                kind: PrincipalKind::Service,
                email: None,
                name: token_name.to_owned(),
                org_role: OrgRole::Owner,
                password_hash: None,
                must_change_password: false,
            },
            now,
        )
        .await?;
        // A replacement for a lost admin token holds what the org's
        // owners hold: the platform role where they do.
        sqlx::query(
            "UPDATE principals SET platform_admin = 1 WHERE id = $1 AND EXISTS \
             (SELECT 1 FROM principals WHERE org_id = $2 AND platform_admin = 1)",
        )
        .bind(owner.id)
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
        let id = SqlStore::<DB>::insert_token(
            &mut tx, org_id, owner.id, token_name, token_hash, now, None,
        )
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org_id,
                "service_account.create",
                format!("principal/{}", owner.id),
            )
            .summary(json!({"name": token_name, "org_role": "owner", "token": id.to_string()})),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }
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
    async fn insert_org(
        conn: &mut DB::Connection,
        name: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name.to_owned())
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                db_error(e, || {
                    StoreError::AlreadyExists(format!("an org named '{name}' already exists"))
                })
            })?;
        Ok(id)
    }
}

/// An org with its settings and what it uses of its quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub settings: OrgSettings,
    pub usage: OrgUsage,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an org holds now, of what its quotas count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgUsage {
    pub workspaces: u64,
    pub api_keys: u64,
    pub members: u64,
}

/// What deleting an org removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedOrg {
    pub name: String,
    pub usage: OrgUsage,
    /// Its audit events, now pruned (the `org.delete` event is not).
    pub audit_events_pruned: u64,
}

/// Changes to an org; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgPatch {
    pub display_name: Option<String>,
    /// `Some(None)`: back to the default.
    pub members_create_workspaces: Option<Option<bool>>,
    /// Quotas to set; `None` for one: back to its default.
    pub quotas: Vec<(Quota, Option<u32>)>,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: Uuid,
    name: String,
    display_name: String,
    settings: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    workspaces: i64,
    api_keys: i64,
    members: i64,
}

impl OrgRow {
    fn into_record(self) -> OrgRecord {
        OrgRecord {
            id: self.id,
            name: self.name,
            display_name: self.display_name,
            settings: OrgSettings::from_stored(&self.settings),
            usage: OrgUsage {
                workspaces: to_u64(self.workspaces),
                api_keys: to_u64(self.api_keys),
                members: to_u64(self.members),
            },
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at.unwrap_or(self.created_at),
        }
    }
}

/// An org with what it uses of its quotas, counted as the quotas count
/// (see `count`), in one statement however many orgs it reads.
const SELECT_ORG: &str = "SELECT o.id, o.name, o.display_name, o.settings, o.version, o.created_at, o.updated_at, \
     (SELECT COUNT(*) FROM workspaces w WHERE w.org_id = o.id) AS workspaces, \
     (SELECT COUNT(*) FROM api_keys k WHERE k.org_id = o.id) AS api_keys, \
     (SELECT COUNT(*) FROM principals p WHERE p.org_id = o.id) AS members \
     FROM orgs o ";

#[async_trait]
pub trait OrgStore: Send + Sync {
    /// The org an id or name names, whichever org it is: for platform
    /// admins, who act in any org. `None` when there is none.
    async fn find_org(&self, name_or_id: &str) -> StoreResult<Option<Uuid>>;
    /// The org with its settings and usage.
    async fn get_org(&self, org: Uuid) -> StoreResult<OrgRecord>;
    /// Creates org `name` with its first owner, in one transaction: a name
    /// or e-mail already taken leaves nothing made. Audited as
    /// `org.create` in the new org and, when a platform admin of another
    /// org (`creator_org`) made it, there too.
    async fn create_org_with_owner(
        &self,
        name: &str,
        display_name: &str,
        owner: &NewPrincipal,
        creator_org: Option<Uuid>,
    ) -> StoreResult<(OrgRecord, super::PrincipalRecord)>;
    /// Every org, by name, after `after`.
    async fn list_orgs(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<super::Page<OrgRecord, String>>;
    /// Deletes the org, in one transaction: its workspaces (with
    /// everything in them), people, tokens and roles go, nodes are told
    /// its workspaces are gone, and its audit events are pruned (the hash
    /// chain stays and verifies). The org's row stays as a tombstone whose
    /// name is not reused. Audited as `org.delete`, with `reason`, in the
    /// org (the one event of its chain not pruned) and in `deleter_org`.
    /// Refused (`FailedPrecondition`) when it would leave the platform
    /// without a platform admin.
    async fn delete_org(
        &self,
        org: Uuid,
        reason: &str,
        deleter_org: Option<Uuid>,
        expected_version: Option<i64>,
    ) -> StoreResult<DeletedOrg>;
    /// Applies `patch` (checked: a quota out of range is `Invalid`);
    /// audited as `org.update`.
    async fn update_org(
        &self,
        org: Uuid,
        patch: &OrgPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<OrgRecord>;
}

#[async_trait]
impl<DB> OrgStore for SqlStore<DB>
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
    async fn find_org(&self, name_or_id: &str) -> StoreResult<Option<Uuid>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let found: Option<Uuid> = match Uuid::try_parse(name_or_id) {
            Ok(id) => {
                sqlx::query_scalar("SELECT id FROM orgs WHERE id = $1 AND deleted_at IS NULL")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            Err(_) => {
                sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1 AND deleted_at IS NULL")
                    .bind(name_or_id.to_owned())
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        Ok(found)
    }

    async fn get_org(&self, org: Uuid) -> StoreResult<OrgRecord> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let record = SqlStore::<DB>::read_org(&mut tx, org).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn create_org_with_owner(
        &self,
        name: &str,
        display_name: &str,
        owner: &NewPrincipal,
        creator_org: Option<Uuid>,
    ) -> StoreResult<(OrgRecord, super::PrincipalRecord)> {
        let display_name = parse_display_name(display_name)?;
        let display_name = display_name.as_str();
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let now = now();
        let deleted: Option<Option<DateTime<Utc>>> =
            sqlx::query_scalar("SELECT deleted_at FROM orgs WHERE name = $1")
                .bind(name.to_owned())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(Some(deleted_at)) = deleted {
            return Err(StoreError::AlreadyExists(format!(
                "the name '{name}' belonged to an org deleted on {}; a deleted org's name is not reused (its audit trail names it)",
                deleted_at.format("%Y-%m-%d")
            )));
        }
        let org = SqlStore::<DB>::insert_org(&mut tx, name, now).await?;
        sqlx::query("UPDATE orgs SET display_name = $1 WHERE id = $2")
            .bind(display_name.to_owned())
            .bind(org)
            .execute(&mut *tx)
            .await?;
        let owner = SqlStore::<DB>::insert_principal(&mut tx, org, owner, now).await?;
        let summary = json!({
            "name": name,
            "display_name": display_name,
            "owner": owner.email,
        });
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "org.create", format!("org/{name}")).summary(summary.clone()),
        )
        .await?;
        if let Some(creator) = creator_org.filter(|creator| *creator != org) {
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(creator, "org.create", format!("org/{name}")).summary(summary),
            )
            .await?;
        }
        let record = SqlStore::<DB>::read_org(&mut tx, org).await?;
        tx.commit().await?;
        Ok((record, owner))
    }

    async fn list_orgs(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<super::Page<OrgRecord, String>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let rows: Vec<OrgRow> = sqlx::query_as(&format!(
            "{SELECT_ORG}WHERE o.name > $1 AND o.deleted_at IS NULL ORDER BY o.name LIMIT $2"
        ))
        .bind(after.unwrap_or_default())
        .bind(super::tx::page_limit(limit) + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let items = rows.into_iter().map(OrgRow::into_record).collect();
        Ok(super::Page::from_overfetch(items, limit, |o| {
            o.name.clone()
        }))
    }

    async fn delete_org(
        &self,
        org: Uuid,
        reason: &str,
        deleter_org: Option<Uuid>,
        expected_version: Option<i64>,
    ) -> StoreResult<DeletedOrg> {
        let reason = parse_delete_reason(reason)?;
        // System scope: the deletion reaches every row of the org and the
        // deleter's audit chain, which may be another org's.
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        // Locks the org and every org holding a platform admin, in one
        // order: two deletions at once cannot each count on the other's
        // admins and leave none.
        let locked: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT id FROM orgs WHERE deleted_at IS NULL AND (id = $1 OR id IN \
             (SELECT org_id FROM principals WHERE platform_admin = 1)) ORDER BY id{}",
            DB::FOR_UPDATE
        ))
        .bind(org)
        .fetch_all(&mut *tx)
        .await?;
        if !locked.contains(&org) {
            return Err(StoreError::NotFound(format!("org {org}")));
        }
        let current = SqlStore::<DB>::read_org(&mut tx, org).await?;
        check_version(
            format!("org '{}'", current.name),
            current.version,
            expected_version,
        )?;
        let admins_elsewhere: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM principals p JOIN orgs o ON o.id = p.org_id \
             WHERE p.platform_admin = 1 AND p.disabled = 0 AND p.org_id <> $1 AND o.deleted_at IS NULL",
        )
        .bind(org)
        .fetch_one(&mut *tx)
        .await?;
        let admins_here: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM principals WHERE platform_admin = 1 AND org_id = $1",
        )
        .bind(org)
        .fetch_one(&mut *tx)
        .await?;
        if admins_here > 0 && admins_elsewhere == 0 {
            return Err(StoreError::FailedPrecondition(format!(
                "org '{}' holds every platform admin; deleting it would leave nobody to run the platform",
                current.name
            )));
        }
        let workspaces: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM workspaces WHERE org_id = $1")
                .bind(org)
                .fetch_all(&mut *tx)
                .await?;
        // Workspaces take everything in them along (environments, routes,
        // scenarios, keys, promotions, memberships, usage, deliveries);
        // people take their sessions and tokens.
        for table in [
            "workspaces",
            "refresh_tokens",
            "api_tokens",
            "principals",
            "roles",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE org_id = $1"))
                .bind(org)
                .execute(&mut *tx)
                .await?;
        }
        let pruned = sqlx::query(&format!(
            "UPDATE audit_events SET {} WHERE org_id = $1 AND pruned = 0",
            super::audit::PRUNE
        ))
        .bind(org)
        .execute(&mut *tx)
        .await?;
        let audit_events_pruned = DB::rows_affected(&pruned);
        sqlx::query(
            "UPDATE orgs SET deleted_at = $1, deleted_reason = $2, display_name = '', settings = '{}', \
             approval_rules = NULL, version = version + 1, updated_at = $1 WHERE id = $3",
        )
        .bind(now())
        .bind(reason.clone())
        .bind(org)
        .execute(&mut *tx)
        .await?;
        let summary = json!({
            "name": current.name,
            "workspaces": current.usage.workspaces,
            "api_keys": current.usage.api_keys,
            "members": current.usage.members,
            "audit_events_pruned": audit_events_pruned,
        });
        let resource = format!("org/{}", current.name);
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "org.delete", resource.clone())
                .reason(reason.clone())
                .summary(summary.clone()),
        )
        .await?;
        if let Some(deleter) = deleter_org.filter(|deleter| *deleter != org) {
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(deleter, "org.delete", resource)
                    .reason(reason)
                    .summary(summary),
            )
            .await?;
        }
        // Last (the revision row's lock is taken last): every node drops
        // the workspaces it served.
        for workspace in workspaces {
            SqlStore::<DB>::bump_revision(&mut tx, workspace).await?;
        }
        tx.commit().await?;
        Ok(DeletedOrg {
            name: current.name,
            usage: current.usage,
            audit_events_pruned,
        })
    }

    async fn update_org(
        &self,
        org: Uuid,
        patch: &OrgPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<OrgRecord> {
        let new_display_name = patch
            .display_name
            .as_deref()
            .map(parse_display_name)
            .transpose()?;
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let current = SqlStore::<DB>::read_org(&mut tx, org).await?;
        check_version(
            format!("org '{}'", current.name),
            current.version,
            expected_version,
        )?;
        let mut settings = current.settings;
        if let Some(value) = patch.members_create_workspaces {
            settings.members_create_workspaces = value;
        }
        for (quota, value) in &patch.quotas {
            settings.quotas.set(*quota, *value);
        }
        settings.check().map_err(|e| e.within("settings"))?;
        let display_name = new_display_name.unwrap_or_else(|| current.display_name.clone());
        let updated = now();
        sqlx::query(
            "UPDATE orgs SET display_name = $1, settings = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4",
        )
        .bind(display_name.clone())
        .bind(settings.to_stored())
        .bind(updated)
        .bind(org)
        .execute(&mut *tx)
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "org.update", format!("org/{}", current.name)).summary(json!({
                "before": {"display_name": current.display_name, "settings": current.settings},
                "after": {"display_name": display_name, "settings": settings},
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(OrgRecord {
            display_name,
            settings,
            version: current.version + 1,
            updated_at: updated,
            ..current
        })
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn read_org(conn: &mut DB::Connection, org: Uuid) -> StoreResult<OrgRecord> {
        let row = sqlx::query_as::<DB, OrgRow>(&format!(
            "{SELECT_ORG}WHERE o.id = $1 AND o.deleted_at IS NULL"
        ))
        .bind(org)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("org {org}")))?;
        Ok(row.into_record())
    }

    /// How many of what `quota` counts the org (or, for routes, the
    /// workspace `of`) holds.
    async fn count(conn: &mut DB::Connection, quota: Quota, of: Uuid) -> StoreResult<u64> {
        let sql = match quota {
            Quota::Workspaces => "SELECT COUNT(*) FROM workspaces WHERE org_id = $1",
            Quota::RoutesPerWorkspace => "SELECT COUNT(*) FROM routes WHERE workspace_id = $1",
            Quota::ApiKeys => "SELECT COUNT(*) FROM api_keys WHERE org_id = $1",
            Quota::Members => "SELECT COUNT(*) FROM principals WHERE org_id = $1",
        };
        let count: i64 = sqlx::query_scalar(sql)
            .bind(of)
            .fetch_one(&mut *conn)
            .await?;
        Ok(to_u64(count))
    }

    /// Refuses adding `adding` more of what `quota` counts to the org past
    /// its quota (`LimitExceeded`, naming the quota and its value). Locks
    /// the org's row first on PostgreSQL, so concurrent creates in one org
    /// count one after the other (SQLite's writes are serial anyway).
    pub(super) async fn enforce_quota(
        conn: &mut DB::Connection,
        org: Uuid,
        quota: Quota,
        adding: u64,
    ) -> StoreResult<()> {
        let settings: Option<String> = sqlx::query_scalar(&format!(
            "SELECT settings FROM orgs WHERE id = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(org)
        .fetch_optional(&mut *conn)
        .await?;
        let settings = OrgSettings::from_stored(settings.as_deref().unwrap_or("{}"));
        let have = Self::count(conn, quota, org).await?;
        if have + adding > u64::from(settings.quotas.get(quota)) {
            return Err(StoreError::LimitExceeded(
                settings.quotas.exceeded(quota, have),
            ));
        }
        Ok(())
    }

    /// Refuses a workspace holding more routes than its org's quota
    /// allows (after the change: `routes` is the count with it).
    pub(super) async fn enforce_route_quota(
        conn: &mut DB::Connection,
        workspace: Uuid,
        routes: u64,
    ) -> StoreResult<()> {
        let settings: Option<String> = sqlx::query_scalar(
            "SELECT o.settings FROM orgs o JOIN workspaces w ON w.org_id = o.id WHERE w.id = $1",
        )
        .bind(workspace)
        .fetch_optional(&mut *conn)
        .await?;
        let settings = OrgSettings::from_stored(settings.as_deref().unwrap_or("{}"));
        let quota = settings.quotas.get(Quota::RoutesPerWorkspace);
        if routes > u64::from(quota) {
            return Err(StoreError::LimitExceeded(format!(
                "the org's quota max_routes_per_workspace is {quota} and this change would make the workspace hold {routes} routes; a platform admin can raise it (`mockplane org update --max-routes-per-workspace`)"
            )));
        }
        Ok(())
    }
}
