//! Mockplane's gRPC protocol, `mockplane.v1`: generated types and services,
//! the descriptor set for server reflection, and the conversions between the
//! wire messages and the plain domain types of `mockplane-shared`.
//!
//! Protobuf stays at the edge: only gRPC adapters use this crate's message
//! types; everything behind them works with domain types.
#![forbid(unsafe_code)]

pub mod codec;
pub mod convert;
pub mod resource;
pub mod takes;

/// Generated code for the `mockplane.v1` package.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("mockplane.v1");
}

/// The encoded `FileDescriptorSet` of every `mockplane.v1` file, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mockplane_descriptor.bin"));

/// The config-stream protocol version this build speaks (see `config.proto`).
pub const PROTOCOL_VERSION: u32 = 4;

/// Node tokens, the credential a node presents on the config stream
/// (`authorization: Bearer mpn_…`), start with this.
pub const NODE_TOKEN_PREFIX: &str = "mpn_";

/// The version of `WorkspaceConfig` this build writes and reads (see
/// `config.proto`); 4: personas per environment.
pub const CONFIG_SCHEMA_VERSION: u32 = 4;
