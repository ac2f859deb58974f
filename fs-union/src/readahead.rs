//! `readahead=KiB`: the kernel's read-ahead for the pool and for the devices of its
//! branches, as mergerfs sets it (`read_ahead_kb` of each backing device in sysfs).
//!
//! The pool's own device is found in `/proc/self/mountinfo` (reading it sends the
//! pool no request, so this works before the pool answers). A branch's device is the
//! block device its filesystem sits on; for a partition, read-ahead belongs to the
//! whole disk. Branches on filesystems without a block device (tmpfs, network
//! filesystems) have no such setting and are left alone.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Sets `kib` as the read-ahead of the pool mounted at `mountpoint` and of the
/// devices of `branches`. Returns one message per device that could not be set; a
/// branch without a block device is not an error.
pub fn apply(mountpoint: &Path, branches: &[&Path], kib: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    match device_of_mount(&mountinfo, mountpoint) {
        Some(dev) => {
            let file = PathBuf::from(format!("/sys/class/bdi/{dev}/read_ahead_kb"));
            if let Err(e) = fs::write(&file, kib.to_string()) {
                problems.push(format!(
                    "readahead: setting {} for the pool: {e}",
                    file.display()
                ));
            }
        }
        None => problems.push(format!(
            "readahead: {} is not in /proc/self/mountinfo",
            mountpoint.display()
        )),
    }
    let mut done = Vec::new();
    for branch in branches {
        let Some(file) = branch_setting(branch) else {
            continue;
        };
        if done.contains(&file) {
            continue;
        }
        if let Err(e) = fs::write(&file, kib.to_string()) {
            problems.push(format!(
                "readahead: setting {} for branch {}: {e}",
                file.display(),
                branch.display()
            ));
        }
        done.push(file);
    }
    problems
}

/// The `read_ahead_kb` file of the block device under `branch`, if it has one.
fn branch_setting(branch: &Path) -> Option<PathBuf> {
    let dev = fs::metadata(branch).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut dir = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    if dir.join("partition").exists() {
        dir = dir.parent()?.to_path_buf();
    }
    let file = dir.join("queue/read_ahead_kb");
    file.exists().then_some(file)
}

/// The `MAJOR:MINOR` of the mount at `mountpoint` in mountinfo text (the last
/// mount there wins, as it is the one in use). Mount points in mountinfo escape
/// space, tab, newline and backslash as octal.
pub fn device_of_mount(mountinfo: &str, mountpoint: &Path) -> Option<String> {
    let wanted = mountpoint.to_str()?;
    mountinfo.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let _root = fields.next()?;
        let point = fields.next()?;
        (unescape(point) == wanted).then(|| dev.to_owned())
    })
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:45 / /mnt/pool rw,nosuid,nodev,relatime shared:20 - fuse.lhfs a:b rw,user_id=0
41 22 0:46 / /mnt/with\\040space rw shared:21 - fuse.lhfs c rw
42 40 0:47 / /mnt/pool rw shared:22 - fuse.lhfs d rw
";

    #[test]
    fn finds_the_device_of_the_mount_in_use() {
        assert_eq!(
            device_of_mount(MOUNTINFO, Path::new("/mnt/pool")).as_deref(),
            Some("0:47")
        );
        assert_eq!(
            device_of_mount(MOUNTINFO, Path::new("/mnt/with space")).as_deref(),
            Some("0:46")
        );
        assert_eq!(
            device_of_mount(MOUNTINFO, Path::new("/")).as_deref(),
            Some("254:1")
        );
        assert_eq!(device_of_mount(MOUNTINFO, Path::new("/mnt")), None);
    }

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("odd\\"), "odd\\");
    }

    #[test]
    fn a_branch_without_a_block_device_has_no_setting() {
        // /proc is not on a block device.
        assert_eq!(branch_setting(Path::new("/proc")), None);
    }
}
