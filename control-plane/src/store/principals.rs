//! Principals (users and service accounts) and their API tokens: finding the
//! principal a token or a login names, and managing both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::governance::access::OrgRole;
use mockplane_shared::model::org::Quota;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{Scope, check_version, db_error, now, page_limit};
use super::{Dialect, Page, SqlStore, StoreError, StoreResult};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    User,
    Service,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(PrincipalKind::User),
            "service" => Some(PrincipalKind::Service),
            _ => None,
        }
    }
}

/// The authenticated caller of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org_id: Uuid,
    pub id: Uuid,
    pub kind: PrincipalKind,
    pub org_role: OrgRole,
    /// The e-mail of a user, the name of a service account: how audit
    /// events name the actor.
    pub display: String,
    /// Signed in with a one-time password not yet replaced.
    pub must_change_password: bool,
    /// Holds the platform role above orgs: creates orgs, sets quotas.
    pub platform_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub kind: PrincipalKind,
    pub email: Option<String>,
    pub name: String,
    pub org_role: OrgRole,
    pub disabled: bool,
    /// Has a one-time password not yet replaced.
    pub must_change_password: bool,
    /// Holds the platform role above orgs.
    pub platform_admin: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PrincipalRecord {
    pub fn principal(&self) -> Principal {
        Principal {
            org_id: self.org_id,
            id: self.id,
            kind: self.kind,
            org_role: self.org_role,
            display: self.email.clone().unwrap_or_else(|| self.name.clone()),
            must_change_password: self.must_change_password,
            platform_admin: self.platform_admin,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPrincipal {
    pub kind: PrincipalKind,
    /// Lowercased; users only.
    pub email: Option<String>,
    pub name: String,
    pub org_role: OrgRole,
    pub password_hash: Option<String>,
    /// A one-time password: its sessions may only change it.
    pub must_change_password: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalPatch {
    pub name: Option<String>,
    pub org_role: Option<OrgRole>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub principal_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
pub(super) struct PrincipalRow {
    id: Uuid,
    org_id: Uuid,
    kind: String,
    email: Option<String>,
    name: String,
    org_role: String,
    disabled: i32,
    must_change_password: i32,
    platform_admin: i32,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub(super) const SELECT_PRINCIPAL: &str = "SELECT id, org_id, kind, email, name, org_role, disabled, must_change_password, platform_admin, version, created_at, updated_at FROM principals ";

impl PrincipalRow {
    pub(super) fn into_record(self) -> StoreResult<PrincipalRecord> {
        let corrupt = |what: &str| {
            StoreError::Internal(format!("principal {} has an unreadable {what}", self.id))
        };
        Ok(PrincipalRecord {
            kind: PrincipalKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            org_role: OrgRole::parse(&self.org_role).map_err(|_| corrupt("org role"))?,
            id: self.id,
            org_id: self.org_id,
            email: self.email,
            name: self.name,
            disabled: self.disabled != 0,
            must_change_password: self.must_change_password != 0,
            platform_admin: self.platform_admin != 0,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
struct TokenRow {
    id: Uuid,
    principal_id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for TokenRecord {
    fn from(row: TokenRow) -> Self {
        TokenRecord {
            id: row.id,
            principal_id: row.principal_id,
            name: row.name,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        }
    }
}

const SELECT_TOKEN: &str =
    "SELECT id, principal_id, name, created_at, expires_at, last_used_at FROM api_tokens ";

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
    /// Refuses a change that would leave the org without an active owner
    /// (the caller's principal is the one about to stop being one).
    async fn ensure_another_active_owner(conn: &mut DB::Connection, org: Uuid) -> StoreResult<()> {
        let owners: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM principals WHERE org_id = $1 AND org_role = 'owner' AND disabled = 0",
        )
        .bind(org)
        .fetch_one(&mut *conn)
        .await?;
        if owners <= 1 {
            return Err(StoreError::FailedPrecondition(
                "this is the org's last active owner; make another principal owner first".into(),
            ));
        }
        Ok(())
    }

    pub(super) async fn insert_principal(
        conn: &mut DB::Connection,
        org: Uuid,
        new: &NewPrincipal,
        now: DateTime<Utc>,
    ) -> StoreResult<PrincipalRecord> {
        let id = Uuid::now_v7();
        let email = new.email.as_ref().map(|e| e.to_lowercase());
        sqlx::query(
            "INSERT INTO principals (id, org_id, kind, email, name, org_role, password_hash, disabled, must_change_password, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $9, 1, $8, $8)",
        )
        .bind(id)
        .bind(org)
        .bind(new.kind.as_str().to_owned())
        .bind(email.clone())
        .bind(new.name.clone())
        .bind(new.org_role.as_str().to_owned())
        .bind(new.password_hash.clone())
        .bind(now)
        .bind(i32::from(new.must_change_password))
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            db_error(e, || match &email {
                Some(email) => StoreError::AlreadyExists(format!("a user with e-mail '{email}' already exists")),
                None => StoreError::AlreadyExists(format!(
                    "a service account named '{}' already exists",
                    new.name
                )),
            })
        })?;
        Ok(PrincipalRecord {
            id,
            org_id: org,
            kind: new.kind,
            email,
            name: new.name.clone(),
            org_role: new.org_role,
            disabled: false,
            must_change_password: new.must_change_password,
            platform_admin: false,
            version: 1,
            created_at: now,
            updated_at: now,
        })
    }

    pub(super) async fn insert_token(
        conn: &mut DB::Connection,
        org: Uuid,
        principal: Uuid,
        name: &str,
        token_hash: &str,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> StoreResult<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO api_tokens (id, org_id, principal_id, name, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(org)
        .bind(principal)
        .bind(name.to_owned())
        .bind(token_hash.to_owned())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(e, || StoreError::AlreadyExists("that token already exists".into())))?;
        Ok(id)
    }
}

#[async_trait]
pub trait PrincipalStore: Send + Sync {
    /// The principal an API token belongs to, when the token is neither
    /// expired nor its principal disabled. Notes the token's last use.
    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<Principal>>;
    /// The principal as it is now (role changes and disabling apply at
    /// once, even to access tokens issued before).
    async fn find_principal(&self, org: Uuid, id: Uuid) -> StoreResult<Option<Principal>>;
    /// A user by e-mail, with the password hash to check.
    async fn find_login(&self, email: &str) -> StoreResult<Option<(Principal, Option<String>)>>;
    async fn create_principal(&self, org: Uuid, new: NewPrincipal) -> StoreResult<PrincipalRecord>;
    async fn get_principal(&self, org: Uuid, id: Uuid) -> StoreResult<PrincipalRecord>;
    async fn list_principals(
        &self,
        org: Uuid,
        kind: Option<PrincipalKind>,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<PrincipalRecord, Uuid>>;
    async fn update_principal(
        &self,
        org: Uuid,
        id: Uuid,
        patch: &PrincipalPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<PrincipalRecord>;
    async fn set_password(&self, org: Uuid, id: Uuid, password_hash: &str) -> StoreResult<()>;
    async fn delete_principal(&self, org: Uuid, id: Uuid) -> StoreResult<()>;
    async fn create_api_token(
        &self,
        org: Uuid,
        principal: Uuid,
        name: &str,
        token_hash: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TokenRecord>;
    async fn list_api_tokens(&self, org: Uuid, principal: Uuid) -> StoreResult<Vec<TokenRecord>>;
    async fn get_api_token(&self, org: Uuid, id: Uuid) -> StoreResult<TokenRecord>;
    async fn revoke_api_token(&self, org: Uuid, id: Uuid) -> StoreResult<()>;
}

#[async_trait]
impl<DB> PrincipalStore for SqlStore<DB>
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
    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<Principal>> {
        let now = now();
        // Only the look-up by secret spans orgs; the rest is the token's org.
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let row: Option<(Uuid, Option<DateTime<Utc>>, Option<DateTime<Utc>>, Uuid, Uuid)> =
            sqlx::query_as(
                "SELECT id, expires_at, last_used_at, principal_id, org_id FROM api_tokens WHERE token_hash = $1",
            )
            .bind(token_hash.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((id, expires_at, last_used_at, principal_id, org)) = row else {
            return Ok(None);
        };
        if expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        SqlStore::<DB>::enter(&mut tx, Scope::Org(org)).await?;
        let record =
            sqlx::query_as::<DB, PrincipalRow>(&format!("{SELECT_PRINCIPAL}WHERE id = $1"))
                .bind(principal_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(PrincipalRow::into_record)
                .transpose()?;
        let Some(record) = record.filter(|r| !r.disabled) else {
            return Ok(None);
        };
        // Last use is kept to the minute: one write a minute per token, not
        // one per request.
        if last_used_at.is_none_or(|at| now - at > chrono::Duration::minutes(1)) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(record.principal()))
    }

    async fn find_principal(&self, org: Uuid, id: Uuid) -> StoreResult<Option<Principal>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let record = sqlx::query_as::<DB, PrincipalRow>(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND id = $2"
        ))
        .bind(org)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(PrincipalRow::into_record)
        .transpose()?;
        Ok(record.filter(|r| !r.disabled).map(|r| r.principal()))
    }

    async fn find_login(&self, email: &str) -> StoreResult<Option<(Principal, Option<String>)>> {
        // E-mail addresses are unique across orgs: the look-up by address
        // spans them, the rest is the user's org.
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let row: Option<(Uuid, Option<String>, Uuid)> = sqlx::query_as(
            "SELECT id, password_hash, org_id FROM principals WHERE email = $1 AND kind = 'user' AND disabled = 0",
        )
        .bind(email.to_lowercase())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, hash, org)) = row else {
            return Ok(None);
        };
        SqlStore::<DB>::enter(&mut tx, Scope::Org(org)).await?;
        let record =
            sqlx::query_as::<DB, PrincipalRow>(&format!("{SELECT_PRINCIPAL}WHERE id = $1"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .into_record()?;
        Ok(Some((record.principal(), hash)))
    }

    async fn create_principal(&self, org: Uuid, new: NewPrincipal) -> StoreResult<PrincipalRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        SqlStore::<DB>::enforce_quota(&mut tx, org, Quota::Members, 1).await?;
        let record = SqlStore::<DB>::insert_principal(&mut tx, org, &new, now()).await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                match new.kind {
                    PrincipalKind::User => "user.create",
                    PrincipalKind::Service => "service_account.create",
                },
                format!("principal/{}", record.id),
            )
            .summary(json!({"after": {"email": record.email, "name": record.name, "org_role": record.org_role.as_str()}})),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_principal(&self, org: Uuid, id: Uuid) -> StoreResult<PrincipalRecord> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        sqlx::query_as::<DB, PrincipalRow>(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND id = $2"
        ))
        .bind(org)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("principal {id}")))?
        .into_record()
    }

    async fn list_principals(
        &self,
        org: Uuid,
        kind: Option<PrincipalKind>,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<PrincipalRecord, Uuid>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let rows: Vec<PrincipalRow> = sqlx::query_as(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND ($2 = '' OR kind = $2) AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(org)
        .bind(kind.map(|k| k.as_str()).unwrap_or("").to_owned())
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(page_limit(limit) + 1)
        .fetch_all(&mut *tx)
        .await?;
        let items = rows
            .into_iter()
            .map(PrincipalRow::into_record)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |p| p.id))
    }

    async fn update_principal(
        &self,
        org: Uuid,
        id: Uuid,
        patch: &PrincipalPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<PrincipalRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let current = sqlx::query_as::<DB, PrincipalRow>(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND id = $2"
        ))
        .bind(org)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("principal {id}")))?
        .into_record()?;
        check_version(format!("principal {id}"), current.version, expected_version)?;
        let org_role = patch.org_role.unwrap_or(current.org_role);
        let disabled = patch.disabled.unwrap_or(current.disabled);
        let losing_owner = current.org_role == OrgRole::Owner
            && !current.disabled
            && (org_role != OrgRole::Owner || disabled);
        if losing_owner {
            SqlStore::<DB>::ensure_another_active_owner(&mut tx, org).await?;
        }
        let name = patch.name.clone().unwrap_or(current.name.clone());
        let updated = now();
        sqlx::query(
            "UPDATE principals SET name = $1, org_role = $2, disabled = $3, version = version + 1, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(name.clone())
        .bind(org_role.as_str().to_owned())
        .bind(i32::from(disabled))
        .bind(updated)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("a {} named '{name}' already exists", current.kind.as_str()))
            })
        })?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "principal.update", format!("principal/{id}")).summary(json!({
                "before": {"name": current.name, "org_role": current.org_role.as_str(), "disabled": current.disabled},
                "after": {"name": name, "org_role": org_role.as_str(), "disabled": disabled},
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(PrincipalRecord {
            name,
            org_role,
            disabled,
            version: current.version + 1,
            updated_at: updated,
            ..current
        })
    }

    async fn set_password(&self, org: Uuid, id: Uuid, password_hash: &str) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let done = sqlx::query(
            "UPDATE principals SET password_hash = $1, must_change_password = 0, updated_at = $2 WHERE org_id = $3 AND id = $4 AND kind = 'user'",
        )
        .bind(password_hash.to_owned())
        .bind(now())
        .bind(org)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("user {id}")));
        }
        // A new password ends every session opened with the old one.
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE principal_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "user.password", format!("principal/{id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_principal(&self, org: Uuid, id: Uuid) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let found: Option<(String, i32)> = sqlx::query_as(
            "SELECT org_role, disabled FROM principals WHERE org_id = $1 AND id = $2",
        )
        .bind(org)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (role, disabled) =
            found.ok_or_else(|| StoreError::NotFound(format!("principal {id}")))?;
        // A disabled owner is not one of the owners the org relies on.
        if role == "owner" && disabled == 0 {
            SqlStore::<DB>::ensure_another_active_owner(&mut tx, org).await?;
        }
        sqlx::query("DELETE FROM principals WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "principal.delete", format!("principal/{id}"))
                .summary(json!({"before": {"org_role": role}})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_api_token(
        &self,
        org: Uuid,
        principal: Uuid,
        name: &str,
        token_hash: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TokenRecord> {
        let mut conn = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM principals WHERE org_id = $1 AND id = $2")
                .bind(org)
                .bind(principal)
                .fetch_optional(&mut *conn)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("principal {principal}")));
        }
        let id = SqlStore::<DB>::insert_token(
            &mut conn,
            org,
            principal,
            name,
            token_hash,
            now(),
            expires_at,
        )
        .await?;
        let record = sqlx::query_as::<DB, TokenRow>(&format!("{SELECT_TOKEN}WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map(TokenRecord::from)?;
        SqlStore::<DB>::append(
            &mut conn,
            Change::new(org, "api_token.create", format!("api_token/{id}")).summary(json!({
                "after": {"principal": principal.to_string(), "name": name, "expires_at": expires_at.map(|t| t.to_rfc3339())}
            })),
        )
        .await?;
        conn.commit().await?;
        Ok(record)
    }

    async fn list_api_tokens(&self, org: Uuid, principal: Uuid) -> StoreResult<Vec<TokenRecord>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "{SELECT_TOKEN}WHERE org_id = $1 AND principal_id = $2 ORDER BY id"
        ))
        .bind(org)
        .bind(principal)
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows.into_iter().map(TokenRecord::from).collect())
    }

    async fn get_api_token(&self, org: Uuid, id: Uuid) -> StoreResult<TokenRecord> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        sqlx::query_as::<DB, TokenRow>(&format!("{SELECT_TOKEN}WHERE org_id = $1 AND id = $2"))
            .bind(org)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(TokenRecord::from)
            .ok_or_else(|| StoreError::NotFound(format!("API token {id}")))
    }

    async fn revoke_api_token(&self, org: Uuid, id: Uuid) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let done = sqlx::query("DELETE FROM api_tokens WHERE org_id = $1 AND id = $2")
            .bind(org)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("API token {id}")));
        }
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "api_token.revoke", format!("api_token/{id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
