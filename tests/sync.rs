//! `lhparity sync`, `diff`, `status` and `list` on real folders, run as a user would.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn parity_equals_snapraid_vectors_at_six_levels() {
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../parity-core/tests/vectors/snapraid-6p-5d");
    let array = Array::new(5, 6, 1, "");
    for d in 0..5 {
        let name = format!("f{}.bin", d + 1);
        fs::copy(vectors.join(&name), array.disks[d].join(&name)).expect("copy vector");
    }
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    for level in 1..=6 {
        let want = fs::read(vectors.join(format!("parity{level}.bin"))).expect("vector");
        let got = fs::read(&array.parity[level - 1]).expect("parity file");
        assert!(got == want, "parity level {level} differs from SnapRAID's");
    }
    assert_eq!(verify_parity(&array), 4);
}

#[test]
fn sync_diff_and_incremental_changes() {
    let array = Array::new(3, 2, 64, "");
    array.write(0, "a.bin", 300_000, 1);
    array.write(0, "dir/b.bin", 70_000, 2);
    array.write(1, "c.bin", 1_000_000, 3);
    array.write(2, "e.bin", 5, 4);
    array.write(2, "empty.bin", 0, 5);

    // Before the first sync, diff lists everything and asks for a sync.
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    assert!(stdout(&out).contains("add d2/c.bin"), "{}", stdout(&out));

    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    verify_parity(&array);
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("No differences."), "{}", stdout(&out));

    // A second sync has nothing to read.
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("Nothing to do"), "{}", stdout(&out));

    // Add, modify, delete, rename, move between folders.
    array.write(0, "new.bin", 200_000, 10);
    array.write(1, "c.bin", 1_000_001, 11);
    fs::remove_file(array.disks[2].join("e.bin")).expect("rm");
    fs::rename(array.disks[0].join("a.bin"), array.disks[0].join("a2.bin")).expect("mv");
    fs::create_dir_all(array.disks[0].join("other")).expect("mkdir");
    fs::rename(
        array.disks[0].join("dir/b.bin"),
        array.disks[0].join("other/b.bin"),
    )
    .expect("mv");

    let out = array.lhparity(&["diff", "--json"]);
    expect_code(&out, 2);
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).expect("diff JSON");
    let d1 = &diff["disks"][0];
    assert_eq!(d1["added"], serde_json::json!(["new.bin"]));
    let moved: Vec<(String, String)> = d1["moved"]
        .as_array()
        .expect("moved")
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap_or("").into(),
                m["to"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        moved,
        vec![
            ("a.bin".to_string(), "a2.bin".to_string()),
            ("dir/b.bin".to_string(), "other/b.bin".to_string())
        ]
    );
    assert_eq!(diff["disks"][1]["updated"], serde_json::json!(["c.bin"]));
    assert_eq!(diff["disks"][2]["removed"], serde_json::json!(["e.bin"]));
    assert_eq!(diff["sync_needed"], true);

    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    verify_parity(&array);
    expect_code(&array.lhparity(&["diff"]), 0);

    // list and status agree with the disks.
    let out = array.lhparity(&["list"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    for p in [
        "d1/a2.bin",
        "d1/other/b.bin",
        "d1/new.bin",
        "d2/c.bin",
        "d3/empty.bin",
    ] {
        assert!(text.contains(p), "list lacks {p}:\n{text}");
    }
    assert!(!text.contains("e.bin"), "{text}");
    let out = array.lhparity(&["status", "--json"]);
    expect_code(&out, 0);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["positions_awaiting_sync"], 0);
    assert_eq!(status["disks"][1]["bytes"], 1_000_001);
    assert_eq!(status["disks"][0]["files"], 3);
    assert_eq!(status["bad_blocks"], serde_json::json!([]));
    // The age buckets: bounded ones, then "older" and "never" without a bound.
    let ages = status["scrub_age_days"].as_array().expect("age buckets");
    assert_eq!(ages[0]["max_days"], 1);
    assert_eq!(ages[0]["bucket"], "<= 1 days");
    let tail: Vec<(serde_json::Value, serde_json::Value)> = ages[ages.len() - 2..]
        .iter()
        .map(|b| (b["max_days"].clone(), b["bucket"].clone()))
        .collect();
    assert_eq!(
        tail,
        [
            (serde_json::Value::Null, "older".into()),
            (serde_json::Value::Null, "never".into())
        ]
    );
}

#[test]
fn unmounted_disk_is_refused_and_nothing_changes() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    array.write(1, "b", 100_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let before: Vec<Vec<u8>> = array
        .content
        .iter()
        .map(|c| fs::read(c).expect("content"))
        .collect();
    fs::remove_file(array.disks[1].join("b")).expect("rm");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("disk 'd2'") && err.contains("is now empty"),
        "{err}"
    );
    assert!(
        err.contains("--force-empty") && err.contains("`lhparity fix -d d2` brings its files back"),
        "{err}"
    );
    let after: Vec<Vec<u8>> = array
        .content
        .iter()
        .map(|c| fs::read(c).expect("content"))
        .collect();
    assert!(before == after, "a refused sync changed the content files");
    expect_code(&array.lhparity(&["sync", "--force-empty"]), 0);
    verify_parity(&array);
}

#[test]
fn a_disk_whose_files_are_all_replaced_is_refused_even_when_inode_numbers_repeat() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    for i in 0..3 {
        array.write(1, &format!("g{i}"), 50_000, 10 + i);
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    // Another disk in d2's place: other names, while a new filesystem (or this one,
    // reusing freed numbers) hands out the same inode numbers.
    for i in 0..3 {
        fs::remove_file(array.disks[1].join(format!("g{i}"))).expect("rm");
    }
    for i in 0..3 {
        array.write(1, &format!("other{i}"), 40_000, 20 + i);
    }
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("all 3 files of disk 'd2'") && err.contains("--force-empty"),
        "{err}"
    );
    expect_code(&array.lhparity(&["sync", "--force-empty"]), 0);
}

#[test]
fn check_scrub_and_fix_refuse_an_array_whose_content_files_are_all_missing() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    // Never synced: nothing is protected, and said so.
    let out = array.lhparity(&["check"]);
    assert!(
        stderr(&out).contains("never been synced"),
        "{}",
        stderr(&out)
    );
    expect_code(&array.lhparity(&["sync"]), 0);
    // The content disks unmounted: parity holds data no content file describes.
    for c in &array.content {
        fs::remove_file(c).expect("rm content");
    }
    // Read-only commands too: an empty array shown would say nothing is lost.
    for args in [
        &["check"][..],
        &["scrub", "-p", "100"],
        &["fix"],
        &["status"],
        &["status", "--json"],
        &["diff"],
        &["list"],
        &["dup"],
    ] {
        let out = array.lhparity(args);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("no content file was found") && err.contains("mount the disks"),
            "{args:?}: {err}"
        );
    }
    assert!(array.content.iter().all(|c| !c.exists()));
}

#[test]
fn delete_threshold_needs_force_delete() {
    let array = Array::new(1, 1, 64, "delete-threshold 1\n");
    for i in 0..3 {
        array.write(0, &format!("f{i}"), 1000, i);
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    fs::remove_file(array.disks[0].join("f0")).expect("rm");
    fs::remove_file(array.disks[0].join("f1")).expect("rm");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("2 files would be removed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--force-delete"), "{}", stderr(&out));
    expect_code(&array.lhparity(&["sync", "--force-delete"]), 0);
    verify_parity(&array);
}

#[test]
fn file_modified_during_sync_is_left_for_the_next_sync() {
    let array = Array::new(2, 1, 256, "");
    array.write(0, "big", 96 << 20, 1);
    array.write(1, "growing.log", 4096, 2);
    // A writer that appends to the log for the whole sync.
    let log = array.disks[1].join("growing.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("open log");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = f.write_all(b"line of log\n");
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let out = array.lhparity(&["sync"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("growing.log changed while it was synced"),
        "{err}"
    );
    // The next sync, with the file at rest, finishes and the parity is right.
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["diff"]), 0);
    verify_parity(&array);
}

#[test]
fn a_file_rewritten_during_sync_leaves_the_other_disks_recoverable() {
    let array = Array::new(2, 2, 256, "");
    let x = array.write(1, "x", 20 << 20, 7);
    expect_code(&array.lhparity(&["sync"]), 0);
    array.write(0, "big", 96 << 20, 1);
    // A writer that rewrites one block of the new file, in place, for the whole sync.
    let big = array.disks[0].join("big");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = fs::OpenOptions::new().write(true).open(&big).expect("open");
            let mut n = 0u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let _ = f.write_all_at(&[n; 4096], 1 << 20);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let out = array.lhparity(&["sync"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("big changed while it was synced"),
        "{}",
        stderr(&out)
    );
    // Nothing is left dirty, and x, untouched, comes back when its disk is lost.
    fs::remove_file(array.disks[1].join("x")).expect("rm");
    let out = array.lhparity(&["fix", "-d", "d2"]);
    expect_code(&out, 0);
    assert!(
        fs::read(array.disks[1].join("x")).expect("x restored") == x,
        "x differs"
    );
    // The next sync takes the change and the parity is right.
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["diff"]), 0);
    verify_parity(&array);
}

#[test]
fn a_second_command_on_a_busy_array_is_refused_and_changes_nothing() {
    use std::os::fd::AsRawFd;
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    array.write(1, "b", 100_000, 2);
    // Another command holds the array (as a running sync would).
    let mut lock_path = array.content[0].clone().into_os_string();
    lock_path.push(".lock");
    let held = fs::File::create(&lock_path).expect("lock file");
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let before = fs::read(&array.content[0]).expect("content");
    for command in [
        &["sync"][..],
        &["scrub", "-p", "full"],
        &["check"],
        &["fix"],
    ] {
        let out = array.lhparity(command);
        expect_code(&out, 1);
        assert!(
            stderr(&out).contains("another lhparity command is running on this array"),
            "{command:?}: {}",
            stderr(&out)
        );
    }
    assert!(fs::read(&array.content[0]).expect("content") == before);
    // Commands that only read the state still answer.
    expect_code(&array.lhparity(&["diff"]), 2);
    expect_code(&array.lhparity(&["status"]), 0);
    drop(held);
    expect_code(&array.lhparity(&["sync"]), 0);
    verify_parity(&array);
}

#[test]
fn a_file_emptied_since_the_sync_needs_force_zero() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    array.write(0, "b", 100_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    fs::write(array.disks[0].join("b"), b"").expect("empty b");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("1 file(s) that had data are now empty (d1/b)")
            && stderr(&out).contains("--force-zero"),
        "{}",
        stderr(&out)
    );
    // Nothing was synced: fix brings the data back.
    expect_code(&array.lhparity(&["fix", "-f", "b"]), 0);
    assert_eq!(
        fs::metadata(array.disks[0].join("b")).expect("b").len(),
        100_000
    );
    fs::write(array.disks[0].join("b"), b"").expect("empty b");
    expect_code(&array.lhparity(&["sync", "--force-zero"]), 0);
    expect_code(&array.lhparity(&["diff"]), 0);
    verify_parity(&array);
}

#[test]
fn a_disk_put_back_from_a_backup_syncs_without_force_empty() {
    let array = Array::new(2, 1, 64, "");
    let files: Vec<Vec<u8>> = (0..3)
        .map(|i| array.write(1, &format!("g{i}"), 50_000 + i, i as u64))
        .collect();
    expect_code(&array.lhparity(&["sync"]), 0);
    // cp -a to a new folder and back in place: new inodes, same names, sizes, mtimes.
    let copy = array.root.path().join("d2-copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&array.disks[1])
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    fs::remove_dir_all(&array.disks[1]).expect("rm");
    fs::rename(&copy, &array.disks[1]).expect("mv");
    let out = array.lhparity(&["diff"]);
    assert!(stdout(&out).contains("3 restored"), "{}", stdout(&out));
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["diff"]), 0);
    for (i, bytes) in files.iter().enumerate() {
        fs::remove_file(array.disks[1].join(format!("g{i}"))).expect("rm");
        expect_code(&array.lhparity(&["fix", "-m"]), 0);
        assert!(fs::read(array.disks[1].join(format!("g{i}"))).expect("g") == *bytes);
    }
}

#[test]
fn diff_reports_links_and_empty_folders_that_sync_records() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "f", 10_000, 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    std::os::unix::fs::symlink("/target", array.disks[0].join("link")).expect("symlink");
    fs::create_dir(array.disks[0].join("ed")).expect("mkdir");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    let text = stdout(&out);
    assert!(
        text.contains("add link d1/link") && text.contains("add dir d1/ed"),
        "{text}"
    );
    fs::hard_link(array.disks[0].join("f"), array.disks[0].join("f2")).expect("ln");
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["diff"]), 0);
    // list shows them too.
    let out = array.lhparity(&["list"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("symlink d1/link -> /target")
            && text.contains("hardlink d1/f2 -> d1/f")
            && text.contains("1 files, 10000 bytes, 1 hard links, 1 symbolic links"),
        "{text}"
    );
    fs::remove_file(array.disks[0].join("link")).expect("rm");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    assert!(
        stdout(&out).contains("remove link d1/link"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn names_that_are_not_utf8_are_protected_and_come_back_byte_for_byte() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let array = Array::new(2, 1, 64, "exclude *.skip\n");
    let ok = array.write(0, "ok", 30_000, 1);
    // Latin-1 names, a folder of one, a character of the range the state uses for
    // such bytes next to the byte it would stand for, and a link to a Latin-1 name.
    let names: [&[u8]; 5] = [
        b"caf\xe9.txt",
        b"dossi\xe9r/\xff\xfe",
        b"pua\xe9",
        "pua\u{10FFE9}".as_bytes(),
        b"new\nline\x80",
    ];
    let mut contents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = array.disks[1].join(OsStr::from_bytes(name));
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let bytes = common::pseudo_random(20_000 + i * 7_000, 10 + i as u64);
        fs::write(&path, &bytes).expect("odd name");
        contents.push((path, bytes));
    }
    let link = array.disks[1].join(OsStr::from_bytes(b"lien\xe0"));
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9.txt"), &link).expect("link");
    fs::write(array.disks[1].join(OsStr::from_bytes(b"b\xe9.skip")), b"x").expect("excluded");

    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("UTF-8"), "{}", stderr(&out));
    let list = stdout(&array.lhparity(&["list"]));
    for shown in [
        "d2/caf\\xe9.txt",
        "d2/dossi\\xe9r/\\xff\\xfe",
        "d2/pua\\xe9",
        "d2/lien\\xe0 -> caf\\xe9.txt",
    ] {
        assert!(list.contains(shown), "{shown} in {list}");
    }
    assert!(!list.contains(".skip"), "{list}");
    expect_code(&array.lhparity(&["diff"]), 0);

    // Messages name them on one line, as `list` does: a byte that is not UTF-8 as
    // itself, a newline escaped.
    for i in [0, 4] {
        let (path, bytes) = &contents[i];
        let mtime = fs::metadata(path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let mut rotten = bytes.clone();
        rotten[5] ^= 1;
        fs::write(path, &rotten).expect("rot");
        let f = fs::File::options().write(true).open(path).expect("open");
        f.set_modified(mtime).expect("mtime back");
    }
    let out = array.lhparity(&["check"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("/caf\\xe9.txt block 0 (position ")
            && err.contains("/new\\nline\\x80 block 0 (position ")
            && !err.contains('\u{FFFD}'),
        "{err}"
    );
    expect_code(&array.lhparity(&["fix"]), 0);
    for i in [0, 4] {
        assert!(fs::read(&contents[i].0).ok().as_ref() == Some(&contents[i].1));
    }

    // A pattern names them as `list` prints them: `\xNN` is a byte, and a character
    // of the range the state holds bytes in is that character.
    for i in [2, 3] {
        fs::remove_file(&contents[i].0).expect("rm");
    }
    expect_code(&array.lhparity(&["fix", "-m", "-f", "pua\\xe9"]), 0);
    assert!(exists(&contents[2].0) && !exists(&contents[3].0));
    expect_code(&array.lhparity(&["fix", "-m", "-f", "pua\u{10FFE9}"]), 0);
    assert!(fs::read(&contents[3].0).ok().as_ref() == Some(&contents[3].1));

    // The whole disk is lost: every name comes back with its own bytes.
    fs::remove_dir_all(&array.disks[1]).expect("wipe");
    fs::create_dir_all(&array.disks[1]).expect("new disk");
    let out = array.lhparity(&["fix", "-d", "d2"]);
    expect_code(&out, 0);
    for (path, bytes) in &contents {
        assert!(
            fs::read(path).ok().as_ref() == Some(bytes),
            "{}",
            path.display()
        );
    }
    assert_eq!(
        fs::read_link(&link)
            .expect("link back")
            .as_os_str()
            .as_bytes(),
        b"caf\xe9.txt"
    );
    let mut back: Vec<Vec<u8>> = fs::read_dir(&array.disks[1])
        .expect("list")
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    back.sort();
    let mut want: Vec<Vec<u8>> = vec![
        b"caf\xe9.txt".to_vec(),
        b"dossi\xe9r".to_vec(),
        b"lien\xe0".to_vec(),
        b"new\nline\x80".to_vec(),
        b"pua\xe9".to_vec(),
        "pua\u{10FFE9}".as_bytes().to_vec(),
    ];
    want.sort();
    assert_eq!(back, want);
    expect_code(&array.lhparity(&["diff"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
    assert!(fs::read(array.disks[0].join("ok")).expect("ok") == ok);
}

#[test]
fn a_parity_or_content_path_that_is_a_folder_is_named_as_such() {
    let array = Array::new(1, 1, 64, "");
    array.write(0, "f", 10_000, 1);
    fs::create_dir(&array.parity[0]).expect("mkdir parity");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "parity path {} is a folder",
            array.parity[0].display()
        )),
        "{}",
        stderr(&out)
    );
    fs::remove_dir(&array.parity[0]).expect("rmdir");
    fs::create_dir(&array.content[0]).expect("mkdir content");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "content path {} is a folder",
            array.content[0].display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_content_copy_is_reported() {
    let array = Array::new(1, 1, 64, "");
    array.write(0, "f", 10_000, 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    fs::remove_file(&array.content[1]).expect("rm content copy");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains(&format!(
            "content file {} is missing; it will be written again at the next save",
            array.content[1].display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn files_swapped_by_renames_keep_the_parity_right() {
    let array = Array::new(2, 1, 64, "");
    let (a, b) = (array.disks[0].join("a"), array.disks[0].join("b"));
    array.write(0, "a", 200_000, 1);
    array.write(0, "b", 200_000, 2);
    let stamp = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for p in [&a, &b] {
        fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(stamp))
            .expect("mtime");
    }
    let x = array.write(1, "x", 300_000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    let t = array.disks[0].join("t");
    fs::rename(&a, &t).expect("mv");
    fs::rename(&b, &a).expect("mv");
    fs::rename(&t, &b).expect("mv");
    expect_code(&array.lhparity(&["sync"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
    verify_parity(&array);
    fs::remove_file(array.disks[1].join("x")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    assert!(fs::read(array.disks[1].join("x")).expect("x") == x);
}

#[test]
fn kill_during_sync_then_rerun_gives_correct_parity() {
    // Checkpoints every 8 MiB, so kills land before, between and after them.
    let array = Array::new(3, 2, 256, "autosave 8M\n");
    for d in 0..3 {
        for i in 0..4 {
            array.write(
                d,
                &format!("f{i}"),
                (20 << 20) + d * 1000 + i,
                (d * 10 + i) as u64,
            );
        }
    }
    let conf = array.conf.to_string_lossy().into_owned();
    // Kill at a few points spread over the first sync, rerunning each time.
    for delay_ms in [5u64, 40, 90, 150] {
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
        // Change something between the crashes too.
        array.write(0, &format!("late{delay_ms}"), 300_000, delay_ms);
    }
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    expect_code(&array.lhparity(&["diff"]), 0);
    verify_parity(&array);
    let out = array.lhparity(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["positions_awaiting_sync"], 0);
    // Any two disks can be rebuilt from the rest and the two parity levels.
    assert_eq!(verify_recoverable(&array, &[0, 2]), 12);
    assert_eq!(verify_recoverable(&array, &[1]), 4);
}

#[test]
fn one_corrupt_content_copy_is_reported_and_the_other_used() {
    let array = Array::new(1, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    let mut bytes = fs::read(&array.content[0]).expect("content");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&array.content[0], &bytes).expect("corrupt");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&array.content[0].display().to_string()) && err.contains("damaged"),
        "{err}"
    );
    // The next sync rewrites the damaged copy.
    array.write(0, "b", 10, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    assert!(
        fs::read(&array.content[0]).expect("content")
            == fs::read(&array.content[1]).expect("content")
    );
}

#[test]
fn all_content_copies_corrupt_is_an_error_and_writes_nothing() {
    let array = Array::new(1, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    for c in &array.content {
        fs::write(c, b"garbage").expect("corrupt");
    }
    let parity_before = fs::read(&array.parity[0]).expect("parity");
    array.write(0, "b", 1000, 2);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    for c in &array.content {
        assert!(err.contains(&c.display().to_string()), "{err}");
    }
    for c in &array.content {
        assert_eq!(fs::read(c).expect("content"), b"garbage");
    }
    assert!(fs::read(&array.parity[0]).expect("parity") == parity_before);
}

#[test]
fn bad_config_and_missing_disk_are_clear_errors() {
    let array = Array::new(1, 1, 64, "paritty /x\n");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("array.conf:") && err.contains("unknown directive 'paritty'"),
        "{err}"
    );

    let array = Array::new(2, 1, 64, "");
    fs::remove_dir(&array.disks[1]).expect("rmdir");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&array.disks[1].display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(!exists(&array.content[0]), "nothing may be written");
}

#[test]
fn existing_parity_without_content_needs_force_full() {
    let array = Array::new(1, 1, 64, "");
    array.write(0, "a", 1000, 1);
    fs::write(&array.parity[0], b"old parity").expect("parity");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("--force-full"), "{}", stderr(&out));
    assert_eq!(fs::read(&array.parity[0]).expect("parity"), b"old parity");
    expect_code(&array.lhparity(&["sync", "--force-full"]), 0);
    verify_parity(&array);
}

#[test]
fn a_missing_or_short_parity_file_is_refused_until_force_full() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 200_000, 1);
    array.write(1, "b", 100_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let parity = &array.parity[0];
    let aside = array.root.path().join("parity-aside");
    // As if the parity disk were not mounted: the file is not there.
    fs::rename(parity, &aside).expect("move parity");
    array.write(1, "c", 10_000, 3);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&parity.display().to_string()) && err.contains("--force-full"),
        "{err}"
    );
    assert!(!parity.exists(), "no new parity file was made");
    // Shorter than the synced positions need: refused too.
    let mut bytes = fs::read(&aside).expect("read parity");
    bytes.truncate(65536);
    fs::write(parity, &bytes).expect("short parity");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("holds 65536 bytes"),
        "{}",
        stderr(&out)
    );
    // --force-full builds all of it again.
    expect_code(&array.lhparity(&["sync", "--force-full"]), 0);
    verify_parity(&array);
    expect_code(&array.lhparity(&["check"]), 0);
}

/// An array of two data disks with a file each (`a`, `b` of the given sizes and
/// seeds `seed`, `seed + 1`), synced.
fn synced_two_disks(levels: usize, sizes: (usize, usize), seed: u64) -> Array {
    let array = Array::new(2, levels, 64, "");
    array.write(0, "a", sizes.0, seed);
    array.write(1, "b", sizes.1, seed + 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    array
}

#[test]
fn force_full_computes_the_parity_of_every_position_again() {
    let array = synced_two_disks(1, (900_000, 500_000), 1);
    let parity = &array.parity[0];
    let good = fs::read(parity).expect("parity");
    // Parity damaged silently: a sync with nothing to do leaves it, a full sync
    // (SnapRAID's `sync -F`) computes it again.
    let mut bytes = good.clone();
    bytes[3 * 65536 + 7] ^= 0x40;
    fs::write(parity, &bytes).expect("damage");
    expect_code(&array.lhparity(&["sync"]), 0);
    assert!(fs::read(parity).expect("parity") == bytes);
    let out = array.lhparity(&["sync", "--force-full"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("Synced 14 block positions"),
        "{}",
        stdout(&out)
    );
    assert!(fs::read(parity).expect("parity") == good);
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn a_parity_file_of_another_array_stops_sync_and_fix_rebuilds_it() {
    let ours = synced_two_disks(2, (600_000, 500_000), 1);
    let theirs = synced_two_disks(2, (600_000, 500_000), 50);
    fs::copy(&theirs.parity[1], &ours.parity[1]).expect("copy parity");
    let foreign = fs::read(&ours.parity[1]).expect("parity");
    ours.write(1, "c", 10_000, 3);
    let out = ours.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    let path = ours.parity[1].display().to_string();
    assert!(
        err.contains(&format!(
            "parity file {path} (line 3, `2-parity`) equals no level's parity of the data at \
             any of the"
        )) && err.contains("A sync would only add to it; nothing was changed")
            && !err.contains("(line 2, `parity`) equals")
            && !err.contains("  "),
        "{err}"
    );
    assert!(fs::read(&ours.parity[1]).expect("parity") == foreign);
    // A full sync rewrites every position, and fix rebuilds the file from the data:
    // both name it in a warning and go on.
    for repair in [&["sync", "--force-full"][..], &["fix"]] {
        fs::copy(&theirs.parity[1], &ours.parity[1]).expect("copy parity");
        let out = ours.lhparity(repair);
        expect_code(&out, 0);
        let err = stderr(&out);
        assert!(
            err.contains("equals no level's parity"),
            "{repair:?}: {err}"
        );
        expect_code(&ours.lhparity(&["check"]), 0);
    }
    expect_code(&ours.lhparity(&["sync"]), 0);
}

#[test]
fn a_zeroed_parity_block_where_a_level_is_zero_is_damage_not_a_swap() {
    // Two disks holding the same file: level 1 (their XOR) is zeros everywhere, and a
    // zeroed level-2 block then equals level 1.
    let array = Array::new(2, 2, 64, "");
    let same = array.write(0, "same.bin", 300_000, 9);
    fs::write(array.disks[1].join("same.bin"), &same).expect("copy");
    expect_code(&array.lhparity(&["sync"]), 0);
    let mut p2 = fs::read(&array.parity[1]).expect("parity");
    p2[..65536].fill(0);
    fs::write(&array.parity[1], &p2).expect("zero a block");
    for args in [&["check"][..], &["scrub", "-p", "full", "-o", "0"]] {
        let out = array.lhparity(args);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            !err.contains("not where the config says") && err.contains("parity level 2"),
            "{args:?}: {err}"
        );
    }
    fs::remove_file(array.disks[1].join("same.bin")).expect("lose it");
    expect_code(&array.lhparity(&["fix", "-d", "d2"]), 0);
    assert!(fs::read(array.disks[1].join("same.bin")).expect("back") == same);
    expect_code(&array.lhparity(&["fix"]), 0);
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn unwritable_parity_path_names_the_file() {
    let array = Array::new(1, 1, 64, "");
    array.write(0, "a", 1000, 1);
    fs::remove_dir_all(array.root.path().join("parity")).expect("rm parity dir");
    fs::write(array.root.path().join("parity"), b"a file, not a folder").expect("file");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(&array.parity[0].display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn full_parity_disk_is_reported_and_the_array_stays_consistent() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let array = Array::new(2, 1, 64, "");
    let parity_dir = array.root.path().join("parity");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&parity_dir)
        .status()
        .expect("mount");
    assert!(status.success(), "mounting tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(parity_dir);
    array.write(0, "a", 100_000, 1);
    expect_code(&array.lhparity(&["sync"]), 0);
    array.write(1, "big", 4 << 20, 2);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&array.parity[0].display().to_string()),
        "{err}"
    );
    assert!(err.contains("No space left"), "{err}");
    // The content still says which positions need work; a sync after freeing data works.
    fs::remove_file(array.disks[1].join("big")).expect("rm");
    expect_code(&array.lhparity(&["sync"]), 0);
    verify_parity(&array);
}

#[test]
fn dup_lists_files_with_the_same_content_from_the_state() {
    let array = Array::new(3, 1, 64, "");
    // The same bytes on three disks under other names, plus files that differ.
    array.write(0, "photos/a.jpg", 150_000, 42);
    array.write(1, "backup/a-copy.jpg", 150_000, 42);
    array.write(2, "a-again.jpg", 150_000, 42);
    array.write(0, "other.bin", 150_000, 43);
    array.write(1, "small.txt", 1000, 5);
    array.write(2, "small-copy.txt", 1000, 5);
    expect_code(&array.lhparity(&["sync"]), 0);
    // Added after the sync: the state does not know it yet.
    array.write(0, "late.txt", 1000, 5);

    let out = array.lhparity(&["dup"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    let groups: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(groups.len(), 3, "{text}");
    let first: Vec<&str> = groups[0].lines().map(str::trim).collect();
    assert_eq!(
        first,
        [
            "150000 d1/photos/a.jpg",
            "150000 d2/backup/a-copy.jpg",
            "150000 d3/a-again.jpg"
        ],
        "{text}"
    );
    let second: Vec<&str> = groups[1].lines().map(str::trim).collect();
    assert_eq!(
        second,
        ["1000 d2/small.txt", "1000 d3/small-copy.txt"],
        "{text}"
    );
    assert!(
        !text.contains("other.bin") && !text.contains("late.txt"),
        "{text}"
    );
    assert_eq!(
        groups[2].trim(),
        "identical files: 2 groups, 3 duplicates, 301000 bytes in duplicates"
    );
}

#[test]
fn sync_with_pre_hash_gives_the_same_parity() {
    let plain = Array::new(3, 2, 64, "");
    let hashed = Array::new(3, 2, 64, "");
    for array in [&plain, &hashed] {
        for d in 0..3 {
            array.write(d, &format!("dir{d}/a.bin"), 300_000 + d * 777, d as u64 + 1);
        }
    }
    expect_code(&plain.lhparity(&["sync"]), 0);
    let out = hashed.lhparity(&["sync", "--pre-hash"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("Synced"), "{}", stdout(&out));
    for (a, b) in plain.parity.iter().zip(&hashed.parity) {
        assert!(
            fs::read(a).expect("parity") == fs::read(b).expect("parity"),
            "parity of {} differs",
            b.display()
        );
    }
    // New data after the first sync goes through the pre-hash pass too.
    hashed.write(1, "later.bin", 100_000, 99);
    expect_code(&hashed.lhparity(&["sync", "--pre-hash"]), 0);
    expect_code(&hashed.lhparity(&["diff"]), 0);
    expect_code(&hashed.lhparity(&["check"]), 0);
}

#[test]
fn a_disk_needing_more_positions_than_an_array_has_is_refused() {
    let array = Array::new(1, 1, 1, "");
    // Sparse: 4.5 TiB at 1 KiB blocks is more than 2^32 positions.
    let big = array.disks[0].join("huge.img");
    let f = fs::File::create(&big).expect("create");
    if f.set_len(9 << 39).is_err() {
        eprintln!("\n*** SKIPPED: this filesystem cannot hold a 4.5 TiB sparse file ***\n");
        return;
    }
    drop(f);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("disk 'd1' needs") && err.contains("larger `blocksize`"),
        "{err}"
    );
    assert_eq!(
        fs::metadata(&array.parity[0]).map(|m| m.len()).unwrap_or(0),
        0
    );
}

/// Runs lhparity on `conf` with `args`, its standard output a pipe whose reading end
/// is closed before the command starts; returns the output and stderr.
fn with_closed_stdout(conf: &str, args: &[&str]) -> (std::process::Output, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe fills both descriptors, which we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors from pipe, owned nowhere else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let child = Command::new(bin("lhparity"))
        .args(["-c", conf, "--force-device"])
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (out, err)
}

#[test]
fn reports_end_quietly_when_their_reader_stops_reading() {
    use std::os::unix::process::ExitStatusExt;
    let array = Array::new(2, 1, 64, "");
    for i in 0..50 {
        array.write(i % 2, &format!("f{i:02}"), 1000, i as u64);
    }
    expect_code(&array.lhparity(&["sync"]), 0);
    fs::write(array.disks[0].join("new"), b"x").expect("write");
    let conf = array.conf.to_string_lossy().into_owned();
    for cmd in ["list", "diff", "status", "dup", "check"] {
        let (out, err) = with_closed_stdout(&conf, &[cmd]);
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{cmd}: {err}");
    }
    // The commands that change the array finish their work and exit as usual.
    for cmd in [&["sync"][..], &["scrub", "-p", "full"], &["fix"]] {
        let (out, err) = with_closed_stdout(&conf, cmd);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {err}");
    }
    expect_code(&array.lhparity(&["diff"]), 0);
}

#[test]
fn a_fifo_on_a_disk_is_passed_over_with_a_warning_naming_it() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 1000, 1);
    let fifo = array.disks[1].join("sub/pipe");
    fs::create_dir_all(fifo.parent().expect("parent")).expect("mkdir");
    let path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: a plain mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
    for _ in 0..2 {
        let out = array.lhparity(&["sync"]);
        expect_code(&out, 0);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("warning: disk 'd2': ignoring {}", fifo.display())),
            "{err}"
        );
    }
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn a_lost_or_damaged_content_copy_is_written_again_by_the_next_sync_or_fix() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    array.write(1, "b", 100_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let good = fs::read(&array.content[0]).expect("content");

    // Missing: a sync with nothing else to do writes it again.
    fs::remove_file(&array.content[1]).expect("rm");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(stderr(&out).contains("is missing"), "{}", stderr(&out));
    let same = |array: &Array| {
        fs::read(&array.content[1]).expect("written again")
            == fs::read(&array.content[0]).expect("content")
    };
    assert!(same(&array));

    // Damaged: check says so, and a fix with nothing to repair writes it again.
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&array.content[1], &bytes).expect("damage");
    // Every command that reads the state says so, the read-only ones included.
    for cmd in ["check", "status", "diff", "list", "dup"] {
        let out = array.lhparity(&[cmd]);
        expect_code(&out, 0);
        assert!(
            stderr(&out).contains("is damaged"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    let out = array.lhparity(&["fix"]);
    expect_code(&out, 0);
    assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));
    assert!(same(&array));
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(
        !err.contains("is damaged") && !err.contains("is missing"),
        "{err}"
    );

    // A copy alone in a folder left empty (the mountpoint of a disk that is not
    // mounted) is not written there by a sync with nothing else to save.
    let cdisk = array.root.path().join("cdisk");
    fs::create_dir(&cdisk).expect("mkdir");
    let mut conf = fs::read_to_string(&array.conf).expect("conf");
    conf += &format!("content {}\n", cdisk.join("lhparity.content").display());
    fs::write(&array.conf, conf).expect("conf");
    array.write(0, "c", 1000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    fs::remove_file(cdisk.join("lhparity.content")).expect("rm");
    // Nor by a fix or a scrub that finds nothing to do.
    for cmd in [
        &["sync"][..],
        &["fix"],
        &["scrub", "-p", "0"],
        &["scrub", "-p", "bad"],
    ] {
        let out = array.lhparity(cmd);
        expect_code(&out, 0);
        assert!(stderr(&out).contains("mount it first"), "{}", stderr(&out));
        assert!(
            !cdisk.join("lhparity.content").exists(),
            "{cmd:?} wrote into an empty folder"
        );
    }
    // Mounted again (something in it): written.
    fs::write(cdisk.join("other"), b"x").expect("write");
    expect_code(&array.lhparity(&["sync"]), 0);
    assert!(cdisk.join("lhparity.content").exists());
}

#[test]
fn a_mode_or_owner_changed_alone_is_recorded_and_restored_by_fix() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let array = Array::new(2, 1, 64, "");
    array.write(0, "private", 100_000, 1);
    array.write(0, "shared", 100_000, 2);
    array.write(1, "other", 100_000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    let private = array.disks[0].join("private");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).expect("chmod");
    let shared = array.disks[0].join("shared");
    std::os::unix::fs::chown(&shared, Some(65534), Some(65534)).expect("chown");
    let before = fs::read(&array.content[0]).expect("content");
    // diff says a sync has something to record.
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    let text = stdout(&out);
    assert!(
        text.contains("update mode/owner d1/private")
            && text.contains("update mode/owner d1/shared"),
        "{text}"
    );
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("No parity to compute; the changes are recorded"),
        "{}",
        stdout(&out)
    );
    assert_ne!(
        fs::read(&array.content[0]).expect("content"),
        before,
        "not saved"
    );
    expect_code(&array.lhparity(&["diff"]), 0);
    // Nothing more to save the next time.
    let saved = fs::read(&array.content[0]).expect("content");
    expect_code(&array.lhparity(&["sync"]), 0);
    assert_eq!(fs::read(&array.content[0]).expect("content"), saved);

    for name in ["private", "shared"] {
        fs::remove_file(array.disks[0].join(name)).expect("rm");
    }
    expect_code(&array.lhparity(&["fix", "-d", "d1"]), 0);
    let mode = fs::metadata(&private)
        .expect("private")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o600);
    let meta = fs::metadata(&shared).expect("shared");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
}

#[test]
fn a_content_copy_in_a_folder_of_a_data_disk_lets_diff_settle() {
    let array = Array::new(2, 1, 64, "");
    let meta = array.disks[0].join("meta");
    fs::create_dir_all(&meta).expect("mkdir");
    let mut conf = fs::read_to_string(&array.conf).expect("conf");
    conf += &format!("content {}\n", meta.join("lhparity.content").display());
    fs::write(&array.conf, conf).expect("conf");
    array.write(0, "a", 100_000, 1);
    array.write(1, "b", 100_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    assert!(meta.join("lhparity.content").is_file());
    expect_code(&array.lhparity(&["diff"]), 0);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(20));
        expect_code(&array.lhparity(&["sync"]), 0);
        expect_code(&array.lhparity(&["diff"]), 0);
    }
}

#[test]
fn a_content_copy_of_another_array_is_refused_and_nothing_is_overwritten() {
    let ours = Array::new(2, 1, 64, "");
    ours.write(0, "ours.bin", 90_000, 1);
    expect_code(&ours.lhparity(&["sync"]), 0);
    // Another array, saved more often than ours.
    let theirs = Array::new(2, 1, 64, "");
    for i in 0..3 {
        theirs.write(0, &format!("theirs{i}.bin"), 10_000, 10 + i);
        expect_code(&theirs.lhparity(&["sync"]), 0);
    }
    fs::copy(&theirs.content[0], &ours.content[1]).expect("stray copy");
    let before: Vec<Vec<u8>> = ours
        .content
        .iter()
        .map(|p| fs::read(p).expect("copy"))
        .collect();

    for command in [&["scrub"][..], &["sync"], &["fix"], &["status"], &["list"]] {
        let out = ours.lhparity(command);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("the content files hold the states of different arrays")
                && err.contains(&format!(
                    "  array 1:\n    {}: save ",
                    ours.content[0].display()
                ))
                && err.contains(&format!(
                    "  array 2:\n    {}: save ",
                    ours.content[1].display()
                ))
                && err.contains(", disks d1 d2, 1 files, last sync just now")
                && err.contains(", disks d1 d2, 3 files, last sync just now"),
            "{command:?}: {err}"
        );
    }
    let after: Vec<Vec<u8>> = ours
        .content
        .iter()
        .map(|p| fs::read(p).expect("copy"))
        .collect();
    assert!(before == after, "a content copy was written");

    // With the stray copy moved away, our state is back and the copy is rewritten.
    fs::remove_file(&ours.content[1]).expect("move away");
    let out = ours.lhparity(&["list"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("d1/ours.bin"), "{}", stdout(&out));
    expect_code(&ours.lhparity(&["sync"]), 0);
    assert!(
        fs::read(&ours.content[1]).expect("rewritten") == fs::read(&ours.content[0]).expect("copy")
    );
}

#[test]
fn a_sync_or_scrub_stopped_by_a_signal_saves_what_it_did() {
    const MIB: usize = 1 << 20;
    let array = Array::new(3, 1, 64, "");
    for d in 0..3 {
        array.write(d, "big.bin", 96 * MIB + d * 999, 40 + d as u64);
    }
    let conf = array.conf.to_string_lossy().into_owned();
    // Runs a command and sends SIGINT once `busy` says it is in the middle of its work.
    let interrupted = |args: &[&str], busy: &dyn Fn(u32) -> Option<bool>| {
        let mut cmd = Command::new(bin("lhparity"));
        cmd.args(["-c", conf.as_str(), "--force-device"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        interactive(&mut cmd);
        let child = cmd.spawn().expect("start lhparity");
        let started = std::time::Instant::now();
        while busy(child.id()) == Some(false) && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: a plain kill(2) of our child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        child.wait_with_output().expect("wait for lhparity")
    };
    // Sync copies what it reads: 24 MiB read is into the first pass, with most of
    // the 288 MiB still ahead (a busy machine may take a while to send the signal).
    let read_24_mib = |pid: u32| has_read(pid, 24 << 20);
    // Scrub maps what is cached, so it shows in CPU time instead: 40 ms.
    let busy_40_ms = |pid: u32| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(ticks * 1000 / hz >= 40)
    };
    let number_after = |text: &str, words: &str| -> usize {
        text.split(words)
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before `{words}` in: {text}"))
    };

    let out = interrupted(&["sync"], &read_24_mib);
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("stopped by SIGINT: "), "{err}");
    let synced = number_after(&err, " positions synced and saved");
    let left = number_after(&err, " left; run `lhparity sync` again to finish");
    assert!(synced > 0 && left > 0, "{err}");
    let status = {
        let out = array.lhparity(&["status", "--json"]);
        expect_code(&out, 0);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status JSON")
    };
    assert_eq!(status["positions_awaiting_sync"], left as u64, "{status}");
    assert_eq!(status["positions"], (synced + left) as u64, "{status}");
    // The next sync does the rest, and the parity is right.
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains(&format!("Synced {left} block positions")),
        "{}",
        stdout(&out)
    );
    verify_parity(&array);

    // A second signal of another kind ends the run at once; a hangup the caller
    // ignores (`nohup`) stays ignored.
    let more = array.disks[0].join("more.bin");
    fs::write(&more, pseudo_random(48 * MIB, 90)).expect("more data");
    let spawn = |ignore_hup: bool| {
        let mut cmd = Command::new(bin("lhparity"));
        cmd.args(["-c", conf.as_str(), "--force-device", "sync"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        interactive(&mut cmd);
        if ignore_hup {
            use std::os::unix::process::CommandExt;
            // SAFETY: only signal(2), async-signal-safe, runs in the child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGHUP, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start lhparity");
        let started = std::time::Instant::now();
        while read_24_mib(child.id()) == Some(false) && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        child
    };
    let child = spawn(false);
    // SAFETY: plain kill(2) of our child; SIGINT is taken first (lower number).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    // Usually SIGINT is taken first and SIGTERM ends the run; two threads may also
    // take both at once, and then either is the second.
    assert!(
        matches!(out.status.signal(), Some(libc::SIGTERM | libc::SIGINT)),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    let child = spawn(true);
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    let out = child.wait_with_output().expect("wait");
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("stopped by"), "{}", stderr(&out));
    verify_parity(&array);

    // A scrub stopped the same way records what it verified.
    let out = interrupted(&["scrub", "-p", "100", "-o", "0"], &busy_40_ms);
    expect_code(&out, 1);
    let err = stderr(&out);
    let verified = number_after(&err, " positions verified so far are recorded");
    let out = array.lhparity(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let positions = status["positions"].as_u64().expect("positions") as usize;
    assert!(verified > 0 && verified < positions, "{err}");
    assert_eq!(
        status["last_scrub"], 0,
        "an unfinished scrub is no scrub: {status}"
    );
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn a_new_parity_level_needs_a_sync_and_a_lost_parity_file_is_named_by_status() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "a", 300_000, 1);
    array.write(1, "b", 200_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    // A second level added to the config: diff says a sync is needed.
    let second = array.root.path().join("parity/parity2");
    let conf = fs::read_to_string(&array.conf).expect("conf");
    fs::write(
        &array.conf,
        format!("{conf}\n2-parity {}\n", second.display()),
    )
    .expect("conf");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    let new = format!(
        "parity level 2 ({}) is new: `lhparity sync` builds it",
        second.display()
    );
    assert!(stderr(&out).contains(&new), "{}", stderr(&out));
    let out = array.lhparity(&["status"]);
    expect_code(&out, 0);
    assert!(stderr(&out).contains(&new), "{}", stderr(&out));
    expect_code(&array.lhparity(&["sync"]), 0);
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("is new"), "{}", stderr(&out));

    // The first level's file lost, then cut short: status names it and the way out.
    let first = &array.parity[0];
    let bytes = fs::read(first).expect("parity");
    fs::remove_file(first).expect("rm parity");
    let out = array.lhparity(&["status", "--json"]);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains(&format!(
            "parity file {} (level 1) cannot be read",
            first.display()
        )) && stderr(&out).contains("`lhparity fix` rebuilds it"),
        "{}",
        stderr(&out)
    );
    fs::write(first, &bytes[..bytes.len() / 2]).expect("short parity");
    let out = array.lhparity(&["status"]);
    assert!(
        stderr(&out).contains(&format!(
            "parity file {} (level 1) holds {} bytes where the synced positions need {}",
            first.display(),
            bytes.len() / 2,
            bytes.len()
        )),
        "{}",
        stderr(&out)
    );
    expect_code(&array.lhparity(&["fix"]), 0);
    assert!(fs::read(first).expect("rebuilt") == bytes);
    assert!(!stderr(&array.lhparity(&["status"])).contains("parity file"));
}

#[test]
fn a_data_disk_renamed_in_the_config_keeps_its_files_and_parity() {
    let array = Array::new(3, 1, 64, "");
    let bytes = array.write(1, "dir/kept.bin", 250_000, 3);
    array.write(0, "a", 100_000, 1);
    array.write(2, "c", 150_000, 2);
    expect_code(&array.lhparity(&["sync"]), 0);
    let conf = fs::read_to_string(&array.conf).expect("conf");
    fs::write(&array.conf, conf.replace("data d2 ", "data media ")).expect("conf");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains("disk 'd2' is now named 'media' (same `data` line)"),
        "{}",
        stderr(&out)
    );
    expect_code(&array.lhparity(&["sync"]), 0);
    let out = array.lhparity(&["list"]);
    assert!(
        stdout(&out).contains("media/dir/kept.bin"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stderr(&out).contains("now named"),
        "recorded: {}",
        stderr(&out)
    );
    fs::remove_dir_all(&array.disks[1]).expect("lose the disk");
    fs::create_dir(&array.disks[1]).expect("new disk");
    expect_code(&array.lhparity(&["fix", "-d", "media"]), 0);
    assert!(fs::read(array.disks[1].join("dir/kept.bin")).expect("back") == bytes);
    // A name moved to another line is refused, naming the rule.
    let conf = fs::read_to_string(&array.conf).expect("conf");
    let moved = conf
        .replace("data d1 ", "data first ")
        .replace("data d3 ", "data d1 ");
    fs::write(&array.conf, &moved).expect("conf");
    let out = array.lhparity(&["status"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("but not to the name another line had"),
        "{}",
        stderr(&out)
    );
    fs::write(&array.conf, &conf).expect("conf");
    // Dropping the line of a disk that holds files is refused, naming it.
    let middle: String = conf
        .lines()
        .filter(|l| !l.starts_with("data media "))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&array.conf, middle).expect("conf");
    let out = array.lhparity(&["status"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("disk 'media' is in the content file but not in")
            && stderr(&out).contains("put its `data` line back"),
        "{}",
        stderr(&out)
    );
    fs::write(&array.conf, &conf).expect("conf");
    // Dropping the last line is still refused, and says how to retire a disk.
    let conf = fs::read_to_string(&array.conf).expect("conf");
    let without: String = conf
        .lines()
        .filter(|l| !l.starts_with("data d3 "))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&array.conf, without).expect("conf");
    let out = array.lhparity(&["status"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("lhparity sync -E"),
        "{}",
        stderr(&out)
    );
}

/// tmpfs and ext4 file systems mounted on folders, unmounted when dropped.
struct Mounts(Vec<std::path::PathBuf>);

impl Mounts {
    /// A small ext4 image (`image`, made here) mounted on `dir` through a loop device.
    fn ext4(&mut self, image: &std::path::Path, dir: &std::path::Path) {
        fs::File::create(image)
            .and_then(|f| f.set_len(32 << 20))
            .expect("image");
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .output()
            .expect("run mkfs.ext4 (e2fsprogs)");
        assert!(out.status.success(), "mkfs.ext4: {}", stderr(&out));
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount ext4: {}", stderr(&out));
        self.0.push(dir.to_path_buf());
    }

    /// Unmounts `dir` now, as a disk that is not mounted.
    fn unmount(&mut self, dir: &std::path::Path) {
        let out = Command::new("umount")
            .arg(dir)
            .output()
            .expect("run umount");
        assert!(out.status.success(), "umount: {}", stderr(&out));
        self.0.retain(|d| d != dir);
    }

    fn tmpfs(&mut self, dir: &std::path::Path) {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs: {}", stderr(&out));
        self.0.push(dir.to_path_buf());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = Command::new("umount").arg(dir).status();
        }
    }
}

#[test]
fn fix_restores_nothing_into_an_empty_folder_where_a_disk_is_not_mounted() {
    let top = tempfile::tempdir().expect("tempdir");
    let dir = |name: &str| {
        let d = top.path().join(name);
        fs::create_dir(&d).expect("mkdir");
        d
    };
    let (d1, d2, d3, p) = (dir("d1"), dir("d2"), dir("d3"), dir("p"));
    let mut mounts = Mounts(Vec::new());
    for m in [&d1, &d2, &p] {
        mounts.tmpfs(m);
    }
    let conf = top.path().join("array.conf");
    fs::write(
        &conf,
        format!(
            "parity {p}/parity\ncontent {p}/content\ncontent {d1}/content\n\
             data d1 {d1}\ndata d2 {d2}\ndata d3 {d3}\nblocksize 64\n",
            p = p.display(),
            d1 = d1.display(),
            d2 = d2.display(),
            d3 = d3.display()
        ),
    )
    .expect("config");
    fs::write(d1.join("f"), pseudo_random(100_000, 1)).expect("write");
    // The third disk is a folder of this file system, on purpose: it holds files.
    fs::create_dir(d3.join("sub")).expect("mkdir");
    let bytes = pseudo_random(200_000, 3);
    fs::write(d3.join("sub/g"), &bytes).expect("write");
    let conf = conf.to_string_lossy().into_owned();
    expect_code(&run("lhparity", &["-c", &conf, "sync"], &[]), 0);
    // Now empty, as the folder of a disk that is not mounted looks.
    fs::remove_dir_all(d3.join("sub")).expect("rm");
    let said = format!(
        "disk 'd3': {} is an empty folder, not a mount point, while every other data disk is \
         a mount point: its disk is most likely not mounted",
        d3.display()
    );
    for args in [&["fix", "-d", "d3"][..], &["fix", "-m"]] {
        let out = run(
            "lhparity",
            &[&["-c", conf.as_str()][..], args].concat(),
            &[],
        );
        expect_code(&out, 1);
        assert!(stderr(&out).contains(&said), "{args:?}: {}", stderr(&out));
        assert_eq!(
            fs::read_dir(&d3).expect("list").count(),
            0,
            "{args:?} wrote"
        );
    }
    // Meant so: the folder is restored into.
    let out = run(
        "lhparity",
        &["-c", &conf, "--force-device", "fix", "-d", "d3"],
        &[],
    );
    expect_code(&out, 0);
    assert_eq!(fs::read(d3.join("sub/g")).expect("restored"), bytes);
    // A folder that holds something is not taken for a missing disk.
    fs::remove_file(d3.join("sub/g")).expect("rm");
    expect_code(&run("lhparity", &["-c", &conf, "fix", "-m"], &[]), 0);
    assert_eq!(fs::read(d3.join("sub/g")).expect("restored"), bytes);
}

#[test]
fn fix_restores_nothing_onto_the_root_file_system_where_a_disk_of_its_own_is_not_mounted() {
    use std::os::unix::fs::MetadataExt;
    // A folder below /var/tmp: on the root file system, which the test needs.
    let top = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let root_dev = fs::metadata("/").expect("/").dev();
    if fs::metadata(top.path()).expect("top").dev() != root_dev {
        eprintln!("SKIPPED fix_restores_nothing_onto_the_root_file_system_where_a_disk_of_its_own_is_not_mounted: /var/tmp is not on the root file system here");
        return;
    }
    let dir = |name: &str| {
        let d = top.path().join(name);
        fs::create_dir(&d).expect("mkdir");
        d
    };
    let (d1, store) = (dir("d1"), dir("store"));
    let mut mounts = Mounts(Vec::new());
    mounts.ext4(&top.path().join("d1.img"), &d1);
    // Parity and content in a folder of a tmpfs, not its mount point. With one
    // data disk, the check that every other disk is a mount point does not apply.
    mounts.tmpfs(&store);
    let p = store.join("p");
    fs::create_dir(&p).expect("mkdir");
    let conf = top.path().join("array.conf");
    fs::write(
        &conf,
        format!(
            "parity {p}/parity\ncontent {p}/content\ncontent {d1}/content\n\
             data d1 {d1}\nblocksize 64\n",
            p = p.display(),
            d1 = d1.display()
        ),
    )
    .expect("config");
    let bytes = pseudo_random(300_000, 5);
    fs::write(d1.join("f"), &bytes).expect("write");
    let conf = conf.to_string_lossy().into_owned();
    let lhparity = |args: &[&str]| {
        run(
            "lhparity",
            &[&["-c", conf.as_str()][..], args].concat(),
            &[],
        )
    };
    expect_code(&lhparity(&["sync"]), 0);
    mounts.unmount(&d1);
    let out = lhparity(&["fix", "-d", "d1"]);
    expect_code(&out, 1);
    let said = format!(
        "disk 'd1': {} is an empty folder of the root file system, but the last sync found this disk on a file system of its own (UUID ",
        d1.display()
    );
    assert!(stderr(&out).contains(&said), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("most likely not mounted, and its 1 files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(&d1).expect("list").count(), 0, "fix wrote");
    // A new disk mounted there (a file system of another UUID) is restored into.
    mounts.ext4(&top.path().join("new.img"), &d1);
    expect_code(&lhparity(&["fix", "-d", "d1"]), 0);
    assert_eq!(fs::read(d1.join("f")).expect("restored"), bytes);
    // And --force-device restores into the bare folder when that is meant.
    mounts.unmount(&d1);
    expect_code(&lhparity(&["--force-device", "fix", "-d", "d1"]), 0);
    assert_eq!(fs::read(d1.join("f")).expect("restored"), bytes);
}

#[test]
fn an_emptied_data_disk_leaves_the_array_when_its_line_is_removed() {
    let array = Array::new(3, 2, 64, "");
    let kept = array.write(0, "a", 300_000, 1);
    array.write(1, "b", 200_000, 2);
    let last = array.write(2, "c", 250_000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    let config = fs::read_to_string(&array.conf).expect("config");
    let set_lines = |lines: &[&str]| {
        let mut text: String = config
            .lines()
            .filter(|l| !l.starts_with("data "))
            .map(|l| format!("{l}\n"))
            .collect();
        for name in lines {
            let line = config
                .lines()
                .find(|l| l.starts_with(&format!("data {name} ")))
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let dir = array.root.path().join(name);
                    fs::create_dir_all(&dir).expect("new disk");
                    format!("data {name} {}", dir.display())
                });
            text += &format!("{line}\n");
        }
        fs::write(&array.conf, text).expect("config");
    };
    // Refused while it holds files, and with the lines in another order.
    set_lines(&["d1", "d3"]);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("disk 'd2' is in the content file but not in")
            && stderr(&out).contains("the last sync recorded 1 file(s) on it")
            && stderr(&out).contains("run `lhparity sync -E`, then remove the line"),
        "{}",
        stderr(&out)
    );
    set_lines(&["d1", "d3", "d2"]);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("disk 'd2' is out of order"),
        "{}",
        stderr(&out)
    );
    // Emptied and synced, the disk in the middle leaves: no other disk's column
    // moves, so the parity still serves the others.
    set_lines(&["d1", "d2", "d3"]);
    fs::remove_file(array.disks[1].join("b")).expect("rm");
    expect_code(&array.lhparity(&["sync", "-E"]), 0);
    set_lines(&["d1", "d3"]);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains("disk 'd2' is no longer in")
            && stderr(&out).contains("it leaves the array"),
        "{}",
        stderr(&out)
    );
    verify_parity(&array);
    let out = array.lhparity(&["check"]);
    expect_code(&out, 0);
    assert!(!stderr(&out).contains("d2"), "{}", stderr(&out));
    fs::remove_file(array.disks[2].join("c")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-d", "d3"]), 0);
    assert_eq!(fs::read(array.disks[2].join("c")).expect("c"), last);
    // The disk after the hole may be renamed, and back.
    for (from, to) in [("d3", "r3"), ("r3", "d3")] {
        let text = fs::read_to_string(&array.conf).expect("config");
        let renamed = text.replace(&format!("data {from} "), &format!("data {to} "));
        fs::write(&array.conf, renamed).expect("config");
        let out = array.lhparity(&["sync"]);
        expect_code(&out, 0);
        assert!(
            stderr(&out).contains(&format!("disk '{from}' is now named '{to}'")),
            "{}",
            stderr(&out)
        );
    }

    // A new disk put where the old one was takes its free column; the parity of
    // every level covers it.
    set_lines(&["d1", "d9", "d3"]);
    let new = array.write(0, "../d9/n", 180_000, 4);
    expect_code(&array.lhparity(&["sync"]), 0);
    verify_parity(&array);
    let columns: Vec<(String, u32)> = layout(&array)
        .state
        .disks
        .iter()
        .map(|d| (d.name.clone(), d.index))
        .collect();
    assert_eq!(
        columns,
        [
            ("d1".to_string(), 0),
            ("d9".to_string(), 1),
            ("d3".to_string(), 2)
        ]
    );
    let d9 = array.root.path().join("d9/n");
    fs::remove_file(&d9).expect("rm");
    fs::remove_file(array.disks[0].join("a")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-d", "d1", "-d", "d9"]), 0);
    assert_eq!(fs::read(&d9).expect("n"), new);
    assert_eq!(fs::read(array.disks[0].join("a")).expect("a"), kept);
}

/// Moves `rel` from disk `from` to disk `to` as a move between file systems does
/// (copy, keep the mtime, remove), with the byte at `damage` flipped in the copy.
fn move_between_disks(array: &Array, rel: &str, (from, to): (usize, usize), damage: Option<usize>) {
    let source = array.disks[from].join(rel);
    let mut bytes = fs::read(&source).expect("read original");
    let mtime = fs::metadata(&source)
        .and_then(|m| m.modified())
        .expect("mtime");
    if let Some(at) = damage {
        bytes[at] ^= 0x20;
    }
    let target = array.disks[to].join(rel);
    fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    fs::write(&target, &bytes).expect("write copy");
    fs::File::options()
        .write(true)
        .open(&target)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
    fs::remove_file(&source).expect("rm original");
}

#[test]
fn files_moved_to_another_disk_are_compared_with_the_originals_before_the_sync() {
    let array = Array::new(2, 1, 64, "");
    array.write(0, "m/a.mkv", 300_000, 1);
    let c = array.write(0, "m/c.mkv", 200_000, 2);
    array.write(0, "keep.bin", 100_000, 3);
    array.write(1, "b.bin", 100_000, 4);
    expect_code(&array.lhparity(&["sync"]), 0);

    // Both files move to d2; one arrives with a byte changed in its third block.
    move_between_disks(&array, "m/a.mkv", (0, 1), None);
    move_between_disks(&array, "m/c.mkv", (0, 1), Some(150_000));
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 2);
    let text = stdout(&out);
    for name in ["a", "c"] {
        assert!(
            text.contains(&format!("copy d1/m/{name}.mkv -> d2/m/{name}.mkv")),
            "{text}"
        );
        assert!(text.contains(&format!("remove d1/m/{name}.mkv")), "{text}");
        assert!(!text.contains(&format!("add d2/m/{name}.mkv")), "{text}");
    }
    assert!(text.contains("       2 copied"), "{text}");
    assert!(text.contains("       0 added"), "{text}");

    // The damaged copy stops the sync before anything changes: the parity still
    // holds the original, which fix -m brings back.
    let content = fs::read(&array.content[0]).expect("content");
    let parity = fs::read(&array.parity[0]).expect("parity");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    let err = stderr(&out);
    let shown = |disk: usize, rel: &str| array.disks[disk].join(rel).display().to_string();
    assert!(
        err.contains(&format!(
            "disk 'd2': {} differs from {} in the block at byte 131072; if the original is \
             gone: `lhparity fix -m -f /m/c.mkv`",
            shown(1, "m/c.mkv"),
            shown(0, "m/c.mkv")
        )),
        "{err}"
    );
    assert!(err.contains("1 file(s) copied or moved"), "{err}");
    assert!(!err.contains("a.mkv"), "{err}");
    assert!(err.contains("lhparity sync --force-nocopy"), "{err}");
    assert_eq!(fs::read(&array.content[0]).expect("content"), content);
    assert_eq!(fs::read(&array.parity[0]).expect("parity"), parity);
    expect_code(&array.lhparity(&["fix", "-m", "-f", "m/c.mkv"]), 0);
    assert_eq!(
        fs::read(array.disks[0].join("m/c.mkv")).expect("restored"),
        c
    );

    // Moved again, whole: the sync checks it and goes ahead.
    move_between_disks(&array, "m/c.mkv", (0, 1), None);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out)
            .contains("2 file(s) copied or moved from another disk have their originals' bytes"),
        "{}",
        stdout(&out)
    );
    verify_parity(&array);
    expect_code(&array.lhparity(&["check"]), 0);

    // Another file that only looks like a copy (same path, size and mtime, other
    // bytes) is refused too, and synced as a new file with --force-nocopy.
    let x = array.write(0, "x.bin", 70_000, 5);
    expect_code(&array.lhparity(&["sync"]), 0);
    move_between_disks(&array, "x.bin", (0, 1), Some(0));
    expect_code(&array.lhparity(&["sync"]), 1);
    let out = array.lhparity(&["sync", "--force-nocopy"]);
    expect_code(&out, 0);
    assert!(
        !stdout(&out).contains("copied or moved"),
        "{}",
        stdout(&out)
    );
    verify_parity(&array);
    expect_code(&array.lhparity(&["check"]), 0);
    assert_ne!(fs::read(array.disks[1].join("x.bin")).expect("x"), x);
}

#[test]
fn fix_reads_files_moved_to_another_disk_since_the_sync_where_they_are_now() {
    // Files of two disks share parity positions; both move to a third disk, one of
    // them damaged on the way. The original of that one is gone, and bringing it
    // back needs the other's blocks, which are now on the third disk.
    let array = Array::new(3, 1, 64, "");
    let x = array.write(0, "x", 200_000, 1);
    array.write(1, "y", 200_000, 2);
    array.write(0, "k", 10, 3);
    array.write(1, "k", 10, 4);
    expect_code(&array.lhparity(&["sync"]), 0);
    move_between_disks(&array, "y", (1, 2), None);
    move_between_disks(&array, "x", (0, 2), Some(5));
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("if the original is gone: `lhparity fix -m -f /x`"),
        "{}",
        stderr(&out)
    );
    let out = array.lhparity(&["fix", "-m", "-f", "/x"]);
    expect_code(&out, 0);
    assert_eq!(fs::read(array.disks[0].join("x")).expect("x is back"), x);
    // With the damaged copy replaced by the original, the sync goes ahead.
    fs::remove_file(array.disks[2].join("x")).expect("rm");
    move_between_disks(&array, "x", (0, 2), None);
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("d3: 0 added, 0 removed, 0 updated, 0 moved, 2 copied, 0 restored"),
        "{}",
        stdout(&out)
    );
    verify_parity(&array);
    expect_code(&array.lhparity(&["check"]), 0);
}

#[test]
fn a_disk_retired_and_the_next_renamed_in_one_edit_both_take_effect() {
    let array = Array::new(3, 1, 64, "");
    array.write(0, "a", 100_000, 1);
    array.write(1, "b", 100_000, 2);
    let c = array.write(2, "c", 100_000, 3);
    expect_code(&array.lhparity(&["sync"]), 0);
    fs::remove_file(array.disks[1].join("b")).expect("rm");
    expect_code(&array.lhparity(&["sync", "-E"]), 0);
    // d2's line goes and d3's is renamed: the renamed line is d3 (it holds files),
    // not the emptied d2.
    let text = fs::read_to_string(&array.conf).expect("config");
    let edited: String = text
        .lines()
        .filter(|l| !l.starts_with("data d2 "))
        .map(|l| format!("{}\n", l.replace("data d3 ", "data media ")))
        .collect();
    fs::write(&array.conf, edited).expect("config");
    let out = array.lhparity(&["sync"]);
    expect_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("disk 'd3' is now named 'media'"), "{err}");
    assert!(err.contains("disk 'd2' is no longer in"), "{err}");
    let out = array.lhparity(&["diff"]);
    expect_code(&out, 0);
    fs::remove_file(array.disks[2].join("c")).expect("rm");
    expect_code(&array.lhparity(&["fix", "-d", "media"]), 0);
    assert_eq!(fs::read(array.disks[2].join("c")).expect("c"), c);
}
