//! The item memory: one mapping reserved for every segment up front, either
//! anonymous or (with `-e PATH`) a shared mapping of a file, meant for tmpfs, so
//! that the items outlive the process. Pages are committed by the kernel when
//! first written and handed back when a segment is freed, so RSS (or the tmpfs
//! file's size on disk) follows what is in use.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A transparent huge page on x86-64 and most arm64 kernels: the anonymous arena
/// starts on this boundary so that `-L` can have every 2 MiB of it as one page.
pub const HUGE_PAGE: usize = 2 << 20;

/// A zero-filled (when new), page-aligned byte region of fixed length.
pub struct Arena {
    ptr: *mut u8,
    len: usize,
    /// Backed by a file: freed pages must be punched out of the file, not only
    /// unmapped, for the memory to go back.
    shared: bool,
}

impl Arena {
    /// Reserves `len` bytes of address space, starting on a `HUGE_PAGE`
    /// boundary; no memory is committed yet. The alignment costs only address
    /// space (a reservation `HUGE_PAGE` longer, its unaligned ends unmapped).
    pub fn new(len: usize) -> io::Result<Arena> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let len = len.max(1);
        let mut wide = Self::map(len + HUGE_PAGE, flags, -1, false)?;
        let raw = wide.ptr as usize;
        let head = raw.next_multiple_of(HUGE_PAGE) - raw;
        // The tail is unmapped from the first page boundary after the arena.
        let kept = head + len.next_multiple_of(4096);
        let tail = wide.len.saturating_sub(kept);
        // SAFETY: both ranges lie inside the mapping just made, start page
        // aligned (mmap returns page-aligned memory) and nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(wide.ptr.cast(), head);
            }
            if tail > 0 {
                libc::munmap(wide.ptr.add(kept).cast(), tail);
            }
            wide.ptr = wide.ptr.add(head);
        }
        wide.len = len;
        Ok(wide)
    }

    /// `-L`: asks the kernel for transparent huge pages over the whole arena
    /// (`MADV_HUGEPAGE`; it matters when THP `enabled` is `madvise`).
    pub fn advise_huge_pages(&self) -> io::Result<()> {
        // SAFETY: exactly our mapping; the advice changes no contents.
        if unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_HUGEPAGE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the mapping starts on a `HUGE_PAGE` boundary.
    #[cfg(test)]
    pub fn huge_aligned(&self) -> bool {
        (self.ptr as usize).is_multiple_of(HUGE_PAGE)
    }

    /// Maps the first `len` bytes of `file` shared: writes land in the file.
    /// The file must be at least `len` bytes long.
    pub fn map_file(file: &File, len: usize) -> io::Result<Arena> {
        Self::map(len, libc::MAP_SHARED, file.as_raw_fd(), true)
    }

    fn map(len: usize, flags: libc::c_int, fd: libc::c_int, shared: bool) -> io::Result<Arena> {
        let len = len.max(1);
        // SAFETY: a mapping with no fixed address has no preconditions on our
        // memory; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Arena {
            ptr: ptr.cast(),
            len,
            shared,
        })
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is our mapping for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Gives the pages of `start..start + len` back to the kernel; they read as
    /// zeroes afterwards. Both ends must be page aligned for the whole range to go.
    pub fn release(&mut self, start: usize, len: usize) {
        let end = (start + len).min(self.len);
        if start >= end {
            return;
        }
        // A shared file mapping keeps its pages in the file unless they are
        // punched out (MADV_REMOVE, supported by tmpfs and most file systems);
        // where that fails, dropping our mapping of them is the best we can do.
        let advice = if self.shared {
            libc::MADV_REMOVE
        } else {
            libc::MADV_DONTNEED
        };
        // SAFETY: the range lies inside our mapping; neither advice can
        // invalidate the mapping itself.
        let failed = unsafe { libc::madvise(self.ptr.add(start).cast(), end - start, advice) } != 0;
        if failed && self.shared {
            // SAFETY: as above.
            unsafe {
                libc::madvise(self.ptr.add(start).cast(), end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

impl Arena {
    /// Writes a file-backed arena's dirty pages to the file and waits (needed
    /// before a restart record is trusted on a file system that is not tmpfs).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: exactly our mapping.
        if unsafe { libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_arenas_start_on_a_huge_page_boundary_and_keep_their_length() {
        for len in [1, 4096, 3 << 20, (64 << 20) + 4096, 12345] {
            let mut a = Arena::new(len).unwrap();
            assert!(a.huge_aligned(), "len {len}");
            assert_eq!(a.bytes().len(), len);
            let last = len - 1;
            a.bytes_mut()[last] = 7;
            assert_eq!(a.bytes()[last], 7);
        }
    }
}
