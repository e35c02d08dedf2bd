//! The fleet of data-plane nodes as the control plane sees it: which nodes
//! are connected to this replica and what each serves, written to the
//! fleet-wide registry ([`nodes`]), and the usage they report ([`usage`]).
//! The stream that carries both is `config_stream`.

pub mod nodes;
pub mod usage;
