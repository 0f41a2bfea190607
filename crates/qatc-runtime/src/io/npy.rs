//! NumPy `.npy` and `.npz` files ↔ [`qir::Tensor`], through the `npyz` crate.
//!
//! Element types: f32 (`<f4`), f64 (`<f8`), i8 (`|i1`), u8 (`|u1`), i16 (`<i2`), i32
//! (`<i4`), i64 (`<i8`) and bool (`|b1`); big-endian files are read too, Fortran-ordered
//! arrays are transposed to row-major on reading. Writes are little-endian, C-ordered, and
//! atomic; `.npz` archives are written uncompressed (as `numpy.savez`) and compressed ones
//! are read as well.
//!
//! Invariants: a malformed file is an error naming the file (or the archive member), never
//! a panic; the payload size is checked against the header before any element is decoded,
//! so a lying header never makes the reader allocate what the file does not hold.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

use npyz::{DType, Order, TypeChar, TypeStr, WriterBuilder};
use qir::{Data, Tensor};

use crate::error::{Result, RuntimeError, io_message};
use crate::io::atomic::write_atomic;

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Format(msg.into())
}

/// The element types read and written, as text for messages.
const SUPPORTED: &str = "f32, f64, i8, u8, i16, i32, i64, bool";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    F64,
    I8,
    U8,
    I16,
    I32,
    I64,
    Bool,
}

impl Elem {
    fn of(ts: &TypeStr) -> Option<Elem> {
        Some(match (ts.type_char(), ts.size_field()) {
            (TypeChar::Float, 4) => Elem::F32,
            (TypeChar::Float, 8) => Elem::F64,
            (TypeChar::Int, 1) => Elem::I8,
            (TypeChar::Uint, 1) => Elem::U8,
            (TypeChar::Int, 2) => Elem::I16,
            (TypeChar::Int, 4) => Elem::I32,
            (TypeChar::Int, 8) => Elem::I64,
            (TypeChar::Bool, 1) => Elem::Bool,
            _ => return None,
        })
    }
    fn size(self) -> u64 {
        match self {
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
            Elem::I16 => 2,
            Elem::F32 | Elem::I32 => 4,
            Elem::F64 | Elem::I64 => 8,
        }
    }
    fn descr(self) -> &'static str {
        match self {
            Elem::F32 => "<f4",
            Elem::F64 => "<f8",
            Elem::I8 => "|i1",
            Elem::U8 => "|u1",
            Elem::I16 => "<i2",
            Elem::I32 => "<i4",
            Elem::I64 => "<i8",
            Elem::Bool => "|b1",
        }
    }
    fn of_data(d: &Data) -> Elem {
        match d {
            Data::F32(_) => Elem::F32,
            Data::F64(_) => Elem::F64,
            Data::I8(_) => Elem::I8,
            Data::U8(_) => Elem::U8,
            Data::I16(_) => Elem::I16,
            Data::I32(_) => Elem::I32,
            Data::I64(_) => Elem::I64,
            Data::Bool(_) => Elem::Bool,
        }
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, &e))?;
    parse_npy(&bytes).map_err(|e| e.at(path))
}

/// Checks the header length field against the file's size before the header is read:
/// npyz allocates what the field says (up to 4 GB) before it can notice the file is short.
fn check_header_length(bytes: &[u8]) -> Result<()> {
    // magic (6 bytes), major and minor version, then a u16 (version 1) or u32 length
    let (Some(b"\x93NUMPY"), Some(&major)) = (bytes.get(..6), bytes.get(6)) else {
        return Ok(()); // npyz reports a bad magic string or a short file
    };
    let (len, start) = match major {
        1 => (
            bytes
                .get(8..10)
                .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]]))),
            10,
        ),
        _ => (
            bytes
                .get(8..12)
                .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            12,
        ),
    };
    match len {
        Some(len) if len > (bytes.len() - start.min(bytes.len())) as u64 => Err(bad(format!(
            "not a valid .npy file: the header length field says {len} bytes but the file has {} bytes after it",
            bytes.len().saturating_sub(start)
        ))),
        _ => Ok(()),
    }
}

/// Parses the bytes of a `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor> {
    check_header_length(bytes)?;
    let mut rest = bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest)
        .map_err(|e| bad(format!("not a valid .npy file: {}", io_message(&e))))?;
    let have = rest.len() as u64;
    let file = npyz::NpyFile::with_header(header, rest);
    let DType::Plain(ts) = file.dtype() else {
        return Err(bad(format!(
            "structured arrays are not supported (supported element types: {SUPPORTED})"
        )));
    };
    let elem = Elem::of(&ts).ok_or_else(|| {
        bad(format!(
            "element type '{ts}' is not supported (supported: {SUPPORTED})"
        ))
    })?;
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let numel = file
        .shape()
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(elem.size()))
        .ok_or_else(|| bad(format!("the shape {:?} overflows", file.shape())))?;
    if have != numel {
        return Err(bad(format!(
            "the header declares shape {:?} of '{ts}' ({numel} bytes of data) but {have} bytes follow",
            file.shape()
        )));
    }
    let fortran = file.order() == Order::Fortran;
    let read_err = |e: std::io::Error| bad(format!("bad element data: {}", io_message(&e)));
    let data = match elem {
        Elem::F32 => Data::F32(file.into_vec().map_err(read_err)?),
        Elem::F64 => Data::F64(file.into_vec().map_err(read_err)?),
        Elem::I8 => Data::I8(file.into_vec().map_err(read_err)?),
        Elem::U8 => Data::U8(file.into_vec().map_err(read_err)?),
        Elem::I16 => Data::I16(file.into_vec().map_err(read_err)?),
        Elem::I32 => Data::I32(file.into_vec().map_err(read_err)?),
        Elem::I64 => Data::I64(file.into_vec().map_err(read_err)?),
        Elem::Bool => Data::Bool(file.into_vec().map_err(read_err)?),
    };
    let data = if fortran && shape.len() > 1 {
        fortran_to_c(data, &shape)
    } else {
        data
    };
    Tensor::new(shape, data).ok_or_else(|| bad("the data do not fill the declared shape"))
}

/// Reorders column-major data of `shape` to row-major.
fn fortran_to_c(data: Data, shape: &[usize]) -> Data {
    fn go<T: Copy>(v: Vec<T>, shape: &[usize]) -> Vec<T> {
        let n = v.len();
        let mut out = Vec::with_capacity(n);
        let rank = shape.len();
        let mut idx = vec![0usize; rank];
        // Column-major strides.
        let mut strides = vec![1usize; rank];
        for k in 1..rank {
            strides[k] = strides[k - 1] * shape[k - 1];
        }
        for _ in 0..n {
            let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
            out.push(v[off]);
            // Advance the row-major multi-index.
            for k in (0..rank).rev() {
                idx[k] += 1;
                if idx[k] < shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        out
    }
    match data {
        Data::F32(v) => Data::F32(go(v, shape)),
        Data::F64(v) => Data::F64(go(v, shape)),
        Data::I8(v) => Data::I8(go(v, shape)),
        Data::U8(v) => Data::U8(go(v, shape)),
        Data::I16(v) => Data::I16(go(v, shape)),
        Data::I32(v) => Data::I32(go(v, shape)),
        Data::I64(v) => Data::I64(go(v, shape)),
        Data::Bool(v) => Data::Bool(go(v, shape)),
    }
}

/// The bytes of a `.npy` file holding `t`.
pub fn encode_npy(t: &Tensor) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_npy_to(&mut out, t).map_err(|e| RuntimeError::Data(io_message(&e)))?;
    Ok(out)
}

fn write_npy_to<W: std::io::Write>(w: W, t: &Tensor) -> std::io::Result<()> {
    let elem = Elem::of_data(&t.data);
    let ts: TypeStr = elem
        .descr()
        .parse()
        .map_err(|e| std::io::Error::other(format!("{e}")))?;
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    macro_rules! put {
        ($v:expr) => {{
            let mut wr = npyz::WriteOptions::new()
                .dtype(DType::Plain(ts))
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            wr.extend($v.iter().copied())?;
            wr.finish()
        }};
    }
    match &t.data {
        Data::F32(v) => put!(v),
        Data::F64(v) => put!(v),
        Data::I8(v) => put!(v),
        Data::U8(v) => put!(v),
        Data::I16(v) => put!(v),
        Data::I32(v) => put!(v),
        Data::I64(v) => put!(v),
        Data::Bool(v) => put!(v),
    }
}

/// Writes `t` to a `.npy` file, atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let bytes = encode_npy(t).map_err(|e| match e {
        RuntimeError::Data(m) => RuntimeError::File {
            path: path.to_path_buf(),
            message: m,
        },
        other => other,
    })?;
    write_atomic(path, &bytes)
}

/// Reads every array of a `.npz` archive, by name.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, &e))?;
    parse_npz(&bytes).map_err(|e| e.at(path))
}

/// Parses the bytes of a `.npz` archive.
pub fn parse_npz(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let zip_err = |e: npyz::zip::result::ZipError| bad(format!("not a valid .npz archive: {e}"));
    let mut zip = npyz::zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(zip_err)?;
        let file_name = f.name().to_string();
        let Some(name) = npyz::npz::array_name_from_file_name(&file_name) else {
            continue;
        };
        let name = name.to_string();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| bad(format!("member '{file_name}': {}", io_message(&e))))?;
        let t = parse_npy(&buf).map_err(|e| bad(format!("member '{file_name}': {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The bytes of an uncompressed `.npz` archive holding `arrays`.
pub fn encode_npz<'a>(arrays: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Result<Vec<u8>> {
    let err = |m: String| RuntimeError::Data(m);
    let mut zip = npyz::zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = npyz::zip::write::FileOptions::default()
        .compression_method(npyz::zip::CompressionMethod::Stored);
    for (name, t) in arrays {
        zip.start_file(npyz::npz::file_name_from_array_name(name), opts)
            .map_err(|e| err(format!("array '{name}': {e}")))?;
        write_npy_to(&mut zip, t)
            .map_err(|e| err(format!("array '{name}': {}", io_message(&e))))?;
    }
    let cursor = zip.finish().map_err(|e| err(e.to_string()))?;
    Ok(cursor.into_inner())
}

/// Writes `arrays` to a `.npz` archive, atomically.
pub fn write_npz<'a>(
    path: &Path,
    arrays: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<()> {
    let bytes = encode_npz(arrays).map_err(|e| match e {
        RuntimeError::Data(m) => RuntimeError::File {
            path: path.to_path_buf(),
            message: m,
        },
        other => other,
    })?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_types() -> Vec<Tensor> {
        vec![
            Tensor::f32(vec![2, 3], vec![0.5, -1.0, 2.25, f32::MAX, 0.0, -0.0]).unwrap(),
            Tensor::new(vec![3], Data::F64(vec![1e-300, 2.0, -3.5])).unwrap(),
            Tensor::new(vec![2, 2], Data::I8(vec![-128, 127, 0, 5])).unwrap(),
            Tensor::new(vec![4], Data::U8(vec![0, 255, 7, 8])).unwrap(),
            Tensor::new(vec![2], Data::I16(vec![-300, 300])).unwrap(),
            Tensor::new(vec![1, 2], Data::I32(vec![i32::MIN, 42])).unwrap(),
            Tensor::new(vec![], Data::I64(vec![1 << 40])).unwrap(),
            Tensor::new(vec![3], Data::Bool(vec![true, false, true])).unwrap(),
            Tensor::f32(vec![0, 4], vec![]).unwrap(),
        ]
    }

    #[test]
    fn npy_round_trips_every_type() {
        for t in all_types() {
            let bytes = encode_npy(&t).unwrap();
            assert_eq!(parse_npy(&bytes).unwrap(), t, "{:?}", t.data.dtype());
        }
    }

    #[test]
    fn npy_header_is_numpy_format() {
        let t = Tensor::f32(vec![2, 3], vec![0.0; 6]).unwrap();
        let bytes = encode_npy(&t).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header = String::from_utf8_lossy(&bytes[10..]);
        assert!(header.contains("'descr': '<f4'"), "{header}");
        assert!(header.contains("'fortran_order': False"), "{header}");
        assert!(header.contains("'shape': (2, 3, )"), "{header}");
        // Data offset is a multiple of 64 as numpy requires, and the data are little-endian.
        assert_eq!((bytes.len() - 24) % 64, 0);
    }

    #[test]
    fn fortran_order_is_transposed() {
        // numpy.asfortranarray([[1, 2, 3], [4, 5, 6]], dtype='<i4') saved with np.save.
        let mut header = "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }".to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [1i32, 4, 2, 5, 3, 6] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let t = parse_npy(&bytes).unwrap();
        assert_eq!(t.shape, [2, 3]);
        assert_eq!(t.data, Data::I32(vec![1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn malformed_npy_is_an_error() {
        let t = Tensor::f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let bytes = encode_npy(&t).unwrap();
        let e = parse_npy(&bytes[..bytes.len() - 3])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the header declares shape [4] of '<f4' (16 bytes of data) but 13 bytes follow"
        );
        assert!(
            parse_npy(b"hello")
                .unwrap_err()
                .to_string()
                .starts_with("not a valid .npy file")
        );
        assert!(parse_npy(&bytes[..20]).is_err());
        // Every prefix is an error, not a panic.
        for n in 0..bytes.len() {
            assert!(parse_npy(&bytes[..n]).is_err());
        }
        let mut u4 = bytes.clone();
        let pos = u4.windows(3).position(|w| w == b"<f4").unwrap();
        u4[pos + 1] = b'u';
        assert_eq!(
            parse_npy(&u4).unwrap_err().to_string(),
            "element type '<u4' is not supported (supported: f32, f64, i8, u8, i16, i32, i64, bool)"
        );
        let mut boolean =
            encode_npy(&Tensor::new(vec![1], Data::Bool(vec![true])).unwrap()).unwrap();
        *boolean.last_mut().unwrap() = 7;
        assert!(
            parse_npy(&boolean)
                .unwrap_err()
                .to_string()
                .starts_with("bad element data")
        );
    }

    #[test]
    fn header_length_beyond_the_file_is_refused_before_allocating() {
        for (version, field) in [
            (1u8, &[0xF0u8, 0xFF][..]),
            (2, &[0xF0, 0xFF, 0xFF, 0xFF][..]),
        ] {
            let mut bytes = b"\x93NUMPY".to_vec();
            bytes.extend([version, 0]);
            bytes.extend(field);
            bytes.extend([b' '; 630]);
            let err = parse_npy(&bytes).unwrap_err().to_string();
            let len = if version == 1 { 0xFFF0 } else { 0xFFFF_FFF0u32 };
            assert_eq!(
                err,
                format!(
                    "not a valid .npy file: the header length field says {len} bytes but the file has 630 bytes after it"
                )
            );
        }
    }

    #[test]
    fn npz_round_trips_and_checks_members() {
        let ts = all_types();
        let names: Vec<String> = (0..ts.len()).map(|i| format!("a{i}")).collect();
        let bytes = encode_npz(names.iter().map(String::as_str).zip(ts.iter())).unwrap();
        let back = parse_npz(&bytes).unwrap();
        assert_eq!(back.len(), ts.len());
        for (n, t) in names.iter().zip(&ts) {
            assert_eq!(&back[n], t);
        }
        assert!(
            parse_npz(b"PK\x03\x04garbage")
                .unwrap_err()
                .to_string()
                .starts_with("not a valid .npz archive")
        );
        for n in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse_npz(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn files_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::f32(vec![2], vec![1.5, -2.5]).unwrap();
        let p = dir.path().join("t.npy");
        write_npy(&p, &t).unwrap();
        assert_eq!(read_npy(&p).unwrap(), t);
        let z = dir.path().join("o.npz");
        write_npz(&z, [("logits", &t)]).unwrap();
        assert_eq!(read_npz(&z).unwrap()["logits"], t);
        std::fs::write(&p, b"\x93NUMPY").unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("t.npy: not a valid .npy file"), "{e}");
    }
}
