//! The parity engine behind `lhparity`.
//!
//! - [`raid`]: SnapRAID-compatible GF(2^8) parity, generation and recovery of up to
//!   six levels, with runtime-selected SIMD kernels.
//! - [`state`]: the content file: the array's state in memory, its checksummed binary
//!   format, and the atomic save to every copy and load of the newest valid one.
//! - [`speedtest`]: kernel throughput as `lhparity speedtest` reports it.
//! - [`config`]: the array config in `snapraid.conf` syntax, its exclude/include
//!   filter and the layout checks run before any command.
//! - [`beneath`]: opening recorded files below a disk's root without following links.
//! - [`name`]: file names as the state holds them (any bytes, not only UTF-8).
//! - [`runs`]: stretches of consecutive positions or blocks, for reports.
//! - [`scan`]: walking the data disks and comparing them with the state.
//! - [`copied`]: files copied or moved between data disks, verified by their hashes.
//! - [`pipeline`]: per-disk readers, hashing and parity on all cores, per-level writers.
//! - [`sync`], [`scrub`] (and check), [`fix`], [`status`], [`dup`]: the commands.
//! - [`metrics`]: the array and the last command runs as Prometheus text.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod beneath;
pub mod config;
pub mod copied;
pub mod dup;
pub mod fix;
pub mod hash;
mod import;
pub mod interrupt;
pub mod lock;
mod mapped;
pub mod metrics;
pub mod name;
pub mod parity_order;
pub mod pipeline;
pub mod raid;
pub mod runs;
pub mod scan;
pub mod scrub;
pub mod speedtest;
pub mod state;
pub mod status;
pub mod sync;
