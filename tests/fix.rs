//! `lhparity scrub`, `check` and `fix`, proven by fault injection on real files.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;

/// Every file of the array with its bytes, mode and mtime.
type Snapshot = BTreeMap<PathBuf, (Vec<u8>, u32, i64)>;

fn snapshot(array: &Array) -> Snapshot {
    let mut out = BTreeMap::new();
    for d in &array.disks {
        let mut stack = vec![d.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).expect("read dir") {
                let p = e.expect("entry").path();
                let m = fs::symlink_metadata(&p).expect("meta");
                if m.is_dir() {
                    stack.push(p);
                } else if m.is_file() {
                    out.insert(
                        p.clone(),
                        (
                            fs::read(&p).expect("read"),
                            m.mode(),
                            m.mtime_nsec() + m.mtime() * 1_000_000_000,
                        ),
                    );
                }
            }
        }
    }
    out
}

/// An array with `disks` disks of a few files each, synced.
fn synced_array(disks: usize, levels: usize) -> (Array, Snapshot) {
    let array = Array::new(disks, levels, 64, "");
    for d in 0..disks {
        array.write(
            d,
            &format!("dir{d}/big.bin"),
            700_000 + d * 1111,
            (d * 7 + 1) as u64,
        );
        array.write(d, "small.txt", 1000 + d, (d * 7 + 2) as u64);
        let odd = array.disks[d].join("mode600.bin");
        fs::write(&odd, pseudo_random(70_000, d as u64 + 99)).expect("write");
        fs::set_permissions(&odd, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    let snap = snapshot(&array);
    (array, snap)
}

/// Flips one bit at `offset` of a file and puts its mtime back, like silent corruption.
fn flip(path: &std::path::Path, offset: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset] ^= 0x10;
    put_back(path, &bytes);
}

/// Puts `bytes` back into `path` in place (same inode) with the mtime it had.
fn put_back(path: &std::path::Path, bytes: &[u8]) {
    copy_stamped(path, path, bytes);
}

/// Writes `bytes` to `to` with the mtime of `like`, as a backup made with `cp -a`.
fn copy_stamped(like: &std::path::Path, to: &std::path::Path, bytes: &[u8]) {
    let mtime = fs::metadata(like).expect("meta").modified().expect("mtime");
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(to, bytes).expect("write");
    let f = fs::File::options().write(true).open(to).expect("open");
    f.set_modified(mtime).expect("set mtime");
}

fn wipe(array: &Array, disk: usize) {
    for e in fs::read_dir(&array.disks[disk]).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            fs::remove_dir_all(&p).expect("rm dir");
        } else {
            fs::remove_file(&p).expect("rm");
        }
    }
}

fn status(array: &Array) -> serde_json::Value {
    let out = array.lhparity(&["status", "--json"]);
    expect_code(&out, 0);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[test]
fn flipped_bits_are_found_by_scrub_and_repaired_by_fix() {
    let (array, original) = synced_array(3, 2);
    // Block 2 of d1's big file, block 0 of d3's big file (64 KiB blocks).
    flip(&array.disks[0].join("dir0/big.bin"), 2 * 65536 + 5);
    flip(&array.disks[2].join("dir2/big.bin"), 100);
    let out = array.lhparity(&["scrub", "-p", "full"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("dir0/big.bin block 2") && err.contains("dir2/big.bin block 0"),
        "{err}"
    );
    let s = status(&array);
    let bad: Vec<(u64, String)> = s["bad_blocks"]
        .as_array()
        .expect("bad blocks")
        .iter()
        .map(|b| {
            (
                b["position"].as_u64().unwrap_or(u64::MAX),
                b["disk"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad.iter().any(|(_, d)| d == "d1") && bad.iter().any(|(_, d)| d == "d3"),
        "{bad:?}"
    );

    let out = array.lhparity(&["fix", "-e"]);
    expect_code(&out, 0);
    assert!(
        snapshot(&array) == original,
        "fixed files differ from the originals"
    );
    expect_code(&array.lhparity(&["scrub", "-p", "bad"]), 0);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 0);
    assert_eq!(status(&array)["bad_blocks"], serde_json::json!([]));
    expect_code(&array.lhparity(&["check"]), 0);
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn damage_over_many_positions_is_named_per_stretch() {
    let (array, original) = synced_array(3, 2);
    // Blocks 3 to 6 of one file rot, and parity level 1 is cut short after one block.
    let big = array.disks[1].join("dir1/big.bin");
    for block in 3..=6 {
        flip(&big, block * 65536 + 11);
    }
    let parity = &array.parity[0];
    let full = fs::metadata(parity).expect("parity").len();
    assert!(full > 3 * 65536, "parity of {full} bytes");
    let f = fs::File::options()
        .write(true)
        .open(parity)
        .expect("open parity");
    f.set_len(65536).expect("truncate parity");
    let positions = full / 65536;

    let out = array.lhparity(&["check"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    // A check records nothing: the way out is a plain fix, not `fix -e`.
    assert!(
        stdout(&out).contains("Run `lhparity fix` to repair the bad blocks"),
        "{}",
        stdout(&out)
    );
    assert!(
        lines[0].contains("dir1/big.bin blocks 3-6 (positions ")
            && lines[0].ends_with(") do not match their hashes"),
        "{err}"
    );
    // Where the data is damaged too, the damaged blocks are rebuilt in memory with
    // level 2, which shows level 1 missing there as well: one stretch.
    let cut = format!(
        "parity level 1 differs from the parity of the data at {} positions: 1-{}; {} \
         is 65536 bytes long, shorter than the {full} the synced positions need, so it was \
         cut short and holds no parity from position 1 on: `lhparity fix` rebuilds it",
        positions - 1,
        positions - 1,
        parity.display()
    );
    assert!(lines[1].contains(&cut), "{err}");

    // A scrub records the same, and status lists one line per disk and stretch.
    let out = array.lhparity(&["scrub", "-p", "full"]);
    expect_code(&out, 1);
    assert!(stdout(&out).contains("Run `lhparity fix -e` to repair the bad blocks."));
    let out = array.lhparity(&["status"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "  positions 1-{} on parity ({})",
            positions - 1,
            positions - 1
        )) && text.contains("  positions 3-6 on d2 (4)"),
        "{text}"
    );

    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(snapshot(&array) == original, "fixed files differ");
    assert_eq!(fs::metadata(parity).expect("parity").len(), full);
    expect_code(&array.lhparity(&["check"]), 0);
}

/// Every file of the array and its parity, written back and dropped from the page
/// cache (cold), or read in full (cached), or only their first half read.
fn cache(array: &Array, how: &str) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut files: Vec<PathBuf> = snapshot(array).into_keys().collect();
    files.extend(array.parity.iter().cloned());
    for path in files {
        let mut f = fs::File::open(&path).expect("open");
        let len = f.metadata().expect("meta").len();
        f.sync_all().expect("sync");
        // SAFETY: advice on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let want = match how {
            "cold" => 0,
            "half" => len / 2,
            _ => len,
        };
        let mut buf = vec![0u8; want as usize];
        f.read_exact(&mut buf).expect("read");
    }
}

#[test]
fn flipped_bits_are_found_whether_the_array_is_cached_or_not() {
    let (array, original) = synced_array(3, 2);
    flip(&array.disks[0].join("dir0/big.bin"), 2 * 65536 + 5);
    flip(&array.disks[2].join("dir2/big.bin"), 9 * 65536);
    // Parity level 2 at a position where no data block is damaged: a scrub blames
    // the data first where both are.
    flip(&array.parity[1], 12 * 65536 + 17);
    for how in ["cold", "cached", "half"] {
        cache(&array, how);
        let out = array.lhparity(&["check"]);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("dir0/big.bin block 2 (position")
                && err.contains("dir2/big.bin block 9 (position")
                && err.contains("parity level 2 at position 12 differs"),
            "{how}: {err}"
        );
        assert_eq!(
            err.matches("does not match its hash").count(),
            2,
            "{how}: {err}"
        );
    }
    // Parity damage is repaired where a scrub marked it.
    cache(&array, "cold");
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    cache(&array, "half");
    expect_code(&array.lhparity(&["fix", "-e"]), 0);
    assert!(snapshot(&array) == original, "fixed files differ");
    cache(&array, "cold");
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn parity_is_rebuilt_from_checked_data_only() {
    let (array, original) = synced_array(3, 2);
    let data = array.disks[1].join("dir1/big.bin");
    let block = 3 * 65536;
    let pos = first_position_of_block(&array, &data, "dir1/big.bin", 3);
    let parity1 = fs::read(&array.parity[0]).expect("parity 1");
    // Parity level 1 damaged there, found by a scrub...
    flip(&array.parity[0], pos * 65536 + 99);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    // ...and then the data block at the same position, silently.
    flip(&data, block + 7);
    // Rebuilding parity 1 must not take the damaged block as it reads: it is
    // caught by its hash and rebuilt from level 2 first.
    expect_code(&array.lhparity(&["fix", "-e"]), 0);
    assert!(
        fs::read(&array.parity[0]).expect("parity 1") == parity1,
        "parity 1 was rebuilt from damaged data"
    );
    let out = array.lhparity(&["check"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("dir1/big.bin block 3") && !err.contains("differs from the parity"),
        "{err}"
    );
    // The damaged block itself is repaired by a plain fix.
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(snapshot(&array) == original, "fixed files differ");
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn parity_over_damaged_data_is_left_alone_and_reported() {
    let (array, _) = synced_array(3, 1);
    let data = array.disks[0].join("dir0/big.bin");
    let pos = first_position_of_block(&array, &data, "dir0/big.bin", 0);
    flip(&array.parity[0], pos * 65536 + 5);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    let damaged_parity = fs::read(&array.parity[0]).expect("parity");
    flip(&data, 11);
    // One parity level, suspected, and a damaged block there: nothing can be
    // trusted to rebuild the parity from.
    let out = array.lhparity(&["fix", "-e"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("parity at position {pos} was not rebuilt")),
        "{}",
        stderr(&out)
    );
    assert!(fs::read(&array.parity[0]).expect("parity") == damaged_parity);
}

/// The position of block `block` of a file, as a check names it (the block is
/// damaged for the check and put back).
fn first_position_of_block(
    array: &Array,
    path: &std::path::Path,
    name: &str,
    block: usize,
) -> usize {
    flip(path, block * 65536 + 7);
    let out = array.lhparity(&["check"]);
    flip(path, block * 65536 + 7);
    let err = stderr(&out);
    err.split(&format!("{name} block {block} (position "))
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no position in: {err}"))
}

#[test]
fn damage_is_found_at_positions_shared_with_a_changed_file() {
    let (array, _) = synced_array(3, 1);
    let edited = array.disks[0].join("dir0/big.bin");
    let rotten = array.disks[1].join("dir1/big.bin");
    let pos = first_position_of_block(&array, &rotten, "dir1/big.bin", 2);
    assert_eq!(
        first_position_of_block(&array, &edited, "dir0/big.bin", 2),
        pos,
        "both big files start at the same position"
    );
    // d1's file is edited after the sync; d2's block at the same position rots.
    array.write(0, "dir0/big.bin", 700_000, 4242);
    flip(&rotten, 2 * 65536 + 3);
    let out = array.lhparity(&["scrub", "-p", "full"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "dir1/big.bin block 2 (position {pos}) does not match its hash"
        )),
        "{err}"
    );
    assert!(
        !err.contains("dir0/big.bin block"),
        "the edited file is no damage: {err}"
    );
    let bad = status(&array)["bad_blocks"].clone();
    assert_eq!(bad.as_array().map(Vec::len), Some(1), "{bad}");
    assert_eq!(bad[0]["position"].as_u64(), Some(pos as u64), "{bad}");
    assert_eq!(bad[0]["disk"].as_str(), Some("d2"), "{bad}");
}

#[test]
fn a_short_parity_file_and_a_lost_disk_are_restored_in_one_fix() {
    let (array, original) = synced_array(3, 2);
    let len = fs::metadata(&array.parity[0]).expect("parity").len();
    // Parity level 1 lost its last block; then disk d1 is lost.
    fs::OpenOptions::new()
        .write(true)
        .open(&array.parity[0])
        .and_then(|f| f.set_len(len - 65536))
        .expect("cut parity");
    wipe(&array, 0);
    // Rebuilding d1 where level 1 is missing takes level 2, read on demand; the
    // first attempt with level 1 alone is no error.
    let out = array.lhparity(&["fix", "-d", "d1"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("not rebuilt"), "{}", stderr(&out));
    assert!(snapshot(&array) == original, "restored files differ");
    assert_eq!(fs::metadata(&array.parity[0]).expect("parity").len(), len);
    expect_code(&array.lhparity(&["check"]), 0);
}

fn lose_and_fix(disks: usize, levels: usize, lost: &[usize]) {
    let (array, original) = synced_array(disks, levels);
    for &d in lost {
        wipe(&array, d);
    }
    let mut args = vec!["fix"];
    let names: Vec<String> = lost.iter().map(|d| format!("d{}", d + 1)).collect();
    for n in &names {
        args.push("-d");
        args.push(n);
    }
    let out = array.lhparity(&args);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains(&format!("{} files fixed, 0 unrecoverable", lost.len() * 3)),
        "{}",
        stdout(&out)
    );
    let now = snapshot(&array);
    assert_eq!(now.len(), original.len());
    for (path, (bytes, mode, mtime)) in &original {
        let (b, m, t) = now
            .get(path)
            .unwrap_or_else(|| panic!("{} not restored", path.display()));
        assert!(b == bytes, "{} differs", path.display());
        assert_eq!((m, t), (mode, mtime), "{} mode or mtime", path.display());
    }
    // The rebuilt disk is what the state says: nothing to sync, check passes.
    expect_code(&array.lhparity(&["diff"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
}

fn inodes(array: &Array, disk: usize) -> BTreeMap<PathBuf, u64> {
    snapshot(array)
        .keys()
        .filter(|p| p.starts_with(&array.disks[disk]))
        .map(|p| (p.clone(), fs::metadata(p).expect("meta").ino()))
        .collect()
}

#[test]
fn fix_d_of_a_disk_still_there_rebuilds_only_what_is_damaged_or_missing() {
    let (array, original) = synced_array(3, 1);
    // Nothing wrong: every file is read and checked, none is rewritten.
    let before = inodes(&array, 1);
    let out = array.lhparity(&["fix", "-d", "d2"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("0 files fixed, 0 unrecoverable"),
        "{}",
        stdout(&out)
    );
    assert_eq!(inodes(&array, 1), before, "an intact file was rewritten");

    // One file deleted, one damaged in place: only those two come back.
    let gone = array.disks[1].join("small.txt");
    let damaged = array.disks[1].join("dir1/big.bin");
    fs::remove_file(&gone).expect("rm");
    flip(&damaged, 300_000);
    let out = array.lhparity(&["fix", "-d", "d2"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("2 files fixed, 0 unrecoverable"),
        "{}",
        stdout(&out)
    );
    let untouched = array.disks[1].join("mode600.bin");
    assert_eq!(
        fs::metadata(&untouched).expect("meta").ino(),
        before[&untouched],
        "{} was rewritten",
        untouched.display()
    );
    assert!(snapshot(&array) == original, "files differ after the fix");
    expect_code(&array.lhparity(&["check"]), 0);
}

/// The content copies: bytes and mtime.
fn content_copies(array: &Array) -> Vec<(Vec<u8>, SystemTime)> {
    array
        .content
        .iter()
        .map(|c| {
            let mtime = fs::metadata(c)
                .expect("content meta")
                .modified()
                .expect("mtime");
            (fs::read(c).expect("read content"), mtime)
        })
        .collect()
}

#[test]
fn a_fix_with_nothing_to_remember_leaves_the_content_files_alone() {
    let (array, original) = synced_array(3, 1);
    let before = content_copies(&array);
    std::thread::sleep(Duration::from_millis(20));
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("0 files fixed"), "{}", stdout(&out));
    assert!(
        before == content_copies(&array),
        "a no-op fix rewrote the content files"
    );
    assert_eq!(snapshot(&array), original);

    // A rebuilt disk's new inodes are recorded, so diff finds nothing afterwards.
    wipe(&array, 2);
    expect_code(&array.lhparity(&["fix", "-d", "d3"]), 0);
    assert!(
        before != content_copies(&array),
        "the new inodes were not recorded"
    );
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn one_lost_disk_with_one_parity_level() {
    lose_and_fix(3, 1, &[1]);
}

#[test]
fn two_lost_disks_with_two_parity_levels() {
    lose_and_fix(4, 2, &[0, 3]);
}

#[test]
fn six_of_ten_disks_with_six_parity_levels() {
    lose_and_fix(10, 6, &[0, 2, 3, 5, 8, 9]);
}

#[test]
fn one_disk_more_than_parity_is_reported_unrecoverable() {
    let (array, original) = synced_array(3, 1);
    wipe(&array, 0);
    wipe(&array, 1);
    let out = array.lhparity(&["fix", "-d", "d1", "-d", "d2"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("unrecoverable") && err.contains("big.bin"),
        "{err}"
    );
    // Partial results are kept under another name; nothing else is touched.
    assert!(exists(&array.disks[0].join("dir0/big.bin.unrecoverable")));
    assert!(!exists(&array.disks[0].join("dir0/big.bin")));
    let now = snapshot(&array);
    for (path, value) in &original {
        if path.starts_with(&array.disks[2]) {
            assert!(
                now.get(path) == Some(value),
                "{} was touched",
                path.display()
            );
        }
    }
}

#[test]
fn an_unrecoverable_result_never_replaces_a_file_of_that_name() {
    let (array, _) = synced_array(3, 1);
    wipe(&array, 0);
    wipe(&array, 1);
    let dir = array.disks[0].join("dir0");
    fs::create_dir_all(&dir).expect("mkdir");
    let taken = dir.join("big.bin.unrecoverable");
    fs::write(&taken, b"the user's own file").expect("write");
    // Run again, the fix finds its own result from before under the second name.
    for _ in 0..2 {
        let out = array.lhparity(&["fix", "-d", "d1", "-d", "d2"]);
        expect_code(&out, 1);
        assert!(!exists(&dir.join("big.bin.3.unrecoverable")));
        let kept = dir.join("big.bin.2.unrecoverable");
        assert!(
            stderr(&out).contains(&format!("what could be is in {}", kept.display())),
            "{}",
            stderr(&out)
        );
        assert!(exists(&kept), "{} missing", kept.display());
        assert_eq!(fs::read(&taken).expect("read"), b"the user's own file");
    }
}

/// A fix run again over the same loss names the partial result the first run left
/// instead of adding `NAME.2.unrecoverable`, `NAME.3.unrecoverable`, ... with the
/// same bytes; a different one (edited, or from other damage) is still never
/// replaced.
#[test]
fn fixes_run_again_keep_one_copy_of_the_same_unrecoverable_result() {
    let (array, _) = synced_array(3, 1);
    let (a, b) = (
        array.disks[0].join("dir0/big.bin"),
        array.disks[1].join("dir1/big.bin"),
    );
    flip(&a, 10);
    flip(&b, 10);
    let partial = |path: &std::path::Path, n: &str| {
        PathBuf::from(format!("{}{n}.unrecoverable", path.display()))
    };
    for run in 0..3 {
        let out = array.lhparity(&["fix"]);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("is in {}", partial(&a, "").display())),
            "run {run}: {err}"
        );
        assert!(!exists(&partial(&a, ".2")), "run {run} made a second copy");
    }
    let first = fs::read(partial(&a, "")).expect("partial result");
    // Edited by hand: no longer the same result, so it is kept and the new one goes
    // beside it.
    let mut edited = first.clone();
    edited[0] ^= 1;
    fs::write(partial(&a, ""), &edited).expect("edit");
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("is in {}", partial(&a, ".2").display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(partial(&a, "")).expect("kept"), edited);
    assert!(fs::read(partial(&a, ".2")).expect("new") == first);
    // A link in the way is never read or followed.
    fs::remove_file(partial(&b, "")).expect("rm");
    std::os::unix::fs::symlink(partial(&a, ".2"), partial(&b, "")).expect("symlink");
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("is in {}", partial(&b, ".2").display())),
        "{}",
        stderr(&out)
    );
    assert!(fs::symlink_metadata(partial(&b, ""))
        .expect("link")
        .is_symlink());
    assert!(
        !exists(&partial(&a, ".3")),
        "a copy beside the link's target"
    );
}

#[test]
fn an_unrecoverable_file_keeps_its_place_in_the_state() {
    let (array, original) = synced_array(3, 1);
    let (a, b) = (
        array.disks[0].join("dir0/big.bin"),
        array.disks[1].join("dir1/big.bin"),
    );
    // The first block of both big files, one stripe: two lost blocks, one parity.
    flip(&a, 10);
    flip(&b, 10);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    let bad = status(&array)["bad_blocks"].clone();
    let bad = bad.as_array().expect("bad blocks");
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0]["position"], bad[1]["position"], "{bad:?}");
    let damaged = snapshot(&array);

    let out = array.lhparity(&["fix"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("unrecoverable"), "{}", stderr(&out));
    // The damaged originals stay as they were, and so do their bad flags.
    for path in [&a, &b] {
        assert!(fs::read(path).expect("read") == damaged[path].0);
        let partial = PathBuf::from(format!("{}.unrecoverable", path.display()));
        fs::remove_file(&partial).expect("partial result kept");
    }
    assert_eq!(
        status(&array)["bad_blocks"].as_array().map(Vec::len),
        Some(2)
    );
    // The state still describes the originals: nothing to sync.
    expect_code(&array.lhparity(&["diff"]), 0);

    // Once one of them is good again, the other is rebuilt from it.
    put_back(&b, &original[&b].0);
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(
        snapshot(&array) == original,
        "files differ from the originals"
    );
    expect_code(&array.lhparity(&["scrub", "-p", "bad"]), 0);
    assert_eq!(status(&array)["bad_blocks"], serde_json::json!([]));
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn damaged_parity_is_reported_by_scrub_and_rebuilt_by_fix() {
    let (array, original) = synced_array(2, 2);
    let mut parity = fs::read(&array.parity[1]).expect("parity");
    parity[65536 + 7] ^= 1;
    fs::write(&array.parity[1], &parity).expect("write parity");
    let out = array.lhparity(&["scrub", "-p", "full"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("parity level 2 at position 1"),
        "{}",
        stderr(&out)
    );
    expect_code(&array.lhparity(&["fix"]), 0);
    verify_parity(&array);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 0);
    assert!(snapshot(&array) == original);

    // A parity file that is gone entirely is rebuilt too.
    fs::remove_file(&array.parity[0]).expect("rm parity");
    expect_code(&array.lhparity(&["fix"]), 0);
    verify_parity(&array);
}

#[test]
fn check_names_exactly_the_parity_levels_that_are_missing_or_short() {
    let (array, _) = synced_array(3, 3);
    let positions = positions_in_summary(&stdout(&array.lhparity(&["check"])))
        .filter(|&n| n > 0)
        .expect("a check of the whole array counts its positions");
    // Level 1 gone entirely (its disk not mounted, say): named once, as a file that
    // cannot be opened, not as wrong parity at every position; levels 2 and 3 are
    // right everywhere.
    let first = fs::read(&array.parity[0]).expect("parity");
    fs::remove_file(&array.parity[0]).expect("rm parity");
    for cmd in [&["check"][..], &["scrub", "-p", "full"]] {
        let out = array.lhparity(cmd);
        expect_code(&out, 1);
        let err = stderr(&out);
        let named = format!(
            "parity file {} (level 1) cannot be opened",
            array.parity[0].display()
        );
        assert_eq!(err.matches(&named).count(), 1, "{cmd:?}: {err}");
        assert!(!err.contains(" at position"), "{cmd:?}: {err}");
        // The summary counts the positions verified against the other levels and
        // names the one left out.
        let summary = stdout(&out);
        assert_eq!(
            positions_in_summary(&summary),
            Some(positions),
            "{cmd:?}: {summary}"
        );
        assert!(
            summary.contains(
                " block positions (not against parity level 1, whose file cannot be opened), "
            ),
            "{cmd:?}: {summary}"
        );
    }
    // The scrub marked nothing bad, and recorded no position as verified.
    assert_eq!(status(&array)["bad_blocks"], serde_json::json!([]));
    fs::write(&array.parity[0], &first).expect("put parity back");
    let out = array.lhparity(&["scrub", "-p", "full"]);
    expect_code(&out, 0);
    assert_eq!(positions_in_summary(&stdout(&out)), Some(positions));
    let out = array.lhparity(&["check"]);
    expect_code(&out, 0);
    assert_eq!(positions_in_summary(&stdout(&out)), Some(positions));
    // Level 2 one block short: its last position only.
    let second = fs::read(&array.parity[1]).expect("parity");
    fs::write(&array.parity[1], &second[..second.len() - 65536]).expect("shorten");
    let out = array.lhparity(&["check"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    let blamed: Vec<&str> = err.lines().filter(|l| l.contains("at position")).collect();
    assert_eq!(blamed.len(), 1, "{err}");
    assert!(blamed[0].contains("parity level 2 at position"), "{err}");
}

#[test]
fn check_and_scrub_call_a_missing_file_an_error_and_a_missing_disk_by_its_name() {
    let (array, _) = synced_array(3, 1);
    let gone = array.disks[0].join("small.txt");
    fs::remove_file(&gone).expect("rm");
    for cmd in [
        &["check"][..],
        &["check", "-d", "d1"],
        &["scrub", "-p", "full"],
    ] {
        let out = array.lhparity(cmd);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{} is missing (deleted or moved since the last sync); `lhparity fix -m`",
                gone.display()
            )),
            "{cmd:?}: {err}"
        );
        assert!(!err.contains("run a sync"), "{cmd:?}: {err}");
    }
    // A check of other disks or files is not about it.
    for cmd in [&["check", "-d", "d2"][..], &["check", "-f", "dir1/"]] {
        let out = array.lhparity(cmd);
        expect_code(&out, 0);
        assert!(
            !stderr(&out).contains("missing"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    // A plain fix leaves it deleted, and says so.
    for cmd in [&["fix"][..], &["fix", "-f", "small.txt"]] {
        let out = array.lhparity(cmd);
        expect_code(&out, 0);
        assert!(
            stderr(&out).contains(&format!(
                "warning: 1 file(s) deleted since the last sync were left deleted, the first {}: \
                 `lhparity fix -m` brings them back",
                gone.display()
            )) && !gone.exists(),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    let out = array.lhparity(&["fix", "-m"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("left deleted"), "{}", stderr(&out));
    expect_code(&array.lhparity(&["check"]), 0);

    // A disk that is not mounted: every file of it gone, named once by its disk.
    wipe(&array, 1);
    let out = array.lhparity(&["check"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("disk 'd2': all 3 files are missing from")
            && err.contains("`lhparity fix -d d2` rebuilds it"),
        "{err}"
    );
    assert!(!err.contains("is missing;"), "{err}");
    // A file changed since the sync is still not an error.
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    array.write(2, "small.txt", 5000, 77);
    let out = array.lhparity(&["check"]);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains("changed since the last sync"),
        "{}",
        stderr(&out)
    );
}

/// The bytes of every parity file.
fn parity_bytes(array: &Array) -> Vec<Vec<u8>> {
    array
        .parity
        .iter()
        .map(|p| fs::read(p).expect("parity"))
        .collect()
}

/// Runs a plain `fix`, which must succeed with this summary, and checks that every
/// parity file is `good` again, byte for byte.
fn fix_and_expect(array: &Array, summary: &str, good: &[Vec<u8>]) {
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains(summary), "{}", stdout(&out));
    assert!(
        parity_bytes(array) == good,
        "parity not restored byte for byte"
    );
}

#[test]
fn fix_checks_all_parity_as_snapraid_does_without_a_scrub_first() {
    let (array, original) = synced_array(2, 2);
    let good = parity_bytes(&array);
    // Silent damage no scrub has seen: level 2 at position 1, level 1 at position 3.
    flip(&array.parity[1], 65536 + 7);
    flip(&array.parity[0], 3 * 65536 + 100);

    // Limited to some files, fix checks those files only and leaves parity alone.
    let out = array.lhparity(&["fix", "-f", "small.txt"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("0 files fixed, 0 unrecoverable, parity rewritten at 0 positions"),
        "{}",
        stdout(&out)
    );
    for (level, bytes) in good.iter().enumerate() {
        assert!(fs::read(&array.parity[level]).expect("parity") != *bytes);
    }

    fix_and_expect(
        &array,
        "0 files fixed, 0 unrecoverable, parity rewritten at 2 positions",
        &good,
    );
    assert!(snapshot(&array) == original, "data was touched");
    expect_code(&array.lhparity(&["check"]), 0);

    // A lost parity file is rebuilt without rewriting the good level.
    fs::remove_file(&array.parity[0]).expect("rm parity");
    let untouched = fs::metadata(&array.parity[1])
        .expect("meta")
        .modified()
        .expect("mtime");
    std::thread::sleep(Duration::from_millis(20));
    // `fix -e` repairs marked blocks only: it names the file and what rebuilds it,
    // and makes no empty parity file in its place.
    let out = array.lhparity(&["fix", "-e"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "parity file {} is missing; `fix -e` repairs only the blocks a scrub marked: run `lhparity fix` to rebuild it",
            array.parity[0].display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!exists(&array.parity[0]));
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(fs::read(&array.parity[0]).expect("parity 1") == good[0]);
    assert_eq!(
        fs::metadata(&array.parity[1])
            .expect("meta")
            .modified()
            .expect("mtime"),
        untouched,
        "the good parity file was rewritten"
    );
}

#[test]
fn fix_repairs_data_and_parity_damaged_at_different_positions_in_one_run() {
    let (array, original) = synced_array(3, 1);
    let parity = fs::read(&array.parity[0]).expect("parity");
    // Data block 2 of d1's big file, and the parity of a position that file does
    // not touch.
    let victim = array.disks[1].join("dir1/big.bin");
    let odd = array.disks[0].join("mode600.bin");
    let spare = first_position_of_block(&array, &odd, "mode600.bin", 0);
    assert_ne!(
        spare,
        first_position_of_block(&array, &victim, "dir1/big.bin", 2)
    );
    flip(&victim, 2 * 65536 + 5);
    flip(&array.parity[0], spare * 65536 + 9);
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    let said = stdout(&out);
    assert!(
        said.contains("fixed ") && said.contains("dir1/big.bin"),
        "{said}"
    );
    assert!(
        said.contains("1 files fixed, 0 unrecoverable, parity rewritten at 1 positions"),
        "{said}"
    );
    assert!(fs::read(&array.parity[0]).expect("parity") == parity);
    assert!(snapshot(&array) == original);
}

#[test]
fn fix_repairs_data_and_a_wrong_parity_level_at_the_same_position() {
    let (array, original) = synced_array(3, 2);
    let good = parity_bytes(&array);
    let victim = array.disks[1].join("dir1/big.bin");
    let pos = first_position_of_block(&array, &victim, "dir1/big.bin", 2);
    flip(&victim, 2 * 65536 + 5);
    flip(&array.parity[1], pos * 65536 + 11);
    // The data is rebuilt with the good level (its hash tells which), then the
    // wrong level is recomputed from the verified stripe: one run does both.
    fix_and_expect(
        &array,
        "1 files fixed, 0 unrecoverable, parity rewritten at 1 positions",
        &good,
    );
    assert!(snapshot(&array) == original);
    expect_code(&array.lhparity(&["check"]), 0);
}

/// Disk d2's `dir1/big.bin` of a `synced_array` (701,111 bytes: block 10 holds
/// 45,751 of them, then zeros), the position of its block `block`, and the byte of
/// a parity file there: in that zero padding with `padding`, else inside the data.
fn position_of_big_bin(array: &Array, block: usize, padding: bool) -> (PathBuf, usize, usize) {
    let victim = array.disks[1].join("dir1/big.bin");
    let pos = first_position_of_block(array, &victim, "dir1/big.bin", block);
    let at = pos * 65536 + if padding { 60_000 } else { 11 };
    (victim, pos, at)
}

/// A scrub judges the parity of a position only when its data is right, so a damaged
/// block and a wrong parity level at one position show as the data alone. A fix that
/// does not check the whole array (`-e`, `-f`, `-d`) still puts both right: it
/// rebuilds the block with the level whose result matches the hash and recomputes
/// every other level there from the verified stripe.
///
/// A scrub still names the wrong level: it rebuilds the block in memory the same
/// way and compares every level with the stripe made whole. A level wrong only in
/// the zero padding of a file's last block (which rebuilds that block's bytes
/// right) is found and rewritten too.
#[test]
fn data_and_parity_damaged_at_one_position_are_both_repaired_by_any_fix() {
    // (fix options, wrong level, in the padding of the last block)
    let cases = [
        ("-e", 0, false),
        ("-e", 1, false),
        ("-f", 0, false),
        ("-d", 1, false),
        ("-e", 0, true),
        ("-f", 1, true),
    ];
    for (how, level, padding) in cases {
        let (array, original) = synced_array(3, 2);
        let good = parity_bytes(&array);
        let block = if padding { 10 } else { 2 };
        let (victim, pos, at) = position_of_big_bin(&array, block, padding);
        flip(&victim, block * 65536 + 5);
        flip(&array.parity[level], at);
        let args: &[&str] = match how {
            "-e" => {
                let out = array.lhparity(&["scrub", "-p", "full"]);
                expect_code(&out, 1);
                let err = stderr(&out);
                assert!(
                    err.contains(&format!("dir1/big.bin block {block} (position {pos})"))
                        && err.contains(&format!(
                            "parity level {} at position {pos} differs",
                            level + 1
                        ))
                        && !err.contains(&format!("parity level {} at", 2 - level)),
                    "scrub with level {} wrong: {err}",
                    level + 1
                );
                &["fix", "-e"]
            }
            "-f" => &["fix", "-f", "dir1/big.bin"],
            _ => &["fix", "-d", "d2"],
        };
        let out = array.lhparity(args);
        expect_code(&out, 0);
        let said = stdout(&out);
        assert!(
            said.contains("1 files fixed, 0 unrecoverable, parity rewritten at 1 positions"),
            "fix {how} with level {} wrong: {said}",
            level + 1
        );
        assert!(
            parity_bytes(&array) == good,
            "fix {how} left parity level {} wrong",
            level + 1
        );
        assert!(snapshot(&array) == original, "fix {how}: data differs");
        let out = array.lhparity(&["scrub", "-p", "full"]);
        expect_code(&out, 0);
        assert_eq!(status(&array)["bad_blocks"], serde_json::json!([]));
    }

    // A level lost at that position (its file cut short) is computed from the
    // rebuilt block with its padding put right, not as the wrong level left it.
    let (array, original) = synced_array(3, 2);
    let good = parity_bytes(&array);
    let (victim, pos, at) = position_of_big_bin(&array, 10, true);
    flip(&victim, 10 * 65536 + 5);
    flip(&array.parity[0], at);
    fs::File::options()
        .write(true)
        .open(&array.parity[1])
        .and_then(|f| f.set_len(pos as u64 * 65536))
        .expect("cut parity 2 short");
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(
        parity_bytes(&array) == good,
        "parity not restored byte for byte"
    );
    assert!(snapshot(&array) == original);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 0);
}

/// A lost file (deleted, or on a wiped disk) is rebuilt with a good level when the
/// first one tried proves wrong at one of its positions, and a level the rebuild
/// did not use is compared with the stripe made whole: a wrong level is rewritten
/// from the verified stripe either way, so the next scrub passes.
#[test]
fn a_level_found_wrong_while_a_lost_file_is_rebuilt_is_rewritten() {
    // (fix option, wrong level, wrong only in the padding of the last block): level
    // 1 is the one a rebuild tries first, level 2 the one it leaves aside.
    // (`fix -d` reads only as many levels as it needs: one it leaves unread is not
    // judged, and the next scrub finds it.)
    let cases = [
        ("-m", 0, false),
        ("-d", 0, false),
        ("-m", 1, false),
        ("-m", 1, true),
        ("-d", 0, true),
        ("-m", 0, true),
    ];
    for (how, level, padding) in cases {
        let (array, original) = synced_array(3, 2);
        let good = parity_bytes(&array);
        let block = if padding { 10 } else { 3 };
        let (victim, _, at) = position_of_big_bin(&array, block, padding);
        flip(&array.parity[level], at);
        let args: &[&str] = if how == "-m" {
            fs::remove_file(&victim).expect("rm");
            &["fix", "-m"]
        } else {
            wipe(&array, 1);
            &["fix", "-d", "d2"]
        };
        let out = array.lhparity(args);
        expect_code(&out, 0);
        assert!(
            stdout(&out).contains("parity rewritten at 1 positions"),
            "fix {how}, level {} wrong (padding: {padding}): {}",
            level + 1,
            stdout(&out)
        );
        assert!(snapshot(&array) == original, "fix {how}: data differs");
        assert!(
            parity_bytes(&array) == good,
            "fix {how} left level {} wrong",
            level + 1
        );
        expect_code(&array.lhparity(&["scrub", "-p", "full"]), 0);
    }

    // A level found wrong puts the others in doubt: `fix -d` then reads and judges
    // the levels it would have left unread, here level 3 beside a wrong level 1.
    let (array, original) = synced_array(3, 3);
    let good = parity_bytes(&array);
    let (_, _, at) = position_of_big_bin(&array, 10, true);
    for level in [0, 2] {
        flip(&array.parity[level], at);
    }
    wipe(&array, 1);
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    assert!(snapshot(&array) == original, "fix -d: data differs");
    assert!(parity_bytes(&array) == good, "fix -d left a level wrong");
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 0);
}

#[test]
fn deleted_file_comes_back_with_fix_m() {
    let (array, original) = synced_array(2, 1);
    let victim = array.disks[1].join("dir1/big.bin");
    fs::remove_file(&victim).expect("rm");
    // Without -m a deleted file is a change, not damage.
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(!exists(&victim));
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    assert!(snapshot(&array) == original);
}

#[test]
fn deleted_links_and_empty_folders_come_back_with_fix_m_and_others_stay_as_they_are() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "f", 10_000, 1);
    std::os::unix::fs::symlink("f", array.disks[0].join("link")).expect("link");
    for d in ["gone", "kept"] {
        fs::create_dir(array.disks[1].join(d)).expect("mkdir");
        fs::set_permissions(array.disks[1].join(d), fs::Permissions::from_mode(0o750))
            .expect("chmod");
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    fs::remove_file(array.disks[0].join("link")).expect("rm link");
    fs::remove_dir(array.disks[1].join("gone")).expect("rmdir");
    // A folder still there keeps the mode it has now.
    fs::set_permissions(
        array.disks[1].join("kept"),
        fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    let diff = stdout(&array.lhparity(&["diff"]));
    assert!(
        diff.contains("remove link d1/link") && diff.contains("remove dir d2/gone"),
        "{diff}"
    );
    // Without -m they are changes, not damage.
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(!exists(&array.disks[0].join("link")));
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    assert_eq!(
        fs::read_link(array.disks[0].join("link")).expect("link back"),
        std::path::Path::new("f")
    );
    let mode = |d: &str| {
        fs::metadata(array.disks[1].join(d))
            .expect("dir")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("gone"), 0o750);
    assert_eq!(mode("kept"), 0o700);
}

#[test]
fn fix_restores_set_user_and_group_id_bits_with_the_owner() {
    use std::os::unix::fs::{chown, MetadataExt};
    let array = Array::new(2, 1, 64, "");
    array.write(0, "other", 100_000, 3);
    let files = [("suid", 0o4755), ("sgid", 0o2755), ("both", 0o6750)];
    for (i, (name, mode)) in files.iter().enumerate() {
        array.write(1, name, 100_000 + i, 10 + i as u64);
        let path = array.disks[1].join(name);
        chown(&path, Some(4242), Some(4343)).expect("chown");
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    let original = snapshot(&array);
    let check = |what: &str| {
        for (name, mode) in files {
            let m = fs::metadata(array.disks[1].join(name)).expect("meta");
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (mode, 4242, 4343),
                "{what}: {name}"
            );
        }
        assert!(snapshot(&array) == original, "{what}: files differ");
        let diff = array.lhparity(&["diff"]);
        expect_code(&diff, 0);
    };
    // Damaged in place, deleted, and the whole disk lost.
    flip(&array.disks[1].join("suid"), 5);
    fs::remove_file(array.disks[1].join("sgid")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    check("fix -m");
    wipe(&array, 1);
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    check("fix -d");
}

#[test]
fn a_sync_that_rewrites_a_bad_block_clears_its_mark_and_one_that_cannot_keeps_it() {
    use std::os::unix::fs::MetadataExt;
    let array = Array::new(2, 1, 64, "");
    array.write(0, "f", 1_000_000, 1);
    array.write(1, "g", 1_000_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let f = array.disks[0].join("f");
    flip(&f, 100_000);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    let marks = || status(&array)["bad_blocks"].as_array().map(Vec::len);
    assert_eq!(marks(), Some(1));
    // Another file's change at that position: the damaged block is still there,
    // so the position is not synced and the mark stays.
    array.write(1, "g", 1_000_000, 3);
    let out = array.lhparity(&["sync"]);
    assert!(
        stderr(&out).contains("does not match its hash"),
        "{}",
        stderr(&out)
    );
    assert_eq!(marks(), Some(1));
    // The damaged file itself rewritten: its new bytes are synced, nothing is bad.
    let mut bytes = fs::read(&f).expect("read");
    bytes.extend_from_slice(b"more");
    fs::write(&f, &bytes).expect("rewrite");
    expect_code(&array.lhparity(&["sync"]), 0);
    assert_eq!(marks(), Some(0));
    let inode = fs::metadata(&f).expect("meta").ino();
    expect_code(&array.lhparity(&["fix", "-e"]), 0);
    assert_eq!(
        fs::metadata(&f).expect("meta").ino(),
        inode,
        "fix -e rewrote it"
    );
    assert_eq!(fs::read(&f).expect("read"), bytes);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 0);
}

#[test]
fn fix_takes_the_inode_of_a_file_whose_bytes_match_so_check_verifies_it_again() {
    // A repaired copy renamed over the file by a fix killed before it saved the
    // state, or a restore from a backup that kept the mtime: the same bytes under a
    // new inode. Check and scrub skipped it as changed until the next sync.
    let (array, original) = synced_array(2, 1);
    let path = array.disks[1].join("dir1/big.bin");
    // `bytes` put at `path` as a new file with its mtime.
    let replace = |bytes: &[u8]| {
        let copy = array.disks[1].join("copy.tmp");
        fs::write(&copy, bytes).expect("write");
        let mtime = fs::metadata(&path)
            .expect("meta")
            .modified()
            .expect("mtime");
        fs::File::options()
            .write(true)
            .open(&copy)
            .expect("open")
            .set_modified(mtime)
            .expect("mtime");
        fs::rename(&copy, &path).expect("rename");
    };
    replace(&fs::read(&path).expect("read"));
    let out = array.lhparity(&["check"]);
    assert!(
        stderr(&out).contains("changed since the last sync"),
        "{}",
        stderr(&out)
    );
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(snapshot(&array) == original, "files differ");
    let out = array.lhparity(&["check"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("changed"), "{}", stderr(&out));
    expect_code(&array.lhparity(&["diff"]), 0);
    // So damage to it is found again.
    flip(&path, 70_000);
    let out = array.lhparity(&["scrub", "-p", "full"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("big.bin"), "{}", stderr(&out));
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(
        snapshot(&array) == original,
        "files differ after the repair"
    );

    // Different bytes under a new inode are not taken: the file is repaired.
    let mut bytes = fs::read(&path).expect("read");
    bytes[5] ^= 1;
    replace(&bytes);
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(
        snapshot(&array) == original,
        "files differ after the second repair"
    );
    expect_code(&array.lhparity(&["check"]), 0);

    // `fix -e` killed after putting its repair in place, before it saved the state:
    // the marked blocks are good again under a new inode. Run again, it takes the
    // inode too, and the marks go.
    flip(&path, 70_000);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    let good = original[&path].0.clone();
    replace(&good);
    let out = array.lhparity(&["fix", "-e"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("changed"), "{}", stderr(&out));
    assert!(snapshot(&array) == original, "files differ after fix -e");
    assert_eq!(status(&array)["bad_blocks"], serde_json::json!([]));
    let out = array.lhparity(&["scrub", "-p", "full"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("changed"), "{}", stderr(&out));
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn folders_made_again_by_fix_get_their_owner_mode_and_time() {
    use std::os::unix::fs::{chown, MetadataExt};
    let array = Array::new(2, 1, 64, "");
    array.write(0, "other", 100_000, 3);
    array.write(1, "priv/inner/x", 100_000, 4);
    array.write(1, "shared/y", 50_000, 5);
    fs::create_dir(array.disks[1].join("shared/empty")).expect("mkdir");
    // (folder, mode, uid, gid, mtime in seconds)
    let folders = [
        ("priv", 0o750, 4242, 4343, 1_000_000_000),
        ("priv/inner", 0o2770, 4242, 4343, 1_100_000_000),
        ("shared", 0o1777, 0, 0, 1_200_000_000),
        ("shared/empty", 0o700, 4242, 0, 1_300_000_000),
    ];
    for (folder, mode, uid, gid, _) in folders {
        let path = array.disks[1].join(folder);
        chown(&path, Some(uid), Some(gid)).expect("chown");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    // Times last, deepest first: setting a folder's time does not change its parent's.
    for (folder, .., secs) in folders.iter().rev() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*secs);
        fs::File::open(array.disks[1].join(folder))
            .expect("open folder")
            .set_modified(time)
            .expect("mtime");
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    let original = snapshot(&array);
    let check = |what: &str| {
        for (folder, mode, uid, gid, secs) in folders {
            let m = fs::metadata(array.disks[1].join(folder)).expect("folder back");
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
                (mode, uid, gid, secs as i64),
                "{what}: {folder}"
            );
        }
        assert!(snapshot(&array) == original, "{what}: files differ");
        expect_code(&array.lhparity(&["diff"]), 0);
    };
    wipe(&array, 1);
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    check("fix -d");
    fs::remove_dir_all(array.disks[1].join("priv")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    check("fix -m");
    // A folder that is there keeps what it has.
    fs::set_permissions(
        array.disks[1].join("shared"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    fs::remove_file(array.disks[1].join("shared/y")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    let m = fs::metadata(array.disks[1].join("shared")).expect("meta");
    assert_eq!(m.mode() & 0o7777, 0o755);

    // A folder's new mode is a difference a sync records; its mtime alone is not.
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    assert!(
        stdout(&out).contains("update mode/owner dir d2/shared\n"),
        "{}",
        stdout(&out)
    );
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["diff"]), 0);
    let content = &array.content[0];
    let saved = fs::metadata(content)
        .expect("content")
        .modified()
        .expect("mtime");
    fs::write(array.disks[1].join("priv/tmp"), b"x").expect("write");
    fs::remove_file(array.disks[1].join("priv/tmp")).expect("rm");
    // An empty folder's too.
    fs::File::open(array.disks[1].join("shared/empty"))
        .expect("open folder")
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7))
        .expect("mtime");
    expect_code(&array.lhparity(&["diff"]), 0);
    expect_code(&array.lhparity(&["sync"]), 0);
    assert_eq!(
        fs::metadata(content)
            .expect("content")
            .modified()
            .expect("mtime"),
        saved,
        "a sync with only a folder's mtime changed saved the state"
    );
    wipe(&array, 1);
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    let m = fs::metadata(array.disks[1].join("shared")).expect("meta");
    assert_eq!(m.mode() & 0o7777, 0o755);
}

#[test]
fn fix_follows_no_symbolic_link_put_where_a_synced_folder_was() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "user/sub/file", 100_000, 1);
    array.write(0, "user/sub/deeper/other", 50_000, 2);
    array.write(1, "o", 100_000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    let outside = tempfile::tempdir().expect("tempdir");
    let sub = array.disks[0].join("user/sub");
    fs::remove_dir_all(&sub).expect("rm");
    std::os::unix::fs::symlink(outside.path(), &sub).expect("symlink");
    for args in [&["fix", "-m"][..], &["fix", "-d", "d1"]] {
        let out = array.lhparity(args);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{} is a symbolic link where the last sync saw a folder; it is not followed",
                sub.display()
            )),
            "{args:?}: {err}"
        );
        let written: Vec<_> = fs::read_dir(outside.path()).expect("list").collect();
        assert!(
            written.is_empty(),
            "{args:?} wrote outside the disk: {written:?}"
        );
    }
    // With the folder back, everything is restored.
    fs::remove_file(&sub).expect("rm link");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);

    // Folders holding only a hard link's other name, a symbolic link or an empty
    // folder, replaced by links to folders where those names exist: reported, not
    // taken for the names being there.
    let d1 = &array.disks[0];
    for folder in ["m", "s", "e/ee"] {
        fs::create_dir_all(d1.join(folder)).expect("mkdir");
    }
    fs::hard_link(d1.join("user/sub/file"), d1.join("m/f2")).expect("link");
    std::os::unix::fs::symlink("../user/sub/file", d1.join("s/sl")).expect("symlink");
    expect_code(&array.lhparity(&["sync"]), 0);
    for folder in ["m", "s", "e"] {
        let there = outside.path().join(folder);
        fs::remove_dir_all(d1.join(folder)).expect("rm");
        fs::create_dir(&there).expect("mkdir");
        std::os::unix::fs::symlink(&there, d1.join(folder)).expect("symlink");
    }
    fs::write(outside.path().join("m/f2"), b"other").expect("write");
    std::os::unix::fs::symlink("elsewhere", outside.path().join("s/sl")).expect("symlink");
    fs::create_dir(outside.path().join("e/ee")).expect("mkdir");
    for args in [&["fix", "-m"][..], &["fix", "-d", "d1"]] {
        let out = array.lhparity(args);
        expect_code(&out, 1);
        let err = stderr(&out);
        for folder in ["m", "s", "e"] {
            assert!(
                err.contains(&format!(
                    "{} is a symbolic link where the last sync saw a folder",
                    d1.join(folder).display()
                )),
                "{args:?} {folder}: {err}"
            );
        }
    }
    assert_eq!(
        fs::read(outside.path().join("m/f2")).expect("read"),
        b"other"
    );
}

#[test]
fn files_with_the_longest_names_are_repaired_and_restored() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let array = Array::new(2, 1, 64, "");
    array.write(1, "other", 50_000, 9);
    let names = [vec![b'a'; 255], vec![0xe9; 255]];
    let mut files = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = array.disks[0].join(OsStr::from_bytes(name));
        let bytes = pseudo_random(100_000 + i, 3 + i as u64);
        fs::write(&path, &bytes).expect("long name");
        files.push((path, bytes));
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    // Damaged in place: plain fix repairs both.
    for (path, _) in &files {
        let mut f = fs::OpenOptions::new().write(true).open(path).expect("open");
        std::io::Write::write_all(&mut f, b"damage").expect("damage");
    }
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    for (path, bytes) in &files {
        assert!(
            fs::read(path).ok().as_ref() == Some(bytes),
            "{}",
            stderr(&out)
        );
    }
    // The whole disk lost: fix -d brings both back.
    for (path, _) in &files {
        fs::remove_file(path).expect("rm");
    }
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    for (path, bytes) in &files {
        assert!(fs::read(path).ok().as_ref() == Some(bytes));
    }
    assert_eq!(fs::read_dir(&array.disks[0]).expect("list").count(), 2);
}

#[test]
fn a_file_elsewhere_whose_mtime_alone_changed_still_serves_the_rebuild() {
    let array = Array::new(2, 1, 64, "");
    let lost = array.write(0, "lost", 300_000, 1);
    let other = array.write(1, "other", 200_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let later = SystemTime::now() + Duration::from_secs(3600);
    let touch = |p: &std::path::Path| {
        fs::File::options()
            .write(true)
            .open(p)
            .expect("open")
            .set_modified(later)
            .expect("mtime")
    };
    touch(&array.disks[1].join("other"));
    fs::remove_file(array.disks[0].join("lost")).expect("rm");
    let out = array.lhparity(&["fix", "-d", "d1"]);
    expect_code(&out, 0);
    assert!(
        fs::read(array.disks[0].join("lost")).ok().as_ref() == Some(&lost),
        "{}",
        stderr(&out)
    );
    assert!(fs::read(array.disks[1].join("other")).ok().as_ref() == Some(&other));

    // Changed bytes (same size) are not used: what they cover is not rebuilt wrong.
    let mut changed = other.clone();
    changed[1000] ^= 0xff;
    fs::write(array.disks[1].join("other"), &changed).expect("change");
    fs::remove_file(array.disks[0].join("lost")).expect("rm");
    let out = array.lhparity(&["fix", "-d", "d1"]);
    expect_code(&out, 1);
    assert!(!exists(&array.disks[0].join("lost")), "{}", stdout(&out));
    let kept = fs::read(array.disks[0].join("lost.unrecoverable")).expect("kept");
    // Only the block beside the changed one is missing (zeros); the rest is right.
    assert_eq!(kept.len(), lost.len());
    assert!(kept[..64 << 10] != lost[..64 << 10] && kept[64 << 10..] == lost[64 << 10..]);
    // What a fix kept of a file is never synced.
    let diff = stdout(&array.lhparity(&["diff"]));
    assert!(
        diff.contains("remove d1/lost") && !diff.contains("unrecoverable"),
        "{diff}"
    );
}

#[test]
fn a_disk_too_small_for_the_rebuilt_files_leaves_no_unrecoverable_files() {
    let array = Array::new(2, 1, 64, "");
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("f{i}"),
                array.write(0, &format!("f{i}"), 150_000, 30 + i),
            )
        })
        .collect();
    array.write(1, "other", 100_000, 9);
    expect_code(&array.lhparity(&["sync"]), 0);
    for (name, _) in &files {
        fs::remove_file(array.disks[0].join(name)).expect("rm");
    }
    // The replacement disk holds two of the three files.
    let disk = &array.disks[0];
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k,mode=0755", "tmpfs"])
        .arg(disk)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED a_disk_too_small_for_the_rebuilt_files_leaves_no_unrecoverable_files: mounting a tmpfs needs root");
        return;
    }
    let out = array.lhparity(&["fix", "-d", "d1"]);
    let names: Vec<String> = fs::read_dir(disk)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let unmounted = Command::new("umount")
        .arg(disk)
        .status()
        .is_ok_and(|s| s.success());
    assert!(unmounted);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("No space left on device") && err.contains("free space on the disk"),
        "{err}"
    );
    assert!(
        !stdout(&out).contains("unrecoverable: "),
        "{}",
        stdout(&out)
    );
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".unrecoverable") && !n.ends_with(".lhparity-fix")),
        "{names:?}"
    );
    // On a disk with room, the same fix brings every file back.
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    for (name, bytes) in &files {
        assert!(
            fs::read(disk.join(name)).ok().as_ref() == Some(bytes),
            "{name}"
        );
    }
}

#[test]
fn truncated_and_overwritten_files_are_repaired_and_mtime_alone_is_no_error() {
    let (array, original) = synced_array(2, 1);
    let truncated = array.disks[0].join("dir0/big.bin");
    let f = fs::File::options()
        .write(true)
        .open(&truncated)
        .expect("open");
    f.set_len(1000).expect("truncate");
    drop(f);
    let overwritten = array.disks[1].join("small.txt");
    let mtime = fs::metadata(&overwritten)
        .expect("meta")
        .modified()
        .expect("mtime");
    fs::write(&overwritten, pseudo_random(1001, 12345)).expect("overwrite");
    fs::File::options()
        .write(true)
        .open(&overwritten)
        .expect("open")
        .set_modified(mtime)
        .expect("mtime");
    let touched = array.disks[1].join("mode600.bin");
    let later = SystemTime::now() + Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&touched)
        .expect("open")
        .set_modified(later)
        .expect("mtime");

    // check names the damage and exits 1; the touched file is only "changed".
    let out = array.lhparity(&["check", "-a"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("small.txt"), "{}", stderr(&out));

    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    let fixed = stdout(&out);
    assert!(
        fixed.contains("dir0/big.bin") && fixed.contains("small.txt"),
        "{fixed}"
    );
    assert!(
        !fixed.contains("mode600.bin"),
        "an mtime change is not damage: {fixed}"
    );
    let now = snapshot(&array);
    for (path, value) in &original {
        if path == &touched {
            assert!(now[path].0 == value.0, "touched file's bytes changed");
        } else {
            assert!(
                now.get(path) == Some(value),
                "{} not restored",
                path.display()
            );
        }
    }
}

#[test]
fn kill_during_fix_then_rerun_harms_no_good_file() {
    let array = Array::new(3, 1, 256, "");
    for d in 0..3 {
        for i in 0..3 {
            array.write(d, &format!("f{i}"), 12 << 20, (d * 3 + i) as u64);
        }
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    let original = snapshot(&array);
    wipe(&array, 1);
    let conf = array.conf.to_string_lossy().into_owned();
    for delay_ms in [10u64, 60, 120] {
        let mut child = Command::new(bin("lhparity"))
            .args(["-c", &conf, "--force-device", "-q", "fix", "-d", "d2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fix");
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        // Whatever is on disk 2 now is either absent or complete and right.
        for (path, (bytes, _, _)) in &original {
            if path.starts_with(&array.disks[1]) && exists(path) {
                assert!(
                    &fs::read(path).expect("read") == bytes,
                    "{} is half written",
                    path.display()
                );
            } else if !path.starts_with(&array.disks[1]) {
                assert!(
                    &fs::read(path).expect("read") == bytes,
                    "{} harmed",
                    path.display()
                );
            }
        }
    }
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    assert!(snapshot(&array) == original);
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn a_damaged_surviving_block_is_found_when_a_lost_disk_is_rebuilt() {
    // Two parity levels: one rebuilds the lost disk, the other makes up for a
    // silently damaged block on a surviving disk in the same stripe.
    let (array, original) = synced_array(3, 2);
    flip(&array.disks[1].join("dir1/big.bin"), 100);
    wipe(&array, 0);
    let out = array.lhparity(&["fix", "-d", "d1"]);
    expect_code(&out, 0);
    let now = snapshot(&array);
    for (path, value) in &original {
        if path.starts_with(&array.disks[0]) {
            assert!(
                now.get(path) == Some(value),
                "{} not rebuilt bit-exact",
                path.display()
            );
        }
    }
    // The damage itself is left for `fix` to repair, and then everything is back.
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(snapshot(&array) == original);
}

/// A tmpfs mounted over a folder for the life of the value.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        if status.is_ok_and(|s| s.success()) {
            return Some(SmallDisk(dir.to_path_buf()));
        }
        assert!(
            std::env::var_os("LHFS_REQUIRE_FUSE").is_none(),
            "mounting a tmpfs failed; this test needs root"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn fix_onto_a_full_disk_reports_it_and_writes_no_wrong_file() {
    let (array, original) = synced_array(3, 1);
    wipe(&array, 0);
    // A replacement disk too small for what was on it.
    let Some(_small) = SmallDisk::mount(&array.disks[0], "256k") else {
        return;
    };
    let out = array.lhparity(&["fix", "-d", "d1"]);
    expect_code(&out, 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    // Only what reached the disk counts as rebuilt: about the 256 KiB that fit, not
    // the 0.77 MB the disk held.
    let rebuilt: f64 = stdout(&out)
        .split(" MB rebuilt")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MB rebuilt in {text}"));
    assert!(rebuilt < 0.5, "{text}");
    let big = array.disks[0].join("dir0/big.bin");
    let message = format!(
        "disk 'd1': writing {}.lhparity-fix: No space left on device (os error 28); free \
         space on the disk (or give it a larger one) and run fix again",
        big.display()
    );
    assert_eq!(text.matches(&message).count(), 1, "{text}");
    // Whatever made it back is exact; the rest is missing, not wrong.
    let now = snapshot(&array);
    let mut restored = 0;
    for (path, (bytes, _, _)) in original
        .iter()
        .filter(|(p, _)| p.starts_with(&array.disks[0]))
    {
        if let Some((b, _, _)) = now.get(path) {
            assert!(b == bytes, "{} differs", path.display());
            restored += 1;
        }
    }
    assert!(restored < 3, "everything fit: {text}");
    for path in now.keys().filter(|p| p.starts_with(&array.disks[0])) {
        let name = path.to_string_lossy();
        assert!(!name.ends_with(".lhparity-fix"), "{name} left behind");
    }
    // The other disks are untouched.
    for (path, entry) in original
        .iter()
        .filter(|(p, _)| !p.starts_with(&array.disks[0]))
    {
        assert!(now.get(path) == Some(entry), "{} changed", path.display());
    }
}

#[test]
fn hard_links_are_protected_once_and_come_back_as_hard_links() {
    let array = Array::new(2, 1, 64, "");
    let bytes = array.write(0, "media/film.mkv", 400_000, 1);
    fs::create_dir_all(array.disks[0].join("seeding")).expect("mkdir");
    fs::hard_link(
        array.disks[0].join("media/film.mkv"),
        array.disks[0].join("seeding/film.mkv"),
    )
    .expect("ln");
    array.write(1, "other", 100_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    // One file's blocks, not two: 400,000 bytes are 7 blocks of 64 KiB.
    let status = status(&array);
    assert_eq!(status["disks"][0]["files"], 1, "{status}");
    assert_eq!(status["positions"], 7, "{status}");
    expect_code(&array.lhparity(&["diff"]), 0);

    wipe(&array, 0);
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    let (a, b) = (
        array.disks[0].join("media/film.mkv"),
        array.disks[0].join("seeding/film.mkv"),
    );
    assert_eq!(fs::read(&a).expect("a"), bytes);
    let (ma, mb) = (fs::metadata(&a).expect("a"), fs::metadata(&b).expect("b"));
    assert_eq!((ma.ino(), ma.nlink()), (mb.ino(), 2), "not one file");
    expect_code(&array.lhparity(&["diff"]), 0);

    // Damage through the second name: fix repairs the file under both names.
    flip(&b, 1000);
    expect_code(&array.lhparity(&["fix"]), 0);
    let (ma, mb) = (fs::metadata(&a).expect("a"), fs::metadata(&b).expect("b"));
    assert_eq!(
        (ma.ino(), ma.nlink()),
        (mb.ino(), 2),
        "the names were split"
    );
    assert_eq!(fs::read(&b).expect("b"), bytes);
    expect_code(&array.lhparity(&["diff"]), 0);

    // -f selects the file by its second name too.
    flip(&b, 2000);
    let out = array.lhparity(&["fix", "-f", "seeding/film.mkv"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("1 files fixed"), "{}", stdout(&out));
    assert_eq!(fs::read(&b).expect("b"), bytes);
    let (ma, mb) = (fs::metadata(&a).expect("a"), fs::metadata(&b).expect("b"));
    assert_eq!(
        (ma.ino(), ma.nlink()),
        (mb.ino(), 2),
        "the names were split"
    );

    // The first name lost, the second still there: the rebuilt file has both again.
    fs::remove_file(&a).expect("rm");
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    let (ma, mb) = (fs::metadata(&a).expect("a"), fs::metadata(&b).expect("b"));
    assert_eq!(
        (ma.ino(), ma.nlink()),
        (mb.ino(), 2),
        "the names were split"
    );
    assert_eq!(fs::read(&a).expect("a"), bytes);
    expect_code(&array.lhparity(&["diff"]), 0);

    fs::remove_file(&b).expect("rm");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    assert!(
        stdout(&out).contains("remove hardlink d1/seeding/film.mkv"),
        "{}",
        stdout(&out)
    );
    // fix -m brings the deleted name back as a link.
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    let (ma, mb) = (fs::metadata(&a).expect("a"), fs::metadata(&b).expect("b"));
    assert_eq!((ma.ino(), ma.nlink()), (mb.ino(), 2));
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn fix_d_with_f_restores_only_the_chosen_files_links_and_folders() {
    let array = Array::new(2, 1, 64, "");
    let film = array.write(0, "media/film.mkv", 200_000, 1);
    array.write(0, "docs/notes.txt", 100_000, 2);
    let d1 = &array.disks[0];
    fs::hard_link(d1.join("media/film.mkv"), d1.join("media/film-link.mkv")).expect("ln");
    fs::hard_link(d1.join("docs/notes.txt"), d1.join("docs/notes-link.txt")).expect("ln");
    std::os::unix::fs::symlink("film.mkv", d1.join("media/latest")).expect("symlink");
    std::os::unix::fs::symlink("notes.txt", d1.join("docs/latest")).expect("symlink");
    fs::create_dir_all(d1.join("media/empty")).expect("mkdir");
    fs::create_dir_all(d1.join("docs/empty")).expect("mkdir");
    array.write(1, "other", 100_000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);

    wipe(&array, 0);
    let out = array.lhparity(&["fix", "-d", "d1", "-f", "media/"]);
    expect_code(&out, 0);
    let film_meta = fs::metadata(d1.join("media/film.mkv")).expect("film");
    assert_eq!(fs::read(d1.join("media/film.mkv")).expect("film"), film);
    assert_eq!(
        fs::metadata(d1.join("media/film-link.mkv"))
            .expect("link")
            .ino(),
        film_meta.ino()
    );
    assert_eq!(
        fs::read_link(d1.join("media/latest")).expect("symlink"),
        PathBuf::from("film.mkv")
    );
    assert!(d1.join("media/empty").is_dir());
    // Nothing of docs/: not its file, its links or its folders.
    for name in [
        "docs/notes.txt",
        "docs/notes-link.txt",
        "docs/latest",
        "docs/empty",
        "docs",
    ] {
        assert!(
            fs::symlink_metadata(d1.join(name)).is_err(),
            "{name} was restored without being chosen; {}",
            stdout(&out)
        );
    }

    // A folder pattern brings back the empty folder it names, and nothing else.
    expect_code(
        &array.lhparity(&["fix", "-d", "d1", "-f", "docs/empty/"]),
        0,
    );
    assert!(d1.join("docs/empty").is_dir());
    assert!(fs::symlink_metadata(d1.join("docs/notes.txt")).is_err());

    // The rest comes back with a fix of the whole disk.
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    assert_eq!(
        fs::metadata(d1.join("docs/notes-link.txt"))
            .expect("link")
            .ino(),
        fs::metadata(d1.join("docs/notes.txt")).expect("file").ino()
    );
    assert!(d1.join("docs/empty").is_dir());
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn fix_leaves_names_alone_that_are_not_the_damaged_file() {
    let array = Array::new(2, 1, 64, "");
    let bytes = array.write(0, "a", 300_000, 1);
    let (a, b, c) = (
        array.disks[0].join("a"),
        array.disks[0].join("b"),
        array.disks[0].join("c"),
    );
    fs::hard_link(&a, &b).expect("ln");
    let x = array.write(1, "x", 100_000, 2);
    fs::hard_link(array.disks[1].join("x"), array.disks[1].join("y")).expect("ln");
    expect_code(&array.lhparity(&["sync"]), 0);

    // The first name renamed away: -m links it to the surviving name, so all three
    // names stay one file, and nothing is rebuilt.
    fs::rename(&a, &c).expect("mv");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    let inos: Vec<(u64, u64)> = [&a, &b, &c]
        .iter()
        .map(|p| fs::metadata(p).map(|m| (m.ino(), m.nlink())).expect("meta"))
        .collect();
    assert!(inos.iter().all(|&i| i == (inos[0].0, 3)), "{inos:?}");
    fs::remove_file(&c).expect("rm");

    // -m with -d leaves the other disk's deleted names alone.
    fs::remove_file(array.disks[1].join("y")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-m", "-d", "d1"]), 0);
    assert!(!exists(&array.disks[1].join("y")), "a name on d2 came back");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    assert_eq!(fs::read(array.disks[1].join("y")).expect("y"), x);

    // Without -m, a repair does not bring back a name the user deleted.
    fs::remove_file(&b).expect("rm");
    flip(&a, 100);
    expect_code(&array.lhparity(&["fix", "-f", "a"]), 0);
    assert_eq!(fs::read(&a).expect("a"), bytes);
    assert!(!exists(&b), "the deleted name came back without -m");

    // Both names gone and a new file made at the second name (the branch may give
    // it the old inode number): fix -m rebuilds the first and leaves the new one.
    fs::remove_file(&a).expect("rm");
    fs::write(&b, b"the user's new file").expect("write");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    assert_eq!(fs::read(&a).expect("a"), bytes);
    assert_eq!(fs::read(&b).expect("b"), b"the user's new file");
}

#[test]
fn a_hard_linked_file_comes_back_whole_when_a_name_was_replaced_or_the_survivor_damaged() {
    let array = Array::new(2, 1, 64, "");
    let bytes = array.write(0, "a/f", 300_000, 1);
    let names = [
        array.disks[0].join("a/f"),
        array.disks[0].join("b/g"),
        array.disks[0].join("c/h"),
    ];
    for name in &names[1..] {
        fs::create_dir_all(name.parent().expect("parent")).expect("mkdir");
        fs::hard_link(&names[0], name).expect("ln");
    }
    array.write(1, "x", 100_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let one_file = |why: &str| {
        let metas: Vec<fs::Metadata> = names
            .iter()
            .map(|n| fs::metadata(n).expect("meta"))
            .collect();
        assert!(
            metas
                .iter()
                .all(|m| m.ino() == metas[0].ino() && m.nlink() == 3),
            "{why}: names split"
        );
        for n in &names {
            assert_eq!(fs::read(n).expect("read"), bytes, "{why}: {}", n.display());
        }
        expect_code(&array.lhparity(&["diff"]), 0);
    };

    // The first name replaced by another file: fix brings back the synced file
    // under all three names.
    fs::remove_file(&names[0]).expect("rm");
    fs::write(&names[0], pseudo_random(300_000, 99)).expect("write");
    expect_code(&array.lhparity(&["fix"]), 0);
    one_file("replaced first name");

    // The first name lost and the survivors damaged in place (size and mtime kept):
    // they are not linked to as they are; the file is rebuilt and they follow it.
    fs::remove_file(&names[0]).expect("rm");
    flip(&names[1], 10);
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    one_file("damaged survivor");
}

#[test]
fn fix_never_takes_a_new_file_or_a_symlink_for_a_name_of_the_synced_file() {
    let array = Array::new(2, 1, 64, "");
    let bytes = array.write(0, "a/f", 300, 1);
    let (a, b, c) = (
        array.disks[0].join("a/f"),
        array.disks[0].join("b/g"),
        array.disks[0].join("h"),
    );
    fs::create_dir_all(b.parent().expect("b")).expect("mkdir");
    fs::hard_link(&a, &b).expect("ln");
    fs::hard_link(&a, &c).expect("ln");
    array.write(1, "x", 1000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);

    // Every name deleted, then new files of the same size at two of them (the branch
    // may hand them the freed inode number): plain fix and fix -m leave them alone.
    for args in [&["fix"][..], &["fix", "-m"]] {
        for n in [&a, &b, &c] {
            let _ = fs::remove_file(n);
        }
        let new = pseudo_random(300, 7);
        fs::write(&b, &new).expect("write");
        fs::write(&a, pseudo_random(300, 8)).expect("write");
        fs::File::options()
            .write(true)
            .open(&b)
            .expect("b")
            .set_modified(old)
            .expect("mtime");
        array.lhparity(args);
        assert_eq!(
            fs::read(&b).expect("b"),
            new,
            "{args:?}: the user's new file was replaced"
        );
        assert_eq!(fs::read(&a).expect("a"), bytes, "{args:?}");
    }

    // A symbolic link the user put at a name of the file is left alone, and no name
    // is made as a link to it.
    for n in [&a, &b, &c] {
        let _ = fs::remove_file(n);
    }
    std::os::unix::fs::symlink("elsewhere", &a).expect("symlink");
    let out = array.lhparity(&["fix", "-m"]);
    assert!(
        stderr(&out).contains("is a symbolic link now"),
        "{}",
        stderr(&out)
    );
    assert!(fs::symlink_metadata(&a)
        .expect("a")
        .file_type()
        .is_symlink());
    assert!(
        !exists(&b) && !exists(&c),
        "a name was linked to the symlink"
    );
}

#[test]
fn a_disk_lost_after_a_sync_was_killed_is_rebuilt_from_either_parity() {
    // The kill lands at several points of a sync that rewrites most of d1; each
    // time d2 is then lost, and rebuilt from parity that is partly from before the
    // sync and partly from it.
    let array = Array::new(3, 2, 64, "");
    for d in 0..3 {
        for i in 0..30 {
            array.write(
                d,
                &format!("f{i}"),
                600_000 + i * 7_777 + d * 13,
                (d * 100 + i) as u64,
            );
        }
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    let d2: Snapshot = snapshot(&array)
        .into_iter()
        .filter(|(p, _)| p.starts_with(&array.disks[1]))
        .collect();
    let conf = array.conf.to_string_lossy().into_owned();
    for (round, delay_ms) in [20u64, 40, 70, 100, 150].into_iter().enumerate() {
        for i in 0..30 {
            if (i + round) % 3 == 0 {
                let _ = fs::remove_file(array.disks[0].join(format!("f{i}")));
            } else {
                array.write(
                    0,
                    &format!("f{i}"),
                    900_000 + i * 5_555 + round,
                    (round * 50 + i) as u64,
                );
            }
        }
        let mut child = Command::new(bin("lhparity"))
            .args(["-c", &conf, "--force-device", "-q", "sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sync");
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        wipe(&array, 1);
        let out = array.lhparity(&["fix", "-d", "d2"]);
        expect_code(&out, 0);
        for (path, value) in &d2 {
            assert!(
                snapshot(&array).get(path) == Some(value),
                "round {round}: {} not restored: {}",
                path.display(),
                stderr(&out)
            );
        }
        // Each round starts from a finished sync: parity left by two stopped syncs
        // in a row, with changes in between, is neither before nor after the last.
        expect_code(&array.lhparity(&["sync"]), 0);
    }
    expect_code(&array.lhparity(&["check"]), 0);
}

/// Flips a bit of d1's big file at `offset` and has a scrub mark its block bad;
/// returns the file.
fn marked_bad(array: &Array, offset: usize) -> PathBuf {
    let victim = array.disks[0].join("dir0/big.bin");
    flip(&victim, offset);
    expect_code(&array.lhparity(&["scrub", "-p", "full"]), 1);
    victim
}

#[test]
fn fix_e_of_a_file_deleted_after_its_bad_block_was_found_rebuilds_every_block() {
    let (array, original) = synced_array(2, 1);
    let victim = marked_bad(&array, 65536 + 9);
    fs::remove_file(&victim).expect("rm");
    // Only block 1 was marked bad, but with the file gone every block must come
    // back from parity: never a file of zeros around the one rebuilt block.
    let out = array.lhparity(&["fix", "-e"]);
    expect_code(&out, 0);
    assert!(
        snapshot(&array) == original,
        "the deleted file came back different: {}",
        stderr(&out)
    );
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn fix_e_leaves_a_file_changed_since_the_sync_alone_and_says_so() {
    let (array, _) = synced_array(2, 1);
    let victim = marked_bad(&array, 65536 + 9);
    // The user then appends to the file: putting back the synced blocks would
    // cut the new bytes off.
    let mut edited = fs::read(&victim).expect("read");
    edited.extend_from_slice(b"appended after the sync");
    fs::write(&victim, &edited).expect("append");
    let out = array.lhparity(&["fix", "-e"]);
    let err = stderr(&out);
    assert!(
        err.contains("dir0/big.bin changed since the last sync"),
        "{err}"
    );
    assert_eq!(
        fs::read(&victim).expect("read"),
        edited,
        "the file was touched"
    );
    assert!(!exists(&victim.with_extension("bin.lhparity-fix")));
}

#[test]
fn a_symlink_in_the_way_of_the_temporary_file_harms_nothing() {
    let (array, original) = synced_array(2, 1);
    let victim = array.disks[0].join("small.txt");
    let bystander = array.disks[1].join("small.txt");
    fs::remove_file(&victim).expect("rm");
    std::os::unix::fs::symlink(&bystander, array.disks[0].join("small.txt.lhparity-fix"))
        .expect("symlink");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    // The other disk's file is untouched, and the restored file is a file.
    assert!(fs::symlink_metadata(&victim).expect("restored").is_file());
    assert!(snapshot(&array) == original, "a file differs after the fix");
}

/// `chattr +i` (or `-i`) on `path`; false where chattr is missing or refused.
fn immutable(path: &std::path::Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_parity_file_that_cannot_be_written_still_serves_to_rebuild_data() {
    let (array, original) = synced_array(2, 1);
    let parity = &array.parity[0];
    let immutable = |on: bool| immutable(parity, on);
    if !immutable(true) {
        eprintln!("\n*** SKIPPED: chattr +i is not available here ***\n");
        return;
    }
    flip(&array.disks[0].join("dir0/big.bin"), 3 * 65536 + 1);
    let out = array.lhparity(&["fix"]);
    let parity_after = fs::read(parity).expect("read parity");
    immutable(false);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "parity file {} cannot be written",
            parity.display()
        )),
        "{err}"
    );
    assert!(
        snapshot(&array) == original,
        "the damaged file was not repaired: {err}"
    );
    expect_code(&array.lhparity(&["check"]), 0);
    assert!(!parity_after.is_empty());
}

#[test]
fn a_repaired_file_that_cannot_be_put_in_place_leaves_no_temporary_file() {
    let (array, original) = synced_array(2, 1);
    let victim = marked_bad(&array, 9);
    if !immutable(&victim, true) {
        eprintln!("\n*** SKIPPED: chattr +i is not available here ***\n");
        return;
    }
    let out = array.lhparity(&["fix"]);
    immutable(&victim, false);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "writing {}: Operation not permitted",
            victim.display()
        )),
        "{err}"
    );
    assert!(!exists(&victim.with_extension("bin.lhparity-fix")));
    // Once the file can be replaced, the same fix goes through.
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(snapshot(&array) == original, "the file was not repaired");
}

#[test]
fn good_blocks_of_a_damaged_file_serve_to_rebuild_another_file() {
    // One parity level; damage in d1's and d2's big files at different positions.
    // Each position then has one lost block, so both files come back, provided the
    // good blocks of each damaged file are read for the other's rebuild.
    let (array, original) = synced_array(2, 1);
    flip(&array.disks[0].join("dir0/big.bin"), 5);
    flip(&array.disks[1].join("dir1/big.bin"), 3 * 65536 + 5);
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert!(
        snapshot(&array) == original,
        "not both files were repaired: {}",
        stderr(&out)
    );
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn fix_m_brings_back_a_deleted_empty_file() {
    let (array, _) = synced_array(1, 1);
    let empty = array.disks[0].join("dir0/empty");
    fs::write(&empty, b"").expect("empty file");
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o640)).expect("chmod");
    expect_code(&array.lhparity(&["sync"]), 0);
    let original = snapshot(&array);
    fs::remove_file(&empty).expect("rm");
    let out = array.lhparity(&["fix", "-m"]);
    expect_code(&out, 0);
    assert!(snapshot(&array) == original, "{}", stderr(&out));
}

#[test]
fn a_plain_fix_drops_the_mark_of_a_block_it_finds_good() {
    let (array, original) = synced_array(2, 1);
    let victim = marked_bad(&array, 2 * 65536 + 3);
    assert_eq!(
        status(&array)["bad_blocks"].as_array().map(Vec::len),
        Some(1)
    );
    // The block is put back by hand (or the read error goes away) before the fix.
    flip(&victim, 2 * 65536 + 3);
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert_eq!(
        status(&array)["bad_blocks"],
        serde_json::json!([]),
        "{}",
        stderr(&out)
    );
    assert!(snapshot(&array) == original);
}

#[test]
fn a_sync_that_meets_a_damaged_block_keeps_the_parity_that_can_rebuild_it() {
    let array = Array::new(2, 1, 64, "");
    let good = array.write(0, "a/f1", 100_000, 5);
    expect_code(&array.lhparity(&["sync"]), 0);
    let f1 = array.disks[0].join("a/f1");
    flip(&f1, 1000);
    // A new file on the other disk takes position 0 too: that position is synced
    // again, and reads f1's damaged block on the way.
    array.write(1, "b/g1", 30_000, 6);
    let out = array.lhparity(&["sync"]);
    assert!(
        stderr(&out).contains("does not match its hash"),
        "{}",
        stderr(&out)
    );
    // The parity from before the damage is still there, so fix brings f1 back.
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert_eq!(fs::read(&f1).expect("read"), good, "{}", stderr(&out));
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn fix_names_a_full_parity_disk_once() {
    let (array, original) = synced_array(3, 2);
    // Level 2 moves to a small disk with no room left, holding only the start of
    // its file: fix must write the rest there.
    let small = array.root.path().join("small");
    fs::create_dir(&small).expect("mkdir");
    let Some(_small) = SmallDisk::mount(&small, "1m") else {
        return;
    };
    let p2 = small.join("parity2");
    fs::write(&p2, &fs::read(&array.parity[1]).expect("parity 2")[..100]).expect("copy");
    let mut filler = fs::File::create(small.join("filler")).expect("filler");
    while std::io::Write::write_all(&mut filler, &[0u8; 65536]).is_ok() {}
    drop(filler);
    let conf = fs::read_to_string(&array.conf).expect("conf").replace(
        &array.parity[1].display().to_string(),
        &p2.display().to_string(),
    );
    fs::write(&array.conf, conf).expect("conf");

    let out = array.lhparity(&["fix"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    let named: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("parity level 2"))
        .collect();
    assert_eq!(named.len(), 1, "{err}");
    assert!(
        named[0].contains(&p2.display().to_string())
            && named[0].contains("No space left on device")
            && named[0].contains("position(s)"),
        "{err}"
    );
    assert!(snapshot(&array) == original, "a data file changed");
}

#[test]
fn a_disk_of_more_files_than_may_be_open_comes_back_in_one_run() {
    use std::os::unix::process::CommandExt;
    const FILES: usize = 400;
    const LIMIT: libc::rlim_t = 48;
    let array = Array::new(2, 1, 64, "");
    let mut written = Vec::new();
    for i in 0..FILES {
        written.push(array.write(0, &format!("many/f{i}"), 100 + i * 37, i as u64));
    }
    array.write(1, "other", 300_000, 7);
    expect_code(&array.lhparity(&["sync"]), 0);
    wipe(&array, 0);
    for args in [&["fix", "-d", "d1"][..], &["fix", "-m"]] {
        let conf = array.conf.to_string_lossy().into_owned();
        let mut cmd = Command::new(bin("lhparity"));
        cmd.args(["-c", conf.as_str(), "--force-device"]).args(args);
        // SAFETY: only setrlimit, which is async-signal-safe, runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("run lhparity");
        expect_code(&out, 0);
        for (i, bytes) in written.iter().enumerate() {
            let path = array.disks[0].join(format!("many/f{i}"));
            assert!(
                fs::read(&path).ok().as_ref() == Some(bytes),
                "{args:?}: {} not restored: {}",
                path.display(),
                stderr(&out)
            );
        }
        let left: Vec<_> = fs::read_dir(array.disks[0].join("many"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().contains('.'))
            .collect();
        assert!(left.is_empty(), "{args:?}: left behind {left:?}");
        wipe(&array, 0);
        fs::create_dir_all(&array.disks[0]).expect("disk");
    }
}

#[test]
fn fix_d_refuses_a_disk_holding_another_disks_files() {
    let (array, _) = synced_array(3, 2);
    // A file both disks hold alike (copied with its mtime) counts for neither.
    let shared = pseudo_random(5_000, 77);
    for d in [0, 1] {
        let path = array.disks[d].join("shared.txt");
        fs::write(&path, &shared).expect("shared");
        let f = fs::File::options().write(true).open(&path).expect("open");
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000))
            .expect("mtime");
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    let original = snapshot(&array);
    // The mounts of d1 and d2 swapped: each folder holds the other disk's files.
    let spare = array.root.path().join("spare");
    fs::rename(&array.disks[0], &spare).expect("swap");
    fs::rename(&array.disks[1], &array.disks[0]).expect("swap");
    fs::rename(&spare, &array.disks[1]).expect("swap");
    let swapped = snapshot(&array);
    for disk in ["d1", "d2"] {
        let out = array.lhparity(&["fix", "-d", disk]);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("-d {disk}: ")) && err.contains("the disks look swapped"),
            "{err}"
        );
        assert!(
            snapshot(&array) == swapped,
            "fix -d {disk} wrote over the swapped disk"
        );
    }
    // Mounted right again: nothing to refuse, nothing to fix.
    let spare = array.root.path().join("spare");
    fs::rename(&array.disks[0], &spare).expect("swap back");
    fs::rename(&array.disks[1], &array.disks[0]).expect("swap back");
    fs::rename(&spare, &array.disks[1]).expect("swap back");
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    assert!(snapshot(&array) == original);
    // An empty replacement disk is what -d is for, and so is one where a stray file
    // of another disk landed.
    wipe(&array, 0);
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    assert!(snapshot(&array) == original);
    wipe(&array, 0);
    let stray = array.disks[0].join("dir1");
    fs::create_dir(&stray).expect("mkdir");
    let from = array.disks[1].join("dir1/big.bin");
    fs::copy(&from, stray.join("big.bin")).expect("stray copy");
    let mtime = fs::metadata(&from)
        .and_then(|m| m.modified())
        .expect("mtime");
    fs::File::options()
        .write(true)
        .open(stray.join("big.bin"))
        .and_then(|f| f.set_modified(mtime))
        .expect("mtime");
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    fs::remove_dir_all(&stray).expect("rm stray");
    let mut expected = original.clone();
    expected.retain(|p, _| !p.starts_with(&stray));
    let mut now = snapshot(&array);
    now.retain(|p, _| !p.starts_with(&stray));
    assert!(now == expected);
}

#[test]
fn a_sparse_file_comes_back_sparse() {
    let array = Array::new(2, 1, 64, "");
    // 32 MiB with data only in its first and last 100 KB.
    let path = array.disks[0].join("disk.img");
    let size = 32u64 << 20;
    let head = pseudo_random(100_000, 5);
    let tail = pseudo_random(100_000, 6);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(&path).expect("create");
        f.set_len(size).expect("size");
        f.write_all_at(&head, 0).expect("head");
        f.write_all_at(&tail, size - 100_000).expect("tail");
    }
    array.write(1, "other", 500_000, 7);
    expect_code(&array.lhparity(&["sync"]), 0);
    let before = fs::read(&path).expect("read");
    wipe(&array, 0);
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    assert!(fs::read(&path).expect("restored") == before);
    let meta = fs::metadata(&path).expect("meta");
    assert_eq!(meta.len(), size);
    // Allocated: the data blocks, not 32 MiB (filesystems round up a little).
    assert!(
        meta.blocks() * 512 < 4 << 20,
        "{} bytes allocated",
        meta.blocks() * 512
    );
}

/// The config with the paths of parity levels `a` and `b` (1-based) exchanged.
fn swap_parity_lines(array: &Array, a: usize, b: usize) -> String {
    let name = |l: usize| {
        if l == 1 {
            "parity".to_string()
        } else {
            format!("{l}-parity")
        }
    };
    let original = fs::read_to_string(&array.conf).expect("config");
    let swapped: Vec<String> = original
        .lines()
        .map(|line| {
            for (this, other) in [(a, b), (b, a)] {
                if line == format!("{} {}", name(this), array.parity[this - 1].display()) {
                    return format!("{} {}", name(this), array.parity[other - 1].display());
                }
            }
            line.to_string()
        })
        .collect();
    assert_ne!(swapped.join("\n") + "\n", original, "no line swapped");
    fs::write(&array.conf, swapped.join("\n") + "\n").expect("config");
    original
}

#[test]
fn parity_files_of_swapped_levels_are_refused_before_anything_is_written() {
    let (array, original) = synced_array(3, 3);
    let config = swap_parity_lines(&array, 1, 3);
    let stamps: BTreeMap<PathBuf, SystemTime> = array
        .parity
        .iter()
        .chain(&array.content)
        .map(|p| {
            (
                p.clone(),
                fs::metadata(p).expect("file").modified().expect("mtime"),
            )
        })
        .collect();
    let untouched = |what: &str| {
        for p in array.parity.iter().chain(&array.content) {
            assert_eq!(
                fs::metadata(p).expect("file").modified().expect("mtime"),
                *stamps.get(p).expect("stamp"),
                "{what} changed {}",
                p.display()
            );
        }
    };
    let parity_bytes: Vec<Vec<u8>> = array
        .parity
        .iter()
        .map(|p| fs::read(p).expect("parity"))
        .collect();
    let expect_refusal = |args: &[&str]| -> String {
        let out = array.lhparity(args);
        expect_code(&out, 1);
        let err = stderr(&out);
        let (p1, p3) = (array.parity[0].display(), array.parity[2].display());
        assert!(
            err.contains("the parity files are not where the config says")
                && err.contains(&format!(
                    "{p3} (line 2, `parity`) holds the parity of `3-parity`"
                ))
                && err.contains(&format!(
                    "{p1} (line 4, `3-parity`) holds the parity of `parity`"
                ))
                && !err.contains("`2-parity`)")
                && err.contains("Nothing was changed"),
            "{args:?}: {err}"
        );
        err
    };
    // A sync with something to do would write level 1's parity into level 3's file.
    array.write(1, "new.txt", 3000, 5);
    assert!(expect_refusal(&["sync"]).contains("on purpose"));
    fs::remove_file(array.disks[1].join("new.txt")).expect("rm");
    // Lost disks: the probe rebuilds their blocks reading the files each way.
    wipe(&array, 0);
    for args in [
        &["fix", "-d", "d1"][..],
        &["fix"],
        &["check"],
        &["scrub", "-p", "full"],
    ] {
        assert!(!expect_refusal(args).contains("on purpose"));
        assert_eq!(
            fs::read_dir(&array.disks[0]).expect("d1").count(),
            0,
            "{args:?} wrote to d1"
        );
    }
    let aside = array.root.path().join("d2-aside");
    fs::rename(&array.disks[1], &aside).expect("d2 aside");
    fs::create_dir(&array.disks[1]).expect("empty d2");
    expect_refusal(&["fix", "-d", "d1", "-d", "d2"]);
    assert_eq!(fs::read_dir(&array.disks[1]).expect("d2").count(), 0);
    fs::remove_dir(&array.disks[1]).expect("rm d2");
    fs::rename(&aside, &array.disks[1]).expect("d2 back");
    untouched("a refused command");
    for (p, bytes) in array.parity.iter().zip(&parity_bytes) {
        assert!(
            fs::read(p).expect("parity") == *bytes,
            "{} changed",
            p.display()
        );
    }
    // In order again: the disk comes back, and a damaged parity block is damage, not
    // a swap.
    fs::write(&array.conf, config).expect("config");
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    assert!(snapshot(&array) == original);
    let mut p1 = fs::read(&array.parity[0]).expect("parity");
    p1[10] ^= 1;
    fs::write(&array.parity[0], &p1).expect("damage");
    let out = array.lhparity(&["check"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        !err.contains("not where the config says") && err.contains("parity level 1"),
        "{err}"
    );
    expect_code(&array.lhparity(&["fix"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
    // Swapped on purpose: a full sync is refused too, and does what the message
    // says once the files of the changed lines are gone.
    swap_parity_lines(&array, 1, 3);
    array.write(1, "new.txt", 3000, 5);
    expect_refusal(&["sync", "--force-full"]);
    fs::remove_file(&array.parity[0]).expect("rm parity");
    fs::remove_file(&array.parity[2]).expect("rm parity");
    expect_code(&array.lhparity(&["sync", "--force-full"]), 0);
    fs::remove_file(array.disks[1].join("new.txt")).expect("rm");
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
    wipe(&array, 0);
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    assert!(snapshot(&array) == original);
}

#[test]
fn a_swap_behind_a_damaged_first_parity_file_is_found_with_a_disk_lost() {
    let (array, _) = synced_array(3, 3);
    // Level 1 damaged at every block, levels 2 and 3 swapped, d1 lost: only levels 2
    // and 3 can rebuild d1, and only read as what they hold.
    let mut p1 = fs::read(&array.parity[0]).expect("parity");
    for block in p1.chunks_mut(65536) {
        block[0] ^= 0xff;
        block[1] ^= 0x0f;
    }
    fs::write(&array.parity[0], &p1).expect("damage");
    swap_parity_lines(&array, 2, 3);
    wipe(&array, 0);
    let out = array.lhparity(&["fix", "-d", "d1"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    let (p2, p3) = (array.parity[1].display(), array.parity[2].display());
    assert!(
        err.contains(&format!(
            "{p3} (line 3, `2-parity`) holds the parity of `3-parity`"
        )) && err.contains(&format!(
            "{p2} (line 4, `3-parity`) holds the parity of `2-parity`"
        )),
        "{err}"
    );
    assert_eq!(fs::read_dir(&array.disks[0]).expect("d1").count(), 0);
}

/// N of a `check`/`scrub` summary line `Checked N block positions...`.
fn positions_in_summary(out: &str) -> Option<usize> {
    out.lines().find_map(|line| {
        let rest = line
            .strip_prefix("Checked ")
            .or_else(|| line.strip_prefix("Scrubbed "))?;
        rest.split(' ').next()?.parse().ok()
    })
}

#[test]
fn check_and_scrub_read_no_file_through_a_symbolic_link_put_where_a_folder_was() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "user/sub/file", 100_000, 1);
    array.write(0, "user/sub/deeper/other", 50_000, 2);
    array.write(0, "user/kept", 70_000, 4);
    array.write(1, "o", 100_000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    // The folder moved elsewhere, bytes intact, a link left in its place: reading
    // through it would pass every check.
    let outside = tempfile::tempdir().expect("tempdir");
    let sub = array.disks[0].join("user/sub");
    let moved = outside.path().join("sub");
    fs::create_dir_all(moved.join("deeper")).expect("mkdir");
    for name in ["file", "deeper/other"] {
        fs::copy(sub.join(name), moved.join(name)).expect("copy");
    }
    fs::remove_dir_all(&sub).expect("rm");
    std::os::unix::fs::symlink(&moved, &sub).expect("symlink");
    let before = fs::read(moved.join("file")).expect("read");
    for args in [&["check"][..], &["check", "-a"], &["scrub", "-p", "full"]] {
        let out = array.lhparity(args);
        expect_code(&out, 1);
        let err = stderr(&out);
        let said = format!(
            "disk 'd1': {} is a symbolic link where the last sync saw a folder; it is not \
             followed, and the files below it were not read",
            sub.display()
        );
        assert_eq!(err.matches(&said).count(), 1, "{args:?}: {err}");
        assert!(!err.contains("file is missing"), "{args:?}: {err}");
    }
    // A plain fix names the link once, as an error; with -m or -d it restores
    // nothing through it.
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert_eq!(
        err.matches(&format!("{} is a symbolic link", sub.display()))
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("error: ") && err.contains("were neither checked nor restored"),
        "{err}"
    );
    for args in [&["fix", "-m"][..], &["fix", "-d", "d1"]] {
        let out = array.lhparity(args);
        expect_code(&out, 1);
        let err = stderr(&out);
        let said = format!(
            "{} is a symbolic link where the last sync saw a folder; it is not followed",
            sub.display()
        );
        // Once, not once per file below it.
        assert_eq!(err.matches(&said).count(), 1, "{args:?}: {err}");
    }
    assert_eq!(
        fs::read_dir(&moved).expect("list").count(),
        2,
        "something was written through the link"
    );
    // The scrub marked nothing bad: what is below the link was never looked at.
    let out = array.lhparity(&["status"]);
    assert!(stdout(&out).contains("No bad blocks."), "{}", stdout(&out));
    assert_eq!(fs::read(moved.join("file")).expect("read"), before);
    // A file replaced by a link to a copy of itself is named as such.
    fs::remove_file(&sub).expect("rm link");
    fs::create_dir(&sub).expect("mkdir");
    let kept = array.disks[0].join("user/kept");
    fs::rename(&kept, outside.path().join("kept")).expect("mv");
    std::os::unix::fs::symlink(outside.path().join("kept"), &kept).expect("symlink");
    let out = array.lhparity(&["check", "-d", "d1"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "disk 'd1': {} is a symbolic link where the last sync saw a file; it is not followed",
            kept.display()
        )),
        "{}",
        stderr(&out)
    );
    // Fix leaves the user's link, and says the file is not back (exit 1) and how
    // to bring it back.
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "{} is a symbolic link now, so the file synced there was not restored; remove \
             the link and run `lhparity fix -m` to restore it",
            kept.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(fs::symlink_metadata(&kept).expect("link").is_symlink());
    fs::remove_file(&kept).expect("rm link");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn fix_d_gives_a_replaced_disks_root_folder_its_owner_and_mode() {
    use std::os::unix::fs::{chown, MetadataExt};
    let array = Array::new(2, 1, 64, "");
    array.write(0, "other", 100_000, 3);
    array.write(1, "media/film", 200_000, 4);
    let root = &array.disks[1];
    chown(root, Some(4242), Some(4343)).expect("chown");
    fs::set_permissions(root, fs::Permissions::from_mode(0o2775)).expect("chmod");
    expect_code(&array.lhparity(&["sync"]), 0);
    let original = snapshot(&array);
    // A change of the root's mode is one a sync records.
    fs::set_permissions(root, fs::Permissions::from_mode(0o2770)).expect("chmod");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    assert!(
        stdout(&out).contains("update mode/owner dir d2/\n"),
        "{}",
        stdout(&out)
    );
    expect_code(&array.lhparity(&["sync"]), 0);
    // The disk replaced by a new file system: its root is root's, mode 755. A fix
    // killed before the end made a folder without its recorded owner and mode.
    let media = root.join("media");
    chown(&media, Some(77), Some(78)).expect("chown");
    fs::set_permissions(&media, fs::Permissions::from_mode(0o2750)).expect("chmod");
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::open(&media)
        .expect("open")
        .set_modified(old)
        .expect("mtime");
    expect_code(&array.lhparity(&["sync"]), 0);
    wipe(&array, 1);
    chown(root, Some(0), Some(0)).expect("chown");
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir(&media).expect("mkdir");
    let out = array.lhparity(&["fix", "-d", "d2"]);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains(&format!(
            "folder {}/: owner and mode set back to the recorded 4242:4343 2770 (they were 0:0 \
             755)",
            root.display()
        )),
        "{}",
        stderr(&out)
    );
    let m = fs::metadata(root).expect("root");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o2770, 4242, 4343));
    let m = fs::metadata(&media).expect("media");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o2750, 77, 78));
    assert_eq!(m.mtime(), 1_000_000_000);
    assert!(snapshot(&array) == original, "files differ");
    expect_code(&array.lhparity(&["diff"]), 0);
    // `fix -m` and a fix of chosen files leave the root as it is.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::remove_file(root.join("media/film")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-m"]), 0);
    fs::remove_file(root.join("media/film")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-d", "d2", "-f", "media/"]), 0);
    assert_eq!(fs::metadata(root).expect("root").mode() & 0o7777, 0o755);
    assert!(snapshot(&array) == original, "files differ");
}

#[test]
fn a_fix_run_by_a_user_restores_what_it_may_and_says_which_owner_it_could_not_give() {
    use std::os::unix::fs::{chown, MetadataExt};
    use std::os::unix::process::CommandExt;
    const USER: u32 = 23456;
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a/mine", 100_000, 1);
    array.write(0, "a/theirs", 80_000, 2);
    array.write(1, "other", 100_000, 3);
    let d1 = &array.disks[0];
    fs::create_dir(d1.join("closed")).expect("mkdir");
    fs::set_permissions(d1.join("closed"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    // Everything the user's, but one file whose group is root's.
    for entry in walk(array.root.path()) {
        chown(&entry, Some(USER), Some(USER)).expect("chown");
    }
    chown(array.root.path(), Some(USER), Some(USER)).expect("chown");
    chown(d1.join("a/theirs"), Some(USER), Some(0)).expect("chown");
    let as_user = |args: &[&str]| {
        let conf = array.conf.to_string_lossy().into_owned();
        Command::new(bin("lhparity"))
            .args(["-c", conf.as_str(), "--force-device", "-q"])
            .args(args)
            .uid(USER)
            .gid(USER)
            .output()
            .expect("run lhparity")
    };
    expect_code(&as_user(&["sync"]), 0);
    // A folder the user closed to itself, and both files lost.
    fs::set_permissions(d1.join("closed"), fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::remove_file(d1.join("a/mine")).expect("rm");
    fs::remove_file(d1.join("a/theirs")).expect("rm");
    let out = as_user(&["fix", "-d", "d1"]);
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{} is owned by {USER}:{USER}, not by {USER}:0 as recorded",
            d1.join("a/theirs").display()
        )),
        "{err}"
    );
    assert_eq!(err.matches(" as recorded: only root").count(), 1, "{err}");
    assert_eq!(
        fs::metadata(d1.join("closed")).expect("closed").mode() & 0o7777,
        0o1777
    );
    for (name, seed, len) in [("a/mine", 1, 100_000), ("a/theirs", 2, 80_000)] {
        assert_eq!(
            fs::read(d1.join(name)).expect(name),
            pseudo_random(len, seed),
            "{name}"
        );
    }
    // Files the user may not open (a folder closed since) are not lost: named as
    // such, never rebuilt over.
    fs::set_permissions(d1.join("a"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let out = as_user(&["fix", "-d", "d1"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "opening {}: Permission denied",
            d1.join("a/mine").display()
        )),
        "{err}"
    );
    assert!(!err.contains("creating"), "{err}");
    assert!(
        err.contains(&format!(
            "folder {}: owner and mode set back to the recorded {USER}:{USER} 755 (they were \
             {USER}:{USER} 0)",
            d1.join("a").display()
        )),
        "{err}"
    );
    assert_eq!(
        fs::read(d1.join("a/mine")).expect("mine"),
        pseudo_random(100_000, 1)
    );
}

/// Every file and folder below `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("list") {
        let p = e.expect("entry").path();
        if fs::symlink_metadata(&p).expect("meta").is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// SnapRAID's `-i` case: a file deleted since the last sync still has its blocks in
/// the parity, and a disk lost with one parity level needs them. A copy of the
/// deleted file in an import folder stands in for it (and a decoy of its size and
/// mtime does not); the deleted file stays deleted.
#[test]
fn fix_i_reads_a_deleted_file_from_its_copy_to_rebuild_a_lost_disk() {
    const MIB: usize = 1 << 20;
    let array = Array::new(2, 1, 64, "");
    let gone = array.write(0, "gone.bin", 3 * MIB, 1);
    let lost = array.write(1, "lost.bin", 3 * MIB, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let (gone_path, lost_path) = (
        array.disks[0].join("gone.bin"),
        array.disks[1].join("lost.bin"),
    );
    let imp = array.root.path().join("imp");
    copy_stamped(&gone_path, &imp.join("saved/copy.bin"), &gone);
    copy_stamped(
        &gone_path,
        &imp.join("decoy.bin"),
        &pseudo_random(3 * MIB, 99),
    );
    fs::remove_file(&gone_path).expect("rm");
    wipe(&array, 1);

    // Without the copy, the lost disk's blocks at the deleted file's positions
    // cannot come back, and the message names the deleted file and `-i`.
    let out = array.lhparity(&["fix", "-d", "d2"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("unrecoverable"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "1 file(s) gone from their disks since the last sync hold blocks the parity needs to rebuild what could not be, the first {}: if you have them (a backup, a copy), give the folder holding them with `-i DIR`",
            gone_path.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!exists(&lost_path));
    fs::remove_file(array.disks[1].join("lost.bin.unrecoverable")).expect("rm");

    // A copy with one block damaged stands in for the others, and is named.
    let damaged = array.root.path().join("damaged");
    let mut bytes = gone.clone();
    bytes[65536 + 7] ^= 1;
    copy_stamped(
        &imp.join("saved/copy.bin"),
        &damaged.join("copy.bin"),
        &bytes,
    );
    let damaged_arg = damaged.to_string_lossy().into_owned();
    let out = array.lhparity(&["fix", "-d", "d2", "-i", damaged_arg.as_str()]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "{} differs from {} (gone from its disk since the last sync) in 1 of its 48 synced blocks",
            damaged.join("copy.bin").display(),
            gone_path.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "{}: 1 of 48 blocks could not be rebuilt",
            lost_path.display()
        )),
        "{}",
        stderr(&out)
    );
    fs::remove_file(array.disks[1].join("lost.bin.unrecoverable")).expect("rm");

    let imp_arg = imp.to_string_lossy().into_owned();
    let out = array.lhparity(&["fix", "-d", "d2", "-i", imp_arg.as_str()]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains(&format!(
            "read {} (gone from its disk since the last sync) from {}",
            gone_path.display(),
            imp.join("saved/copy.bin").display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("1 files fixed, 0 unrecoverable"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fs::read(&lost_path).expect("restored"), lost);
    assert!(!exists(&gone_path), "the deleted file stays deleted");
    expect_code(&array.lhparity(&["check", "-d", "d2"]), 0);
}

/// A file moved to another data disk since the sync is read there and is not
/// named among the files gone from their disks when a block cannot come back for
/// another reason (here a damaged block of a third disk at the same position).
#[test]
fn a_file_moved_to_another_disk_is_not_named_as_gone() {
    const KIB: usize = 1 << 10;
    let array = Array::new(3, 1, 64, "");
    array.write(0, "a.bin", 300 * KIB, 1);
    array.write(1, "b.bin", 300 * KIB, 2);
    array.write(2, "c.bin", 300 * KIB, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    let moved = array.disks[2].join("a.bin");
    fs::rename(array.disks[0].join("a.bin"), &moved).expect("mv");
    flip(&array.disks[2].join("c.bin"), 70 * KIB);
    wipe(&array, 1);
    let out = array.lhparity(&["fix", "-d", "d2"]);
    expect_code(&out, 1);
    // Only the block at the damaged one's position is lost: a.bin was read where
    // it went.
    assert!(
        stderr(&out).contains(&format!(
            "{}: 1 of 5 blocks could not be rebuilt",
            array.disks[1].join("b.bin").display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("gone from their disks"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fix_i_takes_lost_files_from_an_import_folder_by_size_and_mtime_whatever_their_names() {
    let (array, original) = synced_array(3, 1);
    let state = layout(&array).state;
    let (d1, d2) = (array.disks[0].clone(), array.disks[1].clone());
    let bytes = |p: &std::path::Path| original[p].0.clone();
    // Copies of d1's files under other names: the big file intact, mode600.bin with
    // its second block damaged, and in place of small.txt a file of its size and
    // mtime with other bytes.
    let backup = array.root.path().join("backup");
    let big = d1.join("dir0/big.bin");
    copy_stamped(&big, &backup.join("deep/er/renamed.bin"), &bytes(&big));
    let m600 = d1.join("mode600.bin");
    let mut damaged = bytes(&m600);
    damaged[65536 + 10] ^= 1;
    copy_stamped(&m600, &backup.join("m600"), &damaged);
    let small = d1.join("small.txt");
    let decoy = pseudo_random(bytes(&small).len(), 4242);
    copy_stamped(&small, &backup.join("decoy"), &decoy);
    // Two disks lost, one parity level: without the import nothing of theirs
    // comes back (see one_disk_more_than_parity_is_reported_unrecoverable).
    wipe(&array, 0);
    wipe(&array, 1);

    // Which positions lose how many blocks, and so which files come back: d1's
    // blocks come from the import where it has them, d2's only from the parity.
    let provided = |path: &str, b: usize| match path {
        "dir0/big.bin" => true,
        "mode600.bin" => b == 0,
        _ => false,
    };
    let mut lost_at: BTreeMap<u32, usize> = BTreeMap::new();
    for (slot, disk) in state.disks.iter().enumerate().take(2) {
        for f in &disk.files {
            for (b, pos) in f.positions().enumerate() {
                if slot == 1 || !provided(&f.path, b) {
                    *lost_at.entry(pos).or_default() += 1;
                }
            }
        }
    }
    let comes_back = |slot: usize, f: &parity_core::state::model::FileEntry| {
        f.positions()
            .enumerate()
            .all(|(b, pos)| (slot == 0 && provided(&f.path, b)) || lost_at[&pos] <= 1)
    };
    let backup_arg = backup.to_string_lossy().into_owned();
    let fix_both = ["fix", "-d", "d1", "-d", "d2", "-i", backup_arg.as_str()];
    let out = array.lhparity(&fix_both);
    expect_code(&out, 1);
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "fixed {} (from {})",
            big.display(),
            backup.join("deep/er/renamed.bin").display()
        )),
        "{said}"
    );
    let (mut back, mut not_back) = (0, 0);
    for (slot, dir) in [(0, &d1), (1, &d2)] {
        for f in &state.disks[slot].files {
            let path = dir.join(&f.path);
            if comes_back(slot, f) {
                let now = fs::metadata(&path).expect("restored");
                assert_eq!(
                    fs::read(&path).expect("read"),
                    original[&path].0,
                    "{}",
                    path.display()
                );
                assert_eq!(now.mode(), original[&path].1, "{}", path.display());
                back += 1;
            } else {
                assert!(!exists(&path), "{} should not be back", path.display());
                let kept = PathBuf::from(format!("{}.unrecoverable", path.display()));
                assert!(exists(&kept), "{} missing", kept.display());
                assert!(
                    stderr(&out).contains(&path.display().to_string()),
                    "{}",
                    stderr(&out)
                );
                not_back += 1;
            }
        }
    }
    // The model above has both outcomes, and the import changed the answer: d2's
    // big file is back only because d1's came from the import.
    assert!(back >= 2 && not_back >= 2, "{back} back, {not_back} not");
    assert!(comes_back(
        1,
        state.disks[1]
            .files
            .iter()
            .find(|f| f.path == "dir1/big.bin")
            .expect("big")
    ));
    // Nothing of the import folder was changed.
    assert_eq!(fs::read(backup.join("decoy")).expect("decoy"), decoy);
    assert_eq!(fs::read(backup.join("m600")).expect("m600"), damaged);

    // With good copies of the rest, a second run brings back everything.
    copy_stamped(
        &backup.join("decoy"),
        &backup.join("more/small"),
        &bytes(&small),
    );
    copy_stamped(
        &backup.join("m600"),
        &backup.join("more/m600"),
        &bytes(&m600),
    );
    let out = array.lhparity(&fix_both);
    expect_code(&out, 0);
    for (path, (content, mode, mtime)) in &original {
        if path.starts_with(&d1) || path.starts_with(&d2) {
            let m = fs::metadata(path).expect("restored");
            assert_eq!(
                &fs::read(path).expect("read"),
                content,
                "{}",
                path.display()
            );
            assert_eq!(
                (m.mode(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
                (*mode, *mtime)
            );
        }
    }
    expect_code(&array.lhparity(&["check"]), 0);

    // An import folder that is not there is an error naming it; nothing is touched.
    let nowhere = array.root.path().join("nowhere");
    let out = array.lhparity(&["fix", "-m", "-i", &nowhere.to_string_lossy()]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("import folder {}", nowhere.display())),
        "{}",
        stderr(&out)
    );
    // -e repairs bad blocks of files that are there: no copy is looked for.
    let out = array.lhparity(&["fix", "-e", "-i", &backup.to_string_lossy()]);
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}

/// Starts a sync of `array` and stops it with SIGINT once it has read `bytes`.
fn stop_sync_after(array: &Array, bytes: u64) {
    let conf = array.conf.to_string_lossy().into_owned();
    let mut cmd = Command::new(bin("lhparity"));
    cmd.args(["-c", conf.as_str(), "--force-device", "sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    interactive(&mut cmd);
    let child = cmd.spawn().expect("start lhparity");
    let started = std::time::Instant::now();
    while has_read(child.id(), bytes) == Some(false) && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: a plain kill(2) of our child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait for lhparity");
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("stopped by SIGINT: "),
        "{}",
        stderr(&out)
    );
}

/// A sync stopped while adding files leaves positions past the end of the parity
/// files that hold nothing yet: `status` and `fix` see no parity missing there, and
/// `fix` writes none of it (the next sync does).
#[test]
fn positions_a_stopped_sync_appended_are_not_missing_parity() {
    const MIB: usize = 1 << 20;
    let array = Array::new(2, 2, 64, "");
    array.write(0, "old.bin", 2 * MIB, 1);
    array.write(1, "old.bin", 2 * MIB, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    array.write(0, "new.bin", 96 * MIB, 3);
    array.write(1, "new.bin", 64 * MIB, 4);
    stop_sync_after(&array, 16 << 20);
    let lens = || -> Vec<u64> {
        array
            .parity
            .iter()
            .map(|p| fs::metadata(p).expect("parity").len())
            .collect()
    };
    let before = lens();
    assert!(
        before.iter().all(|&l| l < (2 + 96) * MIB as u64),
        "the stop left positions past the parity's end: {before:?}"
    );
    let out = array.lhparity(&["check"]);
    expect_code(&out, 0);
    let out = array.lhparity(&["status"]);
    assert!(!stderr(&out).contains("parity file"), "{}", stderr(&out));
    assert!(stdout(&out).contains("awaiting sync"), "{}", stdout(&out));
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("0 files fixed, 0 unrecoverable, parity rewritten at 0 positions"),
        "no parity rewritten: {}",
        stdout(&out)
    );
    assert_eq!(lens(), before, "fix wrote no parity");
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);

    // Parity really cut short is still found and rebuilt.
    let cut = before[1] / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&array.parity[1])
        .and_then(|f| f.set_len(cut))
        .expect("cut");
    let out = array.lhparity(&["status"]);
    assert!(
        stderr(&out).contains("holds") && stderr(&out).contains("`lhparity fix` rebuilds it"),
        "{}",
        stderr(&out)
    );
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("parity rewritten at"),
        "{}",
        stdout(&out)
    );
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn fix_m_names_a_lost_file_none_of_whose_blocks_reached_the_parity() {
    const MIB: usize = 1 << 20;
    let array = Array::new(2, 1, 64, "");
    array.write(0, "big.bin", 96 * MIB, 1);
    array.write(1, "big.bin", 96 * MIB, 2);
    // Sorted after big.bin, so its positions come after big.bin's 1536.
    array.write(0, "late.bin", MIB, 3);
    // A sync stopped 16 MiB into its reading: big.bin is partly in the parity,
    // late.bin not at all, and the state records both.
    stop_sync_after(&array, 16 << 20);

    let late = array.disks[0].join("late.bin");
    let big = array.disks[0].join("big.bin");
    let imp = array.root.path().join("imp");
    for (from, to) in [(&late, "late.copy"), (&big, "big.copy")] {
        copy_stamped(from, &imp.join(to), &fs::read(from).expect("read"));
    }
    fs::remove_file(&late).expect("rm");
    let out = array.lhparity(&["fix", "-m"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "unrecoverable: {}: none of its 16 blocks is in the parity yet",
            late.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("0 files fixed, 1 unrecoverable"),
        "{}",
        stdout(&out)
    );
    assert!(!exists(&late));
    assert!(!exists(&array.disks[0].join("late.bin.unrecoverable")));

    // With copies in an import folder: late.bin's look-alike is named but not used,
    // since no hash can check it; big.bin's copy serves for its synced blocks, and
    // the message says which of its blocks were copied unchecked.
    fs::remove_file(&big).expect("rm");
    let imp_arg = imp.to_string_lossy().into_owned();
    let out = array.lhparity(&["fix", "-m", "-i", &imp_arg]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: none of its 16 blocks is in the parity yet (it was added or changed after the last complete sync), so nothing of it can be rebuilt or checked; {} has its size and mtime, but with no hash to check it against it was not used",
            late.display(),
            imp.join("late.copy").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: ", big.display()))
            && err.contains(&format!(
                "of them are not in the parity yet and were copied unchecked from {}",
                imp.join("big.copy").display()
            )),
        "{err}"
    );
    assert!(exists(&array.disks[0].join("big.bin.unrecoverable")));
    assert!(!exists(&late) && !exists(&big));
}

#[test]
fn a_hard_link_to_a_file_that_could_not_be_restored_is_named_with_the_reason() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a.bin", 200_000, 1);
    fs::hard_link(array.disks[0].join("a.bin"), array.disks[0].join("a.link")).expect("link");
    array.write(1, "b.bin", 200_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    // Both disks lost, one parity level: a.bin cannot come back, nor its other name.
    wipe(&array, 0);
    wipe(&array, 1);
    let out = array.lhparity(&["fix", "-d", "d1", "-d", "d2"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "creating hard link {} to a.bin: the file it names is not there (it could not be restored, see above)",
            array.disks[0].join("a.link").display()
        )),
        "{err}"
    );
    assert!(!exists(&array.disks[0].join("a.link")));
    assert!(exists(&array.disks[0].join("a.bin.unrecoverable")));
}
