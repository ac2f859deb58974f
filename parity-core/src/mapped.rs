//! Reading cached file ranges through shared mappings, for the passes that only read
//! (scrub, check and fix).
//!
//! When the data is already in the page cache, a mapping hands the stage the cached
//! pages themselves, where `pread` first copied every byte: that copy was over a
//! third of the CPU time of a scrub of a warm array. Only ranges whose pages are all
//! cached are mapped (asked with `cachestat`, or `mincore` on kernels before 6.5);
//! everything else is read with `pread`, whose read-ahead suits cold disks.
//!
//! A mapped page can still fail after it was mapped: the file is truncated under
//! us, or a page the kernel evicted meanwhile cannot be read back. The kernel then
//! raises SIGBUS at the instruction that reads it. A handler installed with the
//! first window puts a page of zeros there and flags the window, so the reader
//! carries on; the pipeline then reports the file as changed, or the block as
//! unreadable when the file is unchanged. A SIGBUS anywhere else goes to the
//! handling that was there before.
//!
//! The bytes of a window are shared memory: another process writing the file, or
//! the zero page put in by the handler, changes them under a live slice. Readers
//! must treat them as a snapshot that may move: hash and compare them, and copy
//! them first where a result must come from exactly the bytes that were checked.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

/// A read-only shared mapping of a range of a file whose pages were all cached
/// when it was made. Dropping it unmaps the range and leaves the page cache as it
/// was: those pages were cached before the pass came (someone else's, or recent),
/// so a pass does not evict them, while what it reads with `pread` (what it
/// brought in itself) is let go after each block.
pub(crate) struct Window {
    /// Start of the mapping, on a page boundary.
    base: *const u8,
    len: usize,
    /// File offset of `base`.
    offset: u64,
    file: Arc<File>,
    /// This window's entry in the fault registry (`usize::MAX`: not handed out).
    slot: usize,
    /// The owner's count of live windows, decremented on drop.
    live: Arc<AtomicUsize>,
    /// Let the page cache drop the range on unmap: its pages may have been brought
    /// in by the pass itself (see `map_cached`).
    let_go: bool,
}

// SAFETY: the mapping is read-only and owned by the window; it is unmapped only in
// `drop`, when no reference to its bytes can be left.
unsafe impl Send for Window {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Window {}

impl Window {
    /// Maps `len` bytes of `file` from `offset` when every page of the range is in
    /// the page cache and the mapping can be populated; `None` otherwise (read the
    /// range with `pread` instead). `live` counts the caller's windows while they
    /// live.
    ///
    /// `let_go`: the pages may have been brought in by the pass itself (read-ahead
    /// of its `pread` of the range before makes them look cached). The cache then
    /// drops the range when the window is unmapped, as for a range read with
    /// `pread`, and the window's faults start no read-ahead: the read-ahead marks
    /// in those pages would otherwise fill the cache further ahead, with pages that
    /// would then look cached before the pass. (Other windows keep read-ahead: a
    /// mapping without it was about 8% slower in a warm scrub.)
    pub(crate) fn map_cached(
        file: &Arc<File>,
        offset: u64,
        len: usize,
        live: &Arc<AtomicUsize>,
        let_go: bool,
    ) -> Option<Window> {
        let page = page_size();
        let start = offset - offset % page as u64;
        let len = usize::try_from(offset - start).ok()? + len;
        let map_offset = libc::off_t::try_from(start).ok()?;
        if len == 0 {
            return None;
        }
        // Asked before mapping where the kernel can tell: a range that is not all
        // cached is then never mapped at all.
        let asked = all_cached(file, start, len, page);
        if asked == Some(false) {
            return None;
        }
        install_handler();
        let base = map_read_only(file, len, map_offset)?;
        live.fetch_add(1, Ordering::Relaxed);
        let mut window = Window {
            base: base.cast::<u8>().cast_const(),
            len,
            offset: start,
            file: Arc::clone(file),
            slot: usize::MAX,
            live: Arc::clone(live),
            let_go,
        };
        if asked.is_none() && !window.all_mapped_cached(page) {
            return None;
        }
        if let_go {
            // SAFETY: advice on the mapping this window owns.
            unsafe { libc::madvise(base, len, libc::MADV_RANDOM) };
        }
        // Maps every page now, in the reader's thread, instead of one fault per
        // 64 KiB in the stage. Fails (EFAULT) on pages past the end of the file or
        // that cannot be read: then `pread` tells what is wrong.
        // SAFETY: advice on the mapping this window owns.
        let populated =
            unsafe { libc::madvise(base, len, libc::MADV_POPULATE_READ) } == 0 || !populate_known();
        if !populated {
            return None;
        }
        window.slot = register(base as usize, len)?;
        Some(window)
    }

    /// The file the window maps.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The `len` bytes at file offset `at`, when the window holds all of them.
    pub(crate) fn bytes(&self, at: u64, len: usize) -> Option<&[u8]> {
        let from = usize::try_from(at.checked_sub(self.offset)?).ok()?;
        if from.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: inside the mapping, which lives as long as `self`; pages that fail
        // to read are replaced by zeros (see the module's notes), never left unmapped.
        Some(unsafe { std::slice::from_raw_parts(self.base.add(from), len) })
    }

    /// Whether some page of the window failed while mapped (and reads as zeros).
    pub(crate) fn faulted(&self) -> bool {
        REGISTRY[self.slot].faulted.load(Ordering::Acquire)
    }

    /// Whether every page of the mapping is cached, asked with `mincore` (for
    /// kernels without `cachestat`).
    fn all_mapped_cached(&self, page: usize) -> bool {
        mapped_pages_cached(self.base, self.len, page)
    }
}

/// A new read-only shared mapping of `len` bytes of `file` from `offset` (a page
/// boundary), where the kernel picks; the caller unmaps it.
fn map_read_only(file: &File, len: usize, offset: libc::off_t) -> Option<*mut libc::c_void> {
    // SAFETY: a new mapping of an open file at an address the kernel picks; nothing
    // refers to it yet.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset,
        )
    };
    (base != libc::MAP_FAILED).then_some(base)
}

/// Whether every page of the `len` bytes mapped at `base` is in the page cache.
fn mapped_pages_cached(base: *const u8, len: usize, page: usize) -> bool {
    let mut resident = vec![0u8; len.div_ceil(page)];
    // SAFETY: `resident` has one byte per page of the range, which the caller has
    // mapped; mincore only writes `resident`.
    let asked = unsafe { libc::mincore(base.cast_mut().cast(), len, resident.as_mut_ptr().cast()) };
    asked == 0 && resident.iter().all(|r| r & 1 == 1)
}

impl Drop for Window {
    fn drop(&mut self) {
        // Out of the registry before the range is unmapped: the kernel may hand the
        // same addresses to the next window at once.
        let handed_out = self.slot != usize::MAX;
        if handed_out {
            unregister(self.slot);
        }
        // SAFETY: the mapping this window made; no reference to it outlives `self`.
        unsafe { libc::munmap(self.base.cast_mut().cast(), self.len) };
        if handed_out && self.let_go {
            crate::pipeline::drop_cached(&self.file, self.offset, self.len);
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `cachestat`'s system call number on the architectures that share the common
/// system call table (elsewhere the residency is asked with `mincore`).
const SYS_CACHESTAT: Option<libc::c_long> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "powerpc64",
    target_arch = "s390x"
)) {
    Some(451)
} else {
    None
};

/// Set once the kernel answered that it has no `cachestat`.
static CACHESTAT_MISSING: AtomicBool = AtomicBool::new(false);

/// Whether every page of `len` bytes of `file` from `offset` is in the page cache,
/// where the kernel can tell without a mapping (`cachestat`); false when it cannot.
pub(crate) fn known_cached(file: &File, offset: u64, len: usize) -> bool {
    let page = page_size();
    let start = offset - offset % page as u64;
    let Ok(lead) = usize::try_from(offset - start) else {
        return false;
    };
    len > 0 && all_cached(file, start, lead + len, page) == Some(true)
}

/// Whether every page of `len` bytes of `file` from `start` (a page boundary) is
/// in the page cache, asked with `cachestat` (Linux 6.5): it counts cached pages
/// a folio at a time, where `mincore` needs a mapping and looks up every page.
/// `None` where the kernel does not have it (it is then not asked again), or
/// refuses it for this file.
fn all_cached(file: &File, start: u64, len: usize, page: usize) -> Option<bool> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let number = SYS_CACHESTAT?;
    if CACHESTAT_MISSING.load(Ordering::Relaxed) {
        return None;
    }
    let range = Range {
        off: start,
        len: len as u64,
    };
    let mut stat = Stat::default();
    // SAFETY: the kernel reads `range` and writes `stat`, both valid for the call.
    let rc = unsafe {
        libc::syscall(
            number,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if rc == 0 {
        return Some(stat.nr_cache >= len.div_ceil(page) as u64);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) => {
            CACHESTAT_MISSING.store(true, Ordering::Relaxed);
            None
        }
        // Refused for this file (recent kernels answer only for files the caller
        // may write) or by a seccomp filter: asked the old way this time.
        Some(libc::EPERM) => None,
        // Anything else about this file: `pread` tells what is wrong.
        _ => Some(false),
    }
}

/// Gives every whole page of `buf` its own writable page now, in the calling thread.
/// A buffer fresh from the allocator has no pages yet; the first read of one maps
/// the shared zero page, and the first write after that must replace it, which
/// interrupts every other core the process runs on (a TLB shootdown, a host exit
/// per core on a virtual machine). Buffers that are read and written for a whole
/// run are populated once instead. Purely advisory: the bytes do not change, and
/// on kernels before 5.14 nothing happens.
pub(crate) fn populate_write(buf: &mut [u8]) {
    let page = page_size();
    let addr = buf.as_mut_ptr() as usize;
    let start = addr.next_multiple_of(page);
    let end = (addr + buf.len()) / page * page;
    if end > start {
        // SAFETY: advice on whole pages inside a buffer this thread holds mutably;
        // populating keeps their contents.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

/// Whether this kernel knows `MADV_POPULATE_READ` (Linux 5.14); without it the
/// pages are mapped on first touch instead.
fn populate_known() -> bool {
    static KNOWN: AtomicUsize = AtomicUsize::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // Populating nothing is valid advice where the kernel knows it.
            let page = page_size();
            // SAFETY: a private anonymous page, unmapped right after the question.
            let known = unsafe {
                let p = libc::mmap(
                    ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    true
                } else {
                    let known = libc::madvise(p, page, libc::MADV_POPULATE_READ) == 0;
                    libc::munmap(p, page);
                    known
                }
            };
            KNOWN.store(if known { 1 } else { 2 }, Ordering::Relaxed);
            known
        }
    }
}

/// The system's page size, once known (also read by the SIGBUS handler).
static PAGE: AtomicUsize = AtomicUsize::new(0);

/// The system's page size.
fn page_size() -> usize {
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf only reads a system value.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
                .ok()
                .filter(|p| p.is_power_of_two())
                .unwrap_or(4096);
            PAGE.store(page, Ordering::Relaxed);
            page
        }
        page => page,
    }
}

/// One live window, as the SIGBUS handler sees it: `[start, end)` in memory.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

/// Windows alive at once, at most: readers keep their own count below this (see
/// `pipeline`), and when all slots are taken anyway, ranges are read with `pread`.
const SLOTS: usize = 4096;

static REGISTRY: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        faulted: AtomicBool::new(false),
    }
}; SLOTS];

/// Claims a registry slot for `[start, start + len)`.
fn register(start: usize, len: usize) -> Option<usize> {
    REGISTRY.iter().position(|slot| {
        let claimed = slot
            .start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if claimed {
            slot.faulted.store(false, Ordering::Release);
            slot.end.store(start + len, Ordering::Release);
        }
        claimed
    })
}

fn unregister(slot: usize) {
    let slot = &REGISTRY[slot];
    slot.end.store(0, Ordering::Release);
    slot.start.store(0, Ordering::Release);
}

/// The registry slot whose window holds `addr`, as the handler sees it: `start`
/// is read again after `end`, so a slot reused meanwhile does not match.
fn slot_of(addr: usize) -> Option<&'static Slot> {
    REGISTRY.iter().find(|slot| {
        let start = slot.start.load(Ordering::Acquire);
        start != 0
            && addr >= start
            && addr < slot.end.load(Ordering::Acquire)
            && slot.start.load(Ordering::Acquire) == start
    })
}

/// The SIGBUS handling that was in place before ours, for faults that are not in
/// a window.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        page_size();
        // SAFETY: sigaction with a handler that only does async-signal-safe work
        // (atomics, mmap, sigaction); the previous action is kept for faults that
        // are not ours and is never freed.
        unsafe {
            let previous: *mut libc::sigaction = Box::into_raw(Box::new(std::mem::zeroed()));
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, previous) == 0 {
                PREVIOUS.store(previous, Ordering::Release);
            }
        }
    });
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // A fault (si_code > 0) in a window: zeros there, and the reading goes on.
    if code > 0 {
        if let Some(slot) = slot_of(addr) {
            let page = PAGE.load(Ordering::Relaxed).max(1);
            let at = addr - addr % page;
            // SAFETY: replaces one page of a live window (ours, registered) with
            // a private page of zeros. mmap leaves errno alone when it succeeds.
            let zeros = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if zeros != libc::MAP_FAILED {
                slot.faulted.store(true, Ordering::Release);
                return;
            }
        }
    }
    // Not ours: whatever handled SIGBUS before. A handler is called; the default
    // or an ignored SIGBUS becomes the default again, and the repeated fault (or
    // the signal raised again) takes its course.
    let previous = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: `previous` was filled by sigaction at install time and never freed;
    // a handler in it has the signature its flags say.
    unsafe {
        if !previous.is_null() {
            let action = &*previous;
            let handler = action.sa_sigaction;
            if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                if action.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(handler);
                    f(signal, info, context);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                    f(signal);
                }
                return;
            }
        }
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        if code <= 0 {
            libc::raise(libc::SIGBUS);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// A file written and still in the page cache, in the workspace's target
    /// folder (a real filesystem, where dropping pages from the cache works).
    pub(crate) fn cached_file(bytes: &[u8]) -> (tempfile::TempDir, Arc<File>) {
        let dir = scratch_dir();
        let path = dir.path().join("f");
        let mut f = File::create(&path).expect("create");
        f.write_all(bytes).expect("write");
        drop(f);
        (dir, Arc::new(File::open(&path).expect("open")))
    }

    /// A temporary folder under the workspace's `target/`.
    pub(crate) fn scratch_dir() -> tempfile::TempDir {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        std::fs::create_dir_all(&target).expect("target folder");
        tempfile::tempdir_in(target).expect("tempdir")
    }

    fn live() -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(0))
    }

    #[test]
    fn a_cached_range_reads_as_the_file() {
        let page = page_size();
        let bytes: Vec<u8> = (0..6 * page as u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_dir, file) = cached_file(&bytes);
        let count = live();
        let at = page + 100;
        let w = Window::map_cached(&file, at as u64, 2 * page, &count, false).expect("cached");
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert_eq!(
            w.bytes(at as u64, 2 * page),
            Some(&bytes[at..at + 2 * page])
        );
        assert_eq!(w.bytes(100, 10), None, "before the window");
        assert_eq!(w.bytes((at + 2 * page) as u64, 1), None, "past the window");
        assert!(!w.faulted());
        drop(w);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_truncated_file_reads_as_zeros_and_flags_the_window() {
        let page = page_size();
        let bytes = vec![0xa5u8; 4 * page];
        let (dir, file) = cached_file(&bytes);
        let w = Window::map_cached(&file, 0, bytes.len(), &live(), false).expect("cached");
        let shorter = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f"))
            .expect("open");
        shorter.set_len(page as u64).expect("truncate");
        let seen = w.bytes(0, bytes.len()).expect("inside");
        assert_eq!(seen[..page], bytes[..page]);
        assert!(
            seen[page..].iter().all(|&b| b == 0),
            "past the new end: zeros"
        );
        assert!(w.faulted());
    }

    #[test]
    fn cachestat_and_mincore_agree_on_what_is_cached() {
        let page = page_size();
        let (_dir, file) = cached_file(&vec![7u8; 4 * page]);
        let by_mincore = |start: usize, len: usize| {
            let base = map_read_only(&file, len, start as libc::off_t).expect("mapped");
            let cached = mapped_pages_cached(base.cast::<u8>().cast_const(), len, page);
            // SAFETY: the mapping made above, no longer used.
            unsafe { libc::munmap(base, len) };
            cached
        };
        let ranges = [
            (0, page),
            (0, 2 * page),
            (0, 2 * page + 64),
            (page, 3 * page),
            (3 * page, page),
        ];
        let agree = |what: &str| {
            for (start, len) in ranges {
                let want = by_mincore(start, len);
                if let Some(asked) = all_cached(&file, start as u64, len, page) {
                    assert_eq!(asked, want, "{what}: cachestat {start}+{len}");
                }
            }
        };
        assert!(by_mincore(0, 4 * page), "written pages are cached");
        agree("all cached");
        file.sync_all().expect("sync");
        crate::pipeline::drop_cached(&file, 0, 4 * page);
        assert!(!by_mincore(0, page), "dropped pages are not cached");
        agree("none cached");
        // Only the first page back: without read-ahead, one page is read.
        // SAFETY: advice on the test's open file.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        let mut one = vec![0u8; page];
        file.read_exact_at(&mut one, 0).expect("read");
        agree("first page cached");
    }

    #[test]
    fn a_file_the_caller_may_not_write_is_asked_the_old_way() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: running as another user needs root");
            return;
        }
        let page = page_size();
        let (_dir, file) = cached_file(&vec![7u8; 2 * page]);
        // As nobody, with root's read-only descriptor: recent kernels refuse
        // cachestat for a file the caller may not write. That must neither read as
        // "not cached" nor turn cachestat off for every other file.
        // SAFETY: the child makes system calls only (no allocation) and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = unsafe {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    3
                } else {
                    match all_cached(&file, 0, page, page) {
                        Some(false) => 1,
                        _ if CACHESTAT_MISSING.load(Ordering::Relaxed) => 2,
                        _ => 0,
                    }
                }
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waits for the child made above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1: refused as not cached; 2: turned off; 3: setuid failed"
        );
    }

    #[test]
    fn a_range_past_the_end_or_not_cached_is_not_mapped() {
        let page = page_size();
        let (_dir, file) = cached_file(&vec![1u8; 2 * page]);
        let count = live();
        assert!(Window::map_cached(&file, 0, 4 * page, &count, false).is_none());
        file.sync_all().expect("sync");
        crate::pipeline::drop_cached(&file, 0, 2 * page);
        assert!(Window::map_cached(&file, 0, 2 * page, &count, false).is_none());
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
