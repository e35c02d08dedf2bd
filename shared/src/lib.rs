//! Mockplane's domain: workspace slugs, routes and their validation, the
//! serving config a control plane publishes, and the route compiler a data
//! plane matches requests with. Plain types and pure functions; no I/O and no
//! protobuf (conversions live in `mockplane-proto`).
#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod contract;
pub mod datapolicy;
pub mod drift;
pub mod engine;
pub mod environment;
pub mod error;
pub mod keys;
pub mod matcher;
pub mod nesting;
pub mod openapi;
pub mod path;
pub mod pattern;
pub mod persona;
pub mod promotion;
pub mod realism;
pub mod route;
pub mod router;
pub mod scenario;
pub mod slug;
pub mod state;
pub mod template;
pub mod workspace;

pub use config::{ConfigRoute, EnvironmentConfig, WorkspaceConfig};
pub use environment::{Chain, EnvSettings, ValidationMode};
pub use error::FieldError;
pub use matcher::{RequestMatch, RequestParts};
pub use route::{Method, PathTemplate, ResponseSpec, RoutePatch, RouteSpec};
pub use router::{BuildError, Lookup, RouteDef, Router};
pub use slug::{Slug, SlugError};
pub use workspace::{NewWorkspace, WorkspacePatch};
