//! The FUSE functions that consult a policy (`func.NAME` options), the category each
//! belongs to, and the table of which policy each one currently uses.
//!
//! Functions acting on an open file (read, write, fchmod, ...) and the aggregates
//! (readdir, statfs) use no policy and are not listed.

use std::fmt;
use std::str::FromStr;

use super::{Category, ParseNameError, Policy};

/// A function with its own `func.NAME` policy setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// access(2).
    Access,
    /// chmod(2).
    Chmod,
    /// chown(2).
    Chown,
    /// Creating and opening a regular file.
    Create,
    /// stat(2); also decides which branch answers for the pool when a single one must.
    Getattr,
    /// getxattr(2).
    Getxattr,
    /// link(2).
    Link,
    /// listxattr(2).
    Listxattr,
    /// mkdir(2).
    Mkdir,
    /// mknod(2).
    Mknod,
    /// open(2) of an existing file.
    Open,
    /// readlink(2).
    Readlink,
    /// removexattr(2).
    Removexattr,
    /// rename(2).
    Rename,
    /// rmdir(2).
    Rmdir,
    /// setxattr(2).
    Setxattr,
    /// symlink(2).
    Symlink,
    /// truncate(2).
    Truncate,
    /// unlink(2).
    Unlink,
    /// utimensat(2).
    Utimens,
}

impl Function {
    /// Every function, in alphabetical order.
    pub const ALL: [Function; 20] = [
        Function::Access,
        Function::Chmod,
        Function::Chown,
        Function::Create,
        Function::Getattr,
        Function::Getxattr,
        Function::Link,
        Function::Listxattr,
        Function::Mkdir,
        Function::Mknod,
        Function::Open,
        Function::Readlink,
        Function::Removexattr,
        Function::Rename,
        Function::Rmdir,
        Function::Setxattr,
        Function::Symlink,
        Function::Truncate,
        Function::Unlink,
        Function::Utimens,
    ];

    /// The name used in `func.NAME` options.
    pub fn name(self) -> &'static str {
        match self {
            Function::Access => "access",
            Function::Chmod => "chmod",
            Function::Chown => "chown",
            Function::Create => "create",
            Function::Getattr => "getattr",
            Function::Getxattr => "getxattr",
            Function::Link => "link",
            Function::Listxattr => "listxattr",
            Function::Mkdir => "mkdir",
            Function::Mknod => "mknod",
            Function::Open => "open",
            Function::Readlink => "readlink",
            Function::Removexattr => "removexattr",
            Function::Rename => "rename",
            Function::Rmdir => "rmdir",
            Function::Setxattr => "setxattr",
            Function::Symlink => "symlink",
            Function::Truncate => "truncate",
            Function::Unlink => "unlink",
            Function::Utimens => "utimens",
        }
    }

    /// The category whose policy semantics the function uses.
    pub fn category(self) -> Category {
        match self {
            Function::Create | Function::Mkdir | Function::Mknod | Function::Symlink => {
                Category::Create
            }
            Function::Chmod
            | Function::Chown
            | Function::Link
            | Function::Removexattr
            | Function::Rename
            | Function::Rmdir
            | Function::Setxattr
            | Function::Truncate
            | Function::Unlink
            | Function::Utimens => Category::Action,
            Function::Access
            | Function::Getattr
            | Function::Getxattr
            | Function::Listxattr
            | Function::Open
            | Function::Readlink => Category::Search,
        }
    }
}

impl FromStr for Function {
    type Err = ParseNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Function::ALL
            .into_iter()
            .find(|f| f.name() == text)
            .ok_or_else(|| {
                ParseNameError::new(
                    "function",
                    text,
                    "access, chmod, chown, create, getattr, getxattr, link, listxattr, mkdir, \
                     mknod, open, readlink, removexattr, rename, rmdir, setxattr, symlink, \
                     truncate, unlink, utimens",
                )
            })
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The policy of every function. Settings apply in the order made, so a later
/// `category.*` overrides an earlier `func.*` and the other way round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionPolicies {
    by_function: [Policy; Function::ALL.len()],
}

impl Default for FunctionPolicies {
    /// Every function on its category's default policy.
    fn default() -> Self {
        FunctionPolicies {
            by_function: Function::ALL.map(|f| f.category().default_policy()),
        }
    }
}

impl FunctionPolicies {
    /// The policy `function` uses.
    pub fn get(&self, function: Function) -> Policy {
        self.by_function[function as usize]
    }

    /// `func.NAME=POLICY`.
    pub fn set(&mut self, function: Function, policy: Policy) {
        self.by_function[function as usize] = policy;
    }

    /// `category.NAME=POLICY`: sets every function of the category.
    pub fn set_category(&mut self, category: Category, policy: Policy) {
        for function in Function::ALL {
            if function.category() == category {
                self.set(function, policy);
            }
        }
    }
}
