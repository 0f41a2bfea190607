//! Tensor types: element types, shapes with symbolic dimensions, and quantized element
//! types that carry their parameters (the `!quant.uniform<...>` of MLIR's quant dialect).
//!
//! Invariants: a [`QuantType`] always satisfies `qmin <= qmax` inside the storage range and
//! has positive, finite scales; [`QuantType::validate`] checks this and the reader and
//! verifier call it. Display is the canonical text form.

use std::fmt;

use crate::float::fmt_f32;

/// One dimension of a shape: a fixed size or a named symbolic size such as the batch `B`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Fixed(u64),
    Sym(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::Fixed(n)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::Sym(s.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A shape: a list of dimensions, rank 0 for scalars.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }
    pub fn fixed(dims: &[u64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }
    /// The fixed sizes if no dimension is symbolic.
    pub fn as_fixed(&self) -> Option<Vec<u64>> {
        self.0.iter().map(Dim::fixed).collect()
    }
    /// Number of elements when the shape is fully fixed.
    pub fn numel(&self) -> Option<u64> {
        self.0
            .iter()
            .try_fold(1u64, |acc, d| d.fixed().and_then(|n| acc.checked_mul(n)))
    }
    /// Product of the fixed dimensions and the sorted list of symbolic ones.
    pub fn split_numel(&self) -> Option<(u64, Vec<String>)> {
        let mut fixed = 1u64;
        let mut syms = Vec::new();
        for d in &self.0 {
            match d {
                Dim::Fixed(n) => fixed = fixed.checked_mul(*n)?,
                Dim::Sym(s) => syms.push(s.clone()),
            }
        }
        syms.sort();
        Some((fixed, syms))
    }
    /// Substitute symbolic dimensions by their bound sizes.
    pub fn bind(&self, lookup: &dyn Fn(&str) -> Option<u64>) -> Option<Vec<u64>> {
        self.0
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Sym(s) => lookup(s),
            })
            .collect()
    }
    /// Normalizes a possibly negative axis against this rank.
    pub fn axis(&self, axis: i64) -> Option<usize> {
        let r = self.rank() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        (0..r).contains(&a).then_some(a as usize)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The integer types quantized values are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// 4-bit signed, [-8, 7]: held unpacked in memory (one value per `i8`, `Data::I8`),
    /// packed two values per byte in tensor files (see `qatc-runtime`'s `io::weights`).
    I4,
    I8,
    U8,
    I16,
    I32,
}

impl Storage {
    /// Every storage type; `i4` last, so that a misspelt 8-bit name is not taken for it.
    pub const ALL: [Storage; 5] = [
        Storage::I8,
        Storage::U8,
        Storage::I16,
        Storage::I32,
        Storage::I4,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Storage::I4 => "i4",
            Storage::I8 => "i8",
            Storage::U8 => "u8",
            Storage::I16 => "i16",
            Storage::I32 => "i32",
        }
    }
    pub fn from_name(s: &str) -> Option<Storage> {
        Storage::ALL.into_iter().find(|st| st.name() == s)
    }
    /// The full range of the storage type.
    pub fn range(self) -> (i64, i64) {
        match self {
            Storage::I4 => (-8, 7),
            Storage::I8 => (i8::MIN as i64, i8::MAX as i64),
            Storage::U8 => (0, u8::MAX as i64),
            Storage::I16 => (i16::MIN as i64, i16::MAX as i64),
            Storage::I32 => (i32::MIN as i64, i32::MAX as i64),
        }
    }
    pub fn signed(self) -> bool {
        !matches!(self, Storage::U8)
    }
}

/// Where a per-axis parameter list comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantParams {
    /// One scale and zero point for the whole tensor.
    PerTensor { scale: f32, zero_point: i64 },
    /// One (scale, zero point) per slice along `axis`, written inline.
    PerAxis {
        axis: usize,
        scales: Vec<f32>,
        zero_points: Vec<i64>,
    },
    /// Per-axis parameters held by named constants of the graph (`%name`), so that 256
    /// scales need not be printed inline. The zero points are all 0 unless named.
    PerAxisRef {
        axis: usize,
        scales: String,
        zero_points: Option<String>,
    },
}

/// A uniformly quantized element type: `real = (q - zero_point) * scale`, with `q` stored
/// in `storage` and restricted to `[qmin, qmax]`; the expressed type is always f32.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantType {
    pub storage: Storage,
    pub qmin: i64,
    pub qmax: i64,
    pub params: QuantParams,
}

impl QuantType {
    pub fn per_tensor(storage: Storage, qmin: i64, qmax: i64, scale: f32, zero_point: i64) -> Self {
        QuantType {
            storage,
            qmin,
            qmax,
            params: QuantParams::PerTensor { scale, zero_point },
        }
    }

    /// Checks ranges and parameters; the message names the malformed field.
    pub fn validate(&self) -> Result<(), String> {
        let (lo, hi) = self.storage.range();
        if self.qmin > self.qmax {
            return Err(format!(
                "quantized range is empty: qmin {} > qmax {}",
                self.qmin, self.qmax
            ));
        }
        if self.qmin < lo || self.qmax > hi {
            return Err(format!(
                "quantized range [{}, {}] does not fit storage type {} [{lo}, {hi}]",
                self.qmin,
                self.qmax,
                self.storage.name()
            ));
        }
        let check_scale = |s: f32| {
            if s.is_finite() && s > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "scale must be positive and finite, got {}",
                    fmt_f32(s)
                ))
            }
        };
        let check_zp = |z: i64| {
            if z < self.qmin || z > self.qmax {
                Err(format!(
                    "zero point {z} is outside the quantized range [{}, {}]",
                    self.qmin, self.qmax
                ))
            } else {
                Ok(())
            }
        };
        match &self.params {
            QuantParams::PerTensor { scale, zero_point } => {
                check_scale(*scale)?;
                check_zp(*zero_point)?;
            }
            QuantParams::PerAxis {
                scales,
                zero_points,
                ..
            } => {
                if scales.is_empty() {
                    return Err("per-axis quantization needs at least one scale".into());
                }
                if scales.len() != zero_points.len() {
                    return Err(format!(
                        "{} scales but {} zero points",
                        scales.len(),
                        zero_points.len()
                    ));
                }
                for &s in scales {
                    check_scale(s)?;
                }
                for &z in zero_points {
                    check_zp(z)?;
                }
            }
            QuantParams::PerAxisRef { .. } => {}
        }
        Ok(())
    }

    pub fn axis(&self) -> Option<usize> {
        match &self.params {
            QuantParams::PerTensor { .. } => None,
            QuantParams::PerAxis { axis, .. } | QuantParams::PerAxisRef { axis, .. } => Some(*axis),
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "!quant.uniform<{}", self.storage.name())?;
        if (self.qmin, self.qmax) != self.storage.range() {
            write!(f, "<{}:{}>", self.qmin, self.qmax)?;
        }
        f.write_str(":f32")?;
        if let Some(axis) = self.axis() {
            write!(f, ":{axis}")?;
        }
        f.write_str(", ")?;
        let param = |f: &mut fmt::Formatter<'_>, s: f32, z: i64| {
            f.write_str(&fmt_f32(s))?;
            if z != 0 {
                write!(f, ":{z}")?;
            }
            Ok(())
        };
        match &self.params {
            QuantParams::PerTensor { scale, zero_point } => param(f, *scale, *zero_point)?,
            QuantParams::PerAxis {
                scales,
                zero_points,
                ..
            } => {
                f.write_str("{")?;
                for (i, (&s, &z)) in scales.iter().zip(zero_points).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    param(f, s, z)?;
                }
                f.write_str("}")?;
            }
            QuantParams::PerAxisRef {
                scales,
                zero_points,
                ..
            } => {
                write!(f, "%{scales}")?;
                if let Some(z) = zero_points {
                    write!(f, ":%{z}")?;
                }
            }
        }
        f.write_str(">")
    }
}

/// Element type of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum ElemType {
    F32,
    F64,
    I8,
    U8,
    I32,
    I64,
    Bool,
    Quant(Box<QuantType>),
}

impl ElemType {
    pub const SCALARS: [ElemType; 7] = [
        ElemType::F32,
        ElemType::F64,
        ElemType::I8,
        ElemType::U8,
        ElemType::I32,
        ElemType::I64,
        ElemType::Bool,
    ];
    pub fn is_float(&self) -> bool {
        matches!(self, ElemType::F32 | ElemType::F64)
    }
    pub fn is_int(&self) -> bool {
        matches!(
            self,
            ElemType::I8 | ElemType::U8 | ElemType::I32 | ElemType::I64
        )
    }
    pub fn quant(&self) -> Option<&QuantType> {
        match self {
            ElemType::Quant(q) => Some(q),
            _ => None,
        }
    }
    /// The keyword of a plain element type (`None` for quantized types).
    pub fn keyword(&self) -> Option<&'static str> {
        Some(match self {
            ElemType::F32 => "f32",
            ElemType::F64 => "f64",
            ElemType::I8 => "i8",
            ElemType::U8 => "u8",
            ElemType::I32 => "i32",
            ElemType::I64 => "i64",
            ElemType::Bool => "bool",
            ElemType::Quant(_) => return None,
        })
    }
    pub fn from_keyword(s: &str) -> Option<ElemType> {
        ElemType::SCALARS
            .into_iter()
            .find(|e| e.keyword() == Some(s))
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElemType::Quant(q) => write!(f, "{q}"),
            other => f.write_str(other.keyword().unwrap_or("?")),
        }
    }
}

/// A tensor type: element type and shape, printed `f32[B, 784]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Type {
    pub elem: ElemType,
    pub shape: Shape,
}

impl Type {
    pub fn new(elem: ElemType, shape: Shape) -> Type {
        Type { elem, shape }
    }
    pub fn f32(dims: &[Dim]) -> Type {
        Type::new(ElemType::F32, Shape(dims.to_vec()))
    }
    pub fn scalar(elem: ElemType) -> Type {
        Type::new(elem, Shape::scalar())
    }
    pub fn with_elem(&self, elem: ElemType) -> Type {
        Type::new(elem, self.shape.clone())
    }
    pub fn with_shape(&self, shape: Shape) -> Type {
        Type::new(self.elem.clone(), shape)
    }
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.elem, self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_type_prints_like_mlir() {
        let q = QuantType::per_tensor(Storage::I8, -128, 127, 0.1, -3);
        assert_eq!(q.to_string(), "!quant.uniform<i8:f32, 0.1:-3>");
        let q = QuantType {
            storage: Storage::I8,
            qmin: -127,
            qmax: 127,
            params: QuantParams::PerAxis {
                axis: 0,
                scales: vec![0.5, 0.25],
                zero_points: vec![0, 0],
            },
        };
        assert_eq!(
            q.to_string(),
            "!quant.uniform<i8<-127:127>:f32:0, {0.5, 0.25}>"
        );
    }

    #[test]
    fn quant_type_validation_names_the_field() {
        let mut q = QuantType::per_tensor(Storage::U8, 0, 255, 0.0, 3);
        assert!(q.validate().unwrap_err().contains("scale"));
        q.params = QuantParams::PerTensor {
            scale: 1.0,
            zero_point: 300,
        };
        assert!(q.validate().unwrap_err().contains("zero point"));
        q.qmin = -1;
        assert!(q.validate().unwrap_err().contains("does not fit"));
    }

    #[test]
    fn i4_storage() {
        assert_eq!(Storage::from_name("i4"), Some(Storage::I4));
        assert_eq!(Storage::I4.range(), (-8, 7));
        let q = QuantType::per_tensor(Storage::I4, -8, 7, 0.5, 0);
        assert_eq!(q.to_string(), "!quant.uniform<i4:f32, 0.5>");
        assert!(q.validate().is_ok());
        let wide = QuantType::per_tensor(Storage::I4, -8, 8, 0.5, 0);
        assert!(
            wide.validate()
                .unwrap_err()
                .contains("does not fit storage type i4")
        );
    }
}
