//! The mock engine: compiles what one environment serves into a [`Table`]
//! and answers a request from it — routing, matchers, templates with
//! personas, latency and chaos decisions, state machines (behind
//! [`Effects`]). No I/O, no protobuf, no server: a data-plane node adds
//! the socket, keys, journal, usage and timers; a promotion's contract
//! checks call the same engine, so a check gets the answer a node gives.

mod answer;
mod compile;
mod problem;

pub use answer::{Effects, Outcome, PERSONA_HEADER, Request, Response, answer, requested_persona};
pub use compile::{
    CompiledRealism, CompiledRoute, CompiledState, CompiledTemplate, FastMap, HeaderList, Interned,
    Place, Table, UnknownPersona, compile, segments,
};
pub use problem::{json_head, problem};
