//! Mockplane's domain, in three parts with no I/O and no protobuf
//! (conversions live in `mockplane-proto`):
//!
//! - [`model`]: what users define — workspaces, environments and their
//!   settings, routes with matchers, templates and state rules, personas,
//!   scenarios and their contract checks, API keys, the serving config a
//!   control plane publishes — with the rules that validate them.
//! - [`engine`]: the mock engine — the route trie, compiling what one
//!   environment serves, answering a request. It reads the model.
//! - [`governance`]: who may do what (`access`) and how changes move
//!   between environments (`promotion`, its gates: `drift`, `datapolicy`,
//!   `contract`, which runs checks on the engine). It reads both.
#![forbid(unsafe_code)]

pub mod engine;
pub mod governance;
pub mod model;

pub use engine::router::{BuildError, Lookup, RouteDef, Router};
pub use model::config::{ConfigRoute, EnvironmentConfig, WorkspaceConfig};
pub use model::environment::{Chain, EnvSettings, ValidationMode};
pub use model::error::FieldError;
pub use model::matcher::{RequestMatch, RequestParts};
pub use model::route::{Method, PathTemplate, ResponseSpec, RoutePatch, RouteSpec};
pub use model::slug::{Slug, SlugError};
pub use model::workspace::{NewWorkspace, WorkspacePatch};
