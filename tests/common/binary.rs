//! The binary protocol as the tests write and read it: requests with every header field
//! settable (to build malformed ones), decoded answers, readable failure messages. The
//! header layout, opcodes and statuses are the server's own (`pincache::protocol`, whose
//! `header.rs` draws the 24-byte header); only the tests' spellings live here.

pub use pincache::protocol::header::{
    HEADER_LEN, REQUEST_MAGIC as REQ_MAGIC, RESPONSE_MAGIC as RES_MAGIC,
};

/// Opcodes as the bytes tests put on the wire (tests also send bytes that are no opcode).
pub mod op {
    use pincache::protocol::Opcode;

    pub const GET: u8 = Opcode::Get as u8;
    pub const SET: u8 = Opcode::Set as u8;
    pub const ADD: u8 = Opcode::Add as u8;
    pub const REPLACE: u8 = Opcode::Replace as u8;
    pub const DELETE: u8 = Opcode::Delete as u8;
    pub const INCREMENT: u8 = Opcode::Increment as u8;
    pub const DECREMENT: u8 = Opcode::Decrement as u8;
    pub const QUIT: u8 = Opcode::Quit as u8;
    pub const FLUSH: u8 = Opcode::Flush as u8;
    pub const GETQ: u8 = Opcode::GetQ as u8;
    pub const NOOP: u8 = Opcode::Noop as u8;
    pub const VERSION: u8 = Opcode::Version as u8;
    pub const GETK: u8 = Opcode::GetK as u8;
    pub const GETKQ: u8 = Opcode::GetKQ as u8;
    pub const APPEND: u8 = Opcode::Append as u8;
    pub const PREPEND: u8 = Opcode::Prepend as u8;
    pub const STAT: u8 = Opcode::Stat as u8;
    pub const SETQ: u8 = Opcode::SetQ as u8;
    pub const ADDQ: u8 = Opcode::AddQ as u8;
    pub const REPLACEQ: u8 = Opcode::ReplaceQ as u8;
    pub const DELETEQ: u8 = Opcode::DeleteQ as u8;
    pub const INCREMENTQ: u8 = Opcode::IncrementQ as u8;
    pub const DECREMENTQ: u8 = Opcode::DecrementQ as u8;
    pub const QUITQ: u8 = Opcode::QuitQ as u8;
    pub const FLUSHQ: u8 = Opcode::FlushQ as u8;
    pub const APPENDQ: u8 = Opcode::AppendQ as u8;
    pub const PREPENDQ: u8 = Opcode::PrependQ as u8;
    pub const VERBOSITY: u8 = Opcode::Verbosity as u8;
    pub const TOUCH: u8 = Opcode::Touch as u8;
    pub const GAT: u8 = Opcode::Gat as u8;
    pub const GATQ: u8 = Opcode::GatQ as u8;
    pub const SASL_LIST_MECHS: u8 = Opcode::SaslListMechs as u8;
    pub const SASL_AUTH: u8 = Opcode::SaslAuth as u8;
    pub const SASL_STEP: u8 = Opcode::SaslStep as u8;
    pub const GATK: u8 = Opcode::GatK as u8;
    pub const GATKQ: u8 = Opcode::GatKQ as u8;

    /// A readable name for an opcode, for failure messages.
    pub fn name(opcode: u8) -> String {
        match Opcode::from_u8(opcode) {
            Some(known) => format!("{known:?}"),
            None => "UNKNOWN".to_string(),
        }
    }
}

/// Response statuses as the 16-bit numbers on the wire.
pub mod status {
    use pincache::protocol::Status;

    pub const OK: u16 = Status::NoError as u16;
    pub const KEY_NOT_FOUND: u16 = Status::KeyNotFound as u16;
    pub const KEY_EXISTS: u16 = Status::KeyExists as u16;
    pub const TOO_LARGE: u16 = Status::ValueTooLarge as u16;
    pub const INVALID_ARGUMENTS: u16 = Status::InvalidArguments as u16;
    pub const NOT_STORED: u16 = Status::ItemNotStored as u16;
    pub const NON_NUMERIC: u16 = Status::NonNumeric as u16;
    pub const AUTH_ERROR: u16 = Status::AuthError as u16;
    pub const UNKNOWN_COMMAND: u16 = Status::UnknownCommand as u16;
    pub const OUT_OF_MEMORY: u16 = Status::OutOfMemory as u16;
}

/// The 24 header bytes as written, whatever the body holds (requests may lie about it).
struct Packet {
    magic: u8,
    opcode: u8,
    key_len: u16,
    extras_len: u8,
    data_type: u8,
    /// The vbucket of a request, the status of an answer.
    vbucket_or_status: u16,
    body_len: u32,
    opaque: u32,
    cas: u64,
}

impl Packet {
    /// The header, then `extras`, `key` and `value`.
    fn encode(&self, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + extras.len() + key.len() + value.len());
        out.push(self.magic);
        out.push(self.opcode);
        out.extend_from_slice(&self.key_len.to_be_bytes());
        out.push(self.extras_len);
        out.push(self.data_type);
        out.extend_from_slice(&self.vbucket_or_status.to_be_bytes());
        out.extend_from_slice(&self.body_len.to_be_bytes());
        out.extend_from_slice(&self.opaque.to_be_bytes());
        out.extend_from_slice(&self.cas.to_be_bytes());
        out.extend_from_slice(extras);
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }
}

/// One request, with every header field settable so tests can build malformed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub magic: u8,
    pub opcode: u8,
    pub data_type: u8,
    pub vbucket: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Override the header's key length (for inconsistent-length tests).
    pub key_len_override: Option<u16>,
    /// Override the header's extras length.
    pub extras_len_override: Option<u8>,
    /// Override the header's total body length.
    pub body_len_override: Option<u32>,
}

impl Request {
    pub fn new(opcode: u8) -> Request {
        Request {
            magic: REQ_MAGIC,
            opcode,
            data_type: 0,
            vbucket: 0,
            opaque: 0,
            cas: 0,
            extras: Vec::new(),
            key: Vec::new(),
            value: Vec::new(),
            key_len_override: None,
            extras_len_override: None,
            body_len_override: None,
        }
    }
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = key.as_ref().to_vec();
        self
    }
    pub fn value(mut self, value: impl AsRef<[u8]>) -> Self {
        self.value = value.as_ref().to_vec();
        self
    }
    pub fn extras(mut self, extras: impl AsRef<[u8]>) -> Self {
        self.extras = extras.as_ref().to_vec();
        self
    }
    pub fn cas(mut self, cas: u64) -> Self {
        self.cas = cas;
        self
    }
    pub fn opaque(mut self, opaque: u32) -> Self {
        self.opaque = opaque;
        self
    }
    pub fn magic(mut self, magic: u8) -> Self {
        self.magic = magic;
        self
    }

    /// The request as it goes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let body_len = (self.extras.len() + self.key.len() + self.value.len()) as u32;
        Packet {
            magic: self.magic,
            opcode: self.opcode,
            key_len: self.key_len_override.unwrap_or(self.key.len() as u16),
            extras_len: self.extras_len_override.unwrap_or(self.extras.len() as u8),
            data_type: self.data_type,
            vbucket_or_status: self.vbucket,
            body_len: self.body_len_override.unwrap_or(body_len),
            opaque: self.opaque,
            cas: self.cas,
        }
        .encode(&self.extras, &self.key, &self.value)
    }

    /// A one-line readable form for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}(0x{:02x}) opaque={} cas={} extras={} key={} value={}",
            op::name(self.opcode),
            self.opcode,
            self.opaque,
            self.cas,
            hex(&self.extras),
            show_bytes(&self.key),
            show_bytes(&self.value)
        );
        if self.magic != REQ_MAGIC {
            s.push_str(&format!(" magic=0x{:02x}", self.magic));
        }
        if let Some(k) = self.key_len_override {
            s.push_str(&format!(" key_len_override={k}"));
        }
        if let Some(e) = self.extras_len_override {
            s.push_str(&format!(" extras_len_override={e}"));
        }
        if let Some(b) = self.body_len_override {
            s.push_str(&format!(" body_len_override={b}"));
        }
        s
    }
}

// Request builders for the common commands.

/// Extras of SET/ADD/REPLACE: flags, expiration.
pub fn store_extras(flags: u32, exptime: u32) -> Vec<u8> {
    let mut e = flags.to_be_bytes().to_vec();
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

/// Extras of INCREMENT/DECREMENT: delta, initial, expiration.
pub fn counter_extras(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let mut e = delta.to_be_bytes().to_vec();
    e.extend_from_slice(&initial.to_be_bytes());
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

pub fn get(opcode: u8, key: impl AsRef<[u8]>) -> Request {
    Request::new(opcode).key(key)
}

pub fn store(
    opcode: u8,
    key: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
    flags: u32,
    exp: u32,
) -> Request {
    Request::new(opcode)
        .key(key)
        .value(value)
        .extras(store_extras(flags, exp))
}

pub fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Request {
    store(op::SET, key, value, 0, 0)
}

pub fn concat(opcode: u8, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Request {
    Request::new(opcode).key(key).value(value)
}

pub fn counter(opcode: u8, key: impl AsRef<[u8]>, delta: u64, initial: u64, exp: u32) -> Request {
    Request::new(opcode)
        .key(key)
        .extras(counter_extras(delta, initial, exp))
}

pub fn touch(opcode: u8, key: impl AsRef<[u8]>, exp: u32) -> Request {
    Request::new(opcode).key(key).extras(exp.to_be_bytes())
}

pub fn noop() -> Request {
    Request::new(op::NOOP)
}

/// One decoded response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub data_type: u8,
    pub status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Response {
    /// Decodes the answer at the front of `bytes` if all of it is there; returns it
    /// with the number of bytes it took.
    pub fn parse(bytes: &[u8]) -> Option<(Response, usize)> {
        let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let body_len = u32::from_be_bytes(header[8..12].try_into().ok()?) as usize;
        let body = bytes.get(HEADER_LEN..HEADER_LEN + body_len)?.to_vec();
        Some((Response::decode(header, body), HEADER_LEN + body_len))
    }

    /// Decode from a 24-byte header and its body. Panics if the lengths disagree, which
    /// is a server bug worth failing on.
    pub fn decode(header: &[u8; HEADER_LEN], body: Vec<u8>) -> Response {
        let key_len = u16::from_be_bytes([header[2], header[3]]);
        let extras_len = header[4];
        let body_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        assert_eq!(body.len(), body_len as usize, "body length");
        let e = extras_len as usize;
        let k = key_len as usize;
        assert!(
            e + k <= body.len(),
            "response with extras_len {e} + key_len {k} > body_len {}",
            body.len()
        );
        Response {
            magic: header[0],
            opcode: header[1],
            key_len,
            extras_len,
            data_type: header[5],
            status: u16::from_be_bytes([header[6], header[7]]),
            body_len,
            opaque: u32::from_be_bytes([header[12], header[13], header[14], header[15]]),
            cas: u64::from_be_bytes(header[16..24].try_into().expect("8 bytes")),
            extras: body[..e].to_vec(),
            key: body[e..e + k].to_vec(),
            value: body[e + k..].to_vec(),
        }
    }

    /// The response as it was on the wire.
    pub fn encode(&self) -> Vec<u8> {
        Packet {
            magic: self.magic,
            opcode: self.opcode,
            key_len: self.key_len,
            extras_len: self.extras_len,
            data_type: self.data_type,
            vbucket_or_status: self.status,
            body_len: self.body_len,
            opaque: self.opaque,
            cas: self.cas,
        }
        .encode(&self.extras, &self.key, &self.value)
    }

    /// The flags of a GET-family or TOUCH hit.
    pub fn flags(&self) -> u32 {
        assert_eq!(
            self.extras.len(),
            4,
            "expected 4 bytes of flags in {self:?}"
        );
        u32::from_be_bytes(self.extras[..4].try_into().expect("4 bytes"))
    }

    /// The 8-byte big-endian number of an INCREMENT/DECREMENT answer.
    pub fn counter(&self) -> u64 {
        assert_eq!(
            self.value.len(),
            8,
            "expected an 8-byte counter in {self:?}"
        );
        u64::from_be_bytes(self.value[..8].try_into().expect("8 bytes"))
    }

    /// Assert the answer's opcode and status (with a readable message).
    #[track_caller]
    pub fn expect(&self, opcode: u8, status: u16) -> &Self {
        assert!(
            self.magic == RES_MAGIC && self.opcode == opcode && self.status == status,
            "expected {}(0x{opcode:02x}) status 0x{status:04x}, got {}",
            op::name(opcode),
            self.describe()
        );
        self
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}(0x{:02x}) status=0x{:04x} opaque={} cas={} extras={} key={} value={}",
            op::name(self.opcode),
            self.opcode,
            self.status,
            self.opaque,
            self.cas,
            hex(&self.extras),
            show_bytes(&self.key),
            show_bytes(&self.value)
        );
        if self.magic != RES_MAGIC {
            s.push_str(&format!(" magic=0x{:02x}", self.magic));
        }
        if self.data_type != 0 {
            s.push_str(&format!(" data_type=0x{:02x}", self.data_type));
        }
        s
    }
}

pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".to_string();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The first `max` bytes of `b`, escaped as Rust escapes bytes (`\r`, `\x00`, ...).
pub fn escape_prefix(b: &[u8], max: usize) -> String {
    b.iter()
        .take(max)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect()
}

/// Bytes as a quoted string with escapes, shortened when long.
pub fn show_bytes(b: &[u8]) -> String {
    const MAX_SHOWN: usize = 64;
    let shown = escape_prefix(b, MAX_SHOWN);
    if b.len() > MAX_SHOWN {
        format!("\"{shown}\"...({} bytes)", b.len())
    } else {
        format!("\"{shown}\"")
    }
}
