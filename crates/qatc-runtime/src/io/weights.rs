//! Named tensors in safetensors files (weights and checkpoints), through the `safetensors`
//! crate, and their exchange with an interpreter [`Store`].
//!
//! Element types: f32, f64, i8, u8, i16, i32, i64, bool (the [`qir::Data`] types), and
//! 4-bit integers packed two per byte ([`pack_i4`]): safetensors has no 4-bit integer
//! dtype, so a packed tensor `n` is written as dtype U8 of shape `[ceil(numel / 2)]`, element
//! `2k` in the low nibble of byte `k` and element `2k + 1` in its high nibble (two's
//! complement, values in [-8, 7]), with the metadata entry `i4:n` = its shape (`"3,4"`).
//! Reading a file unpacks every such tensor back to i8 of that shape (how the
//! interpreter and the JIT hold `i4` values), so no reader sees the packing.
//! Invariants: writes are atomic (temporary file in the same directory, fsync, rename), so
//! an interrupted save never leaves a torn checkpoint; a truncated or corrupt file is a
//! one-line error naming the file, never a panic. Optional string metadata (the
//! safetensors `__metadata__` map) is written and read back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use qir::{Data, Graph, Tensor};
use qir_exec::Store;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Result, RuntimeError};
use crate::io::atomic::write_atomic;

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Format(msg.into())
}

/// Tensors by name with the file's string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// The tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

fn dtype_of(d: &Data) -> Dtype {
    match d {
        Data::F32(_) => Dtype::F32,
        Data::F64(_) => Dtype::F64,
        Data::I8(_) => Dtype::I8,
        Data::U8(_) => Dtype::U8,
        Data::I16(_) => Dtype::I16,
        Data::I32(_) => Dtype::I32,
        Data::I64(_) => Dtype::I64,
        Data::Bool(_) => Dtype::BOOL,
    }
}

fn le_bytes(d: &Data) -> Vec<u8> {
    match d {
        Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::U8(v) => v.clone(),
        Data::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}

fn from_le<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

fn tensor_of(name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let b = view.data();
    let data = match view.dtype() {
        Dtype::F32 => Data::F32(from_le(b, f32::from_le_bytes)),
        Dtype::F64 => Data::F64(from_le(b, f64::from_le_bytes)),
        Dtype::I8 => Data::I8(from_le(b, i8::from_le_bytes)),
        Dtype::U8 => Data::U8(b.to_vec()),
        Dtype::I16 => Data::I16(from_le(b, i16::from_le_bytes)),
        Dtype::I32 => Data::I32(from_le(b, i32::from_le_bytes)),
        Dtype::I64 => Data::I64(from_le(b, i64::from_le_bytes)),
        Dtype::BOOL => {
            if let Some(&x) = b.iter().find(|&&x| x > 1) {
                return Err(bad(format!("tensor '{name}': invalid bool byte {x}")));
            }
            Data::Bool(b.iter().map(|&x| x == 1).collect())
        }
        other => {
            return Err(bad(format!(
                "tensor '{name}' has element type {other:?}, which is not supported (supported: F32, F64, I8, U8, I16, I32, I64, BOOL)"
            )));
        }
    };
    Tensor::new(view.shape().to_vec(), data)
        .ok_or_else(|| bad(format!("tensor '{name}': data do not fill its shape")))
}

/// The metadata key prefix of a tensor of 4-bit integers packed two per byte.
pub const I4_PREFIX: &str = "i4:";

/// `t` (i8 values in [-8, 7]) packed two per byte (see the module docs) with the metadata
/// entry that marks it; `None` if `t` is not i8 or holds a value outside [-8, 7].
pub fn pack_i4(name: &str, t: &Tensor) -> Option<(Tensor, (String, String))> {
    let Data::I8(v) = &t.data else { return None };
    if v.iter().any(|x| !(-8..=7).contains(x)) {
        return None;
    }
    let bytes: Vec<u8> = v
        .chunks(2)
        .map(|p| (p[0] as u8 & 0x0f) | ((p.get(1).copied().unwrap_or(0) as u8 & 0x0f) << 4))
        .collect();
    let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let packed = Tensor::new(vec![bytes.len()], Data::U8(bytes))?;
    Some((packed, (format!("{I4_PREFIX}{name}"), shape.join(","))))
}

/// The i8 values of packed tensor `name` of shape `shape` (text of its metadata entry).
fn unpack_i4(name: &str, t: &Tensor, shape: &str) -> Result<Tensor> {
    let bad_shape = || {
        bad(format!(
            "tensor '{name}': packed i4 shape '{shape}' is not a list of sizes"
        ))
    };
    let dims: Vec<usize> = if shape.is_empty() {
        vec![]
    } else {
        shape
            .split(',')
            .map(|d| d.trim().parse().map_err(|_| bad_shape()))
            .collect::<Result<_>>()?
    };
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(bad_shape)?;
    let Data::U8(bytes) = &t.data else {
        return Err(bad(format!(
            "tensor '{name}': packed i4 values must be u8 bytes"
        )));
    };
    if bytes.len() != n.div_ceil(2) {
        return Err(bad(format!(
            "tensor '{name}': {} bytes cannot hold {n} packed i4 values",
            bytes.len()
        )));
    }
    // sign-extend each nibble
    let nibble = |b: u8| ((b << 4) as i8) >> 4;
    let v: Vec<i8> = (0..n)
        .map(|i| {
            nibble(if i % 2 == 0 {
                bytes[i / 2]
            } else {
                bytes[i / 2] >> 4
            })
        })
        .collect();
    Tensor::new(dims, Data::I8(v)).ok_or_else(bad_shape)
}

/// Parses the bytes of a safetensors file.
pub fn parse_safetensors(bytes: &[u8]) -> Result<TensorFile> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        bad(format!(
            "not a valid safetensors file: {}",
            one_line(&e.to_string())
        ))
    })?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        bad(format!(
            "not a valid safetensors file: {}",
            one_line(&e.to_string())
        ))
    })?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        tensors.insert(name.to_string(), tensor_of(name, &view)?);
    }
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for (key, shape) in &metadata {
        let Some(name) = key.strip_prefix(I4_PREFIX) else {
            continue;
        };
        let t = tensors
            .get(name)
            .ok_or_else(|| bad(format!("metadata '{key}' names no tensor")))?;
        let t = unpack_i4(name, t, shape)?;
        tensors.insert(name.to_string(), t);
    }
    Ok(TensorFile { tensors, metadata })
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::error::lowercase_first(&s)
}

/// Reads a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, &e))?;
    parse_safetensors(&bytes).map_err(|e| e.at(path))
}

/// The bytes of a safetensors file holding `tensors` and `metadata`.
pub fn encode_safetensors<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let owned: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| (n, dtype_of(&t.data), t.shape.clone(), le_bytes(&t.data)))
        .collect();
    let views = owned
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (*n, v))
                .map_err(|e| {
                    RuntimeError::Data(format!("tensor '{n}': {}", one_line(&e.to_string())))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: Option<HashMap<String, String>> = if metadata.is_empty() {
        None
    } else {
        Some(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    safetensors::serialize(views, meta).map_err(|e| RuntimeError::Data(one_line(&e.to_string())))
}

/// Writes `tensors` (and `metadata`) to a safetensors file, atomically.
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = encode_safetensors(tensors, metadata).map_err(|e| match e {
        RuntimeError::Data(m) => RuntimeError::File {
            path: path.to_path_buf(),
            message: m,
        },
        other => other,
    })?;
    write_atomic(path, &bytes)
}

/// Which declarations of a graph a weights file must provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Require {
    /// Every parameter (state is initialized from the graph when absent).
    Params,
    /// Every parameter and every state value (running statistics, observer ranges).
    ParamsAndState,
    /// Nothing: every declaration the file lacks is initialized from the graph.
    Nothing,
}

/// Whether a checkpoint tensor name is optimizer state written by `qatc train`
/// (`%p.momentum`, `%p.adam_m`, `%p.adam_v`, `%opt.step`), which an inference graph does
/// not declare.
fn is_optimizer_state(name: &str) -> bool {
    name == "opt.step"
        || [".momentum", ".adam_m", ".adam_v"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// The tensors of `file` that `g` does not declare (as params, state or constants), other
/// than optimizer state, sorted: a checkpoint of another model, e.g. a QAT checkpoint
/// (with observer ranges) given to the float model.
pub fn unused_tensors<'f>(g: &Graph, file: &'f TensorFile) -> Vec<&'f str> {
    let mut unused: Vec<&str> = file
        .tensors
        .keys()
        .map(String::as_str)
        .filter(|k| !is_optimizer_state(k))
        .filter(|k| {
            g.find(k).is_none_or(|id| {
                let n = g.node(id);
                !(n.is_param() || n.is_state() || n.is_const())
            })
        })
        .collect();
    unused.sort_unstable();
    unused
}

/// A store for `g` from a weights file: the file's tensors that `g` declares (as params,
/// state or constants) are loaded, the rest of `g`'s declarations are initialized from
/// the graph with `seed`. Tensors of the file that `g` does not declare are ignored
/// (a training checkpoint also holds optimizer state). A declaration `require`d but absent
/// from the file, or a tensor whose shape or type does not match its declaration, is an
/// error naming it.
pub fn store_from_file(g: &Graph, file: &TensorFile, require: Require, seed: u64) -> Result<Store> {
    let mut store = Store::new();
    for id in g.node_ids() {
        let node = g.node(id);
        let Some(name) = node.name.as_deref() else {
            continue;
        };
        let required = match require {
            Require::Params => node.is_param(),
            Require::ParamsAndState => node.is_param() || node.is_state(),
            Require::Nothing => false,
        };
        let declared = node.is_param() || node.is_state() || node.is_const();
        match file.tensors.get(name) {
            Some(t) if declared => store.insert(name, t.clone()),
            _ if required => {
                let kind = if node.is_param() { "param" } else { "state" };
                return Err(RuntimeError::Data(format!(
                    "the weights have no tensor for {kind} %{name}: {}",
                    node.ty
                )));
            }
            _ => {}
        }
    }
    qir_exec::fill_store(g, &mut store, seed)?;
    Ok(store)
}

/// The params and state of `g` held by `store`, by name (what a checkpoint saves).
pub fn params_and_state<'s>(g: &Graph, store: &'s Store) -> Vec<(&'s str, &'s Tensor)> {
    let mut out = Vec::new();
    for id in g.node_ids() {
        let node = g.node(id);
        if !(node.is_param() || node.is_state()) {
            continue;
        }
        if let Some(name) = node.name.as_deref()
            && let Some((k, t)) = store.iter().find(|(k, _)| *k == name)
        {
            out.push((k, t));
        }
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            (
                "fc1.w".into(),
                Tensor::f32(vec![2, 3], vec![0.5, -1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(),
            ),
            (
                "fc1.b".into(),
                Tensor::new(vec![2], Data::F64(vec![1.0, -1.0])).unwrap(),
            ),
            (
                "q".into(),
                Tensor::new(vec![3], Data::I8(vec![-128, 0, 127])).unwrap(),
            ),
            (
                "u".into(),
                Tensor::new(vec![1], Data::U8(vec![200])).unwrap(),
            ),
            (
                "h".into(),
                Tensor::new(vec![1], Data::I16(vec![-2])).unwrap(),
            ),
            (
                "zp".into(),
                Tensor::new(vec![], Data::I32(vec![-3])).unwrap(),
            ),
            (
                "step".into(),
                Tensor::new(vec![], Data::I64(vec![12])).unwrap(),
            ),
            (
                "mask".into(),
                Tensor::new(vec![2], Data::Bool(vec![true, false])).unwrap(),
            ),
        ]
    }

    #[test]
    fn round_trip_with_metadata() {
        let ts = sample();
        let meta = BTreeMap::from([("epoch".to_string(), "3".to_string())]);
        let bytes = encode_safetensors(ts.iter().map(|(n, t)| (n.as_str(), t)), &meta).unwrap();
        let back = parse_safetensors(&bytes).unwrap();
        assert_eq!(back.metadata, meta);
        assert_eq!(back.tensors.len(), ts.len());
        for (n, t) in &ts {
            assert_eq!(&back.tensors[n], t, "{n}");
        }
    }

    #[test]
    fn i4_tensors_are_packed_two_per_byte_and_unpacked_when_read() {
        let w = Tensor::new(vec![3, 3], Data::I8(vec![-8, 7, 0, -1, 1, 5, -6, 3, -2])).unwrap();
        let (packed, (key, shape)) = pack_i4("w", &w).unwrap();
        assert_eq!(key, "i4:w");
        assert_eq!(shape, "3,3");
        // low nibble first: -8 = 0x8, 7 = 0x7; 0, -1 = 0xf; ...; the last byte's high nibble 0
        assert_eq!(packed.shape, vec![5]);
        assert_eq!(packed.data, Data::U8(vec![0x78, 0xf0, 0x51, 0x3a, 0x0e]));
        let meta = BTreeMap::from([(key, shape)]);
        let bytes = encode_safetensors([("w", &packed)], &meta).unwrap();
        let back = parse_safetensors(&bytes).unwrap();
        assert_eq!(back.tensors["w"], w);
        // only i8 values in [-8, 7] pack
        let wide = Tensor::new(vec![1], Data::I8(vec![8])).unwrap();
        assert!(pack_i4("x", &wide).is_none());
        // a packed tensor of the wrong size is an error naming it
        let meta = BTreeMap::from([("i4:w".to_string(), "4,3".to_string())]);
        let bytes = encode_safetensors([("w", &packed)], &meta).unwrap();
        let e = parse_safetensors(&bytes).unwrap_err().to_string();
        assert!(
            e.contains("tensor 'w': 5 bytes cannot hold 12 packed i4 values"),
            "{e}"
        );
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let ts = sample();
        let bytes =
            encode_safetensors(ts.iter().map(|(n, t)| (n.as_str(), t)), &BTreeMap::new()).unwrap();
        for n in 0..bytes.len() {
            let e = parse_safetensors(&bytes[..n]).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.starts_with("not a valid safetensors file"), "{n}: {e}");
        }
        let mut corrupt = bytes.clone();
        corrupt[9] = b'!'; // inside the JSON header
        assert!(parse_safetensors(&corrupt).is_err());
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_safetensors(&huge).is_err());
        // A bool tensor with a byte other than 0/1.
        let t = Tensor::new(vec![1], Data::Bool(vec![true])).unwrap();
        let mut b = encode_safetensors([("m", &t)], &BTreeMap::new()).unwrap();
        *b.last_mut().unwrap() = 9;
        assert_eq!(
            parse_safetensors(&b).unwrap_err().to_string(),
            "tensor 'm': invalid bool byte 9"
        );
    }

    #[test]
    fn file_write_is_atomic_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let ts = sample();
        write_safetensors(
            &p,
            ts.iter().map(|(n, t)| (n.as_str(), t)),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(read_safetensors(&p).unwrap().tensors.len(), ts.len());
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let e = read_safetensors(&p).unwrap_err().to_string();
        assert!(
            e.contains("w.safetensors: not a valid safetensors file"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
