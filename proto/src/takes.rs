//! What each write method takes: the fields of its request a caller may
//! set. [`crate::codec`] checks every request of a method listed here as it
//! is decoded, so a field that is set but not taken (output only, or changed
//! by another method) is refused naming it, instead of being dropped.
//!
//! A listed path takes the field and everything inside it; a message field
//! that is not listed itself but has listed fields inside is walked into.
//! An update's `patch` is taken whole: its `update_mask` says which of its
//! fields change (fields of the patch the mask does not name are left as
//! they are, so a client may send back a whole resource it read).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::LazyLock;

use mockplane_shared::FieldError;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

use crate::v1;

/// One method's declaration.
#[derive(Debug)]
pub struct Takes {
    /// `Service/Method`, as in the API's method table.
    pub method: &'static str,
    /// The request message's full name.
    pub message: &'static str,
    /// The field paths a caller may set.
    pub paths: &'static [&'static str],
}

macro_rules! takes {
    ($($request:ident for $method:literal: [$($path:literal),* $(,)?]),* $(,)?) => {
        fn table() -> Vec<(TypeId, Takes)> {
            vec![$((
                TypeId::of::<v1::$request>(),
                Takes {
                    method: $method,
                    message: concat!("mockplane.v1.", stringify!($request)),
                    paths: &[$($path),*],
                },
            )),*]
        }
    };
}

takes! {
    CreateWorkspaceRequest for "WorkspaceService/CreateWorkspace": [
        "workspace.slug",
        "workspace.name",
        "workspace.description",
        "workspace.active_environment",
        "workspace.promotion_chain",
        "workspace.allow_promotion_skips",
        "workspace.environment_defaults",
        "workspace.require_api_keys",
    ],
    UpdateWorkspaceRequest for "WorkspaceService/UpdateWorkspace": [
        "workspace", "patch", "update_mask", "etag",
    ],
    CreateOrgRequest for "OrgService/CreateOrg": [
        "name", "display_name", "owner_email",
    ],
    UpdateOrgRequest for "OrgService/UpdateOrg": [
        "org", "patch", "update_mask", "etag",
    ],
    CreateEnvironmentRequest for "EnvironmentService/CreateEnvironment": [
        "workspace",
        "environment.name",
        "environment.chain_position",
        "environment.settings",
    ],
    UpdateEnvironmentRequest for "EnvironmentService/UpdateEnvironment": [
        "workspace", "environment", "patch", "update_mask", "etag",
    ],
    CreateRoutesRequest for "RouteService/CreateRoutes": [
        "workspace",
        "environment",
        "scenario",
        "routes.name",
        "routes.method",
        "routes.path",
        "routes.response",
        "routes.request_match",
        "routes.priority",
        "routes.latency",
        "routes.chaos",
        "routes.state",
    ],
    UpdateRouteRequest for "RouteService/UpdateRoute": [
        "workspace", "route_id", "environment", "patch", "update_mask", "etag",
    ],
    CreateScenarioRequest for "ScenarioService/CreateScenario": [
        "workspace",
        "scenario.name",
        "scenario.description",
        "scenario.tags",
        "scenario.checks",
    ],
    UpdateScenarioRequest for "ScenarioService/UpdateScenario": [
        "workspace", "scenario", "patch", "update_mask", "etag",
    ],
    CreateVersionRequest for "ScenarioService/CreateVersion": [
        "workspace", "scenario", "note",
    ],
    ImportOpenApiRequest for "ScenarioService/ImportOpenApi": [
        "workspace",
        "document",
        "scenario.name",
        "scenario.description",
        "scenario.tags",
        "scenario.checks",
    ],
    ImportScenarioRequest for "ScenarioService/ImportScenario": [
        "workspace",
        "scenario.name",
        "scenario.description",
        "scenario.tags",
        "scenario.checks",
        "routes.name",
        "routes.method",
        "routes.path",
        "routes.response",
        "routes.request_match",
        "routes.priority",
        "routes.latency",
        "routes.chaos",
        "routes.state",
    ],
    CreatePersonaRequest for "PersonaService/CreatePersona": [
        "workspace", "persona.name", "persona.data",
    ],
    UpdatePersonaRequest for "PersonaService/UpdatePersona": [
        "workspace", "persona", "data", "etag",
    ],
    CreateUserRequest for "UserService/CreateUser": [
        "email", "name", "org_role", "password",
    ],
    CreateServiceAccountRequest for "UserService/CreateServiceAccount": [
        "name", "org_role",
    ],
    UpdatePrincipalRequest for "UserService/UpdatePrincipal": [
        "id", "name", "org_role", "disabled", "etag",
    ],
    CreateApiTokenRequest for "UserService/CreateApiToken": [
        "principal_id", "name", "ttl_days",
    ],
    CreateRoleRequest for "RoleService/CreateRole": [
        "role.name", "role.description", "role.permissions",
    ],
    UpdateRoleRequest for "RoleService/UpdateRole": [
        "name", "description", "permissions", "update_mask", "etag",
    ],
    SetMemberRequest for "MemberService/SetMember": [
        "workspace", "environment", "principal_id", "role",
    ],
    SetPolicyRequest for "MemberService/SetPolicy": [
        "workspace", "policy.environment", "policy.permission", "policy.roles",
    ],
    CreateApiKeyRequest for "ApiKeyService/CreateApiKey": [
        "workspace", "environment", "name", "ttl_seconds", "test", "reason",
    ],
    // PreviewPromotion takes the same request; it records nothing, so its
    // comment and metadata are checked and then unused.
    CreatePromotionRequest for "PromotionService/CreatePromotion": [
        "workspace",
        "entity_kind",
        "scenario",
        "persona",
        "version",
        "from_environment",
        "to_environment",
        "comment",
        "metadata",
    ],
    SetApprovalRulesRequest for "PromotionService/SetApprovalRules": [
        "workspace", "clear", "rules.patterns", "rules.pillars",
    ],
    CreateNotificationChannelRequest for "NotificationService/CreateNotificationChannel": [
        "workspace",
        "channel.kind",
        "channel.target",
        "channel.events",
        "channel.gitops",
    ],
}

static TABLE: LazyLock<HashMap<TypeId, Takes>> = LazyLock::new(|| table().into_iter().collect());

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set built with this crate decodes")
});

/// The declaration for request type `U`, if it has one.
pub fn of<U: 'static>() -> Option<&'static Takes> {
    TABLE.get(&TypeId::of::<U>())
}

/// Every declaration.
pub fn all() -> impl Iterator<Item = &'static Takes> {
    TABLE.values()
}

/// The descriptor pool of the API.
pub fn pool() -> &'static DescriptorPool {
    &POOL
}

impl Takes {
    pub fn descriptor(&self) -> MessageDescriptor {
        POOL.get_message_by_name(self.message)
            .unwrap_or_else(|| panic!("{} is not in the descriptor set", self.message))
    }

    /// Whether `path` (dotted, no indices) may be set.
    pub fn takes(&self, path: &str) -> bool {
        self.paths.iter().any(|taken| {
            path == *taken
                || path
                    .strip_prefix(taken)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Whether something inside `path` may be set.
    pub fn takes_inside(&self, path: &str) -> bool {
        self.paths.iter().any(|taken| {
            taken
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Refuses an encoded request that sets a field this method does not
    /// take, naming the first such field (with list indices).
    pub fn check(&self, encoded: &[u8]) -> Result<(), FieldError> {
        let message = DynamicMessage::decode(self.descriptor(), encoded)
            .map_err(|e| FieldError::new("", format!("not a valid {}: {e}", self.message)))?;
        self.walk(&message, "", "")
    }

    fn walk(&self, message: &DynamicMessage, path: &str, shown: &str) -> Result<(), FieldError> {
        for (field, value) in message.fields() {
            let join = |prefix: &str| {
                if prefix.is_empty() {
                    field.name().to_owned()
                } else {
                    format!("{prefix}.{}", field.name())
                }
            };
            let (path, shown) = (join(path), join(shown));
            if self.takes(&path) {
                continue;
            }
            if self.takes_inside(&path) {
                match value {
                    Value::Message(inner) => self.walk(inner, &path, &shown)?,
                    Value::List(items) => {
                        for (index, item) in items.iter().enumerate() {
                            if let Value::Message(inner) = item {
                                self.walk(inner, &path, &format!("{shown}[{index}]"))?;
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let method = self.method.replace('/', ".");
            return Err(FieldError::new(
                shown,
                format!(
                    "cannot be set in {method}: it is output only or changed by another method; leave it empty"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn every_declaration_names_its_method_message_and_fields() {
        for takes in all() {
            let (service, method) = takes.method.split_once('/').unwrap();
            let service = POOL
                .get_service_by_name(&format!("mockplane.v1.{service}"))
                .unwrap_or_else(|| panic!("{}: no such service", takes.method));
            let method = service
                .methods()
                .find(|m| m.name() == method)
                .unwrap_or_else(|| panic!("{}: no such method", takes.method));
            assert_eq!(
                method.input().full_name(),
                takes.message,
                "{}",
                takes.method
            );
            for path in takes.paths {
                let mut message = takes.descriptor();
                let mut parts = path.split('.').peekable();
                while let Some(part) = parts.next() {
                    let field = message
                        .get_field_by_name(part)
                        .unwrap_or_else(|| panic!("{}: {path}: no field {part}", takes.method));
                    if parts.peek().is_some() {
                        message = field
                            .kind()
                            .as_message()
                            .unwrap_or_else(|| {
                                panic!("{}: {path}: {part} is no message", takes.method)
                            })
                            .clone();
                    }
                }
            }
        }
    }

    /// Every method that creates, changes or imports has its request
    /// declared, so a new one cannot drop input unnoticed.
    #[test]
    fn every_write_method_declares_what_it_takes() {
        let declared: Vec<&str> = all().map(|t| t.message).collect();
        let mut missing = Vec::new();
        for service in POOL.services() {
            if service.package_name() != "mockplane.v1" {
                continue;
            }
            for method in service.methods() {
                let writes = ["Create", "Update", "Set", "Import", "Preview"]
                    .iter()
                    .any(|prefix| method.name().starts_with(prefix));
                if writes && !declared.contains(&method.input().full_name()) {
                    missing.push(format!("{}/{}", service.name(), method.name()));
                }
            }
        }
        assert!(missing.is_empty(), "not declared in takes.rs: {missing:?}");
    }

    /// The leading comment of a field, from the descriptor set's source info.
    fn comment(field: &prost_reflect::FieldDescriptor) -> String {
        let file = field.parent_file();
        file.file_descriptor_proto()
            .source_code_info
            .as_ref()
            .and_then(|info| info.location.iter().find(|l| l.path == field.path()))
            .and_then(|l| l.leading_comments.clone())
            .unwrap_or_default()
    }

    /// A field a create does not take, inside a resource it does, is one
    /// the server sets: its comment says so, which reflection and generated
    /// SDKs show to clients.
    #[test]
    fn fields_a_create_does_not_take_are_marked_output_only() {
        let mut unmarked = Vec::new();
        for takes in all() {
            let descriptor = takes.descriptor();
            for field in descriptor.fields() {
                let Some(resource) = field.kind().as_message().cloned() else {
                    continue;
                };
                if !takes.takes_inside(field.name()) {
                    continue;
                }
                for inner in resource.fields() {
                    let path = format!("{}.{}", field.name(), inner.name());
                    if !takes.takes(&path)
                        && !takes.takes_inside(&path)
                        && !comment(&inner).to_lowercase().contains("output only")
                    {
                        unmarked.push(format!("{}: {}", takes.method, inner.full_name()));
                    }
                }
            }
        }
        unmarked.sort();
        unmarked.dedup_by(|a, b| a.split(": ").nth(1) == b.split(": ").nth(1));
        assert!(
            unmarked.is_empty(),
            "say \"Output only.\" in the comments of: {unmarked:#?}"
        );
    }

    #[test]
    fn a_field_not_taken_is_named_with_its_place() {
        let takes = of::<v1::CreateWorkspaceRequest>().unwrap();
        let ok = v1::CreateWorkspaceRequest {
            workspace: Some(v1::Workspace {
                slug: "a".into(),
                require_api_keys: true,
                ..Default::default()
            }),
        };
        takes.check(&ok.encode_to_vec()).unwrap();
        let wrong = v1::CreateWorkspaceRequest {
            workspace: Some(v1::Workspace {
                slug: "a".into(),
                etag: "W/1".into(),
                ..Default::default()
            }),
        };
        let error = takes.check(&wrong.encode_to_vec()).unwrap_err();
        assert_eq!(error.field, "workspace.etag");
        assert!(
            error.message.contains("WorkspaceService.CreateWorkspace"),
            "{error}"
        );
    }
}
