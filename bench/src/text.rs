//! The bench's own text and meta protocol codec (memcached's `protocol.txt`): requests
//! for the workloads, and answers split into the few shapes they can take. Independent of
//! pincache's text parser on purpose: it checks it.

use crate::wire::{key_digits, ITEM_FLAGS};

/// Longest answer line we wait for before calling the stream broken.
const MAX_LINE: usize = 4096;

/// Which protocol the workload speaks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Proto {
    Binary,
    /// Classic text: `get`, `set`, multi-key `get k1 ... kN`.
    Text,
    /// Meta commands: `mg`, `ms`, quiet `mg ... q` batches closed by `mn`.
    Meta,
}

impl Proto {
    pub fn parse(v: &str) -> Result<Proto, String> {
        match v {
            "binary" => Ok(Proto::Binary),
            "text" => Ok(Proto::Text),
            "meta" => Ok(Proto::Meta),
            _ => Err(format!(
                "--protocol: expected binary, text or meta, got {v:?}"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Binary => "binary",
            Proto::Text => "text",
            Proto::Meta => "meta",
        }
    }
}

fn put_key(out: &mut Vec<u8>, prefix: &[u8], id: u32) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(&key_digits(id));
}

fn put_num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `get <key>` / `mg <key> f v`: a hit returns the flags and the value.
pub fn put_get(out: &mut Vec<u8>, proto: Proto, prefix: &[u8], id: u32) {
    out.extend_from_slice(if proto == Proto::Meta {
        b"mg "
    } else {
        b"get "
    });
    put_key(out, prefix, id);
    out.extend_from_slice(if proto == Proto::Meta {
        b" f v\r\n"
    } else {
        b"\r\n"
    });
}

/// `set <key> <flags> 0 <len>` / `ms <key> <len> F<flags>`, up to the value; the caller
/// appends the value and then `put_set_end`.
pub fn put_set(out: &mut Vec<u8>, proto: Proto, prefix: &[u8], id: u32, vlen: usize) {
    if proto == Proto::Meta {
        out.extend_from_slice(b"ms ");
        put_key(out, prefix, id);
        out.push(b' ');
        put_num(out, vlen as u64);
        out.extend_from_slice(b" F");
        put_num(out, ITEM_FLAGS.into());
    } else {
        out.extend_from_slice(b"set ");
        put_key(out, prefix, id);
        out.push(b' ');
        put_num(out, ITEM_FLAGS.into());
        out.extend_from_slice(b" 0 ");
        put_num(out, vlen as u64);
    }
    out.extend_from_slice(b"\r\n");
}

pub fn put_set_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// A multi-get of `ids`: `get k1 ... kN`, or `mg <key> k f v q` each closed by `mn`
/// (quiet: only hits answer, each naming its key).
pub fn put_batch(out: &mut Vec<u8>, proto: Proto, prefix: &[u8], ids: &[u32]) {
    if proto == Proto::Meta {
        for &id in ids {
            out.extend_from_slice(b"mg ");
            put_key(out, prefix, id);
            out.extend_from_slice(b" k f v q\r\n");
        }
        out.extend_from_slice(b"mn\r\n");
    } else {
        out.extend_from_slice(b"get");
        for &id in ids {
            out.push(b' ');
            put_key(out, prefix, id);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// One answer unit.
#[derive(Debug, PartialEq)]
pub enum Answer<'a> {
    /// `VALUE <key> <flags> <bytes>` or `VA <bytes> [f<flags>] [k<key>]`, with its data.
    Value {
        key: Option<&'a [u8]>,
        flags: Option<u32>,
        data: &'a [u8],
    },
    /// `END` (text), `EN` (meta miss), `MN` (meta batch end).
    End,
    /// `STORED` / `HD`.
    Stored,
    /// Anything else: an error line.
    Other(&'a [u8]),
}

impl Answer<'_> {
    /// The answer as the server spelled it, for error messages.
    pub fn show(&self) -> String {
        match self {
            Answer::Value { key, data, .. } => format!(
                "a value for {:?} ({} bytes)",
                key.map(String::from_utf8_lossy),
                data.len()
            ),
            Answer::End => "an end marker".into(),
            Answer::Stored => "STORED/HD".into(),
            Answer::Other(line) => format!("{:?}", String::from_utf8_lossy(line)),
        }
    }
}

fn num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The value block after a header line: `len` bytes and CRLF, from `start`.
fn value_block(buf: &[u8], start: usize, len: usize) -> Option<Result<(&[u8], usize), String>> {
    let end = start + len + 2;
    if buf.len() < end {
        return None;
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Some(Err("value not followed by CRLF".into()));
    }
    Some(Ok((&buf[start..start + len], end)))
}

/// What a value's header line says: the key (if named), the flags (if given), its size.
type ValueHeader<'a> = (Option<&'a [u8]>, Option<u32>, usize);

/// `VALUE <key> <flags> <bytes>` or `VA <bytes> <flags...>`.
fn value_header(line: &[u8]) -> Option<ValueHeader<'_>> {
    let mut t = line.split(|&b| b == b' ');
    match t.next()? {
        b"VALUE" => {
            let key = t.next()?;
            let flags = num(t.next()?)?;
            Some((Some(key), Some(flags), num(t.next()?)?))
        }
        b"VA" => {
            let len = num(t.next()?)?;
            let (mut key, mut flags) = (None, None);
            for f in t {
                match f.split_first() {
                    Some((b'f', v)) => flags = Some(num(v)?),
                    Some((b'k', v)) => key = Some(v),
                    _ => {}
                }
            }
            Some((key, flags, len))
        }
        _ => None,
    }
}

/// The next whole answer in `buf` and the bytes it took; None until one is complete.
pub fn next_answer(buf: &[u8]) -> Option<Result<(Answer<'_>, usize), String>> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return (buf.len() > MAX_LINE).then(|| Err("answer line too long".to_string()));
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let answer = match line {
        b"END" | b"EN" | b"MN" => Answer::End,
        b"STORED" | b"HD" => Answer::Stored,
        _ if line.starts_with(b"VALUE ") || line.starts_with(b"VA ") => {
            let Some((key, flags, len)) = value_header(line) else {
                return Some(Err(format!(
                    "bad value line {:?}",
                    String::from_utf8_lossy(line)
                )));
            };
            return value_block(buf, nl + 1, len)
                .map(|r| r.map(|(data, used)| (Answer::Value { key, flags, data }, used)));
        }
        _ => Answer::Other(line),
    };
    Some(Ok((answer, nl + 1)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spelled_as_protocol_txt_says() {
        let mut out = Vec::new();
        put_get(&mut out, Proto::Text, b"key:", 7);
        put_get(&mut out, Proto::Meta, b"key:", 7);
        put_set(&mut out, Proto::Text, b"k:", 1, 3);
        put_set(&mut out, Proto::Meta, b"k:", 1, 3);
        put_batch(&mut out, Proto::Text, b"k:", &[1, 2]);
        put_batch(&mut out, Proto::Meta, b"k:", &[1, 2]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "get key:0000000007\r\nmg key:0000000007 f v\r\n\
             set k:0000000001 2119692710 0 3\r\nms k:0000000001 3 F2119692710\r\n\
             get k:0000000001 k:0000000002\r\n\
             mg k:0000000001 k f v q\r\nmg k:0000000002 k f v q\r\nmn\r\n"
        );
    }

    #[test]
    fn answers_split_into_units_and_wait_for_whole_values() {
        let text =
            b"VALUE k:1 5 3\r\nabc\r\nEND\r\nSTORED\r\nVA 2 f9 kx\r\nhi\r\nEN\r\nMN\r\nERROR\r\n";
        let mut at = 0;
        let mut got = Vec::new();
        while let Some(r) = next_answer(&text[at..]) {
            let (a, used) = r.unwrap();
            got.push(format!("{a:?}"));
            at += used;
        }
        assert_eq!(at, text.len());
        assert_eq!(got.len(), 7, "{got:?}");
        assert_eq!(
            next_answer(b"VALUE k 5 3\r\nab"),
            None,
            "a value cut short waits for the rest"
        );
        let (a, _) = next_answer(b"VA 2 f9 kx\r\nhi\r\n").unwrap().unwrap();
        assert_eq!(
            a,
            Answer::Value {
                key: Some(b"x"),
                flags: Some(9),
                data: b"hi"
            }
        );
        assert!(next_answer(b"VALUE k 5 3\r\nabcXY").unwrap().is_err());
    }
}
