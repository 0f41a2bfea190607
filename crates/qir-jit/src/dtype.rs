//! Element types of compiled values: the storage types of qir's element types (quantized
//! types are stored as their integer storage type). f64 is not compiled: a graph that
//! needs it runs in the interpreter.

use qir::{Data, ElemType, Storage};

/// The element type of a compiled buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean, one byte.
    Bool,
    /// 64-bit float: only the JIT's own accumulators (sums accumulate in f64, as the
    /// interpreter's); no graph value has it.
    F64,
}

impl DType {
    /// The storage type of a qir element type; `Err` for types the JIT does not compile.
    pub fn of(elem: &ElemType) -> Result<DType, String> {
        Ok(match elem {
            ElemType::F32 => DType::F32,
            ElemType::F64 => {
                return Err(
                    "f64 values are not compiled (run f64 graphs with the interpreter)".into(),
                );
            }
            ElemType::I8 => DType::I8,
            ElemType::U8 => DType::U8,
            ElemType::I32 => DType::I32,
            ElemType::I64 => DType::I64,
            ElemType::Bool => DType::Bool,
            ElemType::Quant(q) => match q.storage {
                // i4 is held unpacked, one value per byte
                Storage::I4 | Storage::I8 => DType::I8,
                Storage::U8 => DType::U8,
                Storage::I16 => DType::I16,
                Storage::I32 => DType::I32,
            },
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 | DType::F64 => 8,
            DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// True for f32.
    pub fn is_float(self) -> bool {
        self == DType::F32
    }

    /// The name used in printed plans.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
            DType::F64 => "f64",
        }
    }

    /// True when `data` holds this type's elements.
    pub fn matches(self, data: &Data) -> bool {
        matches!(
            (self, data),
            (DType::F32, Data::F32(_))
                | (DType::I32, Data::I32(_))
                | (DType::I64, Data::I64(_))
                | (DType::I16, Data::I16(_))
                | (DType::I8, Data::I8(_))
                | (DType::U8, Data::U8(_))
                | (DType::Bool, Data::Bool(_))
                | (DType::F64, Data::F64(_))
        )
    }

    /// A zeroed buffer of `n` elements of this type.
    pub fn zeros(self, n: usize) -> Data {
        match self {
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::I32 => Data::I32(vec![0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::I16 => Data::I16(vec![0; n]),
            DType::I8 => Data::I8(vec![0; n]),
            DType::U8 => Data::U8(vec![0; n]),
            DType::Bool => Data::Bool(vec![false; n]),
            DType::F64 => Data::F64(vec![0.0; n]),
        }
    }
}

/// The address and length of a tensor's data (for the io table of a run).
pub fn data_ptr(d: &Data) -> (*const u8, usize) {
    match d {
        Data::F32(v) => (v.as_ptr() as *const u8, v.len()),
        Data::F64(v) => (v.as_ptr() as *const u8, v.len()),
        Data::I8(v) => (v.as_ptr() as *const u8, v.len()),
        Data::U8(v) => (v.as_ptr(), v.len()),
        Data::I16(v) => (v.as_ptr() as *const u8, v.len()),
        Data::I32(v) => (v.as_ptr() as *const u8, v.len()),
        Data::I64(v) => (v.as_ptr() as *const u8, v.len()),
        Data::Bool(v) => (v.as_ptr() as *const u8, v.len()),
    }
}

/// The mutable address of a tensor's data.
pub fn data_ptr_mut(d: &mut Data) -> *mut u8 {
    match d {
        Data::F32(v) => v.as_mut_ptr() as *mut u8,
        Data::F64(v) => v.as_mut_ptr() as *mut u8,
        Data::I8(v) => v.as_mut_ptr() as *mut u8,
        Data::U8(v) => v.as_mut_ptr(),
        Data::I16(v) => v.as_mut_ptr() as *mut u8,
        Data::I32(v) => v.as_mut_ptr() as *mut u8,
        Data::I64(v) => v.as_mut_ptr() as *mut u8,
        Data::Bool(v) => v.as_mut_ptr() as *mut u8,
    }
}
