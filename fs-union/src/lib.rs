//! The union filesystem behind `lhfs`: it pools branch directories into one namespace
//! and decides with mergerfs's create, action and search policies where each
//! operation lands.
//!
//! - [`branch`]: branches, the branch-list syntax, sizes and runtime list edits.
//! - [`glob`]: the wildcards allowed in branch paths and their expansion.
//! - [`policy`]: every mergerfs policy as a pure function over a branch snapshot, and
//!   which FUSE function uses which policy category.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod branch;
pub mod glob;
pub mod policy;
pub mod node;
pub mod options;
pub mod creds;
