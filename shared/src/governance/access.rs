//! Who may do what, where: the permission model every RPC is checked
//! against, as plain data and one pure decision function.
//!
//! - A **permission** is one of a closed set ([`Permission`]); each has a
//!   [`Reach`]: the org, a whole workspace, or one environment of it.
//! - A user's (or service account's) **role in a workspace is set per
//!   environment**: editor in dev and test, viewer in prod, nothing in
//!   sandbox. Prod access does not imply dev access, nor the reverse.
//! - **Roles** are the built-in `admin`, `editor` and `viewer`, and custom
//!   roles an org defines with a permission set (`platform`, `qa`, …).
//! - **Environment policies** map (environment, permission) to the roles
//!   allowed: where a policy exists it decides, otherwise the role's own
//!   permissions do. Policies bind everyone, org admins included, which is
//!   how "only platform changes reality defaults in prod" holds.
//! - **Org roles** (owner, admin, member) grant the org-wide permissions;
//!   owners and admins also act as `admin` in every environment of every
//!   workspace of the org (still subject to policies).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// Where a permission applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// The org: users, roles, templates, audit, creating workspaces.
    Org,
    /// A workspace as a whole: granted when any of the caller's roles in
    /// the workspace's environments grants it.
    Workspace,
    /// A change to every environment of the workspace at once (its
    /// defaults, its deletion): needs the permission in each of them.
    AllEnvironments,
    /// One environment of a workspace.
    Environment,
}

macro_rules! permissions {
    ($($variant:ident = $name:literal, $reach:ident, $doc:literal;)*) => {
        /// Everything the API can be asked to do, as a closed set.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Permission {
            $(#[doc = $doc] $variant,)*
        }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The permission's name in policies, roles and errors.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            pub fn reach(self) -> Reach {
                match self {
                    $(Permission::$variant => Reach::$reach,)*
                }
            }

            pub fn describe(self) -> &'static str {
                match self {
                    $(Permission::$variant => $doc,)*
                }
            }
        }
    };
}

permissions! {
    WorkspaceCreate = "workspace.create", Org, "Create workspaces in the org.";
    WorkspaceRead = "workspace.read", Workspace, "See a workspace and its settings.";
    WorkspaceUpdate = "workspace.update", AllEnvironments, "Rename a workspace or change the defaults of all its environments.";
    WorkspaceDelete = "workspace.delete", AllEnvironments, "Delete a workspace with everything in it.";
    EnvironmentRead = "environment.read", Environment, "See an environment and its settings.";
    EnvironmentManage = "environment.manage", Environment, "Add or remove an environment; change its validation and access rules.";
    RealityConfig = "environment.reality", Environment, "Change an environment's reality level and latency.";
    ChaosConfig = "environment.chaos", Environment, "Change an environment's chaos rules.";
    DriftBudgetConfig = "environment.drift_budget", Environment, "Change an environment's drift budget.";
    ScenarioRead = "scenario.read", Environment, "See scenarios, versions and routes.";
    ScenarioWrite = "scenario.write", Environment, "Edit scenarios and routes, cut versions, import.";
    ScenarioDeploy = "scenario.deploy", Environment, "Deploy a version to an environment directly, outside a promotion.";
    PersonaRead = "persona.read", Environment, "See personas.";
    PersonaWrite = "persona.write", Environment, "Create, change and delete personas.";
    StateReset = "state.reset", Environment, "Reset the state of stateful routes.";
    JournalRead = "journal.read", Environment, "Read the request journal.";
    PromotionRequest = "promotion.request", Environment, "Request a promotion into an environment.";
    PromotionApprove = "promotion.approve", Environment, "Approve or reject promotions into an environment.";
    PromotionExecute = "promotion.execute", Environment, "Carry out an approved promotion into an environment.";
    PromotionRollback = "promotion.rollback", Environment, "Roll back a completed promotion into an environment.";
    PromotionCheck = "promotion.check", Environment, "Report the result of an external check (a CI job) on promotions into an environment.";
    MemberRead = "member.read", Workspace, "See who has which role in a workspace.";
    MemberManage = "member.manage", Environment, "Set or remove roles in an environment.";
    PolicyManage = "policy.manage", Environment, "Set an environment's permission policies.";
    ApiKeyRead = "api_key.read", Environment, "See data-plane API keys (never their secrets).";
    ApiKeyManage = "api_key.manage", Environment, "Create and revoke data-plane API keys.";
    TestKeyCreate = "test_key.create", Environment, "Create temporary test keys.";
    AuditRead = "audit.read", Org, "Read and verify the audit trail.";
    NodeRead = "node.read", Org, "See the data-plane nodes: versions, revisions served, errors on the org's workspaces.";
    UserManage = "user.manage", Org, "Invite, change and remove users and service accounts.";
    RoleManage = "role.manage", Org, "Define custom roles.";
    TemplateManage = "template.manage", Org, "Change the org's workspace templates.";
    OrgManage = "org.manage", Org, "Change the org's display name and settings (whether members may create workspaces).";
}

impl Permission {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new(
                    "permission",
                    format!(
                        "`{raw}` is not a permission; one of: {}",
                        Self::ALL
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// Whether the permission only reads.
    pub fn is_read(self) -> bool {
        self.as_str().ends_with(".read")
    }

    /// Policies may not restrict this permission: an admin can always
    /// repair the policies themselves.
    pub fn policy_controllable(self) -> bool {
        self.reach() == Reach::Environment && self != Permission::PolicyManage
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Permission::parse(&raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// The permission a change to an environment setting needs.
pub fn setting_permission(key: crate::model::environment::SettingKey) -> Permission {
    use crate::model::environment::SettingKey;
    match key {
        SettingKey::Reality | SettingKey::Latency => Permission::RealityConfig,
        SettingKey::Chaos => Permission::ChaosConfig,
        SettingKey::DriftBudget => Permission::DriftBudgetConfig,
        SettingKey::Validation
        | SettingKey::ReasonRequired
        | SettingKey::Approvals
        | SettingKey::DataPolicy
        | SettingKey::RequiredChecks
        | SettingKey::Limits => Permission::EnvironmentManage,
    }
}

/// What a change to settings needs, each permission once.
pub fn settings_permissions(patch: &crate::model::environment::SettingsPatch) -> Vec<Permission> {
    let set: BTreeSet<Permission> = patch.keys.iter().map(|k| setting_permission(*k)).collect();
    set.into_iter().collect()
}

/// What changing an environment needs (`UpdateEnvironment`): the
/// permission of each setting it sets; renaming it, or a change that sets
/// nothing, needs `environment.manage`.
pub fn environment_update_permissions(
    settings: Option<&crate::model::environment::SettingsPatch>,
    renames: bool,
) -> Vec<Permission> {
    let mut needed: BTreeSet<Permission> = settings
        .map(settings_permissions)
        .unwrap_or_default()
        .into_iter()
        .collect();
    if renames || needed.is_empty() {
        needed.insert(Permission::EnvironmentManage);
    }
    needed.into_iter().collect()
}

/// What adding an environment needs (`CreateEnvironment`):
/// `workspace.update`; `environment.manage` when it takes a place on the
/// promotion chain (which changes where every promotion goes); and the
/// permission of each setting it starts with.
pub fn environment_create_permissions(
    settings: &crate::model::environment::EnvSettings,
    on_chain: bool,
) -> Vec<Permission> {
    let mut needed: BTreeSet<Permission> = settings
        .set_keys()
        .into_iter()
        .map(setting_permission)
        .collect();
    needed.insert(Permission::WorkspaceUpdate);
    if on_chain {
        needed.insert(Permission::EnvironmentManage);
    }
    needed.into_iter().collect()
}

/// What a workspace change sets, for [`workspace_update_permissions`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkspaceChange<'a> {
    /// The environment defaults it changes.
    pub defaults: Option<&'a crate::model::environment::SettingsPatch>,
    /// It changes what and where every environment serves: the slug, the
    /// active environment, the chain or its skips.
    pub serving: bool,
    /// It changes `require_api_keys`: who may call every environment.
    pub api_keys: bool,
}

/// What changing a workspace needs (`UpdateWorkspace`): `workspace.update`,
/// each default setting's permission, `environment.manage` for a change of
/// what and where its environments serve, `api_key.manage` for whether
/// keys are required.
pub fn workspace_update_permissions(change: WorkspaceChange<'_>) -> Vec<Permission> {
    let mut needed: BTreeSet<Permission> = change
        .defaults
        .map(settings_permissions)
        .unwrap_or_default()
        .into_iter()
        .collect();
    needed.insert(Permission::WorkspaceUpdate);
    if change.serving {
        needed.insert(Permission::EnvironmentManage);
    }
    if change.api_keys {
        needed.insert(Permission::ApiKeyManage);
    }
    needed.into_iter().collect()
}

/// A member's standing in the org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrgRole {
    Member,
    Admin,
    Owner,
}

impl OrgRole {
    pub const ALL: [OrgRole; 3] = [OrgRole::Owner, OrgRole::Admin, OrgRole::Member];

    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Owner => "owner",
            OrgRole::Admin => "admin",
            OrgRole::Member => "member",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new(
                    "org_role",
                    format!("`{raw}` is not an org role; one of: owner, admin, member"),
                )
            })
    }

    /// Owners and admins act as `admin` in every environment.
    pub fn is_admin(self) -> bool {
        self >= OrgRole::Admin
    }

    fn grants(self, permission: Permission) -> bool {
        match permission {
            Permission::WorkspaceCreate => true,
            Permission::AuditRead
            | Permission::NodeRead
            | Permission::UserManage
            | Permission::RoleManage
            | Permission::TemplateManage => self.is_admin(),
            Permission::OrgManage => self == OrgRole::Owner,
            _ => false,
        }
    }
}

impl fmt::Display for OrgRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const ADMIN: &str = "admin";
pub const EDITOR: &str = "editor";
pub const VIEWER: &str = "viewer";
pub const BUILTIN_ROLES: [&str; 3] = [ADMIN, EDITOR, VIEWER];

/// The permissions of a built-in role, or `None` for another name.
pub fn builtin_permissions(role: &str) -> Option<BTreeSet<Permission>> {
    use Permission::*;
    let viewer = [
        WorkspaceRead,
        EnvironmentRead,
        ScenarioRead,
        PersonaRead,
        JournalRead,
        MemberRead,
        ApiKeyRead,
    ];
    let editor = [
        ScenarioWrite,
        PersonaWrite,
        StateReset,
        PromotionRequest,
        PromotionExecute,
        PromotionCheck,
        RealityConfig,
        ChaosConfig,
        TestKeyCreate,
    ];
    match role {
        VIEWER => Some(viewer.into_iter().collect()),
        EDITOR => Some(viewer.into_iter().chain(editor).collect()),
        ADMIN => Some(
            Permission::ALL
                .iter()
                .copied()
                .filter(|p| p.reach() != Reach::Org)
                .collect(),
        ),
        _ => None,
    }
}

/// Checks a role name: lowercase letters, digits, `-` and `_`, starting
/// with a letter, at most 40 characters.
pub fn check_role_name(raw: &str) -> Result<(), FieldError> {
    let ok = !raw.is_empty()
        && raw.len() <= 40
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "role",
            format!(
                "`{raw}` is not a role name: use 1 to 40 lowercase letters, digits, `-` or `_`, starting with a letter"
            ),
        ))
    }
}

/// Checks a custom role's definition: its name is not a built-in one and
/// its permissions are ones a workspace role can hold.
pub fn check_custom_role(name: &str, permissions: &BTreeSet<Permission>) -> Result<(), FieldError> {
    check_role_name(name)?;
    if BUILTIN_ROLES.contains(&name) {
        return Err(FieldError::new(
            "role",
            format!("`{name}` is a built-in role; choose another name"),
        ));
    }
    if let Some(p) = permissions.iter().find(|p| p.reach() == Reach::Org) {
        return Err(FieldError::new(
            "permissions",
            format!(
                "`{p}` is an org permission, granted by org roles (owner, admin), not by workspace roles"
            ),
        ));
    }
    Ok(())
}

/// The roles an org knows: the built-in ones and its custom roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleCatalog {
    custom: BTreeMap<String, BTreeSet<Permission>>,
}

impl RoleCatalog {
    pub fn new(custom: impl IntoIterator<Item = (String, BTreeSet<Permission>)>) -> Self {
        Self {
            custom: custom.into_iter().collect(),
        }
    }

    pub fn knows(&self, role: &str) -> bool {
        BUILTIN_ROLES.contains(&role) || self.custom.contains_key(role)
    }

    fn grants(&self, role: &str, permission: Permission) -> bool {
        match builtin_permissions(role) {
            Some(set) => set.contains(&permission),
            None => self
                .custom
                .get(role)
                .is_some_and(|set| set.contains(&permission)),
        }
    }
}

/// Environment permission policies of a workspace: (environment,
/// permission) → the roles allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    rules: BTreeMap<(String, Permission), BTreeSet<String>>,
}

impl Policies {
    pub fn new(rules: impl IntoIterator<Item = ((String, Permission), BTreeSet<String>)>) -> Self {
        Self {
            rules: rules.into_iter().collect(),
        }
    }

    pub fn get(&self, environment: &str, permission: Permission) -> Option<&BTreeSet<String>> {
        self.rules.get(&(environment.to_owned(), permission))
    }
}

/// Checks a policy before it is stored.
pub fn check_policy(
    permission: Permission,
    roles: &BTreeSet<String>,
    catalog: &RoleCatalog,
) -> Result<(), FieldError> {
    if !permission.policy_controllable() {
        return Err(FieldError::new(
            "permission",
            if permission == Permission::PolicyManage {
                "`policy.manage` cannot be restricted by a policy: admins must always be able to repair policies".to_owned()
            } else {
                format!(
                    "`{permission}` is not an environment permission; policies apply to environment permissions only"
                )
            },
        ));
    }
    if roles.is_empty() {
        return Err(FieldError::new(
            "roles",
            "name at least one role; to stop everyone, remove the permission from the roles instead",
        ));
    }
    for role in roles {
        check_role_name(role).map_err(|e| e.within("roles"))?;
        if !catalog.knows(role) {
            return Err(FieldError::new(
                "roles",
                format!("`{role}` is not a role of this org"),
            ));
        }
    }
    Ok(())
}

/// What the caller holds in one workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Environment name → the caller's role there.
    pub roles: BTreeMap<String, String>,
}

/// What [`decide`] needs to know.
pub struct Question<'a> {
    pub org_role: OrgRole,
    pub permission: Permission,
    /// `None` for org permissions.
    pub workspace: Option<WorkspaceFacts<'a>>,
    /// The environment acted on, for environment permissions.
    pub environment: Option<&'a str>,
}

#[derive(Clone, Copy)]
pub struct WorkspaceFacts<'a> {
    /// Every environment of the workspace, in chain order.
    pub environments: &'a [String],
    pub standing: &'a Standing,
    pub policies: &'a Policies,
    pub catalog: &'a RoleCatalog,
}

/// Why a request was refused, in words for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one decision: may the caller do this?
pub fn decide(question: &Question<'_>) -> Result<(), Denied> {
    let permission = question.permission;
    match permission.reach() {
        Reach::Org => {
            if question.org_role.grants(permission) {
                Ok(())
            } else {
                Err(Denied(format!(
                    "`{permission}` needs the org role owner or admin; you are {}",
                    question.org_role
                )))
            }
        }
        Reach::Workspace => {
            let facts = workspace_facts(question)?;
            let granted = facts
                .environments
                .iter()
                .any(|env| in_environment(question.org_role, permission, env, facts).is_ok());
            if granted {
                Ok(())
            } else {
                Err(Denied(format!(
                    "`{permission}` is not granted to you in any environment of this workspace"
                )))
            }
        }
        Reach::AllEnvironments => {
            let facts = workspace_facts(question)?;
            for env in facts.environments {
                in_environment(question.org_role, permission, env, facts).map_err(|Denied(why)| {
                    Denied(format!(
                        "`{permission}` changes every environment, so it is needed in each: {why}"
                    ))
                })?;
            }
            Ok(())
        }
        Reach::Environment => {
            let facts = workspace_facts(question)?;
            let env = question.environment.ok_or_else(|| {
                Denied(format!(
                    "`{permission}` is checked per environment, and none was named"
                ))
            })?;
            in_environment(question.org_role, permission, env, facts)
        }
    }
}

fn workspace_facts<'q, 'a>(question: &'q Question<'a>) -> Result<&'q WorkspaceFacts<'a>, Denied> {
    question.workspace.as_ref().ok_or_else(|| {
        Denied(format!(
            "`{}` is checked per workspace, and none was named",
            question.permission
        ))
    })
}

fn in_environment(
    org_role: OrgRole,
    permission: Permission,
    env: &str,
    facts: &WorkspaceFacts<'_>,
) -> Result<(), Denied> {
    let role = if org_role.is_admin() {
        ADMIN
    } else {
        match facts.standing.roles.get(env) {
            Some(role) => role.as_str(),
            None => {
                return Err(Denied(format!(
                    "you have no role in the `{env}` environment"
                )));
            }
        }
    };
    if permission.policy_controllable()
        && let Some(allowed) = facts.policies.get(env, permission)
    {
        return if allowed.contains(role) {
            Ok(())
        } else {
            Err(Denied(format!(
                "in `{env}`, `{permission}` is reserved by policy for the roles {}; your role there is {role}",
                allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            )))
        };
    }
    if facts.catalog.grants(role, permission) {
        Ok(())
    } else {
        Err(Denied(format!(
            "your role in `{env}` is {role}, which does not include `{permission}`"
        )))
    }
}

/// Whose API tokens a request may manage (the token methods of
/// `UserService`): the caller's own with any credential but an environment
/// token, and no permission needed; another principal's with the method's
/// org permissions (`user.manage`), which [`decide`] checks.
pub fn decide_tokens(
    org_role: OrgRole,
    environment_token: bool,
    own: bool,
    permissions: &[Permission],
) -> Result<(), Denied> {
    if environment_token {
        return Err(Denied(
            "an environment token cannot manage API tokens; use your own credentials".into(),
        ));
    }
    if own {
        return Ok(());
    }
    for &permission in permissions {
        decide(&Question {
            org_role,
            permission,
            workspace: None,
            environment: None,
        })?;
    }
    Ok(())
}

/// What an environment token may do: act in its own environment of its
/// own workspace (`environment`: where the request acts; `None` for the
/// workspace as a whole), where it may only read the workspace.
pub fn environment_token_fits(
    own_workspace: bool,
    token_environment: &str,
    environment: Option<&str>,
    permissions: &[Permission],
) -> bool {
    own_workspace
        && match environment {
            Some(env) => env == token_environment,
            None => permissions
                .iter()
                .all(|p| p.reach() == Reach::Workspace && p.is_read()),
        }
}

#[cfg(test)]
mod tests;
