//! The state of stateful routes on this node: every (workspace,
//! environment, machine, key) has a current state, `started` until a route
//! moves it. State lives here, on the node that served the request: nodes
//! do not share it (a shared backend for a fleet is future work), and it
//! survives config changes but not a restart.
//!
//! Bounded: at most [`MAX_MACHINES`] copies per node. When a shard is full,
//! a new copy evicts an arbitrary one of that shard. Locks are held only to
//! read or write one entry, never across an await.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use mockplane_shared::model::state::INITIAL_STATE;
use uuid::Uuid;

/// Most machine copies one node keeps.
pub const MAX_MACHINES: usize = 100_000;
const SHARDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MachineId {
    workspace: Uuid,
    /// `environment \0 machine \0 key`.
    name: Box<str>,
}

/// One machine copy, as `/state` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MachineState {
    pub environment: String,
    pub machine: String,
    pub key: String,
    pub state: String,
}

/// One shard: machine copies and their states.
type Shard = Mutex<HashMap<MachineId, Box<str>>>;

#[derive(Debug)]
pub struct Machines {
    shards: Box<[Shard]>,
    /// The state epoch each workspace's copies belong to.
    epochs: Mutex<HashMap<Uuid, u64>>,
    hasher: foldhash::fast::RandomState,
    per_shard: usize,
}

impl Default for Machines {
    fn default() -> Self {
        Self::with_capacity(MAX_MACHINES)
    }
}

impl Machines {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epochs: Mutex::new(HashMap::new()),
            hasher: foldhash::fast::RandomState::default(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn id(workspace: Uuid, environment: &str, machine: &str, key: &str) -> MachineId {
        MachineId {
            workspace,
            name: format!("{environment}\0{machine}\0{key}").into(),
        }
    }

    fn shard(&self, id: &MachineId) -> &Shard {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// Whether the machine copy is in `state`.
    pub fn is(
        &self,
        workspace: Uuid,
        environment: &str,
        machine: &str,
        key: &str,
        state: &str,
    ) -> bool {
        let id = Self::id(workspace, environment, machine, key);
        let shard = self.shard(&id).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(&id).map_or(INITIAL_STATE, |s| &**s) == state
    }

    /// The machine copy's current state.
    pub fn get(&self, workspace: Uuid, environment: &str, machine: &str, key: &str) -> String {
        let id = Self::id(workspace, environment, machine, key);
        let shard = self.shard(&id).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(&id).map_or(INITIAL_STATE, |s| &**s).to_owned()
    }

    pub fn set(&self, workspace: Uuid, environment: &str, machine: &str, key: &str, state: &str) {
        let id = Self::id(workspace, environment, machine, key);
        let mut shard = self.shard(&id).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&id) {
            let evict = shard.keys().next().cloned();
            if let Some(evict) = evict {
                shard.remove(&evict);
            }
        }
        shard.insert(id, state.into());
    }

    /// Brings the state in line with a new table: forgets workspaces that
    /// are gone and those whose state epoch changed (a reset).
    pub fn sync(&self, epochs: impl Iterator<Item = (Uuid, u64)>) {
        let current: HashMap<Uuid, u64> = epochs.collect();
        let mut known = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<Uuid> = known
            .iter()
            .filter(|(id, epoch)| current.get(id) != Some(epoch))
            .map(|(id, _)| *id)
            .collect();
        *known = current;
        drop(known);
        if stale.is_empty() {
            return;
        }
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|id, _| !stale.contains(&id.workspace));
        }
    }

    /// Every machine copy of a workspace that has left `started`.
    pub fn of(&self, workspace: Uuid) -> Vec<MachineState> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (id, state) in shard.iter().filter(|(id, _)| id.workspace == workspace) {
                let mut parts = id.name.splitn(3, '\0');
                out.push(MachineState {
                    environment: parts.next().unwrap_or_default().to_owned(),
                    machine: parts.next().unwrap_or_default().to_owned(),
                    key: parts.next().unwrap_or_default().to_owned(),
                    state: state.to_string(),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.environment, &a.machine, &a.key).cmp(&(&b.environment, &b.machine, &b.key))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_start_in_started_are_kept_apart_and_reset_by_epoch() {
        let machines = Machines::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(machines.is(a, "dev", "cart", "", INITIAL_STATE));
        machines.set(a, "dev", "cart", "", "full");
        machines.set(a, "dev", "cart", "run-2", "paid");
        machines.set(b, "dev", "cart", "", "full");
        assert!(machines.is(a, "dev", "cart", "", "full"));
        assert!(
            machines.is(a, "test", "cart", "", INITIAL_STATE),
            "per environment"
        );
        assert!(machines.is(a, "dev", "cart", "run-2", "paid"), "per key");
        assert_eq!(machines.of(a).len(), 2);

        machines.sync([(a, 0), (b, 0)].into_iter());
        assert!(
            machines.is(a, "dev", "cart", "", "full"),
            "same epoch: kept"
        );
        machines.sync([(a, 1), (b, 0)].into_iter());
        assert!(machines.is(a, "dev", "cart", "", INITIAL_STATE), "a reset");
        assert!(
            machines.is(b, "dev", "cart", "", "full"),
            "only that workspace"
        );
        machines.sync([(a, 1)].into_iter());
        assert!(
            machines.is(b, "dev", "cart", "", INITIAL_STATE),
            "gone: forgotten"
        );
    }

    #[test]
    fn copies_are_bounded() {
        let machines = Machines::with_capacity(32);
        let ws = Uuid::new_v4();
        for i in 0..1000 {
            machines.set(ws, "dev", "m", &i.to_string(), "s");
        }
        assert!(machines.of(ws).len() <= 32);
    }
}
