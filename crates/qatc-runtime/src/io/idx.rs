//! IDX files, the format of MNIST: a big-endian header — two zero bytes, an element-type
//! byte (0x08 = u8), the number of dimensions, then one u32 size per dimension — followed
//! by the data, row-major. Files may be gzipped; gzip is recognized by its magic bytes
//! (`1f 8b`), not by the file name.
//!
//! Only u8 data is read (images and labels). Invariants: a parsed array holds exactly the
//! number of bytes its header declares; a header declaring more than the input holds, a
//! stream with bytes after the data, a bad magic number or a corrupt gzip stream is an
//! error, never a panic, and a lying header never makes the reader allocate more than the
//! input actually holds.

use std::io::Read;
use std::path::Path;

use crate::error::{Result, RuntimeError, io_message};

/// The IDX element-type code of unsigned bytes.
pub const IDX_U8: u8 = 0x08;

/// A u8 array read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of the dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// The dimensions as `60000×28×28`.
    pub fn dims_text(&self) -> String {
        dims_text(&self.dims)
    }
}

pub(crate) fn dims_text(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    parts.join("×")
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "u8",
        0x09 => "i8",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// True if `bytes` starts with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Reads an IDX file, gzipped or not. Errors name the file.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, &e))?;
    parse_idx(&bytes).map_err(|e| e.at(path))
}

/// Parses the bytes of an IDX file, gzipped or not.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray> {
    if is_gzip(bytes) {
        // a well-formed single-member file in one pass; anything else (or a file that
        // fails on the way) through the stream below, which names the fault
        if let Some(a) = gunzip_single(bytes) {
            return Ok(a);
        }
        let mut r = flate2::read::MultiGzDecoder::new(bytes);
        // deflate expands at most 1032:1, which bounds what the header may make us reserve
        parse_stream(&mut r, true, bytes.len().saturating_mul(1032))
    } else {
        let mut r = bytes;
        parse_stream(&mut r, false, bytes.len())
    }
}

/// A single-member gzip IDX file inflated with one raw-deflate state, straight into its
/// final buffers: the 4-byte magic, the dimensions, then the data into a vector of exactly
/// the declared size (through `Read`, the stream path inflated MNIST's training images in
/// ~73 ms against ~63 ms here, one standalone timing). `None` when the file is not exactly
/// one valid member holding one valid u8 IDX array (trailer size and CRC-32 included).
fn gunzip_single(bytes: &[u8]) -> Option<IdxArray> {
    use flate2::{Decompress, FlushDecompress, Status};
    let n = bytes.len();
    let start = gzip_header_len(bytes)?;
    let body = bytes.get(start..n.checked_sub(8)?)?;
    let trailer = &bytes[n - 8..];
    let crc = u32::from_le_bytes(trailer[..4].try_into().ok()?);
    let isize = u32::from_le_bytes(trailer[4..].try_into().ok()?);
    let mut d = Decompress::new(false);
    // exactly `out.len()` bytes of output (not the end of the stream)
    let exact = |d: &mut Decompress, out: &mut [u8]| -> Option<()> {
        let o0 = d.total_out();
        let input = body.get(usize::try_from(d.total_in()).ok()?..)?;
        d.decompress(input, out, FlushDecompress::None).ok()?;
        (d.total_out() - o0 == out.len() as u64).then_some(())
    };
    let mut magic = [0u8; 4];
    exact(&mut d, &mut magic)?;
    let [0, 0, IDX_U8, ndim] = magic else {
        return None;
    };
    if ndim == 0 {
        return None;
    }
    let mut head = vec![0u8; 4 * ndim as usize];
    exact(&mut d, &mut head)?;
    let dims: Vec<usize> = head
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let total = dims.iter().try_fold(1usize, |a, &x| a.checked_mul(x))?;
    // the trailer's size (mod 2^32) must agree before anything that large is reserved
    let whole = total.checked_add(4 + head.len())?;
    if whole as u32 != isize || whole > body.len().saturating_mul(1032) {
        return None;
    }
    let mut data = Vec::with_capacity(total);
    let input = body.get(usize::try_from(d.total_in()).ok()?..)?;
    let status = d
        .decompress_vec(input, &mut data, FlushDecompress::Finish)
        .ok()?;
    if status != Status::StreamEnd || data.len() != total || d.total_in() != body.len() as u64 {
        return None;
    }
    let mut c = flate2::Crc::new();
    c.update(&magic);
    c.update(&head);
    c.update(&data);
    (c.sum() == crc).then_some(IdxArray { dims, data })
}

/// The length of a gzip member header (RFC 1952: fixed 10 bytes, then the optional extra
/// field, name, comment and header CRC the flags announce), if it is one of deflate.
fn gzip_header_len(b: &[u8]) -> Option<usize> {
    let &[0x1f, 0x8b, 8, flags] = b.first_chunk::<4>()? else {
        return None;
    };
    if flags & 0xe0 != 0 {
        return None;
    }
    let mut at = 10;
    if flags & 0x04 != 0 {
        let xlen = u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
        at += 2 + xlen;
    }
    for bit in [0x08, 0x10] {
        if flags & bit != 0 {
            at += b.get(at..)?.iter().position(|&c| c == 0)? + 1;
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    (at <= b.len()).then_some(at)
}

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Format(msg.into())
}

/// Reads up to `n` bytes; fewer only at the end of the stream. Reserves room for
/// `min(n, cap)` bytes first (`cap` bounds what the input can hold, so that a header's
/// claim cannot make qatc reserve more; within it, the data is read without regrowing).
fn read_up_to(r: &mut dyn Read, n: u64, gz: bool, cap: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(usize::MAX).min(cap));
    r.take(n).read_to_end(&mut out).map_err(|e| {
        if gz {
            bad(format!("corrupt gzip stream: {}", io_message(&e)))
        } else {
            bad(io_message(&e))
        }
    })?;
    Ok(out)
}

fn parse_stream(r: &mut dyn Read, gz: bool, cap: usize) -> Result<IdxArray> {
    let magic = read_up_to(r, 4, gz, cap)?;
    let [z0, z1, code, ndim] = magic[..] else {
        return Err(bad(format!(
            "truncated header: {} bytes, an IDX file starts with a 4-byte magic number",
            magic.len()
        )));
    };
    if z0 != 0 || z1 != 0 {
        let m = u32::from_be_bytes([z0, z1, code, ndim]);
        return Err(bad(format!(
            "bad magic number 0x{m:08x}: not an IDX file (expected 0x0000080N for u8 data with N dimensions)"
        )));
    }
    if code != IDX_U8 {
        return Err(bad(format!(
            "element type 0x{code:02x} ({}) is not supported: only u8 (0x08) IDX data is read",
            type_name(code)
        )));
    }
    if ndim == 0 {
        return Err(bad("the header declares 0 dimensions"));
    }
    let head = read_up_to(r, 4 * ndim as u64, gz, cap)?;
    if head.len() != 4 * ndim as usize {
        return Err(bad(format!(
            "truncated header: {ndim} dimension sizes declared but only {} bytes of them present",
            head.len()
        )));
    }
    let dims: Vec<usize> = head
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let total = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| bad(format!("the dimensions {} overflow", dims_text(&dims))))?;
    let data = read_up_to(r, total, gz, cap)?;
    if (data.len() as u64) < total {
        return Err(bad(format!(
            "truncated data: the header declares {} = {total} bytes but only {} follow",
            dims_text(&dims),
            data.len()
        )));
    }
    let extra = read_up_to(r, 1 << 20, gz, 0)?;
    if !extra.is_empty() {
        return Err(bad(format!(
            "{}{} unexpected bytes after the {} data",
            extra.len(),
            if extra.len() == 1 << 20 { "+" } else { "" },
            dims_text(&dims)
        )));
    }
    Ok(IdxArray { dims, data })
}

/// The bytes of an uncompressed IDX file holding `data` with `dims` (for tests and tools).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    if dims.is_empty() || dims.len() > 255 {
        return Err(RuntimeError::Data(format!(
            "an IDX array has 1 to 255 dimensions, found {}",
            dims.len()
        )));
    }
    if dims.iter().product::<usize>() != data.len() {
        return Err(RuntimeError::Data(format!(
            "{} bytes do not fill dimensions {}",
            data.len(),
            dims_text(dims)
        )));
    }
    let mut out = vec![0, 0, IDX_U8, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| RuntimeError::Data(format!("dimension {d} does not fit an IDX header")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_plain_and_gzipped() {
        let data: Vec<u8> = (0..24).collect();
        let bytes = encode_idx(&[2, 3, 4], &data).unwrap();
        let a = parse_idx(&bytes).unwrap();
        assert_eq!(a.dims, [2, 3, 4]);
        assert_eq!(a.data, data);
        assert_eq!(parse_idx(&gzip(&bytes)).unwrap(), a);
        assert_eq!(a.dims_text(), "2×3×4");
    }

    #[test]
    fn header_errors() {
        let err = |b: &[u8]| parse_idx(b).unwrap_err().to_string();
        assert_eq!(
            err(&[0, 0]),
            "truncated header: 2 bytes, an IDX file starts with a 4-byte magic number"
        );
        assert!(
            err(&[0x12, 0x34, 0x08, 0x01, 0, 0, 0, 0]).starts_with("bad magic number 0x12340801")
        );
        assert_eq!(
            err(&[0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
            "element type 0x0d (f32) is not supported: only u8 (0x08) IDX data is read"
        );
        assert_eq!(err(&[0, 0, 8, 0]), "the header declares 0 dimensions");
        assert_eq!(
            err(&[0, 0, 8, 3, 0, 0, 0, 2, 0, 0]),
            "truncated header: 3 dimension sizes declared but only 6 bytes of them present"
        );
    }

    #[test]
    fn data_errors() {
        let mut bytes = encode_idx(&[2, 2], &[1, 2, 3, 4]).unwrap();
        bytes.pop();
        assert_eq!(
            parse_idx(&bytes).unwrap_err().to_string(),
            "truncated data: the header declares 2×2 = 4 bytes but only 3 follow"
        );
        bytes.extend_from_slice(&[4, 5, 6]);
        assert_eq!(
            parse_idx(&bytes).unwrap_err().to_string(),
            "2 unexpected bytes after the 2×2 data"
        );
        // A header claiming 4 GiB of data over a few bytes fails without allocating it.
        let huge = [0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 7];
        assert!(
            parse_idx(&huge)
                .unwrap_err()
                .to_string()
                .starts_with("truncated data")
        );
    }

    /// The one-pass path takes well-formed single members (optional header fields too)
    /// and gives what the stream gives; everything else goes back to the stream, which
    /// reads several members and names the faults.
    #[test]
    fn one_pass_gunzip() {
        let data: Vec<u8> = (0..=255).cycle().take(3 * 1000).collect();
        let bytes = encode_idx(&[3, 10, 100], &data).unwrap();
        let gz = gzip(&bytes);
        let fast = gunzip_single(&gz).expect("a single member takes the one-pass path");
        let mut stream = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut stream)
            .unwrap();
        assert_eq!(
            fast,
            parse_stream(&mut &stream[..], false, stream.len()).unwrap()
        );
        // FEXTRA, FNAME, FCOMMENT and FHCRC in the header
        let mut fields = gz[..10].to_vec();
        fields[3] = 0x04 | 0x08 | 0x10 | 0x02;
        fields.extend_from_slice(&[3, 0, 1, 2, 3]);
        fields.extend_from_slice(b"name\0comment\0");
        fields.extend_from_slice(&[0xaa, 0xbb]);
        fields.extend_from_slice(&gz[10..]);
        assert_eq!(gunzip_single(&fields), Some(fast.clone()));
        // a wrong CRC or size, two members, trailing bytes: not this path
        let mut crc = gz.clone();
        let n = crc.len();
        crc[n - 8] ^= 1;
        assert_eq!(gunzip_single(&crc), None);
        assert!(
            parse_idx(&crc)
                .unwrap_err()
                .to_string()
                .starts_with("corrupt gzip stream")
        );
        let mut size = gz.clone();
        size[n - 1] ^= 1;
        assert_eq!(gunzip_single(&size), None);
        let half = bytes.len() / 2;
        let two = [gzip(&bytes[..half]), gzip(&bytes[half..])].concat();
        assert_eq!(gunzip_single(&two), None);
        assert_eq!(parse_idx(&two).unwrap(), fast);
        let mut tail = gz.clone();
        tail.push(0);
        assert_eq!(gunzip_single(&tail), None);
    }

    #[test]
    fn corrupt_gzip() {
        let bytes = encode_idx(&[100], &[7; 100]).unwrap();
        let mut gz = gzip(&bytes);
        gz.truncate(gz.len() / 2);
        let e = parse_idx(&gz).unwrap_err().to_string();
        assert!(
            e.starts_with("corrupt gzip stream") || e.starts_with("truncated"),
            "{e}"
        );
        let mut garbled = gzip(&bytes);
        for b in garbled.iter_mut().skip(10) {
            *b ^= 0x5a;
        }
        let e = parse_idx(&garbled).unwrap_err().to_string();
        assert!(e.starts_with("corrupt gzip stream"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels");
        std::fs::write(&p, [1, 2, 3, 4, 5]).unwrap();
        let e = read_idx(&p).unwrap_err().to_string();
        assert!(e.ends_with("labels: bad magic number 0x01020304: not an IDX file (expected 0x0000080N for u8 data with N dimensions)"), "{e}");
        let e = read_idx(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("missing: no such file or directory"), "{e}");
    }
}
