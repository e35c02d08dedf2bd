//! Roles, and who holds them where: `mockplane role` (built-in and custom
//! roles, the permission list), `mockplane member` (roles per environment)
//! and `mockplane policy` (environment policies).

use anyhow::anyhow;
use clap::Subcommand;
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::done;
use crate::output::{self, Format, MemberView, PermissionView, PolicyView, RoleView};

const ROLE_COLUMNS: [&str; 4] = ["name", "builtin", "permissions", "description"];
const PERMISSION_COLUMNS: [&str; 3] = ["name", "reach", "description"];
const MEMBER_COLUMNS: [&str; 4] = ["environment", "principal", "role", "principal_id"];
const POLICY_COLUMNS: [&str; 3] = ["environment", "permission", "roles"];

#[derive(Subcommand)]
pub enum RoleCommand {
    /// List the built-in roles and the org's own.
    List,
    /// Define a role with a set of workspace and environment permissions.
    Create {
        /// 1 to 40 lowercase letters, digits, `-` or `_`, starting with a
        /// letter; not admin, editor or viewer.
        name: String,
        /// A permission the role grants (`mockplane role permissions` lists
        /// them); repeatable, or comma separated.
        #[arg(
            long = "permission",
            value_name = "P",
            value_delimiter = ',',
            required = true
        )]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Replace a role's permissions, its description, or both.
    Update {
        name: String,
        /// The role's permissions from now on; repeatable, or comma
        /// separated (default: unchanged).
        #[arg(long = "permission", value_name = "P", value_delimiter = ',')]
        permissions: Vec<String>,
        /// A new description; `--description ""` clears it (default:
        /// unchanged).
        #[arg(long)]
        description: Option<String>,
        /// Only update if the role still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Delete a role no membership or policy names.
    Delete { name: String },
    /// List every permission: its name, reach and what it allows.
    Permissions,
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Who has which role in which environment of a workspace.
    List { workspace: String },
    /// Give a principal a role in one environment (replacing the role it
    /// had there).
    Set {
        workspace: String,
        env: String,
        principal_id: String,
        role: String,
    },
    /// Take a principal's role in one environment away.
    Remove {
        workspace: String,
        env: String,
        principal_id: String,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// A workspace's environment policies.
    List { workspace: String },
    /// Allow a permission in an environment to these roles only, for
    /// everyone, org admins included.
    Set {
        workspace: String,
        env: String,
        permission: String,
        /// The roles allowed; several, or comma separated.
        #[arg(required = true, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Remove a policy: the roles' own permissions decide again.
    Delete {
        workspace: String,
        env: String,
        permission: String,
    },
}

/// Permission names as given: trimmed, empty ones (from `a,,b`) left out.
fn permission_list(raw: Vec<String>) -> anyhow::Result<Vec<String>> {
    let list: Vec<String> = raw
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if list.is_empty() {
        return Err(anyhow!(
            "--permission names no permission; `mockplane role permissions` lists them"
        ));
    }
    Ok(list)
}

pub async fn role(
    server: &str,
    token: Option<&str>,
    command: RoleCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        RoleCommand::List => {
            let listed = connect()
                .await?
                .roles
                .list_roles(v1::ListRolesRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<RoleView> = listed.roles.iter().map(RoleView::from).collect();
            output::list(format, &views, &ROLE_COLUMNS);
        }
        RoleCommand::Create {
            name,
            permissions,
            description,
        } => {
            let permissions = permission_list(permissions)?;
            let created = connect()
                .await?
                .roles
                .create_role(v1::CreateRoleRequest {
                    role: Some(v1::Role {
                        name,
                        description,
                        permissions,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &RoleView::from(&created));
        }
        RoleCommand::Update {
            name,
            permissions,
            description,
            etag,
        } => {
            let mut paths = Vec::new();
            if !permissions.is_empty() {
                paths.push("permissions".to_owned());
            }
            if description.is_some() {
                paths.push("description".to_owned());
            }
            if paths.is_empty() {
                return Err(anyhow!(
                    "nothing to change: give --permission, --description or both"
                ));
            }
            let permissions = if permissions.is_empty() {
                Vec::new()
            } else {
                permission_list(permissions)?
            };
            let updated = connect()
                .await?
                .roles
                .update_role(v1::UpdateRoleRequest {
                    name,
                    permissions,
                    description: description.unwrap_or_default(),
                    etag,
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &RoleView::from(&updated));
        }
        RoleCommand::Delete { name } => {
            connect()
                .await?
                .roles
                .delete_role(v1::DeleteRoleRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            done(format, serde_json::json!({ "deleted": name }));
        }
        RoleCommand::Permissions => {
            let listed = connect()
                .await?
                .roles
                .list_permissions(v1::ListPermissionsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<PermissionView> = listed
                .permissions
                .iter()
                .map(PermissionView::from)
                .collect();
            output::list(format, &views, &PERMISSION_COLUMNS);
        }
    }
    Ok(())
}

pub async fn member(
    server: &str,
    token: Option<&str>,
    command: MemberCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        MemberCommand::List { workspace } => {
            let listed = connect()
                .await?
                .members
                .list_members(v1::ListMembersRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<MemberView> = listed.members.iter().map(MemberView::from).collect();
            output::list(format, &views, &MEMBER_COLUMNS);
        }
        MemberCommand::Set {
            workspace,
            env,
            principal_id,
            role,
        } => {
            let set = connect()
                .await?
                .members
                .set_member(v1::SetMemberRequest {
                    workspace,
                    environment: env,
                    principal_id,
                    role,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &MemberView::from(&set));
        }
        MemberCommand::Remove {
            workspace,
            env,
            principal_id,
        } => {
            connect()
                .await?
                .members
                .remove_member(v1::RemoveMemberRequest {
                    workspace: workspace.clone(),
                    environment: env.clone(),
                    principal_id: principal_id.clone(),
                })
                .await
                .map_err(status_error)?;
            done(
                format,
                serde_json::json!({ "workspace": workspace, "environment": env, "removed": principal_id }),
            );
        }
    }
    Ok(())
}

pub async fn policy(
    server: &str,
    token: Option<&str>,
    command: PolicyCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        PolicyCommand::List { workspace } => {
            let listed = connect()
                .await?
                .members
                .list_policies(v1::ListPoliciesRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<PolicyView> = listed.policies.iter().map(PolicyView::from).collect();
            output::list(format, &views, &POLICY_COLUMNS);
        }
        PolicyCommand::Set {
            workspace,
            env,
            permission,
            roles,
        } => {
            let roles: Vec<String> = roles
                .into_iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect();
            if roles.is_empty() {
                return Err(anyhow!("name at least one role the policy allows"));
            }
            let set = connect()
                .await?
                .members
                .set_policy(v1::SetPolicyRequest {
                    workspace,
                    policy: Some(v1::Policy {
                        environment: env,
                        permission,
                        roles,
                        create_time: None,
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PolicyView::from(&set));
        }
        PolicyCommand::Delete {
            workspace,
            env,
            permission,
        } => {
            connect()
                .await?
                .members
                .delete_policy(v1::DeletePolicyRequest {
                    workspace: workspace.clone(),
                    environment: env.clone(),
                    permission: permission.clone(),
                })
                .await
                .map_err(status_error)?;
            done(
                format,
                serde_json::json!({ "workspace": workspace, "environment": env, "deleted": permission }),
            );
        }
    }
    Ok(())
}
