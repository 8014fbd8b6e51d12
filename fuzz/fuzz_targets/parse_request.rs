//! Fuzz target: `protocol::request::parse` on arbitrary bytes, under a few value
//! size limits. It checks what the connection code relies on: no panic, frames
//! that match their header, determinism, prefixes that parse the same or not at
//! all, a buffer of `max_frame` bytes always being enough, and a whole-frame walk
//! through the buffer that terminates.
//!
//! ```text
//!  input:  | frame 0 (24 + body) | frame 1 | ... | partial frame |
//!            ^ parse              ^ pos += len (Ok) or skip (Skip)
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use pincache::protocol::header::{be16, be32, be64, REQUEST_MAGIC};
use pincache::protocol::request::{frame_len, parse, Limits, ParseError, Request};
use pincache::protocol::{Opcode, Status, HEADER_LEN, MAX_KEY_LEN};

/// Value limits to parse under: none allowed, tiny, small, and memcached's `-I 1m`.
const VALUE_LIMITS: [usize; 4] = [0, 64, 1024, 1 << 20];
/// Longest extras any command takes (INCREMENT / DECREMENT).
const MAX_EXTRAS_LEN: usize = 20;
/// Inputs up to this long have every prefix checked; longer ones a sample.
const ALL_PREFIXES_UP_TO: usize = 512;

fuzz_target!(|data: &[u8]| {
    for max_value_len in VALUE_LIMITS {
        let limits = Limits { max_value_len };
        check_front(data, &limits);
        check_prefixes(data, &limits);
        walk(data, &limits);
    }
});

/// The largest buffer a connection grows for one frame (as the event loop computes it).
fn max_frame(limits: &Limits) -> usize {
    HEADER_LEN + MAX_EXTRAS_LEN + MAX_KEY_LEN + limits.max_value_len
}

/// Whether `part` lies inside `whole` (pointer ranges, not contents).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    part.is_empty() || (p >= w && p + part.len() <= w + whole.len())
}

/// The header fields of a request at the front of `data` (which has >= 24 bytes).
struct Header {
    opcode: u8,
    key_len: usize,
    extras_len: usize,
    body_len: usize,
    opaque: u32,
    cas: u64,
}

fn header(data: &[u8]) -> Header {
    Header {
        opcode: data[1],
        key_len: usize::from(be16(data, 2)),
        extras_len: usize::from(data[4]),
        body_len: be32(data, 8) as usize,
        opaque: be32(data, 12),
        cas: be64(data, 16),
    }
}

/// The request's fixed fields echo the header and its slices sit where the
/// header says, inside the frame.
fn check_request(data: &[u8], frame: &[u8], request: &Request<'_>, h: &Header) {
    assert_eq!(request.opcode, h.opcode);
    assert_eq!(request.opaque, h.opaque);
    assert_eq!(request.cas, h.cas);
    let op = Opcode::from_u8(h.opcode);
    if let Some(op) = op.filter(|op| *op != Opcode::Verbosity) {
        assert_eq!((request.command, request.quiet), op.base());
    }
    assert!(
        request.key.len() <= MAX_KEY_LEN,
        "key of {}",
        request.key.len()
    );
    assert!(within(frame, request.key), "key outside the frame");
    assert!(within(frame, request.value), "value outside the frame");
    if !request.key.is_empty() {
        let at = request.key.as_ptr() as usize - data.as_ptr() as usize;
        assert_eq!(at, HEADER_LEN + h.extras_len, "key not after the extras");
        assert_eq!(request.key.len(), h.key_len);
    }
}

fn check_front(data: &[u8], limits: &Limits) {
    let first = parse(data, limits);
    assert_eq!(first, parse(data, limits), "parse is not deterministic");
    if data.len() < HEADER_LEN {
        assert_eq!(first, Err(ParseError::Incomplete));
        assert_eq!(frame_len(data), None);
        return;
    }
    let h = header(data);
    let declared = HEADER_LEN as u64 + h.body_len as u64;
    assert_eq!(frame_len(data), Some(declared));
    match first {
        Ok((request, len)) => {
            assert_eq!(data[0], REQUEST_MAGIC);
            assert_eq!(len as u64, declared, "frame length is not 24 + body length");
            assert!(
                len <= data.len(),
                "frame of {len} from {} bytes",
                data.len()
            );
            check_request(data, &data[..len], &request, &h);
            assert_eq!(
                request.key.len() + request.value.len() + h.extras_len,
                h.body_len,
                "extras + key + value is not the body"
            );
            if !request.value.is_empty() {
                let at = request.value.as_ptr() as usize - data.as_ptr() as usize;
                assert_eq!(at, HEADER_LEN + h.extras_len + h.key_len);
            }
            assert!(
                request.value.len() <= limits.max_value_len,
                "value over limit"
            );
        }
        Err(ParseError::Skip {
            request,
            status,
            skip,
        }) => {
            assert_eq!(data[0], REQUEST_MAGIC);
            assert!(skip >= HEADER_LEN as u64, "skip of {skip}");
            assert_eq!(skip, declared, "skip is not the whole frame");
            assert!(
                matches!(status, Status::UnknownCommand | Status::ValueTooLarge),
                "{status:?}"
            );
            let end = data.len().min(skip as usize);
            check_request(data, &data[..end], &request, &h);
            assert!(request.value.is_empty());
            if status == Status::ValueTooLarge {
                assert!(h.body_len - h.extras_len - h.key_len > limits.max_value_len);
            }
        }
        Err(ParseError::Invalid {
            opcode,
            opaque,
            status,
        }) => {
            assert_eq!(data[0], REQUEST_MAGIC);
            assert_eq!((opcode, opaque), (h.opcode, h.opaque));
            assert!(
                matches!(status, Status::UnknownCommand | Status::InvalidArguments),
                "{status:?}"
            );
        }
        Err(ParseError::BadMagic) => assert_ne!(data[0], REQUEST_MAGIC),
        Err(ParseError::Incomplete) => {
            // The connection grows its buffer to min(frame length, max_frame)
            // and waits: that many bytes must be enough for an answer.
            let room = declared.min(max_frame(limits) as u64) as usize;
            assert!(
                data.len() < room,
                "incomplete with {} bytes although the buffer may hold only {room}",
                data.len()
            );
            let mut padded = data.to_vec();
            padded.resize(room, 0);
            assert_ne!(
                parse(&padded, limits),
                Err(ParseError::Incomplete),
                "a full {room}-byte buffer is still incomplete: the connection would stall"
            );
        }
    }
}

/// A prefix of the input parses as incomplete or exactly as the whole input does,
/// so how the stream was split into reads never changes the outcome.
fn check_prefixes(data: &[u8], limits: &Limits) {
    let whole = parse(data, limits);
    let mut check = |cut: usize| {
        let part = parse(&data[..cut], limits);
        assert!(
            part == Err(ParseError::Incomplete) || part == whole,
            "prefix of {cut} bytes parses as {part:?}, the whole input as {whole:?}"
        );
    };
    if data.len() <= ALL_PREFIXES_UP_TO {
        (0..data.len()).for_each(&mut check);
    } else {
        let n = data.len();
        for cut in [0, 1, 23, 24, 25, n / 2, n - 1] {
            check(cut);
        }
        if let Some(len) = frame_len(data) {
            for cut in [len.saturating_sub(1), len] {
                if (cut as usize) < n {
                    check(cut as usize);
                }
            }
        }
    }
}

/// Advancing by whole frames (or skips) through the buffer terminates.
fn walk(data: &[u8], limits: &Limits) {
    let mut pos = 0usize;
    let mut steps = 0usize;
    while pos < data.len() {
        steps += 1;
        assert!(
            steps <= data.len() / HEADER_LEN + 1,
            "walk does not advance"
        );
        match parse(&data[pos..], limits) {
            Ok((_, len)) => {
                assert!(len >= HEADER_LEN);
                pos += len;
            }
            Err(ParseError::Skip { skip, .. }) => {
                assert!(skip >= HEADER_LEN as u64);
                match usize::try_from(skip) {
                    Ok(skip) if skip <= data.len() - pos => pos += skip,
                    _ => break,
                }
            }
            Err(_) => break,
        }
    }
}
