//! `lhfs`: pools branch directories into one mount, as mergerfs does.
//!
//! The same binary is the mount helper util-linux runs for fstab entries of type
//! `lhfs` and `fuse.lhfs` when it is called as `mount.lhfs` or `mount.fuse.lhfs`
//! (`lhfs install-helpers` makes those links).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use fs_union::mount::{run, Plan};

#[derive(Parser)]
#[command(
    name = "lhfs",
    version,
    about = "Union filesystem: pool BRANCHES into one folder tree at MOUNTPOINT (mergerfs-compatible)",
    after_help = "Example: lhfs '/mnt/disk*' /mnt/pool -o category.create=mfs,minfreespace=10G\n\
                  Options take mergerfs's names; see README.md for the list.\n\
                  `lhfs install-helpers [--prefix /sbin]` links mount.lhfs and mount.fuse.lhfs\n\
                  to this program, so fstab entries of type fuse.lhfs mount with `mount`."
)]
struct Cli {
    /// BRANCHES: PATH[=RW|RO|NC[,MINFREESPACE]] joined by `:`, wildcards allowed (may
    /// be left out when a `config=` file sets `branches=`); MOUNTPOINT: an existing
    /// directory (may be left out with `-o mountpoint=` or a config file's).
    #[arg(value_names = ["BRANCHES", "MOUNTPOINT"], num_args = 0..=2)]
    paths: Vec<String>,

    /// Mount options, comma separated, mergerfs names (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,

    /// Stay in the foreground (for systemd). Without it lhfs returns once the pool
    /// answers and serves it in the background. Called as a mount helper, `-f` is
    /// util-linux's "fake": nothing is mounted.
    #[arg(short = 'f')]
    foreground: bool,

    /// Mount helper convention: do not write /etc/mtab (there is none to write).
    #[arg(short = 'n', hide = true)]
    _no_mtab: bool,

    /// Mount helper convention: sloppy option parsing (options are checked anyway).
    #[arg(short = 's', hide = true)]
    _sloppy: bool,

    /// Mount helper convention: verbose.
    #[arg(short = 'v', hide = true)]
    _verbose: bool,

    /// Mount helper convention: the filesystem type (always lhfs here).
    #[arg(short = 't', hide = true, value_name = "TYPE")]
    _fs_type: Option<String>,
}

/// `lhfs install-helpers`: make `mount` find lhfs for fstab entries.
#[derive(Parser)]
#[command(name = "lhfs install-helpers")]
struct InstallHelpers {
    /// Directory for the `mount.lhfs` and `mount.fuse.lhfs` links; util-linux looks
    /// in /sbin (also /sbin/fs.d and /sbin/fs).
    #[arg(long, default_value = "/sbin")]
    prefix: PathBuf,
}

/// The names util-linux runs helpers under for the types `lhfs` and `fuse.lhfs`.
const HELPERS: [&str; 2] = ["mount.lhfs", "mount.fuse.lhfs"];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = if args.get(1).is_some_and(|a| a == "install-helpers") {
        install_helpers(InstallHelpers::parse_from(&args[1..])).map_err(|e| e.to_string())
    } else {
        mount(Cli::parse_from(&args), HELPERS.contains(&invoked.as_str()))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lhfs: {err}");
            ExitCode::from(1)
        }
    }
}

fn mount(cli: Cli, as_helper: bool) -> Result<(), String> {
    if as_helper && cli.foreground {
        return Ok(());
    }
    Plan::new(&cli.paths, &cli.options)
        .and_then(|plan| run(plan, cli.foreground && !as_helper))
        .map_err(|e| e.to_string())
}

fn install_helpers(args: InstallHelpers) -> io::Result<()> {
    let exe = std::env::current_exe()?.canonicalize()?;
    for name in HELPERS {
        let link = args.prefix.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&link)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "`{}` exists and is not a link; remove it first",
                        link.display()
                    ),
                ))
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&exe, &link).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create `{}`: {e}", link.display()))
        })?;
        println!("{} -> {}", link.display(), exe.display());
    }
    Ok(())
}
