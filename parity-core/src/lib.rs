//! The parity engine behind `lhparity`.
//!
//! - [`raid`]: SnapRAID-compatible GF(2^8) parity, generation and recovery of up to
//!   six levels, with runtime-selected SIMD kernels.
//! - [`speedtest`]: kernel throughput as `lhparity speedtest` reports it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod raid;
pub mod speedtest;
