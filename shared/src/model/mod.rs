//! What users define, and the rules that validate it: slugs, workspaces,
//! environments and their settings (`environment`), routes (`route`) with
//! request matchers, templates, state rules and realism, personas,
//! scenarios with their contract checks, data-plane API keys, OpenAPI
//! import, and `config`: what a node needs to serve a workspace.

pub mod checks;
pub mod config;
pub mod environment;
pub mod error;
pub mod keys;
pub mod matcher;
pub mod nesting;
pub mod openapi;
pub mod org;
pub mod pattern;
pub mod persona;
pub mod realism;
pub mod route;
pub mod scenario;
pub mod slug;
pub mod state;
pub mod template;
pub mod workspace;
