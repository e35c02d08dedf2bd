//! The routing table a node serves from: every workspace compiled, looked up
//! by slug, each environment a table of the mock engine
//! (`mockplane_shared::engine`) with the node's API keys and usage counters
//! beside it. Immutable; a config update builds the next table and swaps it
//! in whole, so a request sees either the old table or the new one.

use std::sync::Arc;

use mockplane_proto::v1;
use mockplane_shared::EnvironmentConfig;
use mockplane_shared::engine::{self, FastMap, Interned, Place, Table};
use uuid::Uuid;

use crate::limits::{Limiter, Limiters};
use crate::usage::{EnvUsage, KeyUse, Usage};

/// An API key of an environment, as a node checks it.
#[derive(Debug)]
pub struct CompiledKey {
    pub id: Uuid,
    /// A temporary test key: its requests are not usage.
    pub test: bool,
    /// Unix seconds from which the key is refused; 0: never.
    pub expires_at_unix: u64,
    /// When the key was last presented, for the usage report.
    pub used: Arc<KeyUse>,
}

impl CompiledKey {
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_at_unix != 0 && now_unix >= self.expires_at_unix
    }
}

/// One environment of a workspace, ready to serve: the engine's table of
/// its mocks, the keys that open it and its usage counters.
#[derive(Debug)]
pub struct CompiledEnvironment {
    pub name: Arc<str>,
    pub table: Table,
    /// The environment's API keys by the SHA-256 of their secret. Digests
    /// are uniform, so a fast hasher is safe here.
    pub keys: FastMap<[u8; 32], CompiledKey>,
    /// What the environment answered, for the usage report.
    pub usage: Arc<EnvUsage>,
    /// Its rate and concurrency limits on this node; `None`: unlimited.
    pub limiter: Option<Arc<Limiter>>,
}

impl CompiledEnvironment {
    /// The key whose secret has this SHA-256.
    pub fn key(&self, sha256: &[u8; 32]) -> Option<&CompiledKey> {
        self.keys.get(sha256)
    }
}

#[derive(Debug)]
pub struct CompiledWorkspace {
    pub id: Uuid,
    pub slug: Arc<str>,
    pub hash: String,
    /// The resource it was compiled from, kept only by a node that writes
    /// a last-known-good file (see `lkg.rs`; [`RoutingTable::keeping_resources`]).
    pub resource: Option<v1::WorkspaceResource>,
    /// In the control plane's order: the chain, then the others.
    pub environments: Box<[CompiledEnvironment]>,
    /// Index of the environment that answers requests naming none.
    pub active: usize,
    /// Changes when the workspace's state machines are reset.
    pub state_epoch: u64,
    /// Every request must present a key of the environment it reaches.
    pub require_keys: bool,
}

impl CompiledWorkspace {
    /// The environment a request names, or the active one when it names
    /// none; `None` when the named one does not exist.
    pub fn environment(&self, requested: Option<&str>) -> Option<&CompiledEnvironment> {
        match requested {
            None => self.environments.get(self.active),
            Some(name) => self.environments.iter().find(|e| &*e.name == name),
        }
    }

    pub fn active(&self) -> &str {
        self.environments.get(self.active).map_or("", |e| &e.name)
    }
}

/// Why a workspace of an update was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceError {
    pub workspace_id: String,
    pub message: String,
}

impl WorkspaceError {
    fn new(workspace_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            workspace_id: workspace_id.into(),
            message: message.into(),
        }
    }
}

/// Checks a resource end to end and compiles it. Nothing a control plane
/// sends can make this panic.
pub fn compile(
    resource: &v1::WorkspaceResource,
    interned: &mut Interned,
    usage: &Usage,
    limiters: &Limiters,
    keep_resource: bool,
) -> Result<CompiledWorkspace, String> {
    let config = mockplane_proto::resource::decode(resource)?;
    let active = config
        .environments
        .iter()
        .position(|e| e.name == config.active)
        .ok_or_else(|| format!("active environment '{}' is missing", config.active))?;
    let slug: Arc<str> = config.slug.as_str().into();
    let environments = config
        .environments
        .into_iter()
        .enumerate()
        .map(|(index, env)| {
            let name = env.name.to_string();
            compile_environment(env, index == 0, &slug, interned, config.id, usage, limiters)
                .map_err(|e| format!("environment {name}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CompiledWorkspace {
        id: config.id,
        slug,
        hash: resource.hash.clone(),
        resource: keep_resource.then(|| resource.clone()),
        environments: environments.into(),
        active,
        state_epoch: config.state_epoch,
        require_keys: config.require_api_keys,
    })
}

fn compile_environment(
    env: EnvironmentConfig,
    first: bool,
    slug: &Arc<str>,
    interned: &mut Interned,
    workspace: Uuid,
    usage: &Usage,
    limiters: &Limiters,
) -> Result<CompiledEnvironment, String> {
    let mut keys: FastMap<[u8; 32], CompiledKey> =
        FastMap::with_capacity_and_hasher(env.keys.len(), Default::default());
    for key in &env.keys {
        let compiled = CompiledKey {
            id: key.id,
            test: key.test,
            expires_at_unix: key.expires_at_unix,
            used: usage.key(key.id),
        };
        if keys.insert(key.sha256, compiled).is_some() {
            return Err(format!("API key {} has the same hash as another", key.id));
        }
    }
    let name: Arc<str> = env.name.as_str().into();
    let place = Place {
        workspace: slug.clone(),
        environment: name.clone(),
        first,
    };
    let table = engine::compile(place, env.routes, &env.realism, env.personas, interned)?;
    Ok(CompiledEnvironment {
        usage: usage.environment(workspace, &name),
        limiter: limiters.environment(workspace, &name, env.limits),
        name,
        table,
        keys,
    })
}

/// A whole config update, its chunks put together.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub revision: u64,
    pub nonce: String,
    pub full: bool,
    pub base_revision: u64,
    pub upserts: Vec<v1::WorkspaceResource>,
    pub removed: Vec<String>,
    /// The control plane says an update that leaves nothing to serve is
    /// meant (see [`RoutingTable::empties`]).
    pub empty_is_intended: bool,
    /// With `full`: workspaces this table keeps as they are (their hash
    /// matched what the node said it serves).
    pub kept: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RoutingTable {
    pub revision: u64,
    by_slug: FastMap<Arc<str>, Arc<CompiledWorkspace>>,
    by_id: FastMap<Uuid, Arc<CompiledWorkspace>>,
    interned: Interned,
    /// Usage counters, shared by every table built from this one.
    usage: Arc<Usage>,
    /// Environments' limiters, shared by every table built from this one.
    limiters: Arc<Limiters>,
    /// Workspaces keep the resource they were compiled from (a node with a
    /// last-known-good file); passed on to every table built from this one.
    keep_resources: bool,
}

impl RoutingTable {
    /// An empty table whose workspaces keep their resources, for a node
    /// that writes a last-known-good file; others do not pay for the copy.
    pub fn keeping_resources() -> Self {
        Self {
            keep_resources: true,
            ..Self::default()
        }
    }

    /// The node's usage counters.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    pub fn workspace(&self, slug: &str) -> Option<&CompiledWorkspace> {
        self.by_slug.get(slug).map(Arc::as_ref)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.by_id.contains_key(id)
    }

    /// Whether `update` would leave this non-empty table with nothing to
    /// serve without the control plane saying so: a control plane pointed
    /// at an empty or wrong database must not take the fleet down.
    pub fn empties(&self, update: &Update) -> bool {
        if self.by_id.is_empty()
            || update.empty_is_intended
            || !update.upserts.is_empty()
            || !update.kept.is_empty()
        {
            return false;
        }
        update.full
            || self.by_id.keys().all(|id| {
                update
                    .removed
                    .iter()
                    .any(|r| Uuid::try_parse(r).ok() == Some(*id))
            })
    }

    /// Every workspace's content hash, by id, for the Hello.
    pub fn hashes(&self) -> std::collections::HashMap<String, String> {
        self.by_id
            .iter()
            .map(|(id, w)| (id.to_string(), w.hash.clone()))
            .collect()
    }

    /// The resources of every workspace served, for the last-known-good
    /// file; none unless the table keeps them.
    pub fn resources(&self) -> impl Iterator<Item = &v1::WorkspaceResource> {
        self.by_id.values().filter_map(|w| w.resource.as_ref())
    }

    /// Every workspace's state epoch, for the node's state machines.
    pub fn state_epochs(&self) -> impl Iterator<Item = (Uuid, u64)> + '_ {
        self.by_id.iter().map(|(id, w)| (*id, w.state_epoch))
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The table after `update`. Workspaces that fail to compile keep what
    /// they had (or stay absent) and are reported; the rest of the update
    /// applies. The caller checks that a delta's base is this table.
    pub fn apply(&self, update: &Update) -> (RoutingTable, Vec<WorkspaceError>) {
        let mut errors = Vec::new();
        // Limiters of environments this table no longer serves (the ones
        // before it are gone by now) have done their work.
        self.limiters.forget_unused();
        // A full update starts afresh, which also drops what no route uses.
        let (mut by_id, mut interned) = if update.full {
            (FastMap::default(), Interned::default())
        } else {
            (self.by_id.clone(), self.interned.clone())
        };
        if update.full {
            for raw in &update.kept {
                match Uuid::try_parse(raw)
                    .ok()
                    .and_then(|id| self.by_id.get_key_value(&id))
                {
                    Some((id, workspace)) => {
                        by_id.insert(*id, workspace.clone());
                    }
                    None => errors.push(WorkspaceError::new(
                        raw.as_str(),
                        "told to keep a workspace this node does not serve",
                    )),
                }
            }
        }
        for raw in &update.removed {
            match Uuid::try_parse(raw) {
                Ok(id) => {
                    by_id.remove(&id);
                }
                Err(_) => errors.push(WorkspaceError::new(
                    raw.as_str(),
                    "removed id is not a UUID",
                )),
            }
        }
        for resource in &update.upserts {
            let Ok(id) = Uuid::try_parse(&resource.workspace_id) else {
                errors.push(WorkspaceError::new(
                    resource.workspace_id.as_str(),
                    "workspace id is not a UUID",
                ));
                continue;
            };
            match compile(
                resource,
                &mut interned,
                &self.usage,
                &self.limiters,
                self.keep_resources,
            ) {
                Ok(compiled) => {
                    by_id.insert(id, Arc::new(compiled));
                }
                Err(message) => {
                    // On a full update, keep serving the previous version.
                    if let Some(previous) = self.by_id.get(&id) {
                        by_id.insert(id, previous.clone());
                    }
                    errors.push(WorkspaceError::new(resource.workspace_id.as_str(), message));
                }
            }
        }

        let mut by_slug: FastMap<Arc<str>, Arc<CompiledWorkspace>> =
            FastMap::with_capacity_and_hasher(by_id.len(), Default::default());
        let mut clashes = Vec::new();
        for workspace in by_id.values() {
            if let Some(other) = by_slug.insert(workspace.slug.clone(), workspace.clone()) {
                clashes.push((workspace.id, other.id, workspace.slug.clone()));
            }
        }
        for (a, b, slug) in clashes {
            // The control plane keeps slugs unique; if it ever sends a clash,
            // serve neither rather than pick one at random.
            by_slug.remove(&slug);
            for id in [a, b] {
                errors.push(WorkspaceError::new(
                    id.to_string(),
                    format!("slug '{slug}' is used by two workspaces"),
                ));
            }
        }
        (
            RoutingTable {
                revision: update.revision,
                by_slug,
                by_id,
                interned,
                usage: self.usage.clone(),
                limiters: self.limiters.clone(),
                keep_resources: self.keep_resources,
            },
            errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mockplane_shared::{ConfigRoute, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};

    use super::*;

    fn resource(id: Uuid, slug: &str, paths: &[&str]) -> v1::WorkspaceResource {
        let config = WorkspaceConfig::single(
            id,
            Slug::parse(slug).unwrap(),
            paths
                .iter()
                .map(|path| ConfigRoute {
                    id: Uuid::new_v4(),
                    spec: RouteSpec::parse("", "GET", path, || {
                        ResponseSpec::parse(200, vec![], Bytes::from_static(b"ok"))
                    })
                    .unwrap(),
                })
                .collect(),
        );
        mockplane_proto::resource::encode(&config, 1)
    }

    fn update(
        revision: u64,
        full: bool,
        upserts: Vec<v1::WorkspaceResource>,
        removed: Vec<Uuid>,
    ) -> Update {
        Update {
            revision,
            full,
            upserts,
            removed: removed.iter().map(Uuid::to_string).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_update_keeps_what_it_lists_as_kept() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (table, _) = RoutingTable::default().apply(&update(
            1,
            true,
            vec![resource(a, "a", &["/x"]), resource(b, "b", &[])],
            vec![],
        ));
        let hashes = table.hashes();
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[&a.to_string()], table.workspace("a").unwrap().hash);
        let kept = Update {
            kept: vec![a.to_string()],
            ..update(9, true, vec![resource(c, "c", &[])], vec![])
        };
        assert!(!table.empties(&Update {
            upserts: Vec::new(),
            ..kept.clone()
        }));
        let (next, errors) = table.apply(&kept);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(next.revision, 9);
        assert!(
            std::ptr::eq(next.workspace("a").unwrap(), table.workspace("a").unwrap()),
            "the same compiled workspace, not compiled again"
        );
        assert!(next.workspace("b").is_none(), "not kept, not sent: gone");
        assert!(next.workspace("c").is_some());
        // Told to keep what it does not hold: named, the rest applies.
        let (_, errors) = table.apply(&Update {
            kept: vec![c.to_string()],
            ..update(10, true, vec![], vec![])
        });
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("does not serve"), "{errors:?}");
    }

    #[test]
    fn full_then_delta() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let table = RoutingTable::default();
        let (table, errors) = table.apply(&update(
            1,
            true,
            vec![resource(a, "a", &["/x"]), resource(b, "b", &[])],
            vec![],
        ));
        assert!(errors.is_empty());
        assert_eq!((table.revision, table.len()), (1, 2));
        assert!(table.workspace("a").is_some());

        // Rename a to c, remove b.
        let (table, errors) =
            table.apply(&update(2, false, vec![resource(a, "c", &["/y"])], vec![b]));
        assert!(errors.is_empty());
        assert!(table.workspace("a").is_none() && table.workspace("b").is_none());
        let c = table.workspace("c").unwrap();
        assert_eq!(c.environment(None).unwrap().table.router.len(), 1);
        assert_eq!(table.len(), 1);

        // A full update replaces everything.
        let (table, _) = table.apply(&update(3, true, vec![resource(b, "b", &[])], vec![]));
        assert!(table.workspace("c").is_none());
        assert!(table.workspace("b").is_some());
    }

    #[test]
    fn an_update_that_empties_the_table_needs_the_control_plane_to_mean_it() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let empty = RoutingTable::default();
        assert!(
            !empty.empties(&update(1, true, vec![], vec![])),
            "nothing to lose"
        );
        let (table, _) = empty.apply(&update(
            1,
            true,
            vec![resource(a, "a", &[]), resource(b, "b", &[])],
            vec![],
        ));
        assert!(table.empties(&update(2, true, vec![], vec![])));
        assert!(table.empties(&update(2, false, vec![], vec![a, b])));
        assert!(
            !table.empties(&update(2, false, vec![], vec![a])),
            "b stays"
        );
        assert!(!table.empties(&update(2, true, vec![resource(a, "a", &[])], vec![])));
        let meant = Update {
            empty_is_intended: true,
            ..update(2, true, vec![], vec![])
        };
        assert!(!table.empties(&meant));
    }

    #[test]
    fn a_bad_workspace_keeps_its_old_config_and_the_rest_applies() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (table, _) = RoutingTable::default().apply(&update(
            1,
            true,
            vec![resource(a, "a", &["/old"])],
            vec![],
        ));
        let mut bad = resource(a, "a", &["/new"]);
        bad.hash = "0".repeat(64);
        let (table, errors) =
            table.apply(&update(2, true, vec![bad, resource(b, "b", &[])], vec![]));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].workspace_id, a.to_string());
        assert!(errors[0].message.contains("hash mismatch"));
        assert_eq!(table.revision, 2);
        let a_table = table.workspace("a").unwrap();
        assert!(matches!(
            a_table
                .environment(None)
                .unwrap()
                .table
                .router
                .lookup(Some(mockplane_shared::Method::Get), "/old"),
            mockplane_shared::Lookup::Found(_)
        ));
        assert!(table.workspace("b").is_some());
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        let id = Uuid::new_v4();
        let cases = [
            v1::WorkspaceResource {
                workspace_id: "not-a-uuid".into(),
                ..Default::default()
            },
            v1::WorkspaceResource {
                workspace_id: id.to_string(),
                config: Bytes::from_static(b"\xff\xff\xff\xff"),
                ..Default::default()
            },
            {
                let mut other = resource(Uuid::new_v4(), "x", &[]);
                other.workspace_id = id.to_string();
                other
            },
        ];
        for case in cases {
            let (table, errors) =
                RoutingTable::default().apply(&update(1, false, vec![case], vec![]));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(table.is_empty());
        }
    }

    #[test]
    fn clashing_slugs_serve_neither() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (table, errors) = RoutingTable::default().apply(&update(
            1,
            true,
            vec![resource(a, "same", &[]), resource(b, "same", &[])],
            vec![],
        ));
        assert_eq!(errors.len(), 2);
        assert!(table.workspace("same").is_none());
    }
}
