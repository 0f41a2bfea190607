//! Dense tensors: a fixed shape and row-major data of one element type. Used for inline
//! constants, weights, and by the interpreter. Quantized values are stored in their
//! storage type (the parameters live in the IR type, not here).

use crate::types::{ElemType, Shape, Storage};

/// Row-major element data.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U8(v) => v.len(),
            Data::I16(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Name of the element type as written in the IR (quantized data shows its storage).
    pub fn dtype(&self) -> &'static str {
        match self {
            Data::F32(_) => "f32",
            Data::F64(_) => "f64",
            Data::I8(_) => "i8",
            Data::U8(_) => "u8",
            Data::I16(_) => "i16",
            Data::I32(_) => "i32",
            Data::I64(_) => "i64",
            Data::Bool(_) => "bool",
        }
    }
    /// Element `i` as f64 (exact for every integer type here).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Data::F32(v) => v[i] as f64,
            Data::F64(v) => v[i],
            Data::I8(v) => v[i] as f64,
            Data::U8(v) => v[i] as f64,
            Data::I16(v) => v[i] as f64,
            Data::I32(v) => v[i] as f64,
            Data::I64(v) => v[i] as f64,
            Data::Bool(v) => v[i] as u8 as f64,
        }
    }
    /// All elements as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get_f64(i)).collect()
    }
    /// Data of element type `elem` from f64 values (saturating casts for integers).
    pub fn from_f64(elem: &ElemType, v: &[f64]) -> Data {
        match elem {
            ElemType::F32 => Data::F32(v.iter().map(|&x| x as f32).collect()),
            ElemType::F64 => Data::F64(v.to_vec()),
            ElemType::I8 => Data::I8(v.iter().map(|&x| x as i8).collect()),
            ElemType::U8 => Data::U8(v.iter().map(|&x| x as u8).collect()),
            ElemType::I32 => Data::I32(v.iter().map(|&x| x as i32).collect()),
            ElemType::I64 => Data::I64(v.iter().map(|&x| x as i64).collect()),
            ElemType::Bool => Data::Bool(v.iter().map(|&x| x != 0.0).collect()),
            ElemType::Quant(q) => match q.storage {
                // i4 is held unpacked, one value per byte
                Storage::I4 | Storage::I8 => Data::I8(v.iter().map(|&x| x as i8).collect()),
                Storage::U8 => Data::U8(v.iter().map(|&x| x as u8).collect()),
                Storage::I16 => Data::I16(v.iter().map(|&x| x as i16).collect()),
                Storage::I32 => Data::I32(v.iter().map(|&x| x as i32).collect()),
            },
        }
    }
    /// True if this data can hold values of IR element type `elem`.
    pub fn matches(&self, elem: &ElemType) -> bool {
        matches!(
            (self, elem),
            (Data::F32(_), ElemType::F32)
                | (Data::F64(_), ElemType::F64)
                | (Data::I8(_), ElemType::I8)
                | (Data::U8(_), ElemType::U8)
                | (Data::I32(_), ElemType::I32)
                | (Data::I64(_), ElemType::I64)
                | (Data::Bool(_), ElemType::Bool)
        ) || match (self, elem.quant()) {
            (Data::I8(_), Some(q)) => matches!(q.storage, Storage::I4 | Storage::I8),
            (Data::U8(_), Some(q)) => q.storage == Storage::U8,
            (Data::I16(_), Some(q)) => q.storage == Storage::I16,
            (Data::I32(_), Some(q)) => q.storage == Storage::I32,
            _ => false,
        }
    }
}

/// A dense tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    /// A tensor; `None` if the data length does not match the shape.
    pub fn new(shape: Vec<usize>, data: Data) -> Option<Tensor> {
        (shape.iter().product::<usize>() == data.len()).then_some(Tensor { shape, data })
    }
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Option<Tensor> {
        Tensor::new(shape, Data::F32(v))
    }
    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor {
            shape: Vec::new(),
            data: Data::F32(vec![v]),
        }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            Data::F64(v) => Some(v),
            _ => None,
        }
    }
    /// The IR shape of this tensor.
    pub fn ir_shape(&self) -> Shape {
        Shape::fixed(&self.shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
    }
}
