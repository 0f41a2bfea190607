//! Data movement on tensors of any element type (quantized storage included): reshape,
//! flatten, transpose, slice, concat, broadcast, and the float sum back to a broadcast
//! operand's shape.
//!
//! Every index a gather uses is checked against the data first, so a malformed tensor is
//! an error, not a panic.

use qir::{Data, Tensor};

use super::{KResult, broadcast_map, broadcast_strides, numel, split_at_axis, strides, walk};
use crate::num::Float;

macro_rules! each_data {
    ($d:expr, $v:ident => $body:expr) => {
        match $d {
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::I8($v) => Data::I8($body),
            Data::U8($v) => Data::U8($body),
            Data::I16($v) => Data::I16($body),
            Data::I32($v) => Data::I32($body),
            Data::I64($v) => Data::I64($body),
            Data::Bool($v) => Data::Bool($body),
        }
    };
}

/// The elements of `d` at `idx`, in order.
pub fn gather(d: &Data, idx: &[usize]) -> KResult<Data> {
    if let Some(&bad) = idx.iter().find(|&&i| i >= d.len()) {
        return Err(format!(
            "index {bad} is outside the data ({} elements)",
            d.len()
        ));
    }
    Ok(each_data!(d, v => idx.iter().map(|&i| v[i]).collect()))
}

/// Reshape to `target` (one entry may be -1).
pub fn reshape(t: &Tensor, target: &[i64]) -> KResult<Tensor> {
    let n = numel(&t.shape)?;
    let mut known = 1usize;
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        if d == -1 && infer.is_none() {
            infer = Some(i);
        } else {
            let d = usize::try_from(d).map_err(|_| format!("bad reshape target {target:?}"))?;
            known = known
                .checked_mul(d)
                .ok_or_else(|| format!("reshape target {target:?} is too large"))?;
        }
    }
    let mut shape: Vec<usize> = target.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = infer {
        if known == 0 || n % known != 0 {
            return Err(format!("cannot reshape {:?} to {target:?}", t.shape));
        }
        shape[i] = n / known;
    } else if known != n {
        return Err(format!("cannot reshape {:?} to {target:?}", t.shape));
    }
    Ok(Tensor {
        shape,
        data: t.data.clone(),
    })
}

/// Collapse the dimensions from `axis` on.
pub fn flatten(t: &Tensor, axis: usize) -> KResult<Tensor> {
    if axis > t.shape.len() {
        return Err(format!(
            "axis {axis} is out of range for shape {:?}",
            t.shape
        ));
    }
    let mut shape = t.shape[..axis].to_vec();
    shape.push(numel(&t.shape[axis..])?);
    Ok(Tensor {
        shape,
        data: t.data.clone(),
    })
}

/// Permute dimensions: output dimension `i` is input dimension `perm[i]`.
pub fn transpose(t: &Tensor, perm: &[usize]) -> KResult<Tensor> {
    let r = t.shape.len();
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("{perm:?} is not a permutation of {r} axes"));
    }
    let st = strides(&t.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let ps: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let mut idx = Vec::with_capacity(t.data.len());
    walk(&shape, &ps, |o| idx.push(o));
    Ok(Tensor {
        shape,
        data: gather(&t.data, &idx)?,
    })
}

/// The slice `start..end` of `axis`.
pub fn slice(t: &Tensor, axis: usize, start: usize, end: usize) -> KResult<Tensor> {
    let (outer, dim, inner) = split_at_axis(&t.shape, axis)?;
    if start >= end || end > dim {
        return Err(format!("slice {start}..{end} is not inside 0..{dim}"));
    }
    let mut idx = Vec::with_capacity(outer * (end - start) * inner);
    for o in 0..outer {
        idx.extend((o * dim + start) * inner..(o * dim + end) * inner);
    }
    let mut shape = t.shape.clone();
    shape[axis] = end - start;
    Ok(Tensor {
        shape,
        data: gather(&t.data, &idx)?,
    })
}

macro_rules! concat_variant {
    ($ts:expr, $outer:expr, $chunks:expr, $total:expr, $first:expr, $($variant:ident),*) => {
        match $first {
            $(Data::$variant(_) => {
                let mut out = Vec::with_capacity($total);
                for o in 0..$outer {
                    for (t, &chunk) in $ts.iter().zip($chunks) {
                        let Data::$variant(v) = &t.data else {
                            return Err(format!(
                                "inputs hold different element types ({} and {})",
                                $first.dtype(),
                                t.data.dtype()
                            ));
                        };
                        let part = v
                            .get(o * chunk..(o + 1) * chunk)
                            .ok_or_else(|| "input data does not match its shape".to_string())?;
                        out.extend_from_slice(part);
                    }
                }
                Data::$variant(out)
            })*
        }
    };
}

/// Join tensors along `axis`; all other dimensions must agree.
pub fn concat(ts: &[&Tensor], axis: usize) -> KResult<Tensor> {
    let Some(first) = ts.first() else {
        return Err("concat needs at least one input".into());
    };
    let r = first.shape.len();
    if axis >= r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let mut size = 0usize;
    let mut chunks = Vec::with_capacity(ts.len());
    for (i, t) in ts.iter().enumerate() {
        let same_rest = t.shape.len() == r
            && t.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !same_rest {
            return Err(format!(
                "input {i} has shape {:?}, which differs from {:?} outside axis {axis}",
                t.shape, first.shape
            ));
        }
        size += t.shape[axis];
        chunks.push(numel(&t.shape[axis..])?);
    }
    let outer = numel(&first.shape[..axis])?;
    let mut shape = first.shape.clone();
    shape[axis] = size;
    let total = numel(&shape)?;
    let data = concat_variant!(
        ts,
        outer,
        &chunks,
        total,
        &first.data,
        F32,
        F64,
        I8,
        U8,
        I16,
        I32,
        I64,
        Bool
    );
    Ok(Tensor { shape, data })
}

/// Broadcast `t` to `shape`.
pub fn broadcast_to(t: &Tensor, shape: &[usize]) -> KResult<Tensor> {
    let map = broadcast_map(&t.shape, shape)?;
    Ok(Tensor {
        shape: shape.to_vec(),
        data: gather(&t.data, &map)?,
    })
}

/// Sum `x` (of shape `xs`) down to `like`, a shape that broadcasts to `xs`.
pub fn sum_to<T: Float>(x: &[T], xs: &[usize], like: &[usize]) -> KResult<Vec<T>> {
    let s = broadcast_strides(like, xs)?;
    if x.len() != numel(xs)? {
        return Err("data does not match its shape".into());
    }
    let mut acc = vec![0.0f64; numel(like)?];
    let mut i = 0usize;
    walk(xs, &s, |o| {
        acc[o] += x[i].to_f64();
        i += 1;
    });
    Ok(acc.into_iter().map(T::from_f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[i32]) -> Tensor {
        Tensor::new(shape.to_vec(), Data::I32(v.to_vec())).unwrap()
    }

    #[test]
    fn moves() {
        let x = t(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(reshape(&x, &[3, -1]).unwrap().shape, [3, 2]);
        assert!(reshape(&x, &[4, -1]).is_err());
        assert_eq!(flatten(&t(&[2, 1, 3], &[0; 6]), 1).unwrap().shape, [2, 3]);
        let tr = transpose(&x, &[1, 0]).unwrap();
        assert_eq!(tr, t(&[3, 2], &[1, 4, 2, 5, 3, 6]));
        assert!(transpose(&x, &[0, 0]).is_err());
        assert_eq!(slice(&x, 1, 1, 3).unwrap(), t(&[2, 2], &[2, 3, 5, 6]));
        assert!(slice(&x, 1, 2, 4).is_err());
        let y = t(&[2, 1], &[7, 8]);
        assert_eq!(
            concat(&[&x, &y], 1).unwrap(),
            t(&[2, 4], &[1, 2, 3, 7, 4, 5, 6, 8])
        );
        assert_eq!(
            concat(&[&x, &x], 0).unwrap(),
            t(&[4, 3], &[1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6])
        );
        let f = Tensor::f32(vec![2, 1], vec![1.0, 2.0]).unwrap();
        assert!(concat(&[&y, &f], 1).is_err());
        assert_eq!(
            broadcast_to(&y, &[2, 2]).unwrap(),
            t(&[2, 2], &[7, 7, 8, 8])
        );
        let s = sum_to(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &[3]).unwrap();
        assert_eq!(s, [5.0, 7.0, 9.0]);
        let s = sum_to(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &[2, 1]).unwrap();
        assert_eq!(s, [6.0, 15.0]);
        let s = sum_to(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &[]).unwrap();
        assert_eq!(s, [21.0]);
    }
}
