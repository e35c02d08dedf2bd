//! Who a caller is: API and node token secrets (`token`), password hashes
//! (`password`), the control plane's own access and environment tokens
//! (`jwt`), and external identity providers (`oidc`). What a caller may do
//! is decided in `api::authz`.

pub mod jwt;
pub mod oidc;
pub mod password;
pub mod token;
