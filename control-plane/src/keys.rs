//! Data-plane API keys on the control plane: making secrets, and the job
//! that deletes keys a day after they expired (nodes refuse an expired key
//! from its expiry on by themselves; the job keeps the snapshot from
//! carrying them for ever).

use std::sync::Arc;
use std::time::Duration;

use mockplane_shared::model::keys::KEY_PREFIX;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How long an expired key stays listed (and refused by name, as expired)
/// before it is deleted.
pub const KEEP_EXPIRED: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// How often the job looks for keys to delete.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Characters of the secret kept to recognize a key by (`mpk_` and 6).
pub const HINT_CHARS: usize = KEY_PREFIX.len() + 6;

/// A new key: the prefix and 256 random bits.
pub fn generate() -> String {
    crate::identity::token::generate_with(KEY_PREFIX)
}

/// The start of a secret, shown in lists.
pub fn hint(secret: &str) -> String {
    secret.chars().take(HINT_CHARS).collect()
}

/// Deletes keys expired for more than [`KEEP_EXPIRED`], every
/// [`SWEEP_INTERVAL`] (and once at start), until `shutdown`.
pub async fn sweep_expired(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(_lock) = crate::jobs::lead(&*store, "api_keys.sweep").await else {
            continue;
        };
        match store
            .delete_expired_api_keys(chrono::Utc::now() - KEEP_EXPIRED)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, "deleted API keys expired for more than a day");
            }
            Err(error) => {
                tracing::warn!(%error, "could not delete expired API keys; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hinted() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_eq!(hint(&a).len(), HINT_CHARS);
        assert!(a.starts_with(&hint(&a)));
    }
}
