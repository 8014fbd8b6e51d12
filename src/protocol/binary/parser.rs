//! Parse one complete request frame from the front of a byte slice, borrowing key
//! and value from it (zero-copy). A frame is always `24 + body length` bytes, so
//! "incomplete" is one comparison and the caller always advances by whole frames.

use super::encoder::Reply;
use super::header::{be16, be32, be64, Opcode, Status, HEADER_LEN, MAX_KEY_LEN, REQUEST_MAGIC};
use crate::protocol::command::{ArithOp, Command, Create, StoreMode};

/// The extras of a request, decoded according to its opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extras {
    None,
    /// SET / ADD / REPLACE.
    Store {
        flags: u32,
        exptime: u32,
    },
    /// INCREMENT / DECREMENT.
    Counter {
        delta: u64,
        initial: u64,
        exptime: u32,
    },
    /// TOUCH / GAT*: the new expiration.
    Touch {
        exptime: u32,
    },
    /// FLUSH with a delay in seconds.
    Flush {
        delay: u32,
    },
}

/// One request, borrowing key and value from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The opcode byte as sent; answers echo it (quiet opcodes included).
    pub opcode: u8,
    /// The base (non-quiet) command.
    pub command: Opcode,
    /// A quiet variant: success answers are suppressed.
    pub quiet: bool,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Extras,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Request<'a> {
    /// What every answer to this request echoes.
    #[inline]
    pub fn reply(&self) -> Reply {
        Reply {
            opcode: self.opcode,
            opaque: self.opaque,
        }
    }

    /// The protocol-neutral command; `None` for the SASL commands, which only
    /// the binary protocol has and the server answers itself.
    #[inline(always)]
    pub fn to_command(&self) -> Option<Command<'a>> {
        use Opcode::*;
        let key = self.key;
        let (cas, value) = (self.cas, self.value);
        let store = |mode, flags, exptime| Command::Store {
            mode,
            key,
            value,
            flags,
            exptime,
            cas,
        };
        Some(match (self.command, self.extras) {
            (Get | GetK, _) => Command::Get { key, touch: None },
            (Gat | GatK, Extras::Touch { exptime }) => Command::Get {
                key,
                touch: Some(exptime),
            },
            (Touch, Extras::Touch { exptime }) => Command::Touch { key, exptime },
            (Set, Extras::Store { flags, exptime }) => store(StoreMode::Set, flags, exptime),
            (Add, Extras::Store { flags, exptime }) => store(StoreMode::Add, flags, exptime),
            (Replace, Extras::Store { flags, exptime }) => {
                store(StoreMode::Replace, flags, exptime)
            }
            (Append, _) => store(StoreMode::Append, 0, 0),
            (Prepend, _) => store(StoreMode::Prepend, 0, 0),
            (Delete, _) => Command::Delete { key, cas },
            (
                Increment | Decrement,
                Extras::Counter {
                    delta,
                    initial,
                    exptime,
                },
            ) => Command::Arith {
                key,
                op: if self.command == Increment {
                    ArithOp::Incr
                } else {
                    ArithOp::Decr
                },
                delta,
                // An expiration of all ones means "do not create" (memcached).
                create: (exptime != u32::MAX).then_some(Create { initial, exptime }),
                cas,
            },
            (Flush, Extras::Flush { delay }) => Command::Flush { delay },
            (Flush, _) => Command::Flush { delay: 0 },
            (Stat, _) => Command::Stats { group: key },
            (Version, _) => Command::Version,
            (Noop, _) => Command::Noop,
            (Quit, _) => Command::Quit,
            // SASL, and lengths `parse` already refused.
            _ => return None,
        })
    }
}

/// Why no request could be taken from the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// Fewer bytes than the frame needs; read more.
    Incomplete,
    /// Not a request packet: the stream is not ours to interpret. Close, no answer.
    BadMagic,
    /// Lengths that contradict the opcode: answer `status`, then close, as memcached
    /// does (the rest of the stream cannot be trusted).
    Invalid {
        opcode: u8,
        opaque: u32,
        status: Status,
    },
    /// A frame we answer without buffering it (unknown opcode, value over the size
    /// limit): answer `status`, then discard `skip` bytes from the frame's start as
    /// they arrive. `request` has the header fields and the key, with an empty value.
    Skip {
        request: Request<'a>,
        status: Status,
        skip: u64,
    },
}

/// Limits the parser enforces before buffering a body.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Values longer than this are refused with 0x0003 without being buffered.
    pub max_value_len: usize,
}

/// The body length a header declares, or `None` if fewer than 24 bytes are there.
pub fn frame_len(input: &[u8]) -> Option<u64> {
    if input.len() < HEADER_LEN {
        None
    } else {
        Some(HEADER_LEN as u64 + u64::from(be32(input, 8)))
    }
}

/// The key of the GET, GETQ, GETK or GETKQ at the front of `input` when its
/// header and key are in, without checking the rest of the frame: for a
/// read-ahead hint, not for answering.
pub fn get_key(input: &[u8]) -> Option<&[u8]> {
    let spec = SPECS[usize::from(*input.get(1)?)]?;
    if !matches!(spec.command, Opcode::Get | Opcode::GetK) || input.len() < HEADER_LEN {
        return None;
    }
    // A GET has no extras; a frame that says otherwise is refused later.
    if input[4] != 0 {
        return None;
    }
    input.get(HEADER_LEN..HEADER_LEN + usize::from(be16(input, 2)))
}

/// Parses the request at the front of `input`, returning it and its frame length.
#[inline(always)]
pub fn parse<'a>(input: &'a [u8], limits: &Limits) -> Result<(Request<'a>, usize), ParseError<'a>> {
    let (mut request, head, frame) = parse_head(input, limits)?;
    if input.len() < frame {
        return Err(ParseError::Incomplete);
    }
    request.value = &input[head..frame];
    Ok((request, frame))
}

/// A SET, ADD or REPLACE (quiet or not) whose header, extras and key are in
/// but whose value is not: the request (its value empty), where its value
/// starts, and the value's length. `None` for anything else.
pub fn partial_store<'a>(input: &'a [u8], limits: &Limits) -> Option<(Request<'a>, usize, usize)> {
    let (request, head, frame) = parse_head(input, limits).ok()?;
    let store = matches!(request.command, Opcode::Set | Opcode::Add | Opcode::Replace);
    (store && input.len() < frame).then_some((request, head, frame - head))
}

/// Checks the header at the front of `input` and decodes it with its extras
/// and key: the request (its value empty), where its value starts and where
/// the frame ends. Incomplete until the key is in.
#[inline(always)]
fn parse_head<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<(Request<'a>, usize, usize), ParseError<'a>> {
    if input.len() < HEADER_LEN {
        return Err(ParseError::Incomplete);
    }
    if input[0] != REQUEST_MAGIC {
        return Err(ParseError::BadMagic);
    }
    let opcode = input[1];
    let key_len = usize::from(be16(input, 2));
    let extras_len = usize::from(input[4]);
    let body_len = be32(input, 8) as usize;
    let opaque = be32(input, 12);
    let cas = be64(input, 16);
    let invalid = |status| ParseError::Invalid {
        opcode,
        opaque,
        status,
    };
    let frame = HEADER_LEN as u64 + u64::from(be32(input, 8));

    // memcached answers a body that cannot hold its own key and extras with
    // "unknown command" and closes.
    if key_len + extras_len > body_len {
        return Err(invalid(Status::UnknownCommand));
    }
    if key_len > MAX_KEY_LEN {
        return Err(invalid(Status::InvalidArguments));
    }
    let Some(spec) = SPECS[usize::from(opcode)] else {
        let request = Request {
            opcode,
            command: Opcode::Noop,
            quiet: false,
            opaque,
            cas,
            extras: Extras::None,
            key: &[],
            value: &[],
        };
        return Err(ParseError::Skip {
            request,
            status: Status::UnknownCommand,
            skip: frame,
        });
    };
    let value_len = body_len - key_len - extras_len;
    if !spec.fits(extras_len, key_len, value_len) {
        return Err(invalid(Status::InvalidArguments));
    }
    let (command, quiet) = (spec.command, spec.quiet);

    let head = HEADER_LEN + extras_len + key_len;
    if input.len() < head {
        return Err(ParseError::Incomplete);
    }
    let request = Request {
        opcode,
        command,
        quiet,
        opaque,
        cas,
        // GETs and most others have none: no match over the opcode for them.
        extras: if extras_len == 0 {
            Extras::None
        } else {
            decode_extras(command, &input[HEADER_LEN..HEADER_LEN + extras_len])
        },
        key: &input[HEADER_LEN + extras_len..head],
        value: &[],
    };
    // Only storage commands carry a value this large: it is refused unbuffered,
    // once the key is in (a SET's refusal also deletes the key).
    if value_len > limits.max_value_len {
        return Err(ParseError::Skip {
            request,
            status: Status::ValueTooLarge,
            skip: frame,
        });
    }
    Ok((request, head, frame as usize))
}

/// What the parser needs to know about one opcode byte: its base command,
/// whether it is quiet, and the extras, key and value lengths it takes
/// (memcached's `dispatch_bin_command` checks). Looked up once per frame in
/// [`SPECS`] instead of decoding the opcode, mapping a quiet one to its base and
/// matching the lengths rule one step after another.
#[derive(Clone, Copy, Debug)]
struct Spec {
    command: Opcode,
    quiet: bool,
    /// The extras lengths allowed (the same twice but for FLUSH's 0 or 4).
    extras: [u8; 2],
    /// Key lengths allowed: `min_key..=max_key` (1..=250, 0..=0 or 0..=250).
    min_key: u8,
    max_key: u8,
    /// The command takes no value.
    no_value: bool,
}

impl Spec {
    /// Whether the lengths are the ones this command takes.
    #[inline(always)]
    fn fits(&self, extras: usize, key: usize, value: usize) -> bool {
        // `&` rather than `&&`: a few compares are cheaper than their branches.
        (extras == usize::from(self.extras[0]) || extras == usize::from(self.extras[1]))
            & (key >= usize::from(self.min_key))
            & (key <= usize::from(self.max_key))
            & (value == 0 || !self.no_value)
    }
}

/// The spec of every opcode byte; `None` for the bytes memcached 1.6 does not
/// serve, VERBOSITY included (it answers "unknown command").
static SPECS: [Option<Spec>; 256] = specs();

const fn specs() -> [Option<Spec>; 256] {
    let mut table = [None; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = spec_of(byte as u8);
        byte += 1;
    }
    table
}

const fn spec_of(byte: u8) -> Option<Spec> {
    use Opcode::*;
    let Some(op) = Opcode::from_u8(byte) else {
        return None;
    };
    if matches!(op, Verbosity) {
        return None;
    }
    let (command, quiet) = op.base();
    const KEY: (u8, u8) = (1, MAX_KEY_LEN as u8);
    const NO_KEY: (u8, u8) = (0, 0);
    const ANY_KEY: (u8, u8) = (0, MAX_KEY_LEN as u8);
    // (extras, key, takes no value); quiet opcodes were mapped to their base.
    let (extras, (min_key, max_key), no_value) = match command {
        Get | GetK | Delete => ([0, 0], KEY, true),
        Set | Add | Replace => ([8, 8], KEY, false),
        Append | Prepend => ([0, 0], KEY, false),
        Increment | Decrement => ([20, 20], KEY, true),
        Touch | Gat | GatK => ([4, 4], KEY, true),
        Flush => ([0, 4], NO_KEY, true),
        Noop | Version | Quit | SaslListMechs => ([0, 0], NO_KEY, true),
        Stat => ([0, 0], ANY_KEY, true),
        SaslAuth | SaslStep => ([0, 0], KEY, false),
        _ => return None,
    };
    Some(Spec {
        command,
        quiet,
        extras,
        min_key,
        max_key,
        no_value,
    })
}

fn decode_extras(command: Opcode, extras: &[u8]) -> Extras {
    use Opcode::*;
    match (command, extras.len()) {
        (Set | Add | Replace, 8) => Extras::Store {
            flags: be32(extras, 0),
            exptime: be32(extras, 4),
        },
        (Increment | Decrement, 20) => Extras::Counter {
            delta: be64(extras, 0),
            initial: be64(extras, 8),
            exptime: be32(extras, 16),
        },
        (Touch | Gat | GatK, 4) => Extras::Touch {
            exptime: be32(extras, 0),
        },
        (Flush, 4) => Extras::Flush {
            delay: be32(extras, 0),
        },
        _ => Extras::None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_value_len: 1024,
    };

    fn frame(opcode: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80, opcode];
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.push(extras.len() as u8);
        out.extend_from_slice(&[0, 0, 0]);
        let body = (extras.len() + key.len() + value.len()) as u32;
        out.extend_from_slice(&body.to_be_bytes());
        out.extend_from_slice(&0xdeadbeefu32.to_be_bytes());
        out.extend_from_slice(&7u64.to_be_bytes());
        out.extend_from_slice(extras);
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn get_parses_key_and_frame_length() {
        let bytes = frame(0x00, &[], b"foo", &[]);
        let (req, len) = parse(&bytes, &LIMITS).unwrap();
        assert_eq!(len, 27);
        assert_eq!(req.command, Opcode::Get);
        assert_eq!(req.key, b"foo");
        assert_eq!(req.opaque, 0xdeadbeef);
        assert_eq!(req.cas, 7);
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        let bytes = frame(0x01, &[0, 0, 0, 1, 0, 0, 0, 2], b"k", b"value");
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], &LIMITS), Err(ParseError::Incomplete));
        }
        let (req, _) = parse(&bytes, &LIMITS).unwrap();
        assert_eq!(
            req.extras,
            Extras::Store {
                flags: 1,
                exptime: 2
            }
        );
        assert_eq!(req.value, b"value");
    }

    #[test]
    fn requests_become_commands() {
        let bytes = frame(
            0x15,
            &[
                0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff,
            ],
            b"n",
            &[],
        );
        let (req, _) = parse(&bytes, &LIMITS).unwrap();
        assert_eq!(
            req.to_command(),
            Some(Command::Arith {
                key: b"n",
                op: ArithOp::Incr,
                delta: 2,
                create: None,
                cas: 7
            })
        );
        let bytes = frame(0x0e, &[], b"k", b"tail");
        let (req, _) = parse(&bytes, &LIMITS).unwrap();
        assert!(matches!(
            req.to_command(),
            Some(Command::Store {
                mode: StoreMode::Append,
                value: b"tail",
                cas: 7,
                ..
            })
        ));
        let bytes = frame(0x20, &[], &[], &[]);
        let (req, _) = parse(&bytes, &LIMITS).unwrap();
        assert_eq!(req.to_command(), None);
    }

    #[test]
    fn extra_trailing_bytes_belong_to_the_next_frame() {
        let mut bytes = frame(0x0a, &[], &[], &[]);
        bytes.extend_from_slice(&[0x80, 0x0a]);
        let (req, len) = parse(&bytes, &LIMITS).unwrap();
        assert_eq!(req.command, Opcode::Noop);
        assert_eq!(len, 24);
    }

    #[test]
    fn quiet_opcodes_map_to_their_base() {
        let bytes = frame(0x0d, &[], b"k", &[]);
        let (req, _) = parse(&bytes, &LIMITS).unwrap();
        assert_eq!(
            (req.command, req.quiet, req.opcode),
            (Opcode::GetK, true, 0x0d)
        );
    }

    #[test]
    fn get_key_reads_only_the_get_family() {
        for op in [0x00, 0x09, 0x0c, 0x0d] {
            assert_eq!(
                get_key(&frame(op, &[], b"k1", &[])),
                Some(&b"k1"[..]),
                "{op:#x}"
            );
        }
        let get = frame(0x00, &[], b"k1", &[]);
        assert_eq!(get_key(&get[..HEADER_LEN + 1]), None, "key not all in");
        assert_eq!(get_key(&frame(0x01, &[0; 8], b"k1", b"v")), None, "SET");
        assert_eq!(get_key(&frame(0x00, &[0; 4], b"k1", &[])), None, "extras");
        assert_eq!(get_key(&frame(0x1d, &[0; 4], b"k1", &[])), None, "GAT");
        assert_eq!(get_key(&[0x80]), None);
    }

    #[test]
    fn every_served_opcode_has_a_spec_and_only_those() {
        for byte in 0..=255u8 {
            let served = Opcode::from_u8(byte).filter(|op| *op != Opcode::Verbosity);
            let spec = SPECS[usize::from(byte)];
            assert_eq!(spec.is_some(), served.is_some(), "opcode 0x{byte:02x}");
            if let (Some(spec), Some(op)) = (spec, served) {
                assert_eq!((spec.command, spec.quiet), op.base(), "opcode 0x{byte:02x}");
            }
        }
    }

    #[test]
    fn lengths_rules_per_command() {
        let spec = |op: Opcode| SPECS[op as usize].unwrap();
        // (extras, key, value) -> fits
        assert!(spec(Opcode::Get).fits(0, 1, 0));
        assert!(!spec(Opcode::Get).fits(0, 0, 0));
        assert!(!spec(Opcode::GetQ).fits(0, 1, 1));
        assert!(spec(Opcode::SetQ).fits(8, 250, 1000));
        assert!(!spec(Opcode::Set).fits(4, 1, 1));
        assert!(spec(Opcode::Flush).fits(0, 0, 0));
        assert!(spec(Opcode::FlushQ).fits(4, 0, 0));
        assert!(!spec(Opcode::Flush).fits(8, 0, 0));
        assert!(!spec(Opcode::Flush).fits(0, 1, 0));
        assert!(spec(Opcode::Stat).fits(0, 0, 0));
        assert!(spec(Opcode::Stat).fits(0, 5, 0));
        assert!(!spec(Opcode::Noop).fits(0, 1, 0));
        assert!(spec(Opcode::Increment).fits(20, 1, 0));
        assert!(!spec(Opcode::DecrementQ).fits(20, 1, 1));
        assert!(spec(Opcode::GatKQ).fits(4, 1, 0));
        assert!(spec(Opcode::SaslAuth).fits(0, 5, 10));
        assert!(!spec(Opcode::SaslStep).fits(0, 0, 10));
    }

    #[test]
    fn bad_magic_is_refused_from_the_first_byte() {
        let mut bytes = frame(0x0a, &[], &[], &[]);
        bytes[0] = 0x81;
        assert_eq!(parse(&bytes, &LIMITS), Err(ParseError::BadMagic));
    }

    #[test]
    fn unknown_opcode_skips_its_whole_frame() {
        let bytes = frame(0x40, &[], b"key", b"0123456789");
        match parse(&bytes[..24], &LIMITS) {
            Err(ParseError::Skip { status, skip, .. }) => {
                assert_eq!(status, Status::UnknownCommand);
                assert_eq!(skip, 37);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_extras_for_get_is_invalid() {
        let bytes = frame(0x00, &[0, 0, 0, 0], b"k", &[]);
        assert!(matches!(
            parse(&bytes, &LIMITS),
            Err(ParseError::Invalid {
                status: Status::InvalidArguments,
                ..
            })
        ));
    }

    #[test]
    fn key_of_251_bytes_is_invalid_and_250_is_fine() {
        let ok = frame(0x00, &[], &[b'a'; 250], &[]);
        assert!(parse(&ok, &LIMITS).is_ok());
        let long = frame(0x00, &[], &[b'a'; 251], &[]);
        assert!(matches!(
            parse(&long, &LIMITS),
            Err(ParseError::Invalid { .. })
        ));
    }

    #[test]
    fn key_longer_than_body_is_refused_before_the_body_arrives() {
        let mut bytes = frame(0x00, &[], b"abc", &[]);
        bytes[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert!(matches!(
            parse(&bytes[..24], &LIMITS),
            Err(ParseError::Invalid { .. })
        ));
    }

    #[test]
    fn oversized_set_is_skipped_once_its_key_is_in() {
        let mut bytes = frame(0x01, &[0; 8], b"big", &[]);
        bytes[8..12].copy_from_slice(&(8u32 + 3 + 5000).to_be_bytes());
        assert_eq!(parse(&bytes[..30], &LIMITS), Err(ParseError::Incomplete));
        match parse(&bytes, &LIMITS) {
            Err(ParseError::Skip {
                request,
                status,
                skip,
            }) => {
                assert_eq!(request.key, b"big");
                assert_eq!(status, Status::ValueTooLarge);
                assert_eq!(skip, 24 + 8 + 3 + 5000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn body_length_of_u32_max_does_not_overflow() {
        let mut bytes = frame(0x0a, &[], &[], &[]);
        bytes[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            parse(&bytes, &LIMITS),
            Err(ParseError::Invalid { .. })
        ));
        bytes[1] = 0x55;
        assert!(matches!(
            parse(&bytes, &LIMITS),
            Err(ParseError::Skip { skip, .. }) if skip == 24 + u64::from(u32::MAX)
        ));
    }
}
