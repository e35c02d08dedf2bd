//! The Mockplane control plane: the gRPC API over the store, and the config
//! stream that feeds data-plane nodes from the snapshot cache.
#![forbid(unsafe_code)]

pub mod api;
pub mod config_stream;
pub mod fleet;
pub mod identity;
pub mod jobs;
pub mod keyfile;
pub mod keys;
pub mod notify;
pub mod outbound;
pub mod promotions;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod store;
