//! One client connection: its socket, its input buffer, its ordered output queue
//! and its backpressure state. `drive` does all the work for one readiness event:
//! read until the socket is drained, answer every complete request, write.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::{TcpStream, UnixStream};

use super::dispatch::{self, Context, Session};

/// Input buffer size while no larger frame is pending; reused between reads.
pub const INPUT_BUFFER_BYTES: usize = 16 * 1024;
/// Stop parsing a connection's input while this much output waits to be sent:
/// a client that never reads cannot grow our memory.
pub const OUTPUT_HIGH_WATER_BYTES: usize = 256 * 1024;
/// Output capacity kept between batches; a larger buffer is given back once sent.
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
    input: Vec<u8>,
    /// Unparsed bytes are input[in_start..in_end].
    in_start: usize,
    in_end: usize,
    output: Vec<u8>,
    /// Unsent bytes are output[out_start..].
    out_start: usize,
    /// Bytes of a refused frame still to discard.
    skip: u64,
    /// Close once the output is sent (QUIT, protocol error).
    closing: bool,
    /// The peer closed its side; answer what is buffered, then close.
    eof: bool,
    pub session: Session,
    pub last_active: Instant,
}

impl Connection {
    pub fn new(stream: Stream, peer: String, now: Instant) -> Connection {
        Connection {
            stream,
            peer,
            input: vec![0; INPUT_BUFFER_BYTES],
            in_start: 0,
            in_end: 0,
            output: Vec::with_capacity(INPUT_BUFFER_BYTES),
            out_start: 0,
            skip: 0,
            closing: false,
            eof: false,
            session: Session::default(),
            last_active: now,
        }
    }

    /// Bytes queued for the client and not yet taken by the socket.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.out_start
    }

    /// Handles one readiness event (or a resume after the output drained).
    pub fn drive(&mut self, ctx: &mut Context<'_>, max_frame: usize) -> Liveness {
        // A short read means the socket had no more: no extra read to learn that.
        let mut drained = false;
        loop {
            let throttled = self.answer(ctx, max_frame);
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
            if drained {
                return Liveness::Open;
            }
            match self.fill(ctx) {
                Ok(Fill::Data { short }) => drained = short,
                Ok(Fill::Eof) => self.eof = true,
                Ok(Fill::WouldBlock) => return Liveness::Open,
                Err(_) => return Liveness::Closed,
            }
        }
    }

    /// Answers buffered requests; returns whether it stopped at the high-water mark.
    fn answer(&mut self, ctx: &mut Context<'_>, max_frame: usize) -> bool {
        if self.closing {
            return false;
        }
        if self.skip > 0 {
            let available = (self.in_end - self.in_start) as u64;
            let dropped = self.skip.min(available);
            self.in_start += dropped as usize;
            self.skip -= dropped;
            if self.skip > 0 {
                return false;
            }
        }
        let input = &self.input[self.in_start..self.in_end];
        if input.is_empty() {
            return false;
        }
        let high_water = self.out_start + OUTPUT_HIGH_WATER_BYTES;
        let progress =
            dispatch::process(input, &mut self.output, high_water, ctx, &mut self.session);
        self.in_start += progress.consumed;
        self.skip = progress.skip;
        if progress.close {
            self.closing = true;
        }
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
            if self.input.len() > INPUT_BUFFER_BYTES {
                // A large frame has been answered: give its buffer back.
                self.input = vec![0; INPUT_BUFFER_BYTES];
            }
        } else if let Some(need) = progress.need {
            self.make_room(need.min(max_frame as u64) as usize);
        }
        progress.throttled
    }

    /// Makes sure a frame of `need` bytes fits from `in_start`.
    fn make_room(&mut self, need: usize) {
        if self.in_start + need <= self.input.len() {
            return;
        }
        let pending = self.in_end - self.in_start;
        self.input.copy_within(self.in_start..self.in_end, 0);
        self.in_start = 0;
        self.in_end = pending;
        if need > self.input.len() {
            self.input.resize(need, 0);
        }
    }

    /// One read into the free end of the input buffer.
    fn fill(&mut self, ctx: &mut Context<'_>) -> io::Result<Fill> {
        if self.in_end == self.input.len() {
            if self.in_start > 0 {
                self.make_room(self.input.len());
            } else {
                // Full of complete frames we were throttled on; wait for writable.
                return Ok(Fill::WouldBlock);
            }
        }
        let space = self.input.len() - self.in_end;
        loop {
            match self.stream.read(&mut self.input[self.in_end..]) {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => {
                    self.in_end += n;
                    ctx.stats.bytes_read += n as u64;
                    return Ok(Fill::Data { short: n < space });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
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
            self.output.clear();
            self.out_start = 0;
            if self.output.capacity() > OUTPUT_KEEP_BYTES {
                self.output = Vec::with_capacity(INPUT_BUFFER_BYTES);
            }
        }
        Ok(())
    }
}

enum Fill {
    Data { short: bool },
    Eof,
    WouldBlock,
}
