//! `lhfs`: the union filesystem. Mounting arrives with the fs-union crate's FUSE
//! adapter; until then the binary says so instead of pretending to mount.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("lhfs {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!("lhfs: mounting a pool is not implemented in this version yet; see README.md");
    ExitCode::from(2)
}
