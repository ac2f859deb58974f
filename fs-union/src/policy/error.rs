//! Policy errors: why no branch qualified, as an errno, and the refusal of unknown
//! policy, category and function names.

use thiserror::Error;

/// Why a policy chose no branch. The variants are ordered by priority: when branches
/// are skipped for different reasons the highest one is reported (EROFS over ENOSPC
/// over ENOENT), whatever order the branches came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Error)]
pub enum PolicyError {
    /// No branch has the path (or no branch could be examined at all).
    #[error("no branch has the path or its parent (ENOENT)")]
    NotFound,
    /// Every other branch is below its minimum free space.
    #[error("every writable branch is below its minimum free space (ENOSPC)")]
    NoSpace,
    /// A branch was skipped for being RO/NC or on a read-only filesystem, or the
    /// policy is `erofs`.
    #[error("the branches are read-only or no-create for this operation (EROFS)")]
    ReadOnly,
}

impl PolicyError {
    /// The errno to answer the FUSE request with.
    pub fn errno(self) -> i32 {
        match self {
            PolicyError::NotFound => libc::ENOENT,
            PolicyError::NoSpace => libc::ENOSPC,
            PolicyError::ReadOnly => libc::EROFS,
        }
    }
}

/// An unknown policy, category or function name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {what} `{text}`; expected one of: {expected}")]
pub struct ParseNameError {
    what: &'static str,
    text: String,
    expected: &'static str,
}

impl ParseNameError {
    pub(crate) fn new(what: &'static str, text: &str, expected: &'static str) -> Self {
        ParseNameError {
            what,
            text: text.to_owned(),
            expected,
        }
    }
}
