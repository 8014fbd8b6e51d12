//! One client connection: its socket, its input buffer, its ordered output queue
//! and its backpressure state. `drive` does all the work for one readiness event:
//! read until the socket is drained, answer every complete request, write.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mio::net::{TcpStream, UnixStream};

use super::arrival::Arrival;
use super::dispatch::{self, Context, Direct, Session};
use crate::protocol::HEADER_LEN;
use crate::store::Store;

/// The loop's one read buffer, shared by every connection: a socket is read into
/// it and its requests are answered straight from it, so an idle connection holds
/// no input buffer at all.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A connection that sends large SETs reads at most this much into the shared
/// buffer at a time: the part of a value that arrives in the same read as its
/// header is copied from there into its item (the rest is read straight into
/// it), so this bounds that copy, as memcached's 16 KiB read buffer
/// (`READ_BUFFER_SIZE`) bounds its own. A read that fills it shows a stream of
/// smaller requests, which then read the whole buffer again: pipelined small
/// requests do not pay four reads for one.
const LARGE_SET_READ_BYTES: usize = 16 * 1024;
/// A connection keeps a private input buffer only for bytes that did not make a
/// whole frame (or that wait behind a full output); this much is kept between uses.
const INPUT_KEEP_BYTES: usize = 16 * 1024;
/// Stop parsing a connection's input while this much output waits to be sent:
/// a client that never reads cannot grow our memory.
pub const OUTPUT_HIGH_WATER_BYTES: usize = 256 * 1024;
/// A GET answer's value this large goes to the socket with one writev instead
/// of being copied into the output queue first (memcached sends values from the
/// item too). Below it, one write for the whole batch costs less than a copy:
/// measured in server CPU per GET (docs/performance.md), a writev per value was
/// no cheaper at 4 KB and 16,000 B with one request in flight and up to 2x dearer
/// with 16 (a syscall and a TCP segment per value), and cheaper from 24 KB up.
pub const DIRECT_VALUE_BYTES: usize = 16 * 1024;
/// The loop's output buffer is kept up to this size (a batch stops near the
/// high-water mark, plus one answer); past it, it is given back after use.
const SHARED_OUTPUT_KEEP_BYTES: usize = 2 * OUTPUT_HIGH_WATER_BYTES;
/// Output capacity a connection keeps of its own between uses; a larger buffer,
/// grown while answers waited for a slow client, is given back once sent.
const OUTPUT_KEEP_BYTES: usize = 64 * 1024;

/// A TCP or unix-domain stream.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the connection lives on after a `drive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Open,
    Closed,
}

pub struct Connection {
    pub stream: Stream,
    pub peer: String,
    /// Bytes carried over between reads: input[in_start..in_end] is unparsed and
    /// `in_end == input.len()`; reads go into the spare capacity, so a large frame's
    /// buffer is never zero-filled first. No allocation while every read ends on a
    /// frame boundary.
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    output: Vec<u8>,
    /// Unsent bytes are output[out_start..].
    out_start: usize,
    /// Bytes of a refused frame still to discard.
    skip: u64,
    /// A storage command whose value is being read straight into its item: the
    /// next input bytes are its own. While it is here the input buffer is empty.
    arriving: Option<Arrival>,
    /// Reads into the shared buffer take `LARGE_SET_READ_BYTES`: set when a
    /// value of at least that size starts being read in place (and for a new
    /// connection), cleared by a read that fills that much and starts none.
    large_sets: bool,
    /// Close once the output is sent (QUIT, protocol error).
    closing: bool,
    /// The peer closed its side; answer what is buffered, then close.
    eof: bool,
    pub session: Session,
    pub last_active: Instant,
}

/// What one pass over some input achieved.
struct Consumed {
    bytes: usize,
    throttled: bool,
    need: Option<u64>,
}

impl Connection {
    pub fn new(stream: Stream, peer: String, now: Instant) -> Connection {
        Connection {
            stream,
            peer,
            input: Vec::new(),
            in_start: 0,
            in_end: 0,
            output: Vec::new(),
            out_start: 0,
            skip: 0,
            arriving: None,
            large_sets: true,
            closing: false,
            eof: false,
            session: Session::default(),
            last_active: now,
        }
    }

    /// Whether a value is being read straight into its item (memcached's
    /// `conn_nread` in `stats conns`).
    pub fn value_arriving(&self) -> bool {
        self.arriving.is_some()
    }

    /// How much of the shared buffer (`len` bytes) one read may fill.
    fn read_limit(&self, len: usize) -> usize {
        if self.large_sets {
            LARGE_SET_READ_BYTES.min(len)
        } else {
            len
        }
    }

    /// Whether a value of `LARGE_SET_READ_BYTES` or more is arriving.
    fn large_arriving(&self) -> bool {
        self.arriving
            .as_ref()
            .is_some_and(|a| a.value_len() >= LARGE_SET_READ_BYTES)
    }

    /// Bytes queued for the client and not yet taken by the socket.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.out_start
    }

    /// Handles one readiness event (or a resume after the output drained).
    /// `peer_closed`: the event reported the peer's FIN, which a short read would
    /// hide, so read until end of stream.
    ///
    /// With nothing queued, the answers are built in the loop's output buffer
    /// `shared_out` (as requests are read from its shared read buffer), handed
    /// back once sent: it stays grown and warm in cache. A buffer of its own
    /// per connection was given back after every large batch and regrown by
    /// doubling in the next (16 pipelined 16 KB GETs: each answer copied again
    /// up to four times, ~2 page faults per GET). A connection keeps the buffer
    /// only while its client has not taken everything, and the loop goes on
    /// with the connection's empty one.
    pub fn drive(
        &mut self,
        ctx: &mut Context<'_>,
        shared: &mut [u8],
        shared_out: &mut Vec<u8>,
        max_frame: usize,
        peer_closed: bool,
    ) -> Liveness {
        let borrowed = self.pending_output() == 0;
        if borrowed {
            self.output.clear();
            self.out_start = 0;
            std::mem::swap(&mut self.output, shared_out);
        }
        let liveness = self.serve(ctx, shared, max_frame, peer_closed);
        if borrowed && (self.pending_output() == 0 || liveness == Liveness::Closed) {
            self.output.clear();
            self.out_start = 0;
            std::mem::swap(&mut self.output, shared_out);
            if shared_out.capacity() > SHARED_OUTPUT_KEEP_BYTES {
                // A large value partly taken by the socket was copied in whole.
                *shared_out = Vec::new();
            }
        }
        if self.pending_output() == 0 && self.output.capacity() > OUTPUT_KEEP_BYTES {
            // Its own buffer, grown while the client was slow: give it back.
            self.output = Vec::new();
            self.out_start = 0;
        }
        liveness
    }

    /// `drive`'s work: read, answer and write until the socket is drained or
    /// the output must wait for the client.
    fn serve(
        &mut self,
        ctx: &mut Context<'_>,
        shared: &mut [u8],
        max_frame: usize,
        peer_closed: bool,
    ) -> Liveness {
        // A short read means the socket had no more: no extra read to learn that.
        let mut drained = false;
        loop {
            let throttled = self.answer_buffered(ctx, max_frame);
            if self.flush(ctx).is_err() {
                return Liveness::Closed;
            }
            if self.pending_output() > 0
                && (throttled || self.pending_output() >= OUTPUT_HIGH_WATER_BYTES)
            {
                // Parsing resumes on the writable event.
                ctx.stats.conn_yields += 1;
                return Liveness::Open;
            }
            if self.closing || self.eof {
                return if self.pending_output() == 0 {
                    Liveness::Closed
                } else {
                    Liveness::Open
                };
            }
            if throttled {
                // The output went at once: answer what is still buffered.
                continue;
            }
            if drained && !peer_closed {
                return Liveness::Open;
            }
            let read = if self.arriving.as_ref().is_some_and(|a| a.value_left() > 0) {
                self.fill_arriving(ctx, shared, max_frame)
            } else if self.in_start < self.in_end {
                self.fill_own(ctx)
            } else {
                self.fill_shared(ctx, shared, max_frame)
            };
            match read {
                Ok(Fill::Data { short }) => drained = short,
                Ok(Fill::Eof) => self.eof = true,
                Ok(Fill::WouldBlock) => return Liveness::Open,
                Err(_) => return Liveness::Closed,
            }
        }
    }

    /// The connection is going away: a value still arriving is given up (its
    /// item's room becomes dead space; the key keeps what it held).
    pub fn release(&mut self, store: &mut Store) {
        if let Some(arrival) = self.arriving.take() {
            arrival.abandon(store);
        }
    }

    /// Answers requests from `data`, honouring a pending skip and a value being
    /// read in place; stops at the output's high-water mark or at an
    /// incomplete frame.
    fn consume(&mut self, data: &[u8], ctx: &mut Context<'_>) -> Consumed {
        let mut at = 0;
        if self.skip > 0 {
            let dropped = self.skip.min(data.len() as u64);
            at = dropped as usize;
            self.skip -= dropped;
            if self.skip > 0 {
                return Consumed {
                    bytes: at,
                    throttled: false,
                    need: None,
                };
            }
        }
        loop {
            if let Some(arrival) = self.arriving.as_mut() {
                at += arrival.feed(&data[at..], ctx.store);
                if !arrival.is_complete() {
                    return Consumed {
                        bytes: at,
                        throttled: false,
                        need: None,
                    };
                }
                if let Some(arrival) = self.arriving.take() {
                    arrival.finish(ctx, &mut self.output);
                }
            }
            if self.closing || at == data.len() {
                return Consumed {
                    bytes: data.len(),
                    throttled: false,
                    need: None,
                };
            }
            let done = self.process(&data[at..], ctx);
            at += done.bytes;
            if self.arriving.is_none() {
                return Consumed { bytes: at, ..done };
            }
        }
    }

    /// One pass of the protocol over `data`; a value to be read in place is
    /// left in `self.arriving`.
    fn process(&mut self, data: &[u8], ctx: &mut Context<'_>) -> Consumed {
        let high_water = self.out_start + OUTPUT_HIGH_WATER_BYTES;
        let mut direct = Direct {
            socket: &mut self.stream,
            sent: &mut self.out_start,
            min_value: DIRECT_VALUE_BYTES,
        };
        let progress = dispatch::process(
            data,
            &mut self.output,
            Some(&mut direct),
            high_water,
            ctx,
            &mut self.session,
            &self.peer,
        );
        self.skip = progress.skip;
        if progress.close {
            self.closing = true;
        }
        self.arriving = progress.arrival;
        self.large_sets |= self.large_arriving();
        Consumed {
            bytes: progress.consumed,
            throttled: progress.throttled,
            need: progress.need,
        }
    }

    /// Answers what waits in the connection's own buffer; returns whether it
    /// stopped at the high-water mark.
    fn answer_buffered(&mut self, ctx: &mut Context<'_>, max_frame: usize) -> bool {
        if self.in_start == self.in_end {
            return false;
        }
        let input = std::mem::take(&mut self.input);
        let done = self.consume(&input[self.in_start..self.in_end], ctx);
        self.input = input;
        self.in_start += done.bytes;
        if self.closing {
            self.in_start = self.in_end;
        }
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
            self.input.clear();
            if self.input.capacity() > INPUT_KEEP_BYTES {
                // A large frame has been answered: give its buffer back.
                self.input = Vec::new();
            }
        } else {
            // Room for the rest of the frame (at least its header) after in_start,
            // so the next read has somewhere to go.
            let need = done
                .need
                .map_or(HEADER_LEN as u64, |n| n.min(max_frame as u64));
            self.make_room(need as usize);
        }
        done.throttled
    }

    /// Makes sure a frame of `need` bytes fits from `in_start`.
    fn make_room(&mut self, need: usize) {
        if self.in_start + need <= self.input.capacity() {
            return;
        }
        self.input.drain(..self.in_start);
        self.in_start = 0;
        self.in_end = self.input.len();
        if need > self.input.capacity() {
            // Capacity only: the bytes are written by the reads that follow.
            let want = need.max(INPUT_KEEP_BYTES);
            self.input.reserve_exact(want - self.input.len());
        }
    }

    /// Reads into the shared buffer and answers from it; what is left over (part
    /// of a frame, or requests held back by a full output) moves to our own buffer.
    fn fill_shared(
        &mut self,
        ctx: &mut Context<'_>,
        shared: &mut [u8],
        max_frame: usize,
    ) -> io::Result<Fill> {
        let limit = self.read_limit(shared.len());
        let n = match read_some(&mut self.stream, &mut shared[..limit], ctx)? {
            None => return Ok(Fill::WouldBlock),
            Some(0) => return Ok(Fill::Eof),
            Some(n) => n,
        };
        self.answer_read(ctx, &shared[..n], max_frame);
        if n == limit && !self.large_arriving() {
            self.large_sets = false;
        }
        Ok(Fill::Data { short: n < limit })
    }

    /// Reads the rest of an arriving value straight into its item, and what
    /// follows it into the shared buffer (at most `LARGE_SET_READ_BYTES` while
    /// the connection sends large SETs: it may be the next one), with one
    /// readv; answers what follows.
    fn fill_arriving(
        &mut self,
        ctx: &mut Context<'_>,
        shared: &mut [u8],
        max_frame: usize,
    ) -> io::Result<Fill> {
        let tail = self.read_limit(shared.len());
        let Some(arrival) = self.arriving.as_mut() else {
            return Ok(Fill::WouldBlock);
        };
        let room = arrival.room(ctx.store);
        let room_len = room.len();
        let n = match read_two(&self.stream, room, &mut shared[..tail])? {
            None => return Ok(Fill::WouldBlock),
            Some(0) => return Ok(Fill::Eof),
            Some(n) => n,
        };
        ctx.stats.bytes_read += n as u64;
        arrival.advance(n.min(room_len));
        let after = n.saturating_sub(room_len);
        // Also when nothing followed: a binary value is complete once in.
        self.answer_read(ctx, &shared[..after], max_frame);
        Ok(Fill::Data {
            short: n < room_len + tail,
        })
    }

    /// Answers what a read put in the shared buffer; what is left over (part of
    /// a frame, or requests held back by a full output) moves to our own buffer.
    fn answer_read(&mut self, ctx: &mut Context<'_>, read: &[u8], max_frame: usize) {
        let n = read.len();
        let done = self.consume(read, ctx);
        let rest = &read[done.bytes.min(n)..n];
        if !rest.is_empty() && !self.closing {
            let need = done
                .need
                .map_or(rest.len(), |need| need.min(max_frame as u64) as usize)
                .max(rest.len());
            self.input.clear();
            if self.input.capacity() < need {
                self.input.reserve_exact(need.max(INPUT_KEEP_BYTES));
            }
            self.input.extend_from_slice(rest);
            self.in_start = 0;
            self.in_end = rest.len();
        }
    }

    /// Reads more of a frame into the connection's own buffer.
    fn fill_own(&mut self, ctx: &mut Context<'_>) -> io::Result<Fill> {
        let space = self.input.capacity() - self.input.len();
        if space == 0 {
            // Full of complete frames held back by the output; wait for writable.
            return Ok(Fill::WouldBlock);
        }
        Ok(match read_spare(&self.stream, &mut self.input, ctx)? {
            None => Fill::WouldBlock,
            Some(0) => Fill::Eof,
            Some(n) => {
                self.in_end = self.input.len();
                Fill::Data { short: n < space }
            }
        })
    }

    /// Writes queued output until done or the socket is full.
    pub fn flush(&mut self, ctx: &mut Context<'_>) -> io::Result<()> {
        while self.out_start < self.output.len() {
            match self.stream.write(&self.output[self.out_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_start += n;
                    ctx.stats.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_start == self.output.len() {
            // The capacity stays: `drive` decides whose buffer this is.
            self.output.clear();
            self.out_start = 0;
        }
        Ok(())
    }
}

enum Fill {
    Data { short: bool },
    Eof,
    WouldBlock,
}

/// One read: `Some(0)` is end of stream, `None` would block.
fn read_some(
    stream: &mut Stream,
    buf: &mut [u8],
    ctx: &mut Context<'_>,
) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => {
                ctx.stats.bytes_read += n as u64;
                return Ok(Some(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One readv into `first`, then `second`: like `read_some` over the two
/// (the caller counts the bytes).
fn read_two(stream: &Stream, first: &mut [u8], second: &mut [u8]) -> io::Result<Option<usize>> {
    let iov = [
        libc::iovec {
            iov_base: first.as_mut_ptr().cast(),
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_mut_ptr().cast(),
            iov_len: second.len(),
        },
    ];
    loop {
        // SAFETY: each iovec names one of two distinct slices borrowed uniquely
        // for this call, with its own length; readv(2) writes only within them.
        let rc = unsafe { libc::readv(stream.as_raw_fd(), iov.as_ptr(), 2) };
        if rc >= 0 {
            return Ok(Some(rc as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// One read into `buf`'s spare capacity, appended to it: like `read_some`, but the
/// room need not be zero-filled first (a 1 MB frame would be written twice).
fn read_spare(
    stream: &Stream,
    buf: &mut Vec<u8>,
    ctx: &mut Context<'_>,
) -> io::Result<Option<usize>> {
    let spare = buf.spare_capacity_mut();
    let (ptr, room) = (spare.as_mut_ptr(), spare.len());
    loop {
        // SAFETY: `ptr..ptr + room` is `buf`'s unused capacity, borrowed uniquely
        // through `buf`; read(2) writes at most `room` bytes there and nothing else.
        let rc = unsafe { libc::read(stream.as_raw_fd(), ptr.cast(), room) };
        if rc >= 0 {
            let n = rc as usize;
            // SAFETY: n <= room, and the kernel has initialised exactly those n
            // bytes, which directly follow the `len` initialised ones.
            unsafe { buf.set_len(buf.len() + n) };
            ctx.stats.bytes_read += n as u64;
            return Ok(Some(n));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}
