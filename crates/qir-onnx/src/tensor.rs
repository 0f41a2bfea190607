//! ONNX tensors (`TensorProto`: initializers and `Constant` values) as [`qir::Tensor`]s,
//! with their data inline (`raw_data` or the typed fields) or in an external data file.
//!
//! Element types: float, double, int8, uint8, int32, int64 and bool, the types a qir
//! tensor holds; any other is an error naming the tensor. Invariants: nothing is allocated
//! for data that is not there (sizes are checked against the bytes present, or the file's
//! length, first); an external data location is a relative path inside the model's folder
//! (no absolute path, no `..`, no symbolic link leading out), read only in the range its
//! `offset` and `length` give.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use qir::{Data, ElemType, Tensor};

use crate::proto::TensorProto;
use crate::proto::tensor_proto::{DataLocation, DataType};

/// The qir element type of an ONNX element type (`TensorProto.DataType`).
pub fn elem_type(data_type: i32) -> Result<ElemType, String> {
    match DataType::try_from(data_type) {
        Ok(DataType::Float) => Ok(ElemType::F32),
        Ok(DataType::Double) => Ok(ElemType::F64),
        Ok(DataType::Int8) => Ok(ElemType::I8),
        Ok(DataType::Uint8) => Ok(ElemType::U8),
        Ok(DataType::Int32) => Ok(ElemType::I32),
        Ok(DataType::Int64) => Ok(ElemType::I64),
        Ok(DataType::Bool) => Ok(ElemType::Bool),
        Ok(other) => Err(format!(
            "element type {} is not supported (supported: FLOAT, DOUBLE, INT8, UINT8, INT32, INT64, BOOL)",
            other.as_str_name()
        )),
        Err(_) => Err(format!("unknown element type {data_type}")),
    }
}

fn elem_size(e: &ElemType) -> usize {
    match e {
        ElemType::F64 | ElemType::I64 => 8,
        ElemType::F32 | ElemType::I32 => 4,
        _ => 1,
    }
}

/// Where external data files are looked for: the folder of the model file.
#[derive(Clone, Copy, Debug)]
pub struct DataDir<'a>(pub Option<&'a Path>);

/// The tensor `t` holds (its name is only used in messages, by the caller).
pub fn decode(t: &TensorProto, dir: DataDir<'_>) -> Result<Tensor, String> {
    let elem = elem_type(t.data_type.unwrap_or(0))?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("dimension {d} is negative"))?;
        shape.push(d);
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} has too many elements", t.dims))?;
    let nbytes = numel
        .checked_mul(elem_size(&elem))
        .ok_or_else(|| format!("shape {:?} has too many elements", t.dims))?;
    let external = t.data_location == Some(DataLocation::External as i32);
    let data = if external {
        let bytes = read_external(t, dir, nbytes)?;
        from_le(&elem, &bytes)
    } else if let Some(raw) = &t.raw_data {
        if raw.len() != nbytes {
            return Err(format!(
                "raw data holds {} bytes, the shape {:?} needs {nbytes}",
                raw.len(),
                t.dims
            ));
        }
        from_le(&elem, raw)
    } else {
        typed(t, &elem, numel)?
    };
    if let Data::Bool(_) = data
        && let Some(raw) = &t.raw_data
        && raw.iter().any(|&b| b > 1)
    {
        return Err("a bool value is neither 0 nor 1".into());
    }
    Tensor::new(shape, data).ok_or_else(|| "data do not fill the shape".to_string())
}

fn count_check(have: usize, numel: usize, field: &str) -> Result<(), String> {
    if have == numel {
        Ok(())
    } else {
        Err(format!(
            "{field} holds {have} values, the shape needs {numel}"
        ))
    }
}

/// Data from the typed repeated fields (`float_data`, `int32_data`, ...).
fn typed(t: &TensorProto, elem: &ElemType, numel: usize) -> Result<Data, String> {
    let narrow =
        |field: &str| -> Result<(), String> { count_check(t.int32_data.len(), numel, field) };
    Ok(match elem {
        ElemType::F32 => {
            count_check(t.float_data.len(), numel, "float_data")?;
            Data::F32(t.float_data.clone())
        }
        ElemType::F64 => {
            count_check(t.double_data.len(), numel, "double_data")?;
            Data::F64(t.double_data.clone())
        }
        ElemType::I64 => {
            count_check(t.int64_data.len(), numel, "int64_data")?;
            Data::I64(t.int64_data.clone())
        }
        ElemType::I32 => {
            narrow("int32_data")?;
            Data::I32(t.int32_data.clone())
        }
        ElemType::I8 => {
            narrow("int32_data")?;
            Data::I8(
                t.int32_data
                    .iter()
                    .map(|&v| i8::try_from(v).map_err(|_| format!("{v} is not an int8 value")))
                    .collect::<Result<_, _>>()?,
            )
        }
        ElemType::U8 => {
            narrow("int32_data")?;
            Data::U8(
                t.int32_data
                    .iter()
                    .map(|&v| u8::try_from(v).map_err(|_| format!("{v} is not a uint8 value")))
                    .collect::<Result<_, _>>()?,
            )
        }
        ElemType::Bool => {
            narrow("int32_data")?;
            Data::Bool(
                t.int32_data
                    .iter()
                    .map(|&v| match v {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(format!("{v} is not a bool value")),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        ElemType::Quant(_) => return Err("quantized element types are not ONNX types".into()),
    })
}

fn chunks<const N: usize, T>(b: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Little-endian bytes (whose length the caller checked) as data of `elem`.
fn from_le(elem: &ElemType, b: &[u8]) -> Data {
    match elem {
        ElemType::F32 => Data::F32(chunks(b, f32::from_le_bytes)),
        ElemType::F64 => Data::F64(chunks(b, f64::from_le_bytes)),
        ElemType::I32 => Data::I32(chunks(b, i32::from_le_bytes)),
        ElemType::I64 => Data::I64(chunks(b, i64::from_le_bytes)),
        ElemType::I8 => Data::I8(b.iter().map(|&x| x as i8).collect()),
        ElemType::U8 | ElemType::Quant(_) => Data::U8(b.to_vec()),
        ElemType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
    }
}

/// The path of an external data file: `location` must be relative and stay inside `dir`.
pub fn external_path(dir: &Path, location: &str) -> Result<PathBuf, String> {
    let rel = Path::new(location);
    let lexically_inside = !location.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !lexically_inside {
        return Err(format!(
            "external data location '{location}' is not a relative path inside the model's folder"
        ));
    }
    let full = dir.join(rel);
    let open_err = |e: std::io::Error| {
        format!(
            "cannot open external data file '{}': {}",
            full.display(),
            crate::lower_first(&e.to_string())
        )
    };
    let base = dir.canonicalize().map_err(open_err)?;
    let real = full.canonicalize().map_err(open_err)?;
    if !real.starts_with(&base) {
        return Err(format!(
            "external data location '{location}' leads out of the model's folder (through a symbolic link)"
        ));
    }
    Ok(real)
}

fn read_external(t: &TensorProto, dir: DataDir<'_>, nbytes: usize) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for kv in &t.external_data {
        let value = kv.value.as_deref().unwrap_or("");
        let number = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("external data {what} '{value}' is not a number"))
        };
        match kv.key.as_deref().unwrap_or("") {
            "location" => location = Some(value),
            "offset" => offset = number("offset")?,
            "length" => length = Some(number("length")?),
            // checksum (SHA-1, optional) and keys of later ONNX versions do not change the
            // data read
            _ => {}
        }
    }
    let location = location.ok_or("external data without a 'location'")?;
    let Some(dir) = dir.0 else {
        return Err(format!(
            "the tensor's data is in the external file '{location}', but the model was not read from a file (import it by path)"
        ));
    };
    if let Some(len) = length
        && len != nbytes as u64
    {
        return Err(format!(
            "external data length {len} does not match the {nbytes} bytes the shape needs"
        ));
    }
    let path = external_path(dir, location)?;
    let io = |e: std::io::Error| {
        format!(
            "external data file '{location}': {}",
            crate::lower_first(&e.to_string())
        )
    };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let end = offset.checked_add(nbytes as u64);
    if end.is_none_or(|e| e > file_len) {
        return Err(format!(
            "external data file '{location}' holds {file_len} bytes, too few for {nbytes} bytes at offset {offset}"
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; nbytes];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dt: DataType, dims: &[i64], bytes: &[u8]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dt as i32),
            raw_data: Some(bytes.to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_data() {
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = decode(&raw(DataType::Float, &[2], &b), DataDir(None)).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[1.5, -2.0]);
        let t = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Int8 as i32),
            int32_data: vec![-1, 0, 127],
            ..Default::default()
        };
        assert_eq!(
            decode(&t, DataDir(None)).unwrap().data,
            Data::I8(vec![-1, 0, 127])
        );
    }

    #[test]
    fn bad_tensors_are_errors() {
        let e = decode(&raw(DataType::Float, &[3], &[0; 8]), DataDir(None)).unwrap_err();
        assert!(e.contains("holds 8 bytes"), "{e}");
        let e = decode(&raw(DataType::Float16, &[1], &[0; 2]), DataDir(None)).unwrap_err();
        assert!(e.contains("FLOAT16"), "{e}");
        let e = decode(&raw(DataType::Float, &[i64::MAX, 4], &[]), DataDir(None)).unwrap_err();
        assert!(e.contains("too many"), "{e}");
        let e = decode(&raw(DataType::Float, &[-1], &[]), DataDir(None)).unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = decode(&raw(DataType::Bool, &[1], &[2]), DataDir(None)).unwrap_err();
        assert!(e.contains("bool"), "{e}");
    }

    #[test]
    fn external_paths_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.bin"), [0u8; 8]).unwrap();
        assert!(external_path(dir.path(), "w.bin").is_ok());
        assert!(external_path(dir.path(), "./w.bin").is_ok());
        for bad in ["../w.bin", "/etc/passwd", "", "a/../../w.bin"] {
            let e = external_path(dir.path(), bad).unwrap_err();
            assert!(e.contains("inside the model's folder"), "{bad}: {e}");
        }
        let e = external_path(dir.path(), "missing.bin").unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("x.bin"), [0u8; 4]).unwrap();
            std::os::unix::fs::symlink(outside.path().join("x.bin"), dir.path().join("link.bin"))
                .unwrap();
            let e = external_path(dir.path(), "link.bin").unwrap_err();
            assert!(e.contains("symbolic link"), "{e}");
        }
    }
}
