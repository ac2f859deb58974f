//! The metrics endpoint of a mounted pool (`metrics-listen`): scraped while files are
//! written through the pool, its counters checked against what the test did, its
//! text checked by promtool, bad requests refused without stopping it, and a busy
//! address refused before anything is mounted.
//!
//! The pools listen on `127.0.0.1:0`: the system picks a free port, and the control
//! file's `user.mergerfs.metrics-listen` tells which.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{DirEntryExt, FileExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fuse::{getx, setx, Pool, Tmpfs};
use common::{bin, forking, lhfs_contract_table, must, no_forks, promtool_check_metrics};

/// The address the pool's metrics endpoint listens on, from its control file.
fn listen_address(pool: &Pool) -> String {
    let value = getx(&pool.path(".mergerfs"), "user.mergerfs.metrics-listen").unwrap();
    String::from_utf8(value).unwrap()
}

/// Sends `request` on a new connection; returns the status code, the head and the
/// body of the answer.
fn http(address: &str, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line of {answer:?}"));
    (code, head.to_owned(), body.to_owned())
}

/// The metrics text, from a successful `GET /metrics`.
fn scrape(address: &str) -> String {
    let (code, head, body) = http(address, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Scrapes until `series` has the value `want`, for at most 10 s (the kernel sends
/// `release` after close returns); returns the last text.
fn scrape_until(address: &str, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(address);
        if must(&text, series) == want || Instant::now() > deadline {
            assert_eq!(must(&text, series), want, "{series}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fuse_metrics_passthrough_serves_opens_of_every_mode_without_leaking_flags() {
    let test = "fuse_metrics_passthrough_serves_opens_of_every_mode_without_leaking_flags";
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = "metrics-listen=127.0.0.1:0,passthrough.io=rw,cache.files=auto-full";
    let branch = a.path().display().to_string();
    let Some(pool) = Pool::mount(test, &branch, mnt.path(), options) else {
        return;
    };
    let address = listen_address(&pool);
    let file = pool.path("f");
    // The first open, write-only and appending, registers the backing file.
    let mut appender = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .unwrap();
    appender.write_all(b"0123456789").unwrap();
    // A read-write open made meanwhile writes where it is told, not at the end.
    let writer = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    writer.write_all_at(b"AB", 0).unwrap();
    appender.write_all(b"X").unwrap();
    let mut text = String::new();
    File::open(&file)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "AB23456789X");
    // Every open so far was served by the kernel straight from the branch file.
    let metrics = scrape(&address);
    assert!(
        must(&metrics, "lhfs_passthrough_handles") >= 2.0,
        "{metrics}"
    );
    drop((appender, writer));
    scrape_until(&address, "lhfs_passthrough_handles", 0.0);
    // A truncating first open does not truncate again for the opens that follow.
    let mut truncating = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    truncating.write_all(b"new").unwrap();
    let mut again = OpenOptions::new().write(true).open(&file).unwrap();
    again.write_all(b"N").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"New");
    assert_eq!(
        fs::read(a.path().join("f")).unwrap(),
        b"New",
        "on the branch"
    );
}

/// A write the kernel does itself (passthrough) asks the daemon nothing: it knows
/// the file has no `security.capability` after asking once (lhfs handles the
/// clearing of set-ID bits and capabilities, FUSE_HANDLE_KILLPRIV_V2), where it
/// used to ask before every write, a round trip each that took a third off a
/// sequential write's speed.
#[test]
fn fuse_metrics_passthrough_writes_ask_the_daemon_nothing() {
    let test = "fuse_metrics_passthrough_writes_ask_the_daemon_nothing";
    const WRITES: usize = 200;
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = "metrics-listen=127.0.0.1:0,passthrough.io=rw";
    let branch = a.path().display().to_string();
    let Some(pool) = Pool::mount(test, &branch, mnt.path(), options) else {
        return;
    };
    let address = listen_address(&pool);
    let mut file = File::create(pool.path("f")).unwrap();
    file.write_all(b"first").unwrap();
    let count = |text: &str| {
        ["getxattr", "setattr", "write"]
            .map(|op| must(text, &format!("lhfs_operations_total{{op=\"{op}\"}}")))
    };
    let before = count(&scrape(&address));
    let block = vec![7u8; 4096];
    for _ in 0..WRITES {
        file.write_all(&block).unwrap();
    }
    let after = count(&scrape(&address));
    assert_eq!(after, before, "getxattr, setattr and write requests");
    assert!(
        must(&scrape(&address), "lhfs_passthrough_handles") >= 1.0,
        "served by passthrough"
    );
    drop(file);
    assert_eq!(
        fs::metadata(a.path().join("f")).unwrap().len(),
        (5 + WRITES * block.len()) as u64
    );
}

#[test]
fn fuse_passthrough_of_one_mode_lets_opens_of_the_other_mode_through() {
    let test = "fuse_passthrough_of_one_mode_lets_opens_of_the_other_mode_through";
    for (pass, cache) in [
        ("ro", "off"),
        ("wo", "off"),
        ("ro", "partial"),
        ("wo", "partial"),
    ] {
        let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(a.path().join("f"), b"hi\n").unwrap();
        let options = format!("passthrough.io={pass},cache.files={cache}");
        let branch = a.path().display().to_string();
        let Some(pool) = Pool::mount(test, &branch, mnt.path(), &options) else {
            return;
        };
        let file = pool.path("f");
        // Both orders: the mode passthrough covers first, then the other, and back.
        let reader = File::open(&file).unwrap();
        let mut appender = OpenOptions::new().append(true).open(&file).unwrap();
        appender.write_all(b"more\n").unwrap();
        let mut text = String::new();
        (&reader).read_to_string(&mut text).unwrap();
        assert_eq!(text, "hi\nmore\n", "{options}");
        drop((reader, appender));
        let mut appender = OpenOptions::new().append(true).open(&file).unwrap();
        let reader = File::open(&file).unwrap();
        appender.write_all(b"end\n").unwrap();
        drop(appender);
        let mut text = String::new();
        (&reader).read_to_string(&mut text).unwrap();
        assert_eq!(text, "hi\nmore\nend\n", "{options}");
        assert_eq!(fs::read(a.path().join("f")).unwrap(), b"hi\nmore\nend\n");
    }
}

/// Distinct bytes for file `i`, of a size that is no multiple of a page.
fn content(i: usize) -> Vec<u8> {
    (0..1000 + i * 7919).map(|b| (b * 31 + i) as u8).collect()
}

#[test]
fn fuse_metrics_count_a_write_load_while_scraped() {
    let test = "fuse_metrics_count_a_write_load_while_scraped";
    let (a, b, mnt) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let list = format!("{}:{}=NC", a.path().display(), b.path().display());
    // Direct I/O and no passthrough: every byte goes through the daemon.
    let options = "metrics-listen=127.0.0.1:0,passthrough.io=off,cache.files=off";
    let Some(pool) = Pool::mount(test, &list, mnt.path(), options) else {
        return;
    };
    let address = listen_address(&pool);
    assert!(
        address.starts_with("127.0.0.1:") && !address.ends_with(":0"),
        "{address}"
    );

    let text = scrape(&address);
    assert_eq!(must(&text, "lhfs_written_bytes_total"), 0.0);
    assert_eq!(must(&text, "lhfs_open_files"), 0.0);
    for (dir, mode) in [(a.path(), "RW"), (b.path(), "NC")] {
        let labels = format!("{{branch=\"{}\",mode=\"{mode}\"}}", dir.display());
        let total = must(&text, &format!("lhfs_branch_total_bytes{labels}"));
        let free = must(&text, &format!("lhfs_branch_free_bytes{labels}"));
        let available = must(&text, &format!("lhfs_branch_available_bytes{labels}"));
        assert!(total > 0.0 && free <= total && available <= free, "{text}");
    }
    promtool_check_metrics(&text);

    const FILES: usize = 40;
    let total: usize = (0..FILES).map(|i| content(i).len()).sum();
    fs::create_dir(pool.path("load")).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, dir) = (Arc::clone(&done), pool.path("load"));
        std::thread::spawn(move || {
            for i in 0..FILES {
                fs::write(dir.join(format!("f{i}")), content(i)).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut scrapes, mut last) = (0, 0.0);
    loop {
        let finished = done.load(Ordering::SeqCst);
        let written = must(&scrape(&address), "lhfs_written_bytes_total");
        assert!(
            written >= last,
            "the counter went back: {last} -> {written}"
        );
        last = written;
        scrapes += 1;
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    assert!(scrapes >= 2, "{scrapes} scrapes");

    let text = scrape(&address);
    assert_eq!(must(&text, "lhfs_written_bytes_total"), total as f64);
    assert!(must(&text, "lhfs_operations_total{op=\"write\"}") >= FILES as f64);
    assert!(must(&text, "lhfs_operations_total{op=\"create\"}") >= FILES as f64);
    assert_eq!(must(&text, "lhfs_moveonenospc_total"), 0.0);

    for i in 0..FILES {
        assert_eq!(
            fs::read(pool.path(&format!("load/f{i}"))).unwrap(),
            content(i)
        );
    }
    let text = scrape(&address);
    assert_eq!(must(&text, "lhfs_read_bytes_total"), total as f64);

    // An error answer is counted under its errno name.
    assert!(fs::remove_dir(pool.path("load")).is_err());
    let text = scrape(&address);
    assert!(must(&text, "lhfs_errors_total{errno=\"ENOTEMPTY\"}") >= 1.0);

    scrape_until(&address, "lhfs_open_files", 0.0);
    let open = fs::File::open(pool.path("load/f1")).unwrap();
    let text = scrape(&address);
    assert_eq!(must(&text, "lhfs_open_files"), 1.0);
    assert_eq!(must(&text, "lhfs_passthrough_handles"), 0.0);
    drop(open);
    scrape_until(&address, "lhfs_open_files", 0.0);

    // Bad requests are refused and the endpoint goes on serving.
    assert_eq!(http(&address, b"GET /nothing HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(&address, b"\x16\x03\x01\x02\x00\r\n\r\n").0, 400);
    assert_eq!(http(&address, b"DELETE /metrics HTTP/1.1\r\n\r\n").0, 405);
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(64 * 1024, b'a');
    assert_eq!(http(&address, &huge).0, 431);
    let text = scrape(&address);
    promtool_check_metrics(&text);
    check_contract(&text);
}

/// Checks that `text` serves exactly the families of the contract in
/// contrib/README.md, with their types and label names.
fn check_contract(text: &str) {
    let contract = lhfs_contract_table();
    let mut served = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            served.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') {
            let series = line.rsplit_once(' ').unwrap().0;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            // Label values here (paths, names) hold no `,` or `=`.
            let names: Vec<String> = labels
                .split(',')
                .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
                .collect();
            let (_, want) = contract
                .get(name)
                .unwrap_or_else(|| panic!("`{name}` is not in the contract"));
            assert_eq!(&names, want, "labels of {line}");
        }
    }
    let kinds: BTreeMap<String, String> = contract
        .into_iter()
        .map(|(name, (kind, _))| (name, kind))
        .collect();
    assert_eq!(served, kinds);
}

#[test]
fn fuse_metrics_count_moveonenospc() {
    let test = "fuse_metrics_count_moveonenospc";
    let (Some(small), Some(big)) = (Tmpfs::new(test, "2m"), Tmpfs::new(test, "64m")) else {
        return;
    };
    let mnt = tempfile::tempdir().unwrap();
    let list = format!("{}:{}", small.path.display(), big.path.display());
    let options = "category.create=ff,minfreespace=0,moveonenospc=true,passthrough.io=off,\
                   metrics-listen=127.0.0.1:0";
    let Some(pool) = Pool::mount(test, &list, mnt.path(), options) else {
        return;
    };
    let address = listen_address(&pool);
    let data = vec![7u8; 8 << 20];
    fs::write(pool.path("big"), &data).unwrap();
    assert!(big.path.join("big").exists(), "the file moved");
    let text = scrape(&address);
    assert_eq!(must(&text, "lhfs_moveonenospc_total"), 1.0);
    assert_eq!(must(&text, "lhfs_written_bytes_total"), data.len() as f64);
}

#[test]
fn fuse_metrics_busy_address_stops_the_mount() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (branch, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spawning = forking();
    let mut child = Command::new(bin("lhfs"))
        .arg(branch.path())
        .arg(mnt.path())
        .arg("-f")
        .arg("-o")
        .arg(format!("metrics-listen={address}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(spawning);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _forking = forking();
            let _ = Command::new("umount").arg("-l").arg(mnt.path()).status();
            let _ = child.kill();
            panic!("lhfs kept running with a busy metrics address");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("`{address}`")) && err.contains("metrics-listen"),
        "{err}"
    );
    assert!(
        fs::read_dir(mnt.path()).unwrap().next().is_none(),
        "nothing was mounted"
    );
    assert!(!Path::new(&mnt.path().join(".mergerfs")).exists());
}

/// The pool's request counts for lookup and getattr.
fn lookups_and_getattrs(address: &str) -> (f64, f64) {
    let text = scrape(address);
    (
        must(&text, "lhfs_operations_total{op=\"lookup\"}"),
        must(&text, "lhfs_operations_total{op=\"getattr\"}"),
    )
}

#[test]
fn fuse_metrics_show_entry_attributes_are_cached() {
    use std::os::unix::fs::MetadataExt;
    let test = "fuse_metrics_show_entry_attributes_are_cached";
    let (a, b, mnt) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let names: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let branch = if i % 2 == 0 { a.path() } else { b.path() };
        fs::write(branch.join(name), name).unwrap();
    }
    fs::create_dir(a.path().join("sub")).unwrap();
    fs::create_dir(b.path().join("sub")).unwrap();
    for i in 0..300 {
        let branch = if i % 3 == 0 { a.path() } else { b.path() };
        fs::write(branch.join(format!("sub/{i:03}")), [i as u8]).unwrap();
    }
    fs::write(a.path().join("h1"), b"linked").unwrap();
    fs::hard_link(a.path().join("h1"), a.path().join("h2")).unwrap();
    let list = format!("{}:{}", a.path().display(), b.path().display());
    let options = "metrics-listen=127.0.0.1:0,cache.attr=60,cache.entry=60";
    let Some(pool) = Pool::mount(test, &list, mnt.path(), options) else {
        return;
    };
    let address = listen_address(&pool);
    fs::metadata(pool.path("")).unwrap();

    // One lookup per name and no getattr: the entry's attributes are cached.
    let (lookups, getattrs) = lookups_and_getattrs(&address);
    let mut inodes = BTreeMap::new();
    for name in &names {
        let meta = fs::metadata(pool.path(name)).unwrap();
        assert_eq!(meta.len(), name.len() as u64, "{name}");
        inodes.insert(name.clone(), meta.ino());
    }
    assert_eq!(
        lookups_and_getattrs(&address),
        (lookups + names.len() as f64, getattrs)
    );
    // Within the timeouts the kernel answers alone.
    for name in &names {
        assert_eq!(fs::metadata(pool.path(name)).unwrap().ino(), inodes[name]);
    }
    assert_eq!(
        lookups_and_getattrs(&address),
        (lookups + names.len() as f64, getattrs)
    );

    // Both names of a hard link show one inode, and the listing the same numbers.
    let h1 = fs::metadata(pool.path("h1")).unwrap();
    let h2 = fs::metadata(pool.path("h2")).unwrap();
    assert_eq!((h1.ino(), h1.nlink()), (h2.ino(), 2));
    inodes.insert("h1".into(), h1.ino());
    inodes.insert("h2".into(), h2.ino());
    let listed: BTreeMap<String, u64> = fs::read_dir(pool.path(""))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "sub")
        .map(|e| (e.file_name().into_string().unwrap(), e.ino()))
        .collect();
    assert_eq!(listed, inodes);

    // `ls -l` of a folder seen for the first time: the listing brings each entry's
    // attributes (readdirplus), so no lookup and no getattr follows.
    fs::metadata(pool.path("sub")).unwrap();
    let before = lookups_and_getattrs(&address);
    let mut seen = BTreeMap::new();
    for entry in fs::read_dir(pool.path("sub")).unwrap() {
        let entry = entry.unwrap();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        assert_eq!((meta.len(), meta.ino()), (1, entry.ino()));
        seen.insert(entry.file_name(), meta.ino());
    }
    assert_eq!(seen.len(), 300);
    assert_eq!(lookups_and_getattrs(&address), before);
    assert!(
        must(
            &scrape(&address),
            "lhfs_operations_total{op=\"readdirplus\"}"
        ) >= 1.0
    );
}

/// Sets a pool option at runtime through the control file.
fn set_option(pool: &Pool, key: &str, value: &str) {
    let name = format!("user.mergerfs.{key}");
    setx(&pool.path(".mergerfs"), &name, value).unwrap();
}

#[test]
fn fuse_metrics_show_which_closes_flush() {
    let test = "fuse_metrics_show_which_closes_flush";
    let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(a.path().join("f"), b"before").unwrap();
    let list = a.path().display().to_string();
    let Some(pool) = Pool::mount(test, &list, mnt.path(), "metrics-listen=127.0.0.1:0") else {
        return;
    };
    let address = listen_address(&pool);
    let flushes = || must(&scrape(&address), "lhfs_operations_total{op=\"flush\"}");
    let read_close = || assert_eq!(fs::read(pool.path("f")).unwrap(), b"after!"[..].to_vec());
    let write_close = || fs::write(pool.path("f"), b"after!").unwrap();
    // Each close of a copy of a descriptor is a flush: no child may inherit one.
    // Declared after the pools: it is dropped before them, whose unmount starts a
    // child (taking the lock again would deadlock).
    let _no_forks = no_forks();

    // opened-for-write (the default), on a local filesystem (ext4 or tmpfs here),
    // whose close reports nothing: no flush at all.
    let start = flushes();
    write_close();
    read_close();
    assert_eq!(flushes(), start);
    // always: every close.
    set_option(&pool, "flush-on-close", "always");
    write_close();
    read_close();
    assert_eq!(flushes(), start + 2.0);
    // never: none, and what was written is there all the same.
    set_option(&pool, "flush-on-close", "never");
    write_close();
    read_close();
    assert_eq!(flushes(), start + 2.0);
    assert_eq!(fs::read(a.path().join("f")).unwrap(), b"after!");
}

#[test]
fn fuse_closes_of_files_written_on_a_network_or_fuse_branch_flush() {
    let test = "fuse_closes_of_files_written_on_a_network_or_fuse_branch_flush";
    let (a, inner, outer) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    fs::write(a.path().join("f"), b"before").unwrap();
    // A branch whose files can report errors at close: a FUSE mount (another pool),
    // as an NFS or SMB branch would.
    let list = a.path().display().to_string();
    let Some(_inner) = Pool::mount(test, &list, inner.path(), "") else {
        return;
    };
    let list = inner.path().display().to_string();
    let Some(pool) = Pool::mount(test, &list, outer.path(), "metrics-listen=127.0.0.1:0") else {
        return;
    };
    let address = listen_address(&pool);
    let flushes = || must(&scrape(&address), "lhfs_operations_total{op=\"flush\"}");
    // Each close of a copy of a descriptor is a flush: no child may inherit one.
    // Declared after the pools: it is dropped before them, whose unmount starts a
    // child (taking the lock again would deadlock).
    let _no_forks = no_forks();
    let start = flushes();
    fs::write(pool.path("f"), b"after!").unwrap();
    assert_eq!(flushes(), start + 1.0);
    assert_eq!(fs::read(pool.path("f")).unwrap(), b"after!");
    assert_eq!(flushes(), start + 1.0);
    assert_eq!(fs::read(a.path().join("f")).unwrap(), b"after!");
}

#[test]
fn fuse_metrics_show_cached_directory_listings() {
    let test = "fuse_metrics_show_cached_directory_listings";
    let (a, b, mnt) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for branch in [a.path(), b.path()] {
        fs::create_dir(branch.join("d")).unwrap();
    }
    for i in 0..50 {
        let branch = if i % 2 == 0 { a.path() } else { b.path() };
        fs::write(branch.join(format!("d/{i:02}")), b"x").unwrap();
    }
    let list = format!("{}:{}", a.path().display(), b.path().display());
    let options = "metrics-listen=127.0.0.1:0,cache.readdir=true";
    let Some(pool) = Pool::mount(test, &list, mnt.path(), options) else {
        return;
    };
    let address = listen_address(&pool);
    let listings = || {
        let text = scrape(&address);
        must(&text, "lhfs_operations_total{op=\"readdir\"}")
            + must(&text, "lhfs_operations_total{op=\"readdirplus\"}")
    };
    let names = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(pool.path("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let expected: Vec<String> = (0..50).map(|i| format!("{i:02}")).collect();

    // The first listing asks the daemon; the second comes from the kernel's cache.
    assert_eq!(names(), expected);
    let after_first = listings();
    assert!(after_first >= 1.0);
    assert_eq!(names(), expected);
    assert_eq!(listings(), after_first);

    // A file made through the pool drops the cached listing.
    fs::write(pool.path("d/new"), b"y").unwrap();
    let mut with_new = expected.clone();
    with_new.push("new".into());
    assert_eq!(names(), with_new);
    assert!(listings() > after_first);

    // Turned off at runtime: every listing asks the daemon again.
    set_option(&pool, "cache.readdir", "false");
    let before = listings();
    assert_eq!(names(), with_new);
    assert!(listings() > before);
    let before = listings();
    assert_eq!(names(), with_new);
    assert!(listings() > before);
}

#[test]
fn fuse_metrics_show_cached_symlinks() {
    let test = "fuse_metrics_show_cached_symlinks";
    for (cache, asked) in [("false", 3.0), ("true", 1.0)] {
        let (a, mnt) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::os::unix::fs::symlink("some/target", a.path().join("link")).unwrap();
        let list = a.path().display().to_string();
        let options = format!("metrics-listen=127.0.0.1:0,cache.symlinks={cache}");
        let Some(pool) = Pool::mount(test, &list, mnt.path(), &options) else {
            return;
        };
        let address = listen_address(&pool);
        let readlinks = || must(&scrape(&address), "lhfs_operations_total{op=\"readlink\"}");
        let before = readlinks();
        for _ in 0..3 {
            assert_eq!(
                fs::read_link(pool.path("link")).unwrap(),
                Path::new("some/target")
            );
        }
        assert_eq!(readlinks(), before + asked, "cache.symlinks={cache}");
        assert_eq!(
            getx(&pool.path(".mergerfs"), "user.mergerfs.cache.symlinks").unwrap(),
            cache.as_bytes()
        );
    }
}
