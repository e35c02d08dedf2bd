//! The mock engine: compiles what one environment serves into a [`Table`]
//! and answers a request from it — routing, matchers, templates with
//! personas, latency and chaos decisions, state machines (behind
//! [`Effects`]). No I/O, no protobuf, no server: a data-plane node adds
//! the socket, keys, journal, usage and timers; a promotion's contract
//! checks call the same engine, so a check gets the answer a node gives.
//! `router.rs` is the route trie it matches with; `path.rs` how a request
//! path names its workspace.

mod answer;
mod compile;
pub mod path;
mod problem;
pub mod router;

pub use answer::{Effects, Outcome, PERSONA_HEADER, Request, Response, answer, requested_persona};
pub use compile::{
    CompiledRealism, CompiledRoute, CompiledState, CompiledTemplate, FastMap, HeaderList, Interned,
    Place, Table, UnknownPersona, compile, segments,
};
pub use problem::{json_head, problem};
