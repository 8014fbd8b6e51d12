//! Warm restart with `-e PATH`: opening the memory file, deciding whether its
//! contents can be trusted (a clean stop's record beside it that matches), and
//! rebuilding the index by walking the live segments. Anything doubtful starts
//! cold with a reason; nothing here exits or panics over a file's contents.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::arena::Arena;
use super::clock::Clock;
use super::index::Index;
use super::item::{self, DEAD};
use super::restart::{meta_path, Meta};
use super::segments::{Segments, State};

/// tmpfs's `f_type` from statfs(2): memory, so keeping the file costs no writeback.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// How a start with `-e` went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The items of a clean stop are back.
    Restored {
        items: u64,
        bytes: u64,
        /// Items that expired while the server was down.
        expired: u64,
        micros: u64,
        /// With `--verify-restore`: how long the consistency check took.
        verified_micros: Option<u64>,
    },
    /// Started empty; the reason says why nothing was restored.
    Cold { reason: String },
}

/// What the walk found.
pub struct Rebuilt {
    pub items: u64,
    pub expired: u64,
    /// Highest CAS of any live item.
    pub max_cas: u64,
}

/// Unix time in nanoseconds.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether `file` lives on tmpfs (None if statfs fails).
pub fn on_tmpfs(file: &File) -> Option<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: statfs is plain data; fstatfs fills it or fails.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a pointer to a statfs we own.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64 == TMPFS_MAGIC)
}

/// Opens (creating if needed) the memory file and takes an exclusive lock on
/// it, held while the file stays open: a second server on the same file (a
/// restart begun before the old process exited) must not empty the memory the
/// first one is using.
pub fn open_file(path: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == ErrorKind::WouldBlock {
            return Err(io::Error::new(
                ErrorKind::AddrInUse,
                "in use by another running server",
            ));
        }
        return Err(e);
    }
    Ok(file)
}

/// Empties the memory file and sizes it to `len` bytes of zeroes (no pages held).
pub fn reinitialise(file: &File, len: usize) -> io::Result<()> {
    file.set_len(0)?;
    file.set_len(len as u64)
}

/// Reads the record beside `path` and removes it at once, so that a crash from
/// here on cannot be mistaken for a clean stop. Err is the cold-start reason.
pub fn take_meta(path: &Path) -> Result<Meta, String> {
    let meta = meta_path(path);
    let bytes = match fs::read(&meta) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!(
                "no metadata at {} (the last stop was not clean: a crash, SIGKILL or power loss, or a first start)",
                meta.display()
            ))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", meta.display())),
    };
    if let Err(e) = fs::remove_file(&meta) {
        return Err(format!("cannot remove {}: {e}", meta.display()));
    }
    Meta::decode(&bytes).map_err(|e| e.to_string())
}

/// Checks a record against this start: geometry, file size, clock.
pub fn check_meta(
    meta: &Meta,
    expected: (u64, u64, u64),
    file_len: u64,
    arena_len: usize,
) -> Result<(), String> {
    let (memory_limit, item_size_max, segment_len) = expected;
    if meta.memory_limit != memory_limit {
        return Err(format!(
            "-m differs: stopped with {} MiB, starting with {} MiB",
            meta.memory_limit >> 20,
            memory_limit >> 20
        ));
    }
    if meta.item_size_max != item_size_max || meta.segment_len != segment_len {
        return Err(format!(
            "-I or segment size differs: stopped with -I {} (segments {}), starting with -I {} (segments {})",
            meta.item_size_max, meta.segment_len, item_size_max, segment_len
        ));
    }
    if file_len != arena_len as u64 {
        return Err(format!(
            "memory file is {file_len} bytes, expected {arena_len}"
        ));
    }
    if unix_nanos() < meta.stopped_unix_nanos {
        return Err("the clock went backwards since the stop".to_string());
    }
    Ok(())
}

/// Maps the file, takes the record's segment states and walks them.
pub fn restore(
    file: &File,
    segment_len: usize,
    count: usize,
    meta: &Meta,
) -> Result<(Segments, Index, Clock, Rebuilt), String> {
    let arena = Arena::map_file(file, segment_len * count).map_err(|e| e.to_string())?;
    let mut segments = Segments::new(arena, segment_len, count);
    segments.restore(&meta.segments, &meta.fifo)?;
    // Checked and removed above; a clock set back between the check and here
    // still refuses.
    let clock = Clock::resume(meta.clock_epoch_unix)
        .ok_or("the clock went backwards since the stop (or is out of range)")?;
    // The record's item count sizes the index; no more items than the smallest
    // item (10 bytes) fits in the arena, whatever the record says.
    let items = (meta.items as usize).min(segment_len * count / 10);
    let mut index = Index::with_capacity(segments.align_shift(), items);
    let rebuilt = rebuild(&mut segments, &mut index, &clock)?;
    Ok((segments, index, clock, rebuilt))
}

/// Rebuilds the index from every open and sealed segment: live items go back
/// in, items that expired meanwhile are marked dead, and anything that is not a
/// whole item, or a key found live twice, refuses the whole restore.
pub fn rebuild(
    segments: &mut Segments,
    index: &mut Index,
    clock: &Clock,
) -> Result<Rebuilt, &'static str> {
    let mut found = Rebuilt {
        items: 0,
        expired: 0,
        max_cas: 0,
    };
    for id in 0..segments.count() as u32 {
        if matches!(segments.get(id).state, State::Open | State::Sealed) {
            walk_segment(segments, index, clock, id, &mut found)?;
        }
    }
    segments.free_empty_sealed();
    Ok(found)
}

fn walk_segment(
    segments: &mut Segments,
    index: &mut Index,
    clock: &Clock,
    id: u32,
    found: &mut Rebuilt,
) -> Result<(), &'static str> {
    let base = segments.base(id);
    let end = segments.get(id).write_at;
    let mut at = 0;
    while at < end {
        let header = item::decode_checked(&segments.bytes()[base + at..base + end])
            .ok_or("a segment holds bytes that are not a whole item")?;
        let addr = base + at;
        if header.bits & DEAD != 0 {
            // Overwritten or deleted before the stop.
        } else if clock.is_expired(header.expiry) {
            segments.bytes_mut()[addr] |= DEAD;
            found.expired += 1;
        } else {
            let hash = index.hash(segments.key(addr, &header));
            if index
                .insert(hash, segments.key(addr, &header), addr, segments.bytes())
                .is_some()
            {
                return Err("a key is live twice in the segments");
            }
            segments.note_written(addr, header.total_len(), header.expiry);
            found.items += 1;
            found.max_cas = found.max_cas.max(header.cas);
        }
        at = segments.next_at(at, &header);
    }
    Ok(())
}

/// A restore that worked: the parts of a store, and what the record said.
pub struct Restored {
    pub segments: Segments,
    pub index: Index,
    pub clock: Clock,
    pub rebuilt: Rebuilt,
    pub meta: Meta,
}

/// Opens `path` for a store of `count` segments of `segment_len` bytes and
/// restores it if the last stop was clean and everything matches; Err(reason)
/// otherwise, with the file left for the caller to re-initialise.
pub fn open(
    path: &Path,
    expected: (u64, u64, u64),
    segment_len: usize,
    count: usize,
) -> io::Result<(File, Result<Restored, String>)> {
    let file = open_file(path)?;
    let file_len = file.metadata()?.len();
    let restored = take_meta(path).and_then(|meta| {
        check_meta(&meta, expected, file_len, segment_len * count)?;
        let (segments, index, clock, rebuilt) = restore(&file, segment_len, count, &meta)?;
        Ok(Restored {
            segments,
            index,
            clock,
            rebuilt,
            meta,
        })
    });
    Ok((file, restored))
}
