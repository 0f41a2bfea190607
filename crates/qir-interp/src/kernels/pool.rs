//! Pooling over NCHW tensors: max (any ordered element type, quantized storage included),
//! average and global average, and their gradients.
//!
//! Choices: padding cells never win a max window and are not counted by an average window
//! unless `count_include_pad` (then the divisor is the full kernel area, as PyTorch with
//! `ceil_mode = false`); a max window's winner is its first maximum in row-major order,
//! and a NaN wins (as PyTorch); the max gradient goes to that same cell.

use super::contract::window_out;
use super::{KResult, numel, par_chunks};
use crate::num::Float;

/// Geometry of a pooling window over an `[n, c, h, w]` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: [usize; 2],
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub pad: [usize; 4],
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    pub fn new(
        nchw: [usize; 4],
        k: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
    ) -> KResult<PoolGeom> {
        let [n, c, h, w] = nchw;
        let oh = window_out(h, k[0], stride[0], pad[0] + pad[2], 1);
        let ow = window_out(w, k[1], stride[1], pad[1] + pad[3], 1);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(format!(
                "window {}x{} does not fit the {h}x{w} input",
                k[0], k[1]
            ));
        };
        numel(&[n, c, h, w])?;
        numel(&[n, c, oh, ow])?;
        Ok(PoolGeom {
            n,
            c,
            h,
            w,
            k,
            stride,
            pad,
            oh,
            ow,
        })
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn y_len(&self) -> usize {
        self.n * self.c * self.oh * self.ow
    }
    /// The input rows (or columns) of window `o` along dimension `d` (0: rows, 1: cols),
    /// clipped to the input, and the window's extent clipped to the padded input.
    fn span(&self, d: usize, o: usize) -> (usize, usize, usize) {
        let (size, pad_lo, pad_hi) = if d == 0 {
            (self.h, self.pad[0], self.pad[2])
        } else {
            (self.w, self.pad[1], self.pad[3])
        };
        let start = (o * self.stride[d]) as isize - pad_lo as isize;
        let end = start + self.k[d] as isize;
        let padded_end = end.min((size + pad_hi) as isize);
        let lo = start.max(0) as usize;
        let hi = (end.max(0) as usize).min(size);
        (lo, hi.max(lo), (padded_end - start).max(0) as usize)
    }
}

/// Element types max pooling runs on.
pub trait Ordered: Copy + PartialOrd + Send + Sync {
    fn is_nan(self) -> bool;
}
macro_rules! ordered_int {
    ($($t:ty),*) => { $(impl Ordered for $t { fn is_nan(self) -> bool { false } })* };
}
ordered_int!(i8, u8, i16, i32, i64);
impl Ordered for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}
impl Ordered for f64 {
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// Index (into the input plane) of the first maximum of window (oy, ox), if any cell.
fn argmax_window<T: Ordered>(xp: &[T], g: &PoolGeom, oy: usize, ox: usize) -> Option<usize> {
    let (y0, y1, _) = g.span(0, oy);
    let (x0, x1, _) = g.span(1, ox);
    let mut best: Option<(usize, T)> = None;
    for iy in y0..y1 {
        for ix in x0..x1 {
            let i = iy * g.w + ix;
            let v = xp[i];
            match best {
                Some((_, b)) if b.is_nan() || !(v > b || v.is_nan()) => {}
                _ => best = Some((i, v)),
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Max pooling; a window without any input cell (impossible for verified attributes)
/// yields the input's first element.
pub fn max_pool2d<T: Ordered + Default>(x: &[T], g: &PoolGeom) -> KResult<Vec<T>> {
    if x.len() != g.x_len() {
        return Err("input does not match the pooling geometry".into());
    }
    let mut y = vec![T::default(); g.y_len()];
    let plane = g.h * g.w;
    par_chunks(&mut y, g.oh * g.ow, g.y_len() as u64 * 4, |p, yp| {
        let xp = &x[p * plane..][..plane];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let i = argmax_window(xp, g, oy, ox).unwrap_or(0);
                if let Some(&v) = xp.get(i) {
                    yp[oy * g.ow + ox] = v;
                }
            }
        }
    });
    Ok(y)
}

/// Gradient of max pooling: each `dy` goes to its window's first maximum (summed where
/// windows overlap).
pub fn max_pool2d_grad<T: Float + Ordered>(dy: &[T], x: &[T], g: &PoolGeom) -> KResult<Vec<T>> {
    if x.len() != g.x_len() || dy.len() != g.y_len() {
        return Err("operands do not match the pooling geometry".into());
    }
    let mut dx = vec![T::ZERO; g.x_len()];
    let plane = g.h * g.w;
    par_chunks(&mut dx, plane, g.y_len() as u64 * 4, |p, dxp| {
        let xp = &x[p * plane..][..plane];
        let dyp = &dy[p * g.oh * g.ow..][..g.oh * g.ow];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                if let Some(i) = argmax_window(xp, g, oy, ox) {
                    dxp[i] += dyp[oy * g.ow + ox];
                }
            }
        }
    });
    Ok(dx)
}

fn divisor(g: &PoolGeom, oy: usize, ox: usize, include_pad: bool) -> usize {
    let (y0, y1, py) = g.span(0, oy);
    let (x0, x1, px) = g.span(1, ox);
    if include_pad {
        py * px
    } else {
        (y1 - y0) * (x1 - x0)
    }
}

/// Average pooling.
pub fn avg_pool2d<T: Float>(x: &[T], g: &PoolGeom, include_pad: bool) -> KResult<Vec<T>> {
    if x.len() != g.x_len() {
        return Err("input does not match the pooling geometry".into());
    }
    let mut y = vec![T::ZERO; g.y_len()];
    let plane = g.h * g.w;
    par_chunks(&mut y, g.oh * g.ow, g.y_len() as u64 * 4, |p, yp| {
        let xp = &x[p * plane..][..plane];
        for oy in 0..g.oh {
            let (y0, y1, _) = g.span(0, oy);
            for ox in 0..g.ow {
                let (x0, x1, _) = g.span(1, ox);
                let mut acc = 0.0f64;
                for iy in y0..y1 {
                    for &v in &xp[iy * g.w + x0..iy * g.w + x1] {
                        acc += v.to_f64();
                    }
                }
                let d = divisor(g, oy, ox, include_pad).max(1);
                yp[oy * g.ow + ox] = T::from_f64(acc / d as f64);
            }
        }
    });
    Ok(y)
}

/// Gradient of average pooling: `dy / divisor` to every input cell of the window.
pub fn avg_pool2d_grad<T: Float>(dy: &[T], g: &PoolGeom, include_pad: bool) -> KResult<Vec<T>> {
    if dy.len() != g.y_len() {
        return Err("dy does not match the pooling geometry".into());
    }
    let mut dx = vec![T::ZERO; g.x_len()];
    let plane = g.h * g.w;
    par_chunks(&mut dx, plane, g.y_len() as u64 * 4, |p, dxp| {
        let dyp = &dy[p * g.oh * g.ow..][..g.oh * g.ow];
        for oy in 0..g.oh {
            let (y0, y1, _) = g.span(0, oy);
            for ox in 0..g.ow {
                let (x0, x1, _) = g.span(1, ox);
                let d = divisor(g, oy, ox, include_pad).max(1);
                let share = dyp[oy * g.ow + ox] / T::from_f64(d as f64);
                for iy in y0..y1 {
                    for v in &mut dxp[iy * g.w + x0..iy * g.w + x1] {
                        *v += share;
                    }
                }
            }
        }
    });
    Ok(dx)
}

/// Mean over each `plane`-sized block.
pub fn global_avg_pool<T: Float>(x: &[T], planes: usize, plane: usize) -> Vec<T> {
    (0..planes)
        .map(|p| {
            let s: f64 = x[p * plane..][..plane].iter().map(|v| v.to_f64()).sum();
            T::from_f64(s / plane.max(1) as f64)
        })
        .collect()
}

/// Gradient of global average pooling: `dy / plane` over each block.
pub fn global_avg_pool_grad<T: Float>(dy: &[T], plane: usize) -> Vec<T> {
    let d = T::from_f64(plane.max(1) as f64);
    let mut dx = Vec::with_capacity(dy.len() * plane);
    for &g in dy {
        let share = g / d;
        dx.extend(std::iter::repeat_n(share, plane));
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_hand_computed() {
        // 1x1x4x4 input 0..16, 2x2 windows stride 2: maxima 5 7 13 15
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let g = PoolGeom::new([1, 1, 4, 4], [2, 2], [2, 2], [0; 4]).unwrap();
        assert_eq!(max_pool2d(&x, &g).unwrap(), [5.0, 7.0, 13.0, 15.0]);
        let dx = max_pool2d_grad(&[1.0f32, 2.0, 3.0, 4.0], &x, &g).unwrap();
        let mut want = vec![0.0f32; 16];
        want[5] = 1.0;
        want[7] = 2.0;
        want[13] = 3.0;
        want[15] = 4.0;
        assert_eq!(dx, want);
        // padding 1, 2x2 stride 2 on a 3x3 of -1s: padding (0) never wins
        let x = vec![-1.0f32; 9];
        let g = PoolGeom::new([1, 1, 3, 3], [2, 2], [2, 2], [1, 1, 1, 1]).unwrap();
        assert_eq!(max_pool2d(&x, &g).unwrap(), [-1.0; 4]);
        // ties: the first maximum takes the gradient; a NaN wins
        let x = [1.0f32, 3.0, 3.0, 2.0];
        let g = PoolGeom::new([1, 1, 2, 2], [2, 2], [2, 2], [0; 4]).unwrap();
        assert_eq!(
            max_pool2d_grad(&[1.0f32], &x, &g).unwrap(),
            [0.0, 1.0, 0.0, 0.0]
        );
        assert!(max_pool2d(&[1.0f32, f32::NAN, 3.0, 2.0], &g).unwrap()[0].is_nan());
        // integer storage
        assert_eq!(max_pool2d(&[-3i8, 4, -128, 0], &g).unwrap(), [4]);
    }

    #[test]
    fn avg_pool_padding_rules() {
        // 1x1x2x2 input [1 2; 3 4], 2x2 window stride 1, padding 1 on every side: 3x3 out
        let x = [1.0f64, 2.0, 3.0, 4.0];
        let g = PoolGeom::new([1, 1, 2, 2], [2, 2], [1, 1], [1; 4]).unwrap();
        // corner window holds only x[0,0] = 1: excluded padding -> 1, included -> 1/4
        let y = avg_pool2d(&x, &g, false).unwrap();
        assert_eq!(y, [1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]);
        let y = avg_pool2d(&x, &g, true).unwrap();
        assert_eq!(y, [0.25, 0.75, 0.5, 1.0, 2.5, 1.5, 0.75, 1.75, 1.0]);
        // gradient: each input cell is in 4 windows; with excluded padding the shares
        // for x[0,0] are 1/1 + 1/2 + 1/2 + 1/4
        let dx = avg_pool2d_grad(&[1.0f64; 9], &g, false).unwrap();
        assert_eq!(dx, [2.25; 4]);
        let dx = avg_pool2d_grad(&[1.0f64; 9], &g, true).unwrap();
        assert_eq!(dx, [1.0; 4]);
        assert_eq!(global_avg_pool(&x, 1, 4), [2.5]);
        assert_eq!(global_avg_pool_grad(&[2.0f64], 4), [0.5; 4]);
    }
}
