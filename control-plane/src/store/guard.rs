//! The store's own check that an API request was authorized. The auth
//! layer runs every handler inside [`scope`]; the authorization step
//! (`api::authz`) marks the request [`Access::Checking`] while it reads
//! what it decides on and [`Access::Granted`] once it granted it; and
//! [`SqlStore::begin`](super::SqlStore), the one way into the database,
//! refuses a transaction to a request in neither state. Work outside a
//! request (jobs, the config stream, node registry writes) has no scope
//! and is not checked here.

use std::cell::Cell;
use std::future::Future;

use super::{StoreError, StoreResult};

/// How far a request got with authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not authorized: the store refuses it.
    Denied,
    /// Authorization is reading what it decides on.
    Checking,
    /// A grant was issued.
    Granted,
}

tokio::task_local! {
    static ACCESS: Cell<Access>;
}

/// Runs one API request's handler, starting [`Access::Denied`].
pub async fn scope<F: Future>(handler: F) -> F::Output {
    ACCESS.scope(Cell::new(Access::Denied), handler).await
}

/// Moves the current request to `access` (nothing outside a request).
pub fn set(access: Access) {
    let _ = ACCESS.try_with(|current| current.set(access));
}

/// Where the current request stands; `None` outside a request.
pub fn current() -> Option<Access> {
    ACCESS.try_with(Cell::get).ok()
}

/// Refuses the store to a request that was not authorized.
pub(super) fn check() -> StoreResult<()> {
    if current() == Some(Access::Denied) {
        tracing::error!("an API request reached the store without an authorization grant");
        return Err(StoreError::Internal(
            "a request reached the store without an authorization grant".into(),
        ));
    }
    Ok(())
}
