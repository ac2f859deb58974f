//! The union filesystem behind `lhfs`: it pools branch directories into one namespace
//! and decides with mergerfs's create, action and search policies where each
//! operation lands.
//!
//! - [`branch`]: branches, the branch-list syntax, sizes and runtime list edits.
//! - [`glob`]: the wildcards allowed in branch paths and their expansion.
//! - [`policy`]: every mergerfs policy as a pure function over a branch snapshot, and
//!   which FUSE function uses which policy category.
//! - [`options`]: the mount options under their mergerfs names, `config=` files and
//!   runtime get/set by key.
//! - [`union`]: path-level operations across the branches, contained inside them.
//! - [`creds`]: acting as the calling user on the current thread.
//! - [`node`]: FUSE node ids, lookup counts and the inode numbers shown.
//! - [`fuse`]: the FUSE adapter, request by request.
//! - [`control`]: the `.mergerfs` control file and the `user.mergerfs.*` xattrs.
//! - [`metrics`]: the opt-in counters and their Prometheus endpoint.
//! - [`pin`]: the CPU affinity of the FUSE threads (`pin-threads`).
//! - [`readahead`]: the read-ahead of the pool and its branches' devices.
//! - [`mount`]: mounting a pool and serving it until it is unmounted; boot order.
//! - [`daemon`]: going to the background with a readiness pipe; syslog.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod branch;
pub mod control;
pub mod creds;
pub mod daemon;
pub mod fuse;
pub mod glob;
pub mod metrics;
pub mod mount;
pub mod node;
pub mod options;
pub mod pin;
pub mod policy;
pub mod readahead;
pub mod union;
