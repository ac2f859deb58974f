//! Where the pool puts things: create policies on branches of different sizes,
//! errors when no branch may take a file, rename and link across branches, and
//! `moveonenospc`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::fuse::{cpath, errno, Pool, Tmpfs};

/// Branches as a `:` list.
fn list(branches: &[&Path]) -> String {
    branches
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Which of `branches` hold `rel`.
fn holders(branches: &[&Path], rel: &str) -> Vec<usize> {
    (0..branches.len())
        .filter(|&i| branches[i].join(rel).exists())
        .collect()
}

/// Three tmpfs branches of 8, 32 and 16 MiB, and a mountpoint.
fn three_branches(test: &str) -> Option<(Vec<Tmpfs>, tempfile::TempDir)> {
    let fs = vec![
        Tmpfs::new(test, "8m")?,
        Tmpfs::new(test, "32m")?,
        Tmpfs::new(test, "16m")?,
    ];
    Some((fs, tempfile::tempdir().unwrap()))
}

#[test]
fn fuse_policy_create_lands_where_mergerfs_puts_it() {
    let test = "fuse_policy_create_lands_where_mergerfs_puts_it";
    let Some((tmpfs, mnt)) = three_branches(test) else {
        return;
    };
    let b: Vec<&Path> = tmpfs.iter().map(|t| t.path.as_path()).collect();
    // Parent only on the 8 MiB branch, for the path-preserving policy.
    fs::create_dir(b[0].join("only0")).unwrap();
    for (policy, rel, expected) in [
        ("mfs", "mfs-file", 1),           // most free: 32 MiB
        ("lfs", "lfs-file", 0),           // least free: 8 MiB
        ("ff", "ff-file", 0),             // first
        ("epmfs", "only0/epmfs-file", 0), // the only branch with the parent
    ] {
        let options = format!("category.create={policy},minfreespace=1M");
        let Some(pool) = Pool::mount(test, &list(&b), mnt.path(), &options) else {
            return;
        };
        fs::write(pool.path(rel), b"x").unwrap();
        assert_eq!(holders(&b, rel), vec![expected], "{policy} placed {rel}");
        // mkdir follows the same category.
        let dir = format!("{rel}.d");
        fs::create_dir(pool.path(&dir)).unwrap();
        assert_eq!(holders(&b, &dir), vec![expected], "{policy} placed {dir}");
    }
}

#[test]
fn fuse_policy_rand_picks_only_eligible_branches() {
    let test = "fuse_policy_rand_picks_only_eligible_branches";
    let Some((tmpfs, mnt)) = three_branches(test) else {
        return;
    };
    let b: Vec<&Path> = tmpfs.iter().map(|t| t.path.as_path()).collect();
    // Branch 0 is read-only, branch 2 has less free than its minimum: only 1 is left.
    let branches = format!(
        "{}=RO:{}:{}=RW,20M",
        b[0].display(),
        b[1].display(),
        b[2].display()
    );
    let Some(pool) = Pool::mount(
        test,
        &branches,
        mnt.path(),
        "category.create=rand,minfreespace=1M",
    ) else {
        return;
    };
    for i in 0..12 {
        let rel = format!("r{i}");
        fs::write(pool.path(&rel), b"x").unwrap();
        assert_eq!(holders(&b, &rel), vec![1], "rand placed {rel}");
    }
    drop(pool);
    // Without that constraint rand spreads over every branch.
    let Some(pool) = Pool::mount(
        test,
        &list(&b),
        mnt.path(),
        "category.create=rand,minfreespace=1M",
    ) else {
        return;
    };
    let mut seen = [false; 3];
    for i in 0..60 {
        let rel = format!("s{i}");
        fs::write(pool.path(&rel), b"x").unwrap();
        let on = holders(&b, &rel);
        assert_eq!(on.len(), 1);
        seen[on[0]] = true;
    }
    assert_eq!(seen, [true; 3], "rand used every branch in 60 creates");
}

#[test]
fn fuse_policy_no_eligible_branch_errors() {
    let test = "fuse_policy_no_eligible_branch_errors";
    let Some((tmpfs, mnt)) = three_branches(test) else {
        return;
    };
    let b: Vec<&Path> = tmpfs.iter().map(|t| t.path.as_path()).collect();
    let ro = b
        .iter()
        .map(|p| format!("{}=RO", p.display()))
        .collect::<Vec<_>>()
        .join(":");
    let Some(pool) = Pool::mount(test, &ro, mnt.path(), "category.create=mfs") else {
        return;
    };
    assert_eq!(
        errno(fs::write(pool.path("f"), b"x")),
        libc::EROFS,
        "all branches RO"
    );
    assert_eq!(errno(fs::create_dir(pool.path("d"))), libc::EROFS);
    drop(pool);
    let Some(pool) = Pool::mount(
        test,
        &list(&b),
        mnt.path(),
        "category.create=mfs,minfreespace=1G",
    ) else {
        return;
    };
    assert_eq!(
        errno(fs::write(pool.path("f"), b"x")),
        libc::ENOSPC,
        "all below minfreespace"
    );
    assert_eq!(errno(fs::create_dir(pool.path("d"))), libc::ENOSPC);
    assert!(holders(&b, "f").is_empty());
}

/// Two plain branches in a temporary folder: /a/f on branch 0, /b only on branch 1.
fn split_tree() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (b0, b1, mnt) = (
        tmp.path().join("b0"),
        tmp.path().join("b1"),
        tmp.path().join("mnt"),
    );
    for d in [&b0, &b1, &mnt] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir(b0.join("a")).unwrap();
    fs::write(b0.join("a/f"), b"data").unwrap();
    fs::create_dir(b1.join("b")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(b1.join("b"), fs::Permissions::from_mode(0o750)).unwrap();
    (tmp, b0, b1, mnt)
}

#[test]
fn fuse_policy_rename_and_link_across_branches() {
    let test = "fuse_policy_rename_and_link_across_branches";
    // Path-preserving create policy: the target folder exists only elsewhere.
    let (_tmp, b0, b1, mnt) = split_tree();
    let branches = list(&[&b0, &b1]);
    {
        let Some(pool) = Pool::mount(
            test,
            &branches,
            &mnt,
            "category.create=epmfs,minfreespace=0",
        ) else {
            return;
        };
        assert_eq!(
            errno(fs::rename(pool.path("a/f"), pool.path("b/f"))),
            libc::EXDEV
        );
        assert_eq!(
            errno(fs::hard_link(pool.path("a/f"), pool.path("b/g"))),
            libc::EXDEV
        );
        assert!(
            b0.join("a/f").exists() && !b0.join("b").exists(),
            "nothing moved"
        );
    }
    // Otherwise the target folder is cloned onto the source's branch.
    let Some(pool) = Pool::mount(test, &branches, &mnt, "category.create=mfs,minfreespace=0")
    else {
        return;
    };
    fs::hard_link(pool.path("a/f"), pool.path("b/g")).unwrap();
    fs::rename(pool.path("a/f"), pool.path("b/f")).unwrap();
    assert_eq!(
        fs::read(b0.join("b/f")).unwrap(),
        b"data",
        "renamed on its branch"
    );
    assert!(b0.join("b/g").exists() && !b0.join("a/f").exists());
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cloned = fs::metadata(b0.join("b")).unwrap();
    assert_eq!(
        cloned.permissions().mode() & 0o7777,
        0o750,
        "clone keeps the mode"
    );
    assert_eq!(fs::read(pool.path("b/f")).unwrap(), b"data");
    assert_eq!(fs::metadata(pool.path("b/g")).unwrap().nlink(), 2);
}

#[test]
fn fuse_policy_o_trunc_truncates_only_the_copy_it_opens() {
    let test = "fuse_policy_o_trunc_truncates_only_the_copy_it_opens";
    let (_tmp, b0, b1, mnt) = split_tree();
    fs::create_dir(b1.join("a")).unwrap();
    fs::write(b1.join("a/f"), b"the other copy").unwrap();
    let Some(pool) = Pool::mount(test, &list(&[&b0, &b1]), &mnt, "minfreespace=0") else {
        return;
    };
    // What `cp` and a shell's `>` do.
    fs::write(pool.path("a/f"), b"NEW").unwrap();
    assert_eq!(fs::read(b0.join("a/f")).unwrap(), b"NEW");
    assert_eq!(
        fs::read(b1.join("a/f")).unwrap(),
        b"the other copy",
        "the copy on the other branch was truncated"
    );
    // truncate(2) by name still goes to every copy (func.truncate=epall).
    let path = cpath(&pool.path("a/f"));
    // SAFETY: a plain truncate on a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(path.as_ptr(), 1) }, 0);
    assert_eq!(fs::read(b0.join("a/f")).unwrap(), b"N");
    assert_eq!(fs::read(b1.join("a/f")).unwrap(), b"t");
}

fn open_rw(path: &Path) -> fs::File {
    fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

#[test]
fn fuse_policy_exdev_symlinks_leave_open_files_working() {
    let test = "fuse_policy_exdev_symlinks_leave_open_files_working";
    use std::io::{Read, Seek, SeekFrom, Write};
    let (_tmp, b0, b1, mnt) = split_tree();
    fs::write(b0.join("a/h"), b"more").unwrap();
    let branches = list(&[&b0, &b1]);
    let Some(pool) = Pool::mount(
        test,
        &branches,
        &mnt,
        "category.create=epmfs,minfreespace=0,link-exdev=rel-symlink,rename-exdev=rel-symlink,cache.attr=0,cache.entry=0",
    ) else {
        return;
    };
    // link-exdev: the new name is a symlink; the source, open meanwhile, stays the
    // file it was (its node is not the symlink's).
    let mut source = open_rw(&pool.path("a/f"));
    fs::hard_link(pool.path("a/f"), pool.path("b/g")).unwrap();
    assert!(fs::symlink_metadata(pool.path("b/g"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(pool.path("b/g")).unwrap(), b"data");
    let mut bytes = Vec::new();
    source.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"data", "the open source reads as before");
    assert!(source.metadata().unwrap().is_file());
    assert!(fs::metadata(pool.path("a/f")).unwrap().is_file());

    // rename-exdev: the file goes to the stash and the new name is a symlink to it;
    // a descriptor open across the rename reads and writes the moved file.
    let mut moved = open_rw(&pool.path("a/h"));
    fs::rename(pool.path("a/h"), pool.path("b/h")).unwrap();
    assert!(fs::symlink_metadata(pool.path("b/h"))
        .unwrap()
        .file_type()
        .is_symlink());
    moved.seek(SeekFrom::End(0)).unwrap();
    moved.write_all(b" data").unwrap();
    moved.seek(SeekFrom::Start(0)).unwrap();
    let mut bytes = Vec::new();
    moved.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"more data");
    assert!(moved.metadata().unwrap().is_file());
    assert_eq!(fs::read(pool.path("b/h")).unwrap(), b"more data");
    assert_eq!(
        fs::read(b0.join(".mergerfs_rename_exdev/a/h")).unwrap(),
        b"more data"
    );
}

#[test]
fn fuse_policy_moveonenospc_moves_a_growing_file() {
    let test = "fuse_policy_moveonenospc_moves_a_growing_file";
    let (Some(small), Some(big)) = (Tmpfs::new(test, "2m"), Tmpfs::new(test, "64m")) else {
        return;
    };
    let mnt = tempfile::tempdir().unwrap();
    let b = [small.path.as_path(), big.path.as_path()];
    let Some(pool) = Pool::mount(
        test,
        &list(&b),
        mnt.path(),
        "category.create=ff,minfreespace=0,moveonenospc=true",
    ) else {
        return;
    };
    fs::create_dir(pool.path("dir")).unwrap();
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(pool.path("dir/big"), &data).unwrap();
    assert_eq!(
        fs::read(pool.path("dir/big")).unwrap(),
        data,
        "bytes intact through the pool"
    );
    assert_eq!(
        holders(&b, "dir/big"),
        vec![1],
        "the file moved to the big branch"
    );
    assert_eq!(
        fs::read(big.path.join("dir/big")).unwrap(),
        data,
        "bytes intact on the branch"
    );
}

#[test]
fn fuse_policy_cache_statfs_reuses_free_space_figures() {
    let test = "fuse_policy_cache_statfs_reuses_free_space_figures";
    let (Some(small), Some(large)) = (Tmpfs::new(test, "8m"), Tmpfs::new(test, "16m")) else {
        return;
    };
    let mnt = tempfile::tempdir().unwrap();
    let b = [small.path.as_path(), large.path.as_path()];
    let options = "category.create=mfs,minfreespace=0,cache.statfs=3600";
    let Some(pool) = Pool::mount(test, &list(&b), mnt.path(), options) else {
        return;
    };
    fs::write(pool.path("first"), b"x").unwrap();
    assert_eq!(
        holders(&b, "first"),
        vec![1],
        "mfs: the 16 MiB branch has most free"
    );
    // Fill the large branch behind the pool's back: it now has less free than the
    // small one, but for up to an hour the pool keeps using the figures it read.
    fs::write(b[1].join("filler"), vec![0u8; 12 << 20]).unwrap();
    fs::write(pool.path("second"), b"x").unwrap();
    assert_eq!(
        holders(&b, "second"),
        vec![1],
        "cached figures were not used"
    );
    // With the cache off, the policy reads the branches again.
    let name = "user.mergerfs.cache.statfs";
    common::fuse::setx(&pool.path(".mergerfs"), name, "0").unwrap();
    fs::write(pool.path("third"), b"x").unwrap();
    assert_eq!(
        holders(&b, "third"),
        vec![0],
        "fresh figures: the small branch"
    );
    assert_eq!(
        common::fuse::getx(&pool.path(".mergerfs"), name).unwrap(),
        b"0"
    );
}
