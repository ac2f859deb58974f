//! The content (state) file: what lhparity knows about an array between runs.
//!
//! - [`model`]: the state in memory; pure data.
//! - [`codec`]: the versioned, checksummed binary format; pure functions, no I/O.
//! - [`store`]: saving to every content path atomically and loading the newest valid
//!   copy; the only code here that touches the disk.

pub mod codec;
pub mod model;
pub mod store;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod synthetic;

pub use codec::{decode, encode, validate, CodecError};
pub use model::{
    BadBlock, DeletedBlock, DirEntry, Disk, Extent, FileEntry, Hash, LinkEntry, ParityInfo,
    Positions, State, DIRTY, HASH_BLAKE3_16, UNSYNCED,
};
pub use store::{load, save, Loaded, StoreError, WriteFailure, WriteOp};
