//! The serving config of one workspace: what the control plane publishes and a
//! data-plane node compiles. Built once per change, immutable afterwards.

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::FieldError;
use crate::route::RouteSpec;
use crate::slug::Slug;

/// Most routes one workspace may hold.
pub const MAX_ROUTES_PER_WORKSPACE: usize = 2000;
/// Most response-body bytes one workspace may hold in total; bounds the size
/// of one workspace's config on the wire and in a node's memory.
pub const MAX_WORKSPACE_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// A route with the id the control plane gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRoute {
    pub id: Uuid,
    pub spec: RouteSpec,
}

/// Everything a node needs to serve one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceConfig {
    pub id: Uuid,
    pub slug: Slug,
    pub routes: Vec<ConfigRoute>,
}

impl WorkspaceConfig {
    /// Checks what no single route can: limits and that no two routes match
    /// the same requests.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.routes.len() > MAX_ROUTES_PER_WORKSPACE {
            return Err(FieldError::new(
                "routes",
                format!(
                    "at most {MAX_ROUTES_PER_WORKSPACE} routes per workspace, got {}",
                    self.routes.len()
                ),
            ));
        }
        let mut seen: HashMap<String, Uuid> = HashMap::with_capacity(self.routes.len());
        for (index, route) in self.routes.iter().enumerate() {
            if let Some(other) = seen.insert(route.spec.match_key(), route.id) {
                return Err(FieldError::new(
                    format!("routes[{index}]"),
                    format!(
                        "{} {} matches the same requests as route {other}",
                        route.spec.method, route.spec.path
                    ),
                ));
            }
        }
        Ok(())
    }
}
