//! The checkpoint byte format: a versioned envelope around a postcard body.
//!
//! ```text
//! offset size field
//!  0     4    magic "FNCP"
//!  4     2    format version (little endian), 1
//!  6     1    codec: 1 = postcard
//!  7     1    compression: 0 = none, 1 = lz4, 2 = zstd (feature `zstd`)
//!  8     4    reserved, 0
//! 12     4    body length before compression
//! 16     4    payload length (the bytes that follow the header)
//! 20     4    CRC32C of the payload
//! 24     4    CRC32C of bytes 0..24
//! 28     …    payload
//! ```
//!
//! Decoding checks, in order: length, magic, header checksum, version, codec, compression,
//! size limits, payload length, payload checksum; then decompresses into exactly the
//! declared length and decodes the body. Any byte string gives a checkpoint or a
//! [`DecodeError`]; nothing panics, and nothing beyond [`MAX_BODY`] is allocated for the
//! body.

mod v1;

use bytes::Bytes;
use fnhub_core::Checkpoint;

/// The first four bytes of every checkpoint.
pub const MAGIC: [u8; 4] = *b"FNCP";
/// The format version [`encode`] writes.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the envelope header.
pub const HEADER_LEN: usize = 28;
/// Largest body accepted, before or after compression: 64 MiB.
pub const MAX_BODY: usize = 64 << 20;
/// Bodies smaller than this are stored uncompressed by [`encode`].
const COMPRESS_ABOVE: usize = 512;

const CODEC_POSTCARD: u8 = 1;

/// How the body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Stored as is.
    None,
    /// LZ4 block compression (`lz4_flex`).
    Lz4,
    /// Zstandard, level 3: smaller than LZ4, slower. Needs the `zstd` feature to write
    /// and to read.
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            #[cfg(feature = "zstd")]
            Compression::Zstd => 2,
        }
    }
}

/// A checkpoint could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded body would exceed [`MAX_BODY`].
    #[error("checkpoint body is {0} bytes; at most {MAX_BODY} are allowed")]
    TooLarge(usize),
    /// The checkpoint holds something this format version cannot express.
    #[error("format {FORMAT_VERSION} cannot encode {0}")]
    Unsupported(&'static str),
    /// The body encoder failed.
    #[error("body encoding failed")]
    Body(#[source] postcard::Error),
}

/// Bytes are not a valid checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header, or than the header announces.
    #[error("checkpoint truncated: {have} bytes, {need} needed")]
    Truncated {
        /// Bytes given.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// More bytes than the header announces.
    #[error("checkpoint has {0} bytes after its payload")]
    TrailingBytes(usize),
    /// Not a checkpoint: the magic is wrong.
    #[error("not a checkpoint (bad magic)")]
    BadMagic,
    /// The header's checksum does not match.
    #[error("checkpoint header checksum mismatch")]
    HeaderChecksum,
    /// The payload's checksum does not match (a torn or corrupted write).
    #[error("checkpoint payload checksum mismatch")]
    PayloadChecksum,
    /// A format version this build does not know (written by a newer fnhub).
    #[error("checkpoint format version {0} is not supported (this build reads 1)")]
    UnsupportedVersion(u16),
    /// An unknown body codec.
    #[error("checkpoint codec {0} is not supported")]
    UnsupportedCodec(u8),
    /// An unknown compression.
    #[error("checkpoint compression {0} is not supported")]
    UnsupportedCompression(u8),
    /// A declared length is over [`MAX_BODY`].
    #[error("checkpoint declares {0} bytes; at most {MAX_BODY} are allowed")]
    TooLarge(usize),
    /// The compressed payload does not decompress to the declared length.
    #[error("checkpoint payload does not decompress to its declared length")]
    Decompress,
    /// The body does not decode.
    #[error("checkpoint body does not decode: {0}")]
    Body(String),
    /// The body decodes to values that are not valid (a zero version, a bad name...).
    #[error("checkpoint body is invalid: {0}")]
    Invalid(&'static str),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Encodes `checkpoint` with the current format, compressing bodies over 512 bytes with
/// LZ4 when that makes them smaller.
pub fn encode(checkpoint: &Checkpoint) -> Result<Bytes, EncodeError> {
    encode_body(checkpoint, None)
}

/// Encodes `checkpoint` with the given compression.
pub fn encode_with(
    checkpoint: &Checkpoint,
    compression: Compression,
) -> Result<Bytes, EncodeError> {
    encode_body(checkpoint, Some(compression))
}

/// Bodies from this size are probed before LZ4 is tried on all of them.
const PROBE_ABOVE: usize = 64 * 1024;
const PROBE_LEN: usize = 16 * 1024;

/// Whether LZ4 is worth trying: small bodies are tried whole; large ones only when a 16 KiB
/// sample shrinks by a tenth (incompressible state would cost a full pass for nothing).
fn worth_compressing(body: &[u8]) -> bool {
    if body.len() <= COMPRESS_ABOVE {
        return false;
    }
    if body.len() < PROBE_ABOVE {
        return true;
    }
    let sample = &body[..PROBE_LEN];
    lz4_flex::block::compress(sample).len() * 10 < sample.len() * 9
}

fn encode_body(
    checkpoint: &Checkpoint,
    compression: Option<Compression>,
) -> Result<Bytes, EncodeError> {
    // The body is written after room for the header, so the uncompressed case needs no copy.
    let mut buf = Vec::with_capacity(
        HEADER_LEN
            + 256
            + checkpoint.input.len()
            + checkpoint.state.as_ref().map_or(0, |s| s.len()),
    );
    buf.resize(HEADER_LEN, 0);
    let mut buf = postcard::to_extend(&v1::CheckpointV1::from_core(checkpoint)?, buf)
        .map_err(EncodeError::Body)?;
    let body_len = buf.len() - HEADER_LEN;
    if body_len > MAX_BODY {
        return Err(EncodeError::TooLarge(body_len));
    }
    #[cfg(feature = "zstd")]
    if compression == Some(Compression::Zstd) {
        let body = &buf[HEADER_LEN..];
        let packed = zstd::bulk::compress(body, 3)
            .map_err(|_| EncodeError::Unsupported("a body zstd cannot compress"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + packed.len());
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&packed);
        return finish(out, body_len, Compression::Zstd);
    }
    let forced = compression == Some(Compression::Lz4);
    let try_lz4 = match compression {
        Some(Compression::Lz4) => true,
        _ => compression.is_none() && worth_compressing(&buf[HEADER_LEN..]),
    };
    let mut compression = Compression::None;
    if try_lz4 {
        let body = &buf[HEADER_LEN..];
        let mut out = vec![0u8; HEADER_LEN + lz4_flex::block::get_maximum_output_size(body.len())];
        let n = lz4_flex::block::compress_into(body, &mut out[HEADER_LEN..])
            .map_err(|_| EncodeError::Unsupported("a body LZ4 cannot compress"))?;
        // Explicit LZ4 is kept even when it does not help; automatic only when it does.
        if n < body_len || forced {
            out.truncate(HEADER_LEN + n);
            buf = out;
            compression = Compression::Lz4;
        }
    }
    finish(buf, body_len, compression)
}

/// Fills in the header of `buf`, whose payload follows the header's room.
fn finish(
    mut buf: Vec<u8>,
    body_len: usize,
    compression: Compression,
) -> Result<Bytes, EncodeError> {
    let payload_len = buf.len() - HEADER_LEN;
    if payload_len > MAX_BODY {
        return Err(EncodeError::TooLarge(payload_len));
    }
    let payload_crc = crc32c::crc32c(&buf[HEADER_LEN..]);
    let h = &mut buf[..HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6] = CODEC_POSTCARD;
    h[7] = compression.code();
    h[8..12].copy_from_slice(&0u32.to_le_bytes());
    // Both lengths fit: they are at most MAX_BODY.
    h[12..16].copy_from_slice(&(body_len as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h[20..24].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&header_crc.to_le_bytes());
    Ok(Bytes::from(buf))
}

/// What the header of an encoded checkpoint says, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u16,
    compression: u8,
    body_len: usize,
    payload_len: usize,
    payload_crc: u32,
}

impl Header {
    /// Bytes of the whole checkpoint (header and payload).
    pub(crate) fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
}

/// Checks the header of `bytes` (which may be longer than one checkpoint).
pub(crate) fn read_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            have: bytes.len(),
            need: HEADER_LEN,
        });
    }
    if bytes[0..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if crc32c::crc32c(&bytes[0..24]) != u32_at(bytes, 24) {
        return Err(DecodeError::HeaderChecksum);
    }
    let version = u16_at(bytes, 4);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if bytes[6] != CODEC_POSTCARD {
        return Err(DecodeError::UnsupportedCodec(bytes[6]));
    }
    let compression = bytes[7];
    let known = compression <= 1 || (cfg!(feature = "zstd") && compression == 2);
    if !known {
        return Err(DecodeError::UnsupportedCompression(compression));
    }
    let body_len = u32_at(bytes, 12) as usize;
    let payload_len = u32_at(bytes, 16) as usize;
    for len in [body_len, payload_len] {
        if len > MAX_BODY {
            return Err(DecodeError::TooLarge(len));
        }
    }
    Ok(Header {
        version,
        compression,
        body_len,
        payload_len,
        payload_crc: u32_at(bytes, 20),
    })
}

/// Decodes one checkpoint. Any byte string gives a checkpoint or a typed error.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
    decode_in(bytes, None)
}

/// [`decode`], from bytes the checkpoint may keep: when the body is not compressed, its
/// input, state and results share `bytes`'s memory instead of being copied out of it.
pub fn decode_shared(bytes: &Bytes) -> Result<Checkpoint, DecodeError> {
    decode_in(bytes, Some(bytes))
}

fn decode_in(bytes: &[u8], backing: Option<&Bytes>) -> Result<Checkpoint, DecodeError> {
    let header = read_header(bytes)?;
    let need = header.total_len();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            have: bytes.len(),
            need,
        });
    }
    if bytes.len() > need {
        return Err(DecodeError::TrailingBytes(bytes.len() - need));
    }
    let payload = &bytes[HEADER_LEN..];
    if crc32c::crc32c(payload) != header.payload_crc {
        return Err(DecodeError::PayloadChecksum);
    }
    let decompressed;
    let body: &[u8] = match header.compression {
        0 if payload.len() == header.body_len => payload,
        0 => return Err(DecodeError::Decompress),
        #[cfg(feature = "zstd")]
        2 => {
            decompressed = zstd::bulk::decompress(payload, header.body_len)
                .map_err(|_| DecodeError::Decompress)?;
            if decompressed.len() != header.body_len {
                return Err(DecodeError::Decompress);
            }
            &decompressed
        }
        _ => {
            decompressed = lz4_flex::block::decompress(payload, header.body_len)
                .map_err(|_| DecodeError::Decompress)?;
            if decompressed.len() != header.body_len {
                return Err(DecodeError::Decompress);
            }
            &decompressed
        }
    };
    // Dispatch on the version: only 1 exists.
    let (v1, rest): (v1::CheckpointV1<'_>, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Body(format!(
            "{} bytes after the body",
            rest.len()
        )));
    }
    // Only an uncompressed body lies in `bytes`.
    v1.into_core(backing.filter(|_| header.compression == 0))
}

#[cfg(test)]
mod tests;
