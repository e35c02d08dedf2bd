//! Access in the store: custom roles, roles per environment (memberships),
//! environment policies, what one authorization decision reads, and the
//! environment access log.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::FieldError;
use mockplane_shared::governance::access::{Permission, Policies, RoleCatalog, Standing};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{Scope, check_version, db_error, now, page_limit};
use super::{Dialect, SqlStore, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};
use serde_json::json;

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

#[async_trait]
pub trait AccessStore: Send + Sync {
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
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
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
        SqlStore::<DB>::append(
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
        SqlStore::<DB>::append(
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
        SqlStore::<DB>::append(
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
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let environment = environment_of(&ws, environment)?.to_owned();
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM principals WHERE org_id = $1 AND id = $2")
                .bind(org)
                .bind(principal)
                .fetch_optional(&mut *tx)
                .await?;
        let principal_name =
            name.ok_or_else(|| StoreError::NotFound(format!("principal {principal}")))?;
        SqlStore::<DB>::check_role_exists(&mut tx, org, role).await?;
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
        SqlStore::<DB>::append(
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
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
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
        SqlStore::<DB>::append(
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
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
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
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let environment = environment_of(&ws, environment)?.to_owned();
        for role in roles {
            SqlStore::<DB>::check_role_exists(&mut tx, org, role).await?;
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
        SqlStore::<DB>::append(
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
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
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
        SqlStore::<DB>::append(
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
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
        SqlStore::<DB>::fetch_policies(&mut conn, ws.id).await
    }

    async fn access_facts(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        principal: Uuid,
    ) -> StoreResult<AccessFacts> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let roles: Vec<(String, String)> = sqlx::query_as(
            "SELECT environment, role FROM memberships WHERE workspace_id = $1 AND principal_id = $2",
        )
        .bind(ws.id)
        .bind(principal)
        .fetch_all(&mut *tx)
        .await?;
        let policies = SqlStore::<DB>::fetch_policies(&mut tx, ws.id).await?;
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
        SqlStore::<DB>::append(
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
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
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
    async fn fetch_policies(
        conn: &mut DB::Connection,
        workspace: Uuid,
    ) -> StoreResult<Vec<PolicyRecord>> {
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

    async fn check_role_exists(
        conn: &mut DB::Connection,
        org: Uuid,
        role: &str,
    ) -> StoreResult<()> {
        if mockplane_shared::governance::access::BUILTIN_ROLES.contains(&role) {
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
}
