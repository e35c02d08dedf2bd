//! Identity and access in the store: principals (users and service
//! accounts), API and refresh tokens, custom roles, roles per environment,
//! environment policies and the environment access log.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::FieldError;
use mockplane_shared::access::{OrgRole, Permission, Policies, RoleCatalog, Standing};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::{Change, append};
use super::tx::{Scope, check_version, db_error, enter, now, page_limit};
use super::workspaces::load_workspace;
use super::{Dialect, Page, SqlStore, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub name: String,
    pub description: String,
    pub permissions: BTreeSet<Permission>,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRecord {
    pub principal_id: Uuid,
    pub principal_name: String,
    pub environment: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub environment: String,
    pub permission: Permission,
    pub roles: BTreeSet<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub principal_id: Uuid,
    pub environment: String,
    pub reason: String,
    pub token_id: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Everything an authorization decision about one workspace reads, from
/// one snapshot.
#[derive(Debug, Clone)]
pub struct AccessFacts {
    pub workspace: WorkspaceRecord,
    pub standing: Standing,
    pub policies: Policies,
    pub catalog: RoleCatalog,
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was valid and is now used up.
    Used {
        principal: Principal,
        family: Uuid,
    },
    Unknown,
    Expired,
    /// Used before: the whole family is revoked now.
    Reused,
    /// Revoked (its session was ended) without being used.
    Revoked,
}

#[async_trait]
pub trait AccessStore: Send + Sync {
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

    /// A login: the session's first refresh token (a new family), and its
    /// audit event. Returns the family.
    async fn start_session(
        &self,
        principal: &Principal,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Uuid>;
    /// Uses a refresh token up and, when it was valid, stores the session's
    /// next one (`next`: hash and expiry) in the same transaction. A token
    /// used twice revokes its whole session.
    async fn use_refresh_token(
        &self,
        token_hash: &str,
        next: (&str, DateTime<Utc>),
    ) -> StoreResult<RefreshOutcome>;
    /// A logout: revokes every refresh token of the session `token_hash`
    /// belongs to. `false` when the token is unknown.
    async fn end_session(&self, token_hash: &str) -> StoreResult<bool>;

    async fn create_role(&self, org: Uuid, role: &RoleRecord) -> StoreResult<RoleRecord>;
    async fn list_roles(&self, org: Uuid) -> StoreResult<Vec<RoleRecord>>;
    async fn update_role(
        &self,
        org: Uuid,
        name: &str,
        description: Option<&str>,
        permissions: Option<&BTreeSet<Permission>>,
        expected_version: Option<i64>,
    ) -> StoreResult<RoleRecord>;
    async fn delete_role(&self, org: Uuid, name: &str) -> StoreResult<()>;

    async fn set_membership(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        principal: Uuid,
        environment: &str,
        role: &str,
    ) -> StoreResult<MembershipRecord>;
    async fn remove_membership(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        principal: Uuid,
        environment: &str,
    ) -> StoreResult<()>;
    async fn list_memberships(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<MembershipRecord>>;

    async fn set_policy(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: &str,
        permission: Permission,
        roles: &BTreeSet<String>,
    ) -> StoreResult<PolicyRecord>;
    async fn delete_policy(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: &str,
        permission: Permission,
    ) -> StoreResult<()>;
    async fn list_policies(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<PolicyRecord>>;

    /// The workspace and what the principal holds in it.
    async fn access_facts(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        principal: Uuid,
    ) -> StoreResult<AccessFacts>;

    async fn record_access(
        &self,
        org: Uuid,
        workspace: Uuid,
        grant: &AccessGrant,
    ) -> StoreResult<()>;
    async fn list_access(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        limit: u32,
    ) -> StoreResult<Vec<AccessGrant>>;
}

#[derive(FromRow)]
struct PrincipalRow {
    id: Uuid,
    org_id: Uuid,
    kind: String,
    email: Option<String>,
    name: String,
    org_role: String,
    disabled: i32,
    must_change_password: i32,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const SELECT_PRINCIPAL: &str = "SELECT id, org_id, kind, email, name, org_role, disabled, must_change_password, version, created_at, updated_at FROM principals ";

impl PrincipalRow {
    fn into_record(self) -> StoreResult<PrincipalRecord> {
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

fn parse_permissions(raw: &str, role: &str) -> StoreResult<BTreeSet<Permission>> {
    let names: Vec<String> = serde_json::from_str(raw).map_err(|e| {
        StoreError::Internal(format!("role '{role}' has unreadable permissions: {e}"))
    })?;
    // A permission this build does not know (written by a newer one) is
    // ignored rather than failing every check.
    Ok(names
        .iter()
        .filter_map(|n| Permission::parse(n).ok())
        .collect())
}

fn permissions_json(permissions: &BTreeSet<Permission>) -> String {
    serde_json::to_string(&permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

fn parse_roles(raw: &str) -> StoreResult<BTreeSet<String>> {
    serde_json::from_str(raw)
        .map_err(|e| StoreError::Internal(format!("a policy has unreadable roles: {e}")))
}

fn roles_json(roles: &BTreeSet<String>) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".into())
}

fn environment_of<'a>(workspace: &'a WorkspaceRecord, name: &str) -> StoreResult<&'a str> {
    workspace
        .environment(name)
        .map(|e| e.name.as_str())
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "environment '{name}' of workspace '{}'",
                workspace.slug
            ))
        })
}

#[async_trait]
impl<DB> AccessStore for SqlStore<DB>
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
        enter::<DB>(&mut tx, Scope::Org(org)).await?;
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
        enter::<DB>(&mut tx, Scope::Org(org)).await?;
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
        let record = insert_principal::<DB>(&mut tx, org, &new, now()).await?;
        append::<DB>(
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
            ensure_another_active_owner::<DB>(&mut tx, org).await?;
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
        append::<DB>(
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
        append::<DB>(
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
            ensure_another_active_owner::<DB>(&mut tx, org).await?;
        }
        sqlx::query("DELETE FROM principals WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append::<DB>(
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
        let id = insert_token::<DB>(
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
        append::<DB>(
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
        append::<DB>(
            &mut tx,
            Change::new(org, "api_token.revoke", format!("api_token/{id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn start_session(
        &self,
        principal: &Principal,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Uuid> {
        let mut tx = self
            .begin(DB::BEGIN_WRITE, Scope::Org(principal.org_id))
            .await?;
        let family = Uuid::now_v7();
        insert_refresh_token::<DB>(&mut tx, principal, family, token_hash, expires_at).await?;
        append::<DB>(
            &mut tx,
            session_change(principal, "session.start", "password", family),
        )
        .await?;
        tx.commit().await?;
        Ok(family)
    }

    async fn use_refresh_token(
        &self,
        token_hash: &str,
        next: (&str, DateTime<Utc>),
    ) -> StoreResult<RefreshOutcome> {
        // Only the look-up by secret spans orgs; the rest is the token's org.
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let Some(token) = find_refresh_token::<DB>(&mut tx, token_hash).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        enter::<DB>(&mut tx, Scope::Org(token.org)).await?;
        let now = now();
        if token.used_at.is_none() && token.revoked_at.is_some() {
            return Ok(RefreshOutcome::Revoked);
        }
        let record = sqlx::query_as::<DB, PrincipalRow>(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND id = $2"
        ))
        .bind(token.org)
        .bind(token.principal_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(PrincipalRow::into_record)
        .transpose()?;
        if token.used_at.is_some() {
            revoke_family::<DB>(&mut tx, token.family, now).await?;
            if let Some(record) = &record {
                append::<DB>(
                    &mut tx,
                    session_change(
                        &record.principal(),
                        "session.revoke",
                        "refresh_token",
                        token.family,
                    )
                    .summary(json!({"why": "a refresh token of the session was used twice"})),
                )
                .await?;
            }
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        if token.expires_at <= now {
            return Ok(RefreshOutcome::Expired);
        }
        let Some(principal) = record.filter(|r| !r.disabled).map(|r| r.principal()) else {
            return Ok(RefreshOutcome::Unknown);
        };
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token.id)
            .execute(&mut *tx)
            .await?;
        insert_refresh_token::<DB>(&mut tx, &principal, token.family, next.0, next.1).await?;
        append::<DB>(
            &mut tx,
            session_change(&principal, "session.refresh", "refresh_token", token.family),
        )
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Used {
            principal,
            family: token.family,
        })
    }

    async fn end_session(&self, token_hash: &str) -> StoreResult<bool> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let Some(token) = find_refresh_token::<DB>(&mut tx, token_hash).await? else {
            return Ok(false);
        };
        enter::<DB>(&mut tx, Scope::Org(token.org)).await?;
        let revoked = revoke_family::<DB>(&mut tx, token.family, now()).await?;
        let record = sqlx::query_as::<DB, PrincipalRow>(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND id = $2"
        ))
        .bind(token.org)
        .bind(token.principal_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(PrincipalRow::into_record)
        .transpose()?;
        // Ending a session that had already ended changes nothing.
        if let Some(record) = record.filter(|_| revoked > 0) {
            append::<DB>(
                &mut tx,
                session_change(
                    &record.principal(),
                    "session.end",
                    "refresh_token",
                    token.family,
                ),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn create_role(&self, org: Uuid, role: &RoleRecord) -> StoreResult<RoleRecord> {
        let now = now();
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        sqlx::query(
            "INSERT INTO roles (org_id, name, description, permissions, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $5)",
        )
        .bind(org)
        .bind(role.name.clone())
        .bind(role.description.clone())
        .bind(permissions_json(&role.permissions))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("a role named '{}' already exists", role.name))
            })
        })?;
        append::<DB>(
            &mut tx,
            Change::new(org, "role.create", format!("role/{}", role.name))
                .summary(json!({"after": {"permissions": permissions_json(&role.permissions)}})),
        )
        .await?;
        tx.commit().await?;
        Ok(RoleRecord {
            version: 1,
            ..role.clone()
        })
    }

    async fn list_roles(&self, org: Uuid) -> StoreResult<Vec<RoleRecord>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT name, description, permissions, version FROM roles WHERE org_id = $1 ORDER BY name",
        )
        .bind(org)
        .fetch_all(&mut *tx)
        .await?;
        rows.into_iter()
            .map(|(name, description, permissions, version)| {
                Ok(RoleRecord {
                    permissions: parse_permissions(&permissions, &name)?,
                    name,
                    description,
                    version,
                })
            })
            .collect()
    }

    async fn update_role(
        &self,
        org: Uuid,
        name: &str,
        description: Option<&str>,
        permissions: Option<&BTreeSet<Permission>>,
        expected_version: Option<i64>,
    ) -> StoreResult<RoleRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT description, permissions, version FROM roles WHERE org_id = $1 AND name = $2",
        )
        .bind(org)
        .bind(name.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        let (current_description, current_permissions, version) =
            row.ok_or_else(|| StoreError::NotFound(format!("role '{name}'")))?;
        check_version(format!("role '{name}'"), version, expected_version)?;
        let description = description
            .map(str::to_owned)
            .unwrap_or(current_description);
        let permissions = match permissions {
            Some(permissions) => permissions.clone(),
            None => parse_permissions(&current_permissions, name)?,
        };
        let permissions = &permissions;
        sqlx::query(
            "UPDATE roles SET description = $1, permissions = $2, version = version + 1, updated_at = $3 \
             WHERE org_id = $4 AND name = $5",
        )
        .bind(description.clone())
        .bind(permissions_json(permissions))
        .bind(now())
        .bind(org)
        .bind(name.to_owned())
        .execute(&mut *tx)
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "role.update", format!("role/{name}"))
                .summary(json!({"after": {"permissions": permissions_json(permissions)}})),
        )
        .await?;
        tx.commit().await?;
        Ok(RoleRecord {
            name: name.to_owned(),
            description,
            permissions: permissions.clone(),
            version: version + 1,
        })
    }

    async fn delete_role(&self, org: Uuid, name: &str) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let members: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = $2")
                .bind(org)
                .bind(name.to_owned())
                .fetch_one(&mut *tx)
                .await?;
        let policies: Vec<String> =
            sqlx::query_scalar("SELECT roles FROM env_policies WHERE org_id = $1")
                .bind(org)
                .fetch_all(&mut *tx)
                .await?;
        let in_policies = policies
            .iter()
            .filter(|raw| parse_roles(raw).is_ok_and(|roles| roles.contains(name)))
            .count();
        if members > 0 || in_policies > 0 {
            return Err(StoreError::FailedPrecondition(format!(
                "role '{name}' is in use by {members} memberships and {in_policies} policies; change those first"
            )));
        }
        let done = sqlx::query("DELETE FROM roles WHERE org_id = $1 AND name = $2")
            .bind(org)
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("role '{name}'")));
        }
        append::<DB>(
            &mut tx,
            Change::new(org, "role.delete", format!("role/{name}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_membership(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        principal: Uuid,
        environment: &str,
        role: &str,
    ) -> StoreResult<MembershipRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut tx, org, workspace).await?;
        let environment = environment_of(&ws, environment)?.to_owned();
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM principals WHERE org_id = $1 AND id = $2")
                .bind(org)
                .bind(principal)
                .fetch_optional(&mut *tx)
                .await?;
        let principal_name =
            name.ok_or_else(|| StoreError::NotFound(format!("principal {principal}")))?;
        check_role_exists::<DB>(&mut tx, org, role).await?;
        let created_at = now();
        sqlx::query(
            "INSERT INTO memberships (workspace_id, org_id, principal_id, environment, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (workspace_id, principal_id, environment) DO UPDATE SET role = excluded.role",
        )
        .bind(ws.id)
        .bind(org)
        .bind(principal)
        .bind(environment.clone())
        .bind(role.to_owned())
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "member.set",
                format!("workspace/{}/member/{principal}", ws.slug),
            )
            .workspace(ws.id)
            .environment(environment.clone())
            .summary(json!({"after": {"role": role}})),
        )
        .await?;
        tx.commit().await?;
        Ok(MembershipRecord {
            principal_id: principal,
            principal_name,
            environment,
            role: role.to_owned(),
            created_at,
        })
    }

    async fn remove_membership(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        principal: Uuid,
        environment: &str,
    ) -> StoreResult<()> {
        let mut conn = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut conn, org, workspace).await?;
        let done = sqlx::query(
            "DELETE FROM memberships WHERE workspace_id = $1 AND principal_id = $2 AND environment = $3",
        )
        .bind(ws.id)
        .bind(principal)
        .bind(environment.to_owned())
        .execute(&mut *conn)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!(
                "a role of principal {principal} in '{environment}' of {workspace}"
            )));
        }
        append::<DB>(
            &mut conn,
            Change::new(
                org,
                "member.remove",
                format!("workspace/{}/member/{principal}", ws.slug),
            )
            .workspace(ws.id)
            .environment(environment),
        )
        .await?;
        conn.commit().await?;
        Ok(())
    }

    async fn list_memberships(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<MembershipRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut conn, org, workspace).await?;
        let rows: Vec<(Uuid, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT m.principal_id, p.name, m.environment, m.role, m.created_at FROM memberships m \
             JOIN principals p ON p.id = m.principal_id WHERE m.workspace_id = $1 \
             ORDER BY p.name, m.principal_id, m.environment",
        )
        .bind(ws.id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(principal_id, principal_name, environment, role, created_at)| MembershipRecord {
                    principal_id,
                    principal_name,
                    environment,
                    role,
                    created_at,
                },
            )
            .collect())
    }

    async fn set_policy(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: &str,
        permission: Permission,
        roles: &BTreeSet<String>,
    ) -> StoreResult<PolicyRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut tx, org, workspace).await?;
        let environment = environment_of(&ws, environment)?.to_owned();
        for role in roles {
            check_role_exists::<DB>(&mut tx, org, role).await?;
        }
        let created_at = now();
        sqlx::query(
            "INSERT INTO env_policies (workspace_id, org_id, environment, permission, roles, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (workspace_id, environment, permission) DO UPDATE SET roles = excluded.roles",
        )
        .bind(ws.id)
        .bind(org)
        .bind(environment.clone())
        .bind(permission.as_str().to_owned())
        .bind(roles_json(roles))
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "policy.set",
                format!("workspace/{}/policy/{permission}", ws.slug),
            )
            .workspace(ws.id)
            .environment(environment.clone())
            .summary(json!({"after": {"roles": roles}})),
        )
        .await?;
        tx.commit().await?;
        Ok(PolicyRecord {
            environment,
            permission,
            roles: roles.clone(),
            created_at,
        })
    }

    async fn delete_policy(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: &str,
        permission: Permission,
    ) -> StoreResult<()> {
        let mut conn = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut conn, org, workspace).await?;
        let done = sqlx::query(
            "DELETE FROM env_policies WHERE workspace_id = $1 AND environment = $2 AND permission = $3",
        )
        .bind(ws.id)
        .bind(environment.to_owned())
        .bind(permission.as_str().to_owned())
        .execute(&mut *conn)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!(
                "a policy for `{permission}` in '{environment}' of {workspace}"
            )));
        }
        append::<DB>(
            &mut conn,
            Change::new(
                org,
                "policy.delete",
                format!("workspace/{}/policy/{permission}", ws.slug),
            )
            .workspace(ws.id)
            .environment(environment),
        )
        .await?;
        conn.commit().await?;
        Ok(())
    }

    async fn list_policies(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<PolicyRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut conn, org, workspace).await?;
        fetch_policies::<DB>(&mut conn, ws.id).await
    }

    async fn access_facts(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        principal: Uuid,
    ) -> StoreResult<AccessFacts> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut tx, org, workspace).await?;
        let roles: Vec<(String, String)> = sqlx::query_as(
            "SELECT environment, role FROM memberships WHERE workspace_id = $1 AND principal_id = $2",
        )
        .bind(ws.id)
        .bind(principal)
        .fetch_all(&mut *tx)
        .await?;
        let policies = fetch_policies::<DB>(&mut tx, ws.id).await?;
        let custom: Vec<(String, String)> =
            sqlx::query_as("SELECT name, permissions FROM roles WHERE org_id = $1")
                .bind(org)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let catalog = RoleCatalog::new(
            custom
                .into_iter()
                .map(|(name, raw)| parse_permissions(&raw, &name).map(|set| (name, set)))
                .collect::<StoreResult<Vec<_>>>()?,
        );
        Ok(AccessFacts {
            workspace: ws,
            standing: Standing {
                roles: roles.into_iter().collect::<BTreeMap<_, _>>(),
            },
            policies: Policies::new(
                policies
                    .into_iter()
                    .map(|p| ((p.environment, p.permission), p.roles)),
            ),
            catalog,
        })
    }

    async fn record_access(
        &self,
        org: Uuid,
        workspace: Uuid,
        grant: &AccessGrant,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        sqlx::query(
            "INSERT INTO environment_access (id, org_id, workspace_id, environment, principal_id, reason, token_id, granted_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(org)
        .bind(workspace)
        .bind(grant.environment.clone())
        .bind(grant.principal_id)
        .bind(grant.reason.clone())
        .bind(grant.token_id.clone())
        .bind(grant.granted_at)
        .bind(grant.expires_at)
        .execute(&mut *tx)
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "environment.access", format!("environment_token/{}", grant.token_id))
                .workspace(workspace)
                .environment(grant.environment.clone())
                .summary(json!({"after": {"expires_at": grant.expires_at.to_rfc3339(), "reason": grant.reason}})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_access(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        limit: u32,
    ) -> StoreResult<Vec<AccessGrant>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut conn, org, workspace).await?;
        type Row = (Uuid, String, String, String, DateTime<Utc>, DateTime<Utc>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT principal_id, environment, reason, token_id, granted_at, expires_at FROM environment_access \
             WHERE workspace_id = $1 ORDER BY granted_at DESC, id DESC LIMIT $2",
        )
        .bind(ws.id)
        .bind(page_limit(limit))
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(principal_id, environment, reason, token_id, granted_at, expires_at)| {
                    AccessGrant {
                        principal_id,
                        environment,
                        reason,
                        token_id,
                        granted_at,
                        expires_at,
                    }
                },
            )
            .collect())
    }
}

async fn fetch_policies<DB>(
    conn: &mut DB::Connection,
    workspace: Uuid,
) -> StoreResult<Vec<PolicyRecord>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT environment, permission, roles, created_at FROM env_policies WHERE workspace_id = $1 \
         ORDER BY environment, permission",
    )
    .bind(workspace)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        // A permission this build does not know is skipped, not an error.
        .filter_map(|(environment, permission, roles, created_at)| {
            let permission = Permission::parse(&permission).ok()?;
            Some(parse_roles(&roles).map(|roles| PolicyRecord {
                environment,
                permission,
                roles,
                created_at,
            }))
        })
        .collect()
}

/// Refuses a change that would leave the org without an active owner
/// (the caller's principal is the one about to stop being one).
async fn ensure_another_active_owner<DB>(conn: &mut DB::Connection, org: Uuid) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
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

async fn check_role_exists<DB>(conn: &mut DB::Connection, org: Uuid, role: &str) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    if mockplane_shared::access::BUILTIN_ROLES.contains(&role) {
        return Ok(());
    }
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM roles WHERE org_id = $1 AND name = $2")
            .bind(org)
            .bind(role.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(FieldError::new(
            "role",
            format!("`{role}` is not a role of this org (built-in: admin, editor, viewer)"),
        )
        .into()),
    }
}

pub(super) async fn insert_principal<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    new: &NewPrincipal,
    now: DateTime<Utc>,
) -> StoreResult<PrincipalRecord>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB>,
{
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
        version: 1,
        created_at: now,
        updated_at: now,
    })
}

pub(super) async fn insert_token<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    principal: Uuid,
    name: &str,
    token_hash: &str,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> StoreResult<Uuid>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB>,
{
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

/// A refresh token row, found by its hash.
struct RefreshRow {
    id: Uuid,
    org: Uuid,
    principal_id: Uuid,
    family: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

async fn find_refresh_token<DB>(
    conn: &mut DB::Connection,
    token_hash: &str,
) -> StoreResult<Option<RefreshRow>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Decode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    type Row = (
        Uuid,
        Uuid,
        Uuid,
        Uuid,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, org_id, principal_id, family, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(
        |(id, org, principal_id, family, expires_at, used_at, revoked_at)| RefreshRow {
            id,
            org,
            principal_id,
            family,
            expires_at,
            used_at,
            revoked_at,
        },
    ))
}

async fn insert_refresh_token<DB>(
    conn: &mut DB::Connection,
    principal: &Principal,
    family: Uuid,
    token_hash: &str,
    expires_at: DateTime<Utc>,
) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO refresh_tokens (id, org_id, principal_id, family, token_hash, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(principal.org_id)
    .bind(principal.id)
    .bind(family)
    .bind(token_hash.to_owned())
    .bind(expires_at)
    .bind(now())
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error(e, || StoreError::Conflict("refresh token collision; try again".into())))?;
    Ok(())
}

/// Revokes what is left of a session; how many tokens that was.
async fn revoke_family<DB>(
    conn: &mut DB::Connection,
    family: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<u64>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL AND used_at IS NULL",
    )
    .bind(at)
    .bind(family)
    .execute(&mut *conn)
    .await?;
    Ok(DB::rows_affected(&done))
}

/// A session event, on the record as the person whose session it is (the
/// requests that start, refresh and end sessions carry no other caller).
fn session_change(
    principal: &Principal,
    action: &'static str,
    credential: &'static str,
    family: Uuid,
) -> Change {
    Change::new(principal.org_id, action, format!("session/{family}")).by(
        format!("{}:{}", principal.kind.as_str(), principal.id),
        principal.display.clone(),
        credential,
    )
}
