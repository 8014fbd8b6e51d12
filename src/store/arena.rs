//! The item memory: one anonymous mapping reserved for every segment up front.
//! Pages are committed by the kernel when first written and handed back with
//! `madvise(MADV_DONTNEED)` when a segment is freed, so RSS follows what is in use.

use std::io;

/// A zero-filled, page-aligned byte region of fixed length.
pub struct Arena {
    ptr: *mut u8,
    len: usize,
}

impl Arena {
    /// Reserves `len` bytes of address space; no memory is committed yet.
    pub fn new(len: usize) -> io::Result<Arena> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping with no fixed address has no
        // preconditions; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Arena {
            ptr: ptr.cast(),
            len,
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
        // SAFETY: the range lies inside our mapping; MADV_DONTNEED on private
        // anonymous memory only drops pages, it cannot invalidate the mapping.
        unsafe {
            libc::madvise(self.ptr.add(start).cast(), end - start, libc::MADV_DONTNEED);
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}
