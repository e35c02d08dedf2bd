//! Who may do what and how changes move: the permission model and its pure
//! decisions (`access`), promotions and their gates (`promotion`), the
//! breaking changes a version makes (`drift`), the data-policy scanner
//! (`datapolicy`), and contract checks run on the mock engine
//! (`contract`).

pub mod access;
pub mod contract;
pub mod datapolicy;
pub mod drift;
pub mod promotion;
