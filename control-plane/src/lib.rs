//! The Mockplane control plane: the gRPC API over the store, and the config
//! stream that feeds data-plane nodes from the snapshot cache.
#![forbid(unsafe_code)]

pub mod api;
pub mod jobs;
pub mod jwt;
pub mod keys;
pub mod metrics;
pub mod nodes;
pub mod notify;
pub mod oidc;
pub mod password;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod token;
pub mod usage;
