//! `erofs`: refuses every operation with EROFS, to make a category read-only.

use super::PolicyError;

/// Always EROFS.
pub(super) fn select() -> Result<Vec<usize>, PolicyError> {
    Err(PolicyError::ReadOnly)
}
