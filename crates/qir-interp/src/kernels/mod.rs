//! The kernels: one function per op family over plain slices and shapes. They validate
//! every size they index with, so a malformed tensor gives an `Err(String)` (wrapped with
//! the node's name by the caller), never a panic.
//!
//! Conventions: tensors are row-major; float kernels are generic over [`Float`] and round
//! where the element type rounds; reductions (sums over many elements that are not
//! contractions) accumulate in f64 and round once, so the oracle does not depend on
//! summation order; contractions (linear, matmul, conv) accumulate in the element type in
//! a fixed order (k ascending, then kernel rows, then kernel columns).

pub mod contract;
pub mod elementwise;
pub mod integer;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod shape_ops;

use std::ops::{Add, AddAssign, Mul};

use qir::{Data, Tensor};

use crate::num::Float;

/// Result of a kernel: the message is completed with the node's name by the caller.
pub type KResult<T> = Result<T, String>;

/// Element types contractions run on: floats and the i64 of the integer ops.
pub trait Ring:
    Copy + Default + Add<Output = Self> + Mul<Output = Self> + AddAssign + Send + Sync
{
}
impl<T: Copy + Default + Add<Output = T> + Mul<Output = T> + AddAssign + Send + Sync> Ring for T {}

/// Product of dimensions, checked.
pub fn numel(shape: &[usize]) -> KResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))
}

/// A float tensor from a shape and data of matching length.
pub fn ftensor<T: Float>(shape: Vec<usize>, v: Vec<T>) -> Tensor {
    Tensor {
        shape,
        data: T::into_data(v),
    }
}

/// A non-negative attribute value as usize.
pub fn to_usize(v: i64, what: &str) -> KResult<usize> {
    usize::try_from(v).map_err(|_| format!("{what} must be >= 0, found {v}"))
}

/// Normalizes a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> KResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// `(outer, dim, inner)` of `shape` around `axis`: element `(o, c, i)` sits at
/// `(o * dim + c) * inner + i`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> KResult<(usize, usize, usize)> {
    if axis >= shape.len() {
        return Err(format!("axis {axis} is out of range for shape {shape:?}"));
    }
    Ok((
        numel(&shape[..axis])?,
        shape[axis],
        numel(&shape[axis + 1..])?,
    ))
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(shape[i + 1]);
    }
    s
}

/// NumPy broadcast of two concrete shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> KResult<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = (i + a.len()).checked_sub(r).map(|k| a[k]);
        let db = (i + b.len()).checked_sub(r).map(|k| b[k]);
        out.push(match (da, db) {
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) if x == y => x,
            (Some(1), Some(y)) => y,
            (Some(x), Some(1)) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        });
    }
    Ok(out)
}

/// Strides of `shape` aligned to the (longer or equal) rank of `out`, 0 on broadcast
/// dimensions, so that element `idx` of `out` reads `sum(idx[d] * s[d])` of `shape`.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> KResult<Vec<usize>> {
    if shape.len() > out.len() {
        return Err(format!("{shape:?} does not broadcast to {out:?}"));
    }
    let st = strides(shape);
    let lead = out.len() - shape.len();
    let mut s = vec![0usize; out.len()];
    for (k, (&d, &stride)) in shape.iter().zip(&st).enumerate() {
        let o = out[lead + k];
        if d == o {
            s[lead + k] = if d == 1 { 0 } else { stride };
        } else if d != 1 {
            return Err(format!("{shape:?} does not broadcast to {out:?}"));
        }
    }
    Ok(s)
}

/// For every element of `out` (row-major), the flat index it reads in a tensor of
/// `shape` broadcast to `out`.
pub fn broadcast_map(shape: &[usize], out: &[usize]) -> KResult<Vec<usize>> {
    let s = broadcast_strides(shape, out)?;
    let n = numel(out)?;
    let mut map = Vec::with_capacity(n);
    walk(out, &s, |off| map.push(off));
    Ok(map)
}

/// Calls `f` with `sum(idx[d] * s[d])` for every index of `shape`, in row-major order.
pub fn walk(shape: &[usize], s: &[usize], mut f: impl FnMut(usize)) {
    if shape.contains(&0) {
        return;
    }
    let r = shape.len();
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    loop {
        f(off);
        let mut d = r;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            off += s[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= s[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// The reduction of `shape` over `axes`: the kept-dims output shape and, for every input
/// element, the output element it folds into.
pub fn reduce_map(shape: &[usize], axes: &[usize]) -> KResult<(Vec<usize>, Vec<usize>)> {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let ks = strides(&kept);
    let s: Vec<usize> = (0..shape.len())
        .map(|i| if axes.contains(&i) { 0 } else { ks[i] })
        .collect();
    let mut map = Vec::with_capacity(numel(shape)?);
    walk(shape, &s, |off| map.push(off));
    Ok((kept, map))
}

/// Normalizes a list of reduction axes (distinct, in range).
pub fn norm_axes(axes: &[i64], rank: usize) -> KResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let ax = norm_axis(a, rank)?;
        if out.contains(&ax) {
            return Err(format!("axis {a} is listed twice"));
        }
        out.push(ax);
    }
    Ok(out)
}

/// The output shape of a reduction over `axes`.
pub fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            if axes.contains(&i) {
                keepdims.then_some(1)
            } else {
                Some(d)
            }
        })
        .collect()
}

/// Work (multiply-adds) above which a kernel splits its output over threads.
const PAR_MIN_WORK: u64 = 1 << 21;

/// Runs `f(index, chunk)` over consecutive `chunk`-sized pieces of `out`, on several
/// threads when `work` is large. Each element is written by exactly one call, so results
/// do not depend on the thread count.
pub fn par_chunks<T: Send>(
    out: &mut [T],
    chunk: usize,
    work: u64,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if chunk == 0 || out.is_empty() {
        return;
    }
    let pieces = out.len().div_ceil(chunk);
    let threads = if work >= PAR_MIN_WORK {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(pieces)
    } else {
        1
    };
    if threads <= 1 {
        for (i, c) in out.chunks_mut(chunk).enumerate() {
            f(i, c);
        }
        return;
    }
    let per = pieces.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(per * chunk).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (j, c) in part.chunks_mut(chunk).enumerate() {
                    f(t * per + j, c);
                }
            });
        }
    });
}

/// Integer values of tensor data (any integer type, quantized storage included).
pub fn int_values(d: &Data) -> Option<Vec<i64>> {
    Some(match d {
        Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
        Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
        Data::I16(v) => v.iter().map(|&x| x as i64).collect(),
        Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
        Data::I64(v) => v.clone(),
        Data::F32(_) | Data::F64(_) | Data::Bool(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_maps() {
        assert_eq!(broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(), [2, 4, 3]);
        assert!(broadcast_shapes(&[2], &[3]).is_err());
        // [3] broadcast to [2, 3] reads 0 1 2 0 1 2
        assert_eq!(broadcast_map(&[3], &[2, 3]).unwrap(), [0, 1, 2, 0, 1, 2]);
        // [2, 1] broadcast to [2, 3] reads 0 0 0 1 1 1
        assert_eq!(broadcast_map(&[2, 1], &[2, 3]).unwrap(), [0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_map(&[], &[2]).unwrap(), [0, 0]);
    }

    #[test]
    fn reduction_maps() {
        let (kept, map) = reduce_map(&[2, 3], &[1]).unwrap();
        assert_eq!(kept, [2, 1]);
        assert_eq!(map, [0, 0, 0, 1, 1, 1]);
        let (kept, map) = reduce_map(&[2, 3], &[0]).unwrap();
        assert_eq!(kept, [1, 3]);
        assert_eq!(map, [0, 1, 2, 0, 1, 2]);
        assert_eq!(reduced_shape(&[2, 3, 4], &[0, 2], false), [3]);
        assert_eq!(norm_axes(&[-1, 0], 3).unwrap(), [2, 0]);
        assert!(norm_axes(&[1, -2], 3).is_err());
    }

    #[test]
    fn parallel_chunks_cover_everything_once() {
        let mut v = vec![0usize; 1000];
        par_chunks(&mut v, 10, u64::MAX, |i, c| {
            for x in c.iter_mut() {
                *x += i + 1;
            }
        });
        assert!(v.iter().enumerate().all(|(k, &x)| x == k / 10 + 1));
    }
}
