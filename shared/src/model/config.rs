//! The serving config of one workspace: what the control plane publishes and a
//! data-plane node compiles. Built once per change, immutable afterwards.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::model::environment::{Limits, MAX_ENVIRONMENTS};
use crate::model::error::FieldError;
use crate::model::keys::{ApiKeyConfig, MAX_KEYS_PER_ENVIRONMENT};
use crate::model::persona::{MAX_PERSONAS, PersonaConfig};
use crate::model::realism::Realism;
use crate::model::route::RouteSpec;
use crate::model::slug::Slug;

/// Most routes one environment of a workspace may serve (and one
/// workspace's working copies hold).
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

/// What one environment of a workspace serves, with its effective realism
/// (already merged over the workspace's defaults and its reality level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentConfig {
    pub name: Slug,
    /// The latency and chaos of every route that sets none of its own.
    pub realism: Realism,
    pub routes: Vec<ConfigRoute>,
    /// The data-plane API keys that open this environment (hashes only).
    pub keys: Vec<ApiKeyConfig>,
    /// The personas templates read here, by name: the working copies in
    /// the first environment of the chain, the promoted versions in the
    /// others.
    pub personas: Vec<PersonaConfig>,
    /// What each node admits of the environment's traffic.
    pub limits: Limits,
}

impl EnvironmentConfig {
    /// An environment with no realism of its own and no limits.
    pub fn plain(name: Slug, routes: Vec<ConfigRoute>) -> Self {
        Self {
            name,
            realism: Realism::default(),
            routes,
            keys: Vec::new(),
            personas: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// Checks what no single route can: limits and that no two routes match
    /// the same requests.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.routes.len() > MAX_ROUTES_PER_WORKSPACE {
            return Err(FieldError::new(
                "routes",
                format!(
                    "at most {MAX_ROUTES_PER_WORKSPACE} routes per environment, got {}",
                    self.routes.len()
                ),
            ));
        }
        self.realism.check()?;
        self.limits.check()?;
        if self.keys.len() > MAX_KEYS_PER_ENVIRONMENT {
            return Err(FieldError::new(
                "keys",
                format!(
                    "at most {MAX_KEYS_PER_ENVIRONMENT} API keys per environment, got {}",
                    self.keys.len()
                ),
            ));
        }
        let mut hashes = HashSet::with_capacity(self.keys.len());
        for (index, key) in self.keys.iter().enumerate() {
            if !hashes.insert(key.sha256) {
                return Err(FieldError::new(
                    format!("keys[{index}]"),
                    format!("key {} has the same hash as another key", key.id),
                ));
            }
        }
        if self.personas.len() > MAX_PERSONAS {
            return Err(FieldError::new(
                "personas",
                format!(
                    "at most {MAX_PERSONAS} personas, got {}",
                    self.personas.len()
                ),
            ));
        }
        let mut personas = HashSet::with_capacity(self.personas.len());
        for (index, persona) in self.personas.iter().enumerate() {
            if !personas.insert(persona.name.as_str()) {
                return Err(FieldError::new(
                    format!("personas[{index}].name"),
                    format!("persona '{}' appears twice", persona.name),
                ));
            }
            if !persona.data.is_object() {
                return Err(FieldError::new(
                    format!("personas[{index}].data"),
                    "must be a JSON object",
                ));
            }
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

/// Everything a node needs to serve one workspace: each environment's
/// routes and realism, and which environment answers requests that name
/// none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceConfig {
    pub id: Uuid,
    pub slug: Slug,
    pub active: Slug,
    pub environments: Vec<EnvironmentConfig>,
    /// Changes when the workspace's state machines are reset.
    pub state_epoch: u64,
    /// Requests must present an API key of the environment they reach.
    pub require_api_keys: bool,
}

impl WorkspaceConfig {
    /// A workspace with one environment, `dev`, serving `routes`: for
    /// tests and benchmarks.
    pub fn single(id: Uuid, slug: Slug, routes: Vec<ConfigRoute>) -> Self {
        let dev = Slug::parse("dev").expect("valid");
        Self {
            id,
            slug,
            active: dev.clone(),
            environments: vec![EnvironmentConfig::plain(dev, routes)],
            state_epoch: 0,
            require_api_keys: false,
        }
    }

    pub fn environment(&self, name: &str) -> Option<&EnvironmentConfig> {
        self.environments.iter().find(|e| e.name.as_str() == name)
    }

    /// The routes the active environment serves.
    pub fn active_routes(&self) -> &[ConfigRoute] {
        self.environment(self.active.as_str())
            .map_or(&[], |e| e.routes.as_slice())
    }

    /// Checks every environment, that names are unique, and that the
    /// active environment exists.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.environments.is_empty() || self.environments.len() > MAX_ENVIRONMENTS {
            return Err(FieldError::new(
                "environments",
                format!(
                    "a workspace has 1 to {MAX_ENVIRONMENTS} environments, got {}",
                    self.environments.len()
                ),
            ));
        }
        let mut names = HashSet::with_capacity(self.environments.len());
        for (index, env) in self.environments.iter().enumerate() {
            let field = format!("environments[{index}]");
            if !names.insert(env.name.as_str()) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("environment '{}' appears twice", env.name),
                ));
            }
            env.validate().map_err(|e| e.within(&field))?;
        }
        if !names.contains(self.active.as_str()) {
            return Err(FieldError::new(
                "active_environment",
                format!(
                    "'{}' is not one of the workspace's environments",
                    self.active
                ),
            ));
        }
        Ok(())
    }
}
