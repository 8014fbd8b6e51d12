//! Encode responses straight into a connection's output buffer. Nothing here
//! allocates beyond the buffer's own growth, which is reused between batches.

use super::header::{Status, HEADER_LEN, RESPONSE_MAGIC};

/// Appends a 24-byte response header.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn write_header(
    out: &mut Vec<u8>,
    opcode: u8,
    status: Status,
    extras_len: u8,
    key_len: u16,
    body_len: u32,
    opaque: u32,
    cas: u64,
) {
    let mut header = [0u8; HEADER_LEN];
    header[0] = RESPONSE_MAGIC;
    header[1] = opcode;
    header[2..4].copy_from_slice(&key_len.to_be_bytes());
    header[4] = extras_len;
    header[6..8].copy_from_slice(&(status as u16).to_be_bytes());
    header[8..12].copy_from_slice(&body_len.to_be_bytes());
    header[12..16].copy_from_slice(&opaque.to_be_bytes());
    header[16..24].copy_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(&header);
}

/// Appends a whole response: header, then extras, key and value.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn write_response(
    out: &mut Vec<u8>,
    opcode: u8,
    opaque: u32,
    status: Status,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let body = extras.len() + key.len() + value.len();
    // Lengths come from our own store and protocol limits: extras <= 20 bytes,
    // keys <= 250 bytes, values <= the item size limit (< 4 GiB).
    write_header(
        out,
        opcode,
        status,
        extras.len() as u8,
        key.len() as u16,
        body as u32,
        opaque,
        cas,
    );
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends an error answer with memcached's text for `status` as its body.
#[inline]
pub fn write_error(out: &mut Vec<u8>, opcode: u8, opaque: u32, status: Status) {
    write_response(out, opcode, opaque, status, 0, &[], &[], status.text());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn error_carries_memcached_text() {
        let mut out = Vec::new();
        write_error(&mut out, 0x00, 0x01020304, Status::KeyNotFound);
        assert_eq!(out.len(), 24 + 9);
        assert_eq!(out[0], 0x81);
        assert_eq!(&out[6..8], &[0, 1]);
        assert_eq!(&out[8..12], &9u32.to_be_bytes());
        assert_eq!(&out[12..16], &[1, 2, 3, 4]);
        assert_eq!(&out[24..], b"Not found");
    }

    #[test]
    fn response_lays_out_extras_key_value() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            0x0c,
            9,
            Status::NoError,
            42,
            &[0, 0, 0, 5],
            b"k",
            b"v",
        );
        assert_eq!(out[4], 4);
        assert_eq!(&out[2..4], &[0, 1]);
        assert_eq!(&out[16..24], &42u64.to_be_bytes());
        assert_eq!(&out[24..], &[0, 0, 0, 5, b'k', b'v']);
    }
}
