//! The item memory: one mapping reserved for every segment up front, either
//! anonymous or (with `-e PATH`) a shared mapping of a file, meant for tmpfs, so
//! that the items outlive the process. Pages are committed by the kernel when
//! first written and handed back when a segment is freed, so RSS (or the tmpfs
//! file's size on disk) follows what is in use.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A zero-filled (when new), page-aligned byte region of fixed length.
pub struct Arena {
    ptr: *mut u8,
    len: usize,
    /// Backed by a file: freed pages must be punched out of the file, not only
    /// unmapped, for the memory to go back.
    shared: bool,
}

impl Arena {
    /// Reserves `len` bytes of address space; no memory is committed yet.
    pub fn new(len: usize) -> io::Result<Arena> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        Self::map(len, flags, -1, false)
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
