//! The one authorization point. Every RPC declares what it needs in
//! [`METHODS`]; the auth layer refuses a method that declares nothing,
//! authenticates the caller and hands the declaration to the handler, which
//! names only *where* it acts ([`Target`]) when it calls
//! [`ApiState::authorize`]. The decision itself is
//! [`mockplane_shared::governance::access::decide`].
//!
//! Callers of another org, and callers with no role at all in a workspace,
//! get `NotFound`: they learn nothing of what exists.
//!
//! Forgetting to authorize does not compile: the store is a private field
//! of [`ApiState`], and a handler reaches it only through what this module
//! hands out — a [`Grant`] from [`ApiState::authorize`] (or
//! [`ApiState::authenticated`] for methods that act on the caller only), a
//! [`Public`] for the methods that take no credentials, and [`Locate`],
//! which finds where a request acts and nothing else. None of them can be
//! made elsewhere. The store checks it once more at run time
//! ([`crate::store::guard`]).

use std::sync::Arc;

use mockplane_shared::governance::access::{self, Permission, Question, Reach, WorkspaceFacts};
use tonic::{Request, Status};
use uuid::Uuid;

use super::error::ApiError;
use crate::config_stream::snapshot::ConfigCache;
use crate::fleet::nodes::Nodes;
use crate::store::guard::{self, Access};
use crate::store::{
    AccessFacts, ApiKeyRecord, Principal, PromotionRecord, Store, StoreError, TokenRecord,
    WorkspaceRecord, WorkspaceRef,
};

/// What the API services share. The store is private to this module.
#[derive(Clone)]
pub struct ApiState {
    store: Arc<dyn Store>,
    pub cache: Arc<ConfigCache>,
    /// The nodes: this replica's streams and the fleet's registry.
    pub nodes: Arc<Nodes>,
    /// Signs access and environment tokens.
    pub signer: Arc<crate::identity::jwt::Signer>,
    /// Environment → days audit events are kept (`--audit-retention`).
    pub audit_retention: Arc<Vec<(String, u32)>>,
    /// Where notification channels may point (`--outbound-allow`).
    pub outbound: Arc<crate::outbound::Outbound>,
    /// Whether anyone may create an org of their own (`--allow-signup`),
    /// and how often.
    pub signup: Option<Arc<super::orgs::Signups>>,
}

impl ApiState {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<ConfigCache>,
        nodes: Arc<Nodes>,
        signer: Arc<crate::identity::jwt::Signer>,
        audit_retention: Arc<Vec<(String, u32)>>,
    ) -> Self {
        Self {
            store,
            cache,
            nodes,
            signer,
            audit_retention,
            outbound: Arc::default(),
            signup: None,
        }
    }

    #[must_use]
    pub fn with_signup(mut self, signup: Option<Arc<super::orgs::Signups>>) -> Self {
        self.signup = signup;
        self
    }

    #[must_use]
    pub fn with_outbound(mut self, outbound: Arc<crate::outbound::Outbound>) -> Self {
        self.outbound = outbound;
        self
    }
}

use Permission::*;

/// What a method needs before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Answers without credentials (signing in).
    Public,
    /// Any authenticated caller; the handler acts on the caller only.
    Authenticated,
    /// A platform admin (above orgs): creating orgs.
    Platform,
    /// These permissions, checked where the handler says it acts. A
    /// handler may check a subset when the request needs less (an
    /// environment update that changes only chaos needs only
    /// `environment.chaos`).
    Check(&'static [Permission]),
}

/// Every method of the API and what it needs. A method missing here is
/// refused by the auth layer; a test checks this table against the
/// services' descriptors.
pub const METHODS: &[(&str, Rule)] = &[
    // Workspaces.
    (
        "WorkspaceService/CreateWorkspace",
        Rule::Check(&[WorkspaceCreate]),
    ),
    (
        "WorkspaceService/GetWorkspace",
        Rule::Check(&[WorkspaceRead]),
    ),
    ("WorkspaceService/ListWorkspaces", Rule::Authenticated),
    (
        "WorkspaceService/UpdateWorkspace",
        Rule::Check(&[
            WorkspaceUpdate,
            RealityConfig,
            ChaosConfig,
            DriftBudgetConfig,
            EnvironmentManage,
            // `require_api_keys`: who may call every environment's mocks.
            ApiKeyManage,
        ]),
    ),
    (
        "WorkspaceService/DeleteWorkspace",
        Rule::Check(&[WorkspaceDelete]),
    ),
    ("WorkspaceService/ResetState", Rule::Check(&[StateReset])),
    // Environments.
    (
        "EnvironmentService/ListEnvironments",
        Rule::Check(&[WorkspaceRead]),
    ),
    (
        "EnvironmentService/GetEnvironment",
        Rule::Check(&[EnvironmentRead]),
    ),
    // Adding an environment reshapes the workspace: admin-level everywhere,
    // but it changes nothing an existing environment serves.
    (
        "EnvironmentService/CreateEnvironment",
        // Placing it on the chain, and the settings it starts with, need
        // what changing them would (`access::environment_create_permissions`).
        Rule::Check(&[
            WorkspaceUpdate,
            EnvironmentManage,
            RealityConfig,
            ChaosConfig,
            DriftBudgetConfig,
        ]),
    ),
    (
        "EnvironmentService/UpdateEnvironment",
        Rule::Check(&[
            EnvironmentManage,
            RealityConfig,
            ChaosConfig,
            DriftBudgetConfig,
        ]),
    ),
    (
        "EnvironmentService/DeleteEnvironment",
        Rule::Check(&[EnvironmentManage]),
    ),
    // Routes: the working copy, served by the chain's first environment.
    ("RouteService/CreateRoutes", Rule::Check(&[ScenarioWrite])),
    ("RouteService/GetRoute", Rule::Check(&[ScenarioRead])),
    ("RouteService/ListRoutes", Rule::Check(&[ScenarioRead])),
    ("RouteService/UpdateRoute", Rule::Check(&[ScenarioWrite])),
    ("RouteService/DeleteRoutes", Rule::Check(&[ScenarioWrite])),
    // Scenarios.
    (
        "ScenarioService/CreateScenario",
        Rule::Check(&[ScenarioWrite]),
    ),
    ("ScenarioService/GetScenario", Rule::Check(&[ScenarioRead])),
    (
        "ScenarioService/ListScenarios",
        Rule::Check(&[ScenarioRead]),
    ),
    (
        "ScenarioService/UpdateScenario",
        Rule::Check(&[ScenarioWrite]),
    ),
    (
        "ScenarioService/DeleteScenario",
        Rule::Check(&[ScenarioWrite]),
    ),
    (
        "ScenarioService/CreateVersion",
        Rule::Check(&[ScenarioWrite]),
    ),
    ("ScenarioService/ListVersions", Rule::Check(&[ScenarioRead])),
    ("ScenarioService/GetVersion", Rule::Check(&[ScenarioRead])),
    (
        "ScenarioService/ImportOpenApi",
        Rule::Check(&[ScenarioWrite]),
    ),
    (
        "ScenarioService/ImportScenario",
        Rule::Check(&[ScenarioWrite]),
    ),
    (
        "ScenarioService/AdminDeployVersion",
        Rule::Check(&[ScenarioDeploy]),
    ),
    // Personas: the first environment of the chain serves the working
    // copies that writes change (the handlers target it); the others
    // serve what promotions put there.
    ("PersonaService/CreatePersona", Rule::Check(&[PersonaWrite])),
    ("PersonaService/GetPersona", Rule::Check(&[PersonaRead])),
    ("PersonaService/ListPersonas", Rule::Check(&[PersonaRead])),
    ("PersonaService/UpdatePersona", Rule::Check(&[PersonaWrite])),
    ("PersonaService/DeletePersona", Rule::Check(&[PersonaWrite])),
    // The journal: filtered to the environments the caller may read.
    ("JournalService/ListRequests", Rule::Check(&[JournalRead])),
    // Data-plane API keys, in the environment they open; a test key needs
    // `test_key.create` there instead of `api_key.manage`.
    (
        "ApiKeyService/CreateApiKey",
        Rule::Check(&[ApiKeyManage, TestKeyCreate]),
    ),
    ("ApiKeyService/ListApiKeys", Rule::Check(&[ApiKeyRead])),
    (
        "ApiKeyService/RevokeApiKey",
        Rule::Check(&[ApiKeyManage, TestKeyCreate]),
    ),
    // Usage statistics: what the nodes answered, per environment.
    ("UsageService/GetUsage", Rule::Check(&[WorkspaceRead])),
    // The org itself: anyone in it reads it; owners change it (quotas:
    // platform admins only, checked by the handler).
    ("OrgService/CreateOrg", Rule::Platform),
    ("OrgService/ListOrgs", Rule::Authenticated),
    ("OrgService/GetOrg", Rule::Authenticated),
    ("OrgService/UpdateOrg", Rule::Check(&[OrgManage])),
    ("OrgService/DeleteOrg", Rule::Check(&[OrgManage])),
    // Without credentials, where --allow-signup allows it.
    ("OrgService/SignUp", Rule::Public),
    // Signing in.
    ("AuthService/Login", Rule::Public),
    ("AuthService/Refresh", Rule::Public),
    ("AuthService/Logout", Rule::Public),
    ("AuthService/WhoAmI", Rule::Authenticated),
    ("AuthService/ChangePassword", Rule::Authenticated),
    (
        "AuthService/IssueEnvironmentToken",
        Rule::Check(&[EnvironmentRead]),
    ),
    (
        "AuthService/ListEnvironmentAccess",
        Rule::Check(&[MemberRead]),
    ),
    // The org's people and automation.
    ("UserService/CreateUser", Rule::Check(&[UserManage])),
    (
        "UserService/CreateServiceAccount",
        Rule::Check(&[UserManage]),
    ),
    ("UserService/GetPrincipal", Rule::Authenticated),
    ("UserService/ListPrincipals", Rule::Authenticated),
    ("UserService/UpdatePrincipal", Rule::Check(&[UserManage])),
    ("UserService/DeletePrincipal", Rule::Check(&[UserManage])),
    // Your own tokens need only authentication; another's, user.manage.
    ("UserService/CreateApiToken", Rule::Check(&[UserManage])),
    ("UserService/ListApiTokens", Rule::Check(&[UserManage])),
    ("UserService/RevokeApiToken", Rule::Check(&[UserManage])),
    // Roles.
    ("RoleService/CreateRole", Rule::Check(&[RoleManage])),
    ("RoleService/ListRoles", Rule::Authenticated),
    ("RoleService/UpdateRole", Rule::Check(&[RoleManage])),
    ("RoleService/DeleteRole", Rule::Check(&[RoleManage])),
    ("RoleService/ListPermissions", Rule::Authenticated),
    // The audit trail.
    ("AuditService/ListAuditEvents", Rule::Check(&[AuditRead])),
    ("AuditService/VerifyAuditChain", Rule::Check(&[AuditRead])),
    ("AuditService/PruneAuditEvents", Rule::Check(&[AuditRead])),
    // The data-plane fleet: the registry is org-level; a workspace's
    // propagation needs it read.
    ("NodeService/ListNodes", Rule::Check(&[NodeRead])),
    ("NodeService/GetPropagation", Rule::Check(&[WorkspaceRead])),
    // Members and policies.
    ("MemberService/SetMember", Rule::Check(&[MemberManage])),
    ("MemberService/RemoveMember", Rule::Check(&[MemberManage])),
    ("MemberService/ListMembers", Rule::Check(&[MemberRead])),
    ("MemberService/SetPolicy", Rule::Check(&[PolicyManage])),
    ("MemberService/DeletePolicy", Rule::Check(&[PolicyManage])),
    ("MemberService/ListPolicies", Rule::Check(&[MemberRead])),
    // Promotions, checked in their target environment.
    (
        "PromotionService/CreatePromotion",
        Rule::Check(&[PromotionRequest]),
    ),
    (
        "PromotionService/PreviewPromotion",
        Rule::Check(&[PromotionRequest]),
    ),
    (
        "PromotionService/GetPromotion",
        Rule::Check(&[ScenarioRead]),
    ),
    // A workspace's list needs it read; the approver's queue is filtered
    // to what the caller may approve.
    (
        "PromotionService/ListPromotions",
        Rule::Check(&[WorkspaceRead, PromotionApprove]),
    ),
    (
        "PromotionService/ApprovePromotion",
        Rule::Check(&[PromotionApprove]),
    ),
    (
        "PromotionService/RejectPromotion",
        Rule::Check(&[PromotionApprove]),
    ),
    (
        "PromotionService/ExecutePromotion",
        Rule::Check(&[PromotionExecute]),
    ),
    (
        "PromotionService/RollbackPromotion",
        Rule::Check(&[PromotionRollback]),
    ),
    (
        "PromotionService/ReportCheck",
        Rule::Check(&[PromotionCheck]),
    ),
    (
        "PromotionService/ListReleases",
        Rule::Check(&[ScenarioRead]),
    ),
    ("PromotionService/GetApprovalRules", Rule::Authenticated),
    // A workspace's rules change every environment's approvals; the org's
    // are part of its security baseline.
    (
        "PromotionService/SetApprovalRules",
        Rule::Check(&[WorkspaceUpdate, TemplateManage]),
    ),
    // Where promotion events go: set up like the workspace itself; the
    // delivery log is read like it.
    (
        "NotificationService/CreateNotificationChannel",
        Rule::Check(&[WorkspaceUpdate]),
    ),
    (
        "NotificationService/ListNotificationChannels",
        Rule::Check(&[WorkspaceRead]),
    ),
    (
        "NotificationService/DeleteNotificationChannel",
        Rule::Check(&[WorkspaceUpdate]),
    ),
    (
        "NotificationService/ListDeliveries",
        Rule::Check(&[WorkspaceRead]),
    ),
];

pub const PACKAGE_PREFIX: &str = "/mockplane.v1.";

/// The rule of a gRPC path (`/mockplane.v1.Service/Method`).
pub fn rule_for(path: &str) -> Option<Rule> {
    let method = path.strip_prefix(PACKAGE_PREFIX)?;
    METHODS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, rule)| *rule)
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    ApiToken,
    /// Valid for one environment of one workspace only.
    EnvironmentToken {
        workspace: Uuid,
        environment: String,
        /// Stated when the token was issued.
        reason: String,
    },
    External {
        issuer: String,
    },
}

impl Credential {
    pub fn as_str(&self) -> &'static str {
        match self {
            Credential::AccessToken => "access_token",
            Credential::ApiToken => "api_token",
            Credential::EnvironmentToken { .. } => "environment_token",
            Credential::External { .. } => "external",
        }
    }
}

/// The authenticated caller, as the auth layer put it in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub credential: Credential,
    /// A reason stated with the request (`x-mockplane-reason` metadata).
    pub reason: Option<String>,
    /// The platform admin's own org, when they act in another one
    /// (`x-mockplane-org`): `principal.org_id` is then the org acted in,
    /// with an owner's role there.
    pub acting_from: Option<Uuid>,
}

impl Caller {
    /// The org the caller acts in.
    pub fn org_id(&self) -> Uuid {
        self.principal.org_id
    }

    /// The caller as a member of the org acted in, for what records its
    /// maker there (a new workspace's first membership): nobody when a
    /// platform admin acts in another org, where they hold no membership.
    pub fn member_id(&self) -> Option<Uuid> {
        self.acting_from.is_none().then_some(self.principal.id)
    }

    /// The org the caller's identity lives in.
    pub fn home_org(&self) -> Uuid {
        self.acting_from.unwrap_or(self.principal.org_id)
    }
}

/// Where a handler acts.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The org as a whole.
    Org,
    /// A workspace as a whole. Environment permissions are checked in
    /// every environment for changes, and in some environment for reads
    /// ([`Grant::environments`] says which).
    Workspace(&'a WorkspaceRef),
    /// One environment of a workspace.
    Environment(&'a WorkspaceRef, &'a str),
    /// The first environment of the workspace's chain, which serves the
    /// working copy that route and scenario edits change.
    Origin(&'a WorkspaceRef),
    /// The API tokens of a principal (`None`: the caller's own), under
    /// [`access::decide_tokens`].
    TokensOf(Option<Uuid>),
    /// A new environment of a workspace: checked like [`Target::Workspace`]
    /// in every existing environment, but it changes nothing they serve,
    /// so those that require a reason do not ask for one.
    NewEnvironment(&'a WorkspaceRef),
}

/// What an authorized handler learns, and its way to the store. Made
/// only here.
#[derive(Clone)]
pub struct Grant {
    pub caller: Caller,
    pub workspace: Option<WorkspaceRecord>,
    /// For a [`Target::Workspace`] read of an environment permission: the
    /// environments where the caller holds it.
    pub environments: Vec<String>,
    /// For an environment target: the caller's role there (`admin` for
    /// org admins).
    pub role: Option<String>,
    store: Arc<dyn Store>,
}

impl Grant {
    pub fn org_id(&self) -> Uuid {
        self.caller.org_id()
    }

    /// The store, for what was granted.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }
}

/// The store for a method that takes no credentials (signing in): made
/// only for a method whose rule is [`Rule::Public`].
pub struct Public {
    store: Arc<dyn Store>,
}

impl Public {
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }
}

/// Finds where a request acts before it is authorized there (a promotion's
/// target, a key's environment, a token's owner): these look-ups and no
/// other store access. The request stays unauthorized after each.
pub struct Locate<'a> {
    store: &'a dyn Store,
    org: Uuid,
}

impl Locate<'_> {
    async fn checking<T>(&self, read: impl Future<Output = T>) -> T {
        let before = guard::current();
        guard::set(Access::Checking);
        let found = read.await;
        if let Some(before) = before {
            guard::set(before);
        }
        found
    }

    pub async fn promotion(&self, id: Uuid) -> Result<PromotionRecord, StoreError> {
        self.checking(self.store.get_promotion(self.org, id)).await
    }

    pub async fn api_key(&self, key: &WorkspaceRef, id: Uuid) -> Result<ApiKeyRecord, StoreError> {
        self.checking(self.store.get_api_key(self.org, key, id))
            .await
    }

    pub async fn api_token(&self, id: Uuid) -> Result<TokenRecord, StoreError> {
        self.checking(self.store.get_api_token(self.org, id)).await
    }
}

/// The declared rule, put in the request by the auth layer.
#[derive(Debug, Clone, Copy)]
pub struct Declared(pub Rule);

/// The caller of a request that passed the auth layer.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing credentials"))
}

fn denied(message: impl Into<String>) -> Status {
    Status::permission_denied(message.into())
}

impl ApiState {
    /// A grant that names no workspace (org targets, the caller's own
    /// things, listings that authorize item by item).
    fn org_grant(&self, caller: Caller) -> Grant {
        guard::set(Access::Granted);
        Grant {
            caller,
            workspace: None,
            environments: Vec::new(),
            role: None,
            store: self.store.clone(),
        }
    }

    /// The store for a method whose rule is [`Rule::Public`].
    pub fn public<T>(&self, request: &Request<T>) -> Result<Public, Status> {
        match request.extensions().get::<Declared>() {
            Some(Declared(Rule::Public)) => {
                guard::set(Access::Granted);
                Ok(Public {
                    store: self.store.clone(),
                })
            }
            _ => {
                tracing::error!("a handler asked for public access to a method that is not public");
                Err(Status::internal("internal error: the method is not public"))
            }
        }
    }

    /// The caller, for a method that acts on the caller only
    /// ([`Rule::Authenticated`]).
    pub fn authenticated<T>(&self, request: &Request<T>) -> Result<Grant, Status> {
        if !matches!(
            request.extensions().get::<Declared>(),
            Some(Declared(Rule::Authenticated))
        ) {
            tracing::error!("a handler skipped the permissions its method declares");
            return Err(Status::internal(
                "internal error: the method declares permissions",
            ));
        }
        let caller = caller(request)?;
        Ok(self.org_grant(caller))
    }

    /// The caller, for a method only platform admins may call
    /// ([`Rule::Platform`]).
    pub fn platform<T>(&self, request: &Request<T>) -> Result<Grant, Status> {
        if !matches!(
            request.extensions().get::<Declared>(),
            Some(Declared(Rule::Platform))
        ) {
            tracing::error!(
                "a handler asked for platform access to a method that is not a platform method"
            );
            return Err(Status::internal(
                "internal error: the method is not a platform method",
            ));
        }
        let caller = caller(request)?;
        if !caller.principal.platform_admin {
            return Err(denied(
                "only a platform admin may do this (the first run's owner is one)",
            ));
        }
        Ok(self.org_grant(caller))
    }

    /// The caller, for a listing across the org that authorizes each item
    /// before it shows it (the approver's queue): it reaches the store, and
    /// what it shows is what [`ApiState::authorize`] allowed item by item.
    pub fn listing<T>(&self, request: &Request<T>) -> Result<Grant, Status> {
        let caller = caller(request)?;
        Ok(self.org_grant(caller))
    }

    /// Look-ups that find where the request acts, before it is authorized.
    pub fn locate<T>(&self, request: &Request<T>) -> Result<Locate<'_>, Status> {
        Ok(Locate {
            store: &*self.store,
            org: caller(request)?.org_id(),
        })
    }

    /// Checks every permission the method declares, at `target`.
    pub async fn authorize<T>(
        &self,
        request: &Request<T>,
        target: Target<'_>,
    ) -> Result<Grant, Status> {
        self.authorize_for(request, target, None).await
    }

    /// Checks `needed`, which must be among what the method declares.
    pub async fn authorize_only<T>(
        &self,
        request: &Request<T>,
        target: Target<'_>,
        needed: &[Permission],
    ) -> Result<Grant, Status> {
        self.authorize_for(request, target, Some(needed)).await
    }

    async fn authorize_for<T>(
        &self,
        request: &Request<T>,
        target: Target<'_>,
        needed: Option<&[Permission]>,
    ) -> Result<Grant, Status> {
        // A refusal leaves what an earlier grant of the request allowed.
        let before = guard::current().unwrap_or(Access::Denied);
        guard::set(Access::Checking);
        let granted = self.decide(request, target, needed).await;
        guard::set(if granted.is_ok() {
            Access::Granted
        } else {
            before
        });
        granted
    }

    async fn decide<T>(
        &self,
        request: &Request<T>,
        target: Target<'_>,
        needed: Option<&[Permission]>,
    ) -> Result<Grant, Status> {
        let caller = caller(request)?;
        let declared = match request.extensions().get::<Declared>() {
            Some(Declared(Rule::Check(permissions))) => *permissions,
            Some(Declared(Rule::Authenticated)) => &[],
            _ => {
                tracing::error!("a handler asked for authorization without a declared rule");
                return Err(Status::internal(
                    "internal error: the method declares no permission",
                ));
            }
        };
        let permissions = match needed {
            Some(needed) => {
                if let Some(p) = needed.iter().find(|p| !declared.contains(p)) {
                    tracing::error!(permission = %p, "a handler checked a permission its method does not declare");
                    return Err(Status::internal("internal error: undeclared permission"));
                }
                needed
            }
            None => declared,
        };
        match target {
            Target::TokensOf(owner) => {
                let own = owner.is_none_or(|owner| owner == caller.principal.id);
                if own && caller.acting_from.is_some() {
                    return Err(denied(
                        "your own API tokens live in your own org: run this without --org (x-mockplane-org)",
                    ));
                }
                access::decide_tokens(
                    caller.principal.org_role,
                    matches!(caller.credential, Credential::EnvironmentToken { .. }),
                    own,
                    permissions,
                )
                .map_err(|d| denied(d.0))?;
                Ok(self.org_grant(caller))
            }
            Target::Org => {
                if let Credential::EnvironmentToken { .. } = caller.credential {
                    return Err(env_token_elsewhere(&caller));
                }
                for &permission in permissions {
                    access::decide(&Question {
                        org_role: caller.principal.org_role,
                        permission,
                        workspace: None,
                        environment: None,
                    })
                    .map_err(|d| denied(d.0))?;
                }
                Ok(self.org_grant(caller))
            }
            Target::Workspace(key)
            | Target::NewEnvironment(key)
            | Target::Environment(key, _)
            | Target::Origin(key) => {
                let facts = self
                    .store
                    .access_facts(caller.org_id(), key, caller.principal.id)
                    .await
                    .map_err(ApiError::from)?;
                if !caller.principal.org_role.is_admin() && facts.standing.roles.is_empty() {
                    // Nothing to see here, as for another org.
                    return Err(ApiError::from(StoreError::NotFound(key.to_string())).into());
                }
                let env = match target {
                    Target::Environment(_, env) => Some(env.to_owned()),
                    Target::Origin(_) => Some(
                        facts
                            .workspace
                            .chain()
                            .first()
                            .map(str::to_owned)
                            .ok_or_else(|| {
                                Status::failed_precondition(
                                    "the workspace has no environment on its chain",
                                )
                            })?,
                    ),
                    _ => None,
                };
                if let Some(env) = &env
                    && facts.workspace.environment(env).is_none()
                {
                    return Err(ApiError::from(StoreError::NotFound(format!(
                        "environment '{env}' of workspace '{}'",
                        facts.workspace.slug
                    )))
                    .into());
                }
                let serving = !matches!(target, Target::NewEnvironment(_));
                let environments =
                    check_workspace(&caller, &facts, env.as_deref(), permissions, serving)?;
                let role = env.as_deref().and_then(|env| {
                    if caller.principal.org_role.is_admin() {
                        Some(access::ADMIN.to_owned())
                    } else {
                        facts.standing.roles.get(env).cloned()
                    }
                });
                Ok(Grant {
                    caller,
                    workspace: Some(facts.workspace),
                    environments,
                    role,
                    store: self.store.clone(),
                })
            }
        }
    }
}

fn env_token_elsewhere(caller: &Caller) -> Status {
    match &caller.credential {
        Credential::EnvironmentToken { environment, .. } => denied(format!(
            "this token is scoped to the `{environment}` environment of one workspace and is refused for anything else; use your own credentials"
        )),
        _ => denied("refused"),
    }
}

fn requires_reason(workspace: &WorkspaceRecord, env: &str) -> bool {
    workspace.environment(env).is_some_and(|e| {
        e.settings
            .over(&workspace.environment_defaults)
            .effective()
            .reason_required
    })
}

/// Decides each permission in the workspace; returns, for environment
/// reads at workspace level, where they hold.
fn check_workspace(
    caller: &Caller,
    facts: &AccessFacts,
    env: Option<&str>,
    permissions: &[Permission],
    // Whether a change to every environment changes what they serve (a
    // new environment does not).
    changes_serving: bool,
) -> Result<Vec<String>, Status> {
    let ws = &facts.workspace;
    let names: Vec<String> = ws.environments.iter().map(|e| e.name.to_string()).collect();
    let workspace_facts = WorkspaceFacts {
        environments: &names,
        standing: &facts.standing,
        policies: &facts.policies,
        catalog: &facts.catalog,
    };
    let ask = |permission: Permission, environment: Option<&str>| {
        access::decide(&Question {
            org_role: caller.principal.org_role,
            permission,
            workspace: Some(workspace_facts),
            environment,
        })
    };
    // An environment token acts only in its own environment (and may read
    // the workspace it belongs to).
    if let Credential::EnvironmentToken {
        workspace,
        environment,
        ..
    } = &caller.credential
        && !access::environment_token_fits(*workspace == ws.id, environment, env, permissions)
    {
        return Err(env_token_elsewhere(caller));
    }
    let mut readable = Vec::new();
    for &permission in permissions {
        match (permission.reach(), env) {
            (Reach::Org, _) => {
                access::decide(&Question {
                    org_role: caller.principal.org_role,
                    permission,
                    workspace: None,
                    environment: None,
                })
                .map_err(|d| denied(d.0))?;
            }
            (Reach::Environment, Some(env)) => {
                ask(permission, Some(env)).map_err(|d| denied(d.0))?;
                if !permission.is_read() && requires_reason(ws, env) {
                    let scoped = matches!(
                        &caller.credential,
                        Credential::EnvironmentToken { workspace, environment, .. }
                            if *workspace == ws.id && environment == env
                    );
                    if !scoped {
                        return Err(denied(format!(
                            "changes to `{env}` of workspace '{}' need an environment token obtained with a reason: run `mockplane env-token {} {env} --reason \"…\"` and use that token for this call",
                            ws.slug, ws.slug
                        )));
                    }
                }
            }
            (Reach::Environment, None) if permission.is_read() => {
                readable = names
                    .iter()
                    .filter(|e| ask(permission, Some(e)).is_ok())
                    .cloned()
                    .collect();
                if readable.is_empty() {
                    return Err(denied(format!(
                        "`{permission}` is not granted to you in any environment of this workspace"
                    )));
                }
            }
            (Reach::Environment, None) | (Reach::AllEnvironments, _) => {
                // A change to every environment at once.
                for name in &names {
                    ask(permission, Some(name)).map_err(|d| {
                        denied(format!(
                            "this changes every environment, so `{permission}` is needed in each: {d}"
                        ))
                    })?;
                }
                // Renaming a workspace changes nothing any environment
                // serves; every other change here does.
                let serving = changes_serving && permission != Permission::WorkspaceUpdate;
                let gated: Vec<&String> = names.iter().filter(|e| requires_reason(ws, e)).collect();
                if serving && !gated.is_empty() && caller.reason.is_none() {
                    return Err(denied(format!(
                        "this changes what every environment serves, and {} {} a reason: state one in the `x-mockplane-reason` metadata (the CLI's --reason)",
                        gated
                            .iter()
                            .map(|e| format!("`{e}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if gated.len() == 1 {
                            "requires"
                        } else {
                            "require"
                        }
                    )));
                }
            }
            (Reach::Workspace, _) => {
                ask(permission, None).map_err(|d| denied(d.0))?;
            }
        }
    }
    Ok(readable)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    use super::*;

    /// Every method of every Mockplane service declares what it needs, and
    /// the table names no method that does not exist.
    #[test]
    fn every_method_declares_its_rule() {
        let set = FileDescriptorSet::decode(mockplane_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = BTreeSet::new();
        for file in &set.file {
            if file.package() != "mockplane.v1" {
                continue;
            }
            for service in &file.service {
                if service.name() == "ConfigDiscovery" {
                    continue;
                }
                for method in &service.method {
                    methods.insert(format!("{}/{}", service.name(), method.name()));
                }
            }
        }
        let declared: BTreeSet<String> = METHODS.iter().map(|(m, _)| m.to_string()).collect();
        let missing: Vec<_> = methods.difference(&declared).collect();
        let unknown: Vec<_> = declared.difference(&methods).collect();
        assert!(missing.is_empty(), "methods without a rule: {missing:?}");
        assert!(unknown.is_empty(), "rules for no method: {unknown:?}");
        assert_eq!(declared.len(), METHODS.len(), "a method is listed twice");
        assert_eq!(
            rule_for("/mockplane.v1.WorkspaceService/DeleteWorkspace"),
            Some(Rule::Check(&[WorkspaceDelete]))
        );
        assert_eq!(rule_for("/mockplane.v1.WorkspaceService/Nope"), None);
    }
}
