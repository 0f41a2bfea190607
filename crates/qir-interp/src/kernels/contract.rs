//! Contractions: matrix products (linear, matmul, qlinear) and 2-D convolution with its
//! two gradients (conv2d, qconv2d, conv2d_grad_input, conv2d_grad_weight), generic over
//! the accumulation type.
//!
//! Summation order is fixed: a product element sums over k ascending; a convolution output
//! sums over input channel, kernel row, kernel column. Large products and convolutions
//! split their output over threads (by rows or by batch item), which does not change any
//! element's summation order.

use super::{KResult, Ring, numel, par_chunks};

/// `C = op(A) · op(B)` with `A` `[m, k]` (`[k, m]` when `ta`), `B` `[k, n]` (`[n, k]`
/// when `tb`); returns `[m, n]`.
pub fn gemm<T: Ring>(
    a: &[T],
    b: &[T],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> KResult<Vec<T>> {
    let mk = m.checked_mul(k).ok_or("matrix too large")?;
    let kn = k.checked_mul(n).ok_or("matrix too large")?;
    let mn = m.checked_mul(n).ok_or("matrix too large")?;
    if a.len() != mk || b.len() != kn {
        return Err(format!(
            "matrix sizes do not match: {} and {} elements for [{m}, {k}] x [{k}, {n}]",
            a.len(),
            b.len()
        ));
    }
    let at;
    let a = if ta {
        at = transpose2(a, k, m);
        &at[..]
    } else {
        a
    };
    let bt;
    let b = if tb {
        bt = transpose2(b, n, k);
        &bt[..]
    } else {
        b
    };
    let mut c = vec![T::default(); mn];
    if n == 0 {
        return Ok(c);
    }
    let work = (mn as u64).saturating_mul(k as u64);
    par_chunks(&mut c, n, work, |i, crow| {
        let arow = &a[i * k..(i + 1) * k];
        for (kk, &aik) in arow.iter().enumerate() {
            let brow = &b[kk * n..(kk + 1) * n];
            for (cv, &bv) in crow.iter_mut().zip(brow) {
                *cv += aik * bv;
            }
        }
    });
    Ok(c)
}

/// Transpose of a row-major `[r, c]` matrix.
pub fn transpose2<T: Copy + Default>(a: &[T], r: usize, c: usize) -> Vec<T> {
    let mut t = vec![T::default(); a.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = a[i * c + j];
        }
    }
    t
}

/// Geometry of a 2-D convolution (NCHW input, OIHW weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub pad: [usize; 4],
    pub dil: [usize; 2],
    pub groups: usize,
}

/// Output size of one spatial dimension, `None` if the window does not fit.
pub fn window_out(input: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = input.checked_add(pad)?;
    if padded < span || stride == 0 {
        return None;
    }
    Some((padded - span) / stride + 1)
}

impl ConvGeom {
    /// Builds and checks the geometry; `oh`/`ow` are computed from the window.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        c: usize,
        hw: [usize; 2],
        o: usize,
        k: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
        dil: [usize; 2],
        groups: usize,
    ) -> KResult<ConvGeom> {
        if groups == 0 || !c.is_multiple_of(groups) || !o.is_multiple_of(groups) {
            return Err(format!(
                "groups = {groups} must divide the input channels ({c}) and output channels ({o})"
            ));
        }
        if stride.contains(&0) || dil.contains(&0) {
            return Err("stride and dilation must be >= 1".into());
        }
        let oh = window_out(hw[0], k[0], stride[0], pad[0] + pad[2], dil[0]);
        let ow = window_out(hw[1], k[1], stride[1], pad[1] + pad[3], dil[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(format!(
                "window {}x{} does not fit the {}x{} input",
                k[0], k[1], hw[0], hw[1]
            ));
        };
        let g = ConvGeom {
            n,
            c,
            h: hw[0],
            w: hw[1],
            o,
            kh: k[0],
            kw: k[1],
            oh,
            ow,
            stride,
            pad,
            dil,
            groups,
        };
        // every buffer size must be representable
        numel(&[n, c, g.h, g.w])?;
        numel(&[n, o, oh, ow])?;
        numel(&[o, c / groups, g.kh, g.kw])?;
        Ok(g)
    }
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn y_len(&self) -> usize {
        self.n * self.o * self.oh * self.ow
    }
    pub fn w_len(&self) -> usize {
        self.o * self.cg() * self.kh * self.kw
    }
    fn work(&self) -> u64 {
        (self.y_len() as u64).saturating_mul((self.cg() * self.kh * self.kw) as u64)
    }
    /// The output rows `oy` whose input row `oy*s + ki*d - pad_top` is inside the input,
    /// as (first oy, end oy, offset) with input row = oy*s + offset.
    fn valid(out: usize, input: usize, s: usize, kd: usize, pad: usize) -> (usize, usize, isize) {
        let off = kd as isize - pad as isize;
        let s_i = s as isize;
        let lo = if off >= 0 {
            0
        } else {
            ((-off) as usize).div_ceil(s)
        };
        let last = input as isize - 1 - off;
        let hi = if last < 0 {
            0
        } else {
            ((last / s_i) as usize + 1).min(out)
        };
        (lo.min(hi), hi, off)
    }
    fn check(&self, x: usize, w: usize, y: usize) -> KResult<()> {
        if x != self.x_len() || w != self.w_len() || y != self.y_len() {
            return Err(format!(
                "convolution buffers do not match the geometry {self:?}"
            ));
        }
        Ok(())
    }
}

/// Convolution `y[n, o, oy, ox] = sum x[n, c, oy*s + ki*d - p, ox*s + kj*d - p] * w[o, c, ki, kj]`
/// over the input channels `c` of `o`'s group.
pub fn conv2d<T: Ring>(x: &[T], w: &[T], g: &ConvGeom) -> KResult<Vec<T>> {
    g.check(x.len(), w.len(), g.y_len())?;
    let mut y = vec![T::default(); g.y_len()];
    let plane = g.oh * g.ow;
    let (cg, og) = (g.cg(), g.og());
    par_chunks(&mut y, g.o * plane, g.work(), |ni, yb| {
        for (o, yp) in yb.chunks_mut(plane.max(1)).enumerate() {
            let grp = o / og;
            for cl in 0..cg {
                let ci = grp * cg + cl;
                let xp = &x[(ni * g.c + ci) * g.h * g.w..][..g.h * g.w];
                for ki in 0..g.kh {
                    let (y0, y1, yoff) =
                        ConvGeom::valid(g.oh, g.h, g.stride[0], ki * g.dil[0], g.pad[0]);
                    for kj in 0..g.kw {
                        let wv = w[((o * cg + cl) * g.kh + ki) * g.kw + kj];
                        let (x0, x1, xoff) =
                            ConvGeom::valid(g.ow, g.w, g.stride[1], kj * g.dil[1], g.pad[1]);
                        if x0 >= x1 {
                            continue;
                        }
                        let start = ((x0 * g.stride[1]) as isize + xoff) as usize;
                        for oy in y0..y1 {
                            let iy = (oy * g.stride[0]) as isize + yoff;
                            let xrow = &xp[iy as usize * g.w..][..g.w];
                            let yrow = &mut yp[oy * g.ow..][..g.ow];
                            let yr = &mut yrow[x0..x1];
                            if g.stride[1] == 1 {
                                // contiguous rows: a loop the compiler vectorizes
                                for (y, &xv) in yr.iter_mut().zip(&xrow[start..]) {
                                    *y += wv * xv;
                                }
                            } else {
                                let xs = xrow[start..].iter().step_by(g.stride[1]);
                                for (y, &xv) in yr.iter_mut().zip(xs) {
                                    *y += wv * xv;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(y)
}

/// Gradient of [`conv2d`] with respect to its input: the transposed convolution of `dy`.
pub fn conv2d_grad_input<T: Ring>(dy: &[T], w: &[T], g: &ConvGeom) -> KResult<Vec<T>> {
    g.check(g.x_len(), w.len(), dy.len())?;
    let mut dx = vec![T::default(); g.x_len()];
    let plane = g.oh * g.ow;
    let (cg, og) = (g.cg(), g.og());
    par_chunks(&mut dx, g.c * g.h * g.w, g.work(), |ni, dxb| {
        for o in 0..g.o {
            let grp = o / og;
            let dyp = &dy[(ni * g.o + o) * plane..][..plane];
            for cl in 0..cg {
                let ci = grp * cg + cl;
                let dxp = &mut dxb[ci * g.h * g.w..][..g.h * g.w];
                for ki in 0..g.kh {
                    let (y0, y1, yoff) =
                        ConvGeom::valid(g.oh, g.h, g.stride[0], ki * g.dil[0], g.pad[0]);
                    for kj in 0..g.kw {
                        let wv = w[((o * cg + cl) * g.kh + ki) * g.kw + kj];
                        let (x0, x1, xoff) =
                            ConvGeom::valid(g.ow, g.w, g.stride[1], kj * g.dil[1], g.pad[1]);
                        if x0 >= x1 {
                            continue;
                        }
                        let start = ((x0 * g.stride[1]) as isize + xoff) as usize;
                        for oy in y0..y1 {
                            let iy = (oy * g.stride[0]) as isize + yoff;
                            let dxrow = &mut dxp[iy as usize * g.w..][..g.w];
                            let dyrow = &dyp[oy * g.ow..][..g.ow];
                            let dyr = &dyrow[x0..x1];
                            if g.stride[1] == 1 {
                                for (dx, &d) in dxrow[start..].iter_mut().zip(dyr) {
                                    *dx += wv * d;
                                }
                            } else {
                                let dxs = dxrow[start..].iter_mut().step_by(g.stride[1]);
                                for (dx, &d) in dxs.zip(dyr) {
                                    *dx += wv * d;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(dx)
}

/// Gradient of [`conv2d`] with respect to its weight: `dw[o, c, ki, kj]` sums
/// `dy * x` over the batch and output positions.
pub fn conv2d_grad_weight<T: Ring>(dy: &[T], x: &[T], g: &ConvGeom) -> KResult<Vec<T>> {
    g.check(x.len(), g.w_len(), dy.len())?;
    let mut dw = vec![T::default(); g.w_len()];
    let plane = g.oh * g.ow;
    let (cg, og) = (g.cg(), g.og());
    let per_o = cg * g.kh * g.kw;
    par_chunks(&mut dw, per_o, g.work(), |o, dwo| {
        let grp = o / og;
        for cl in 0..cg {
            let ci = grp * cg + cl;
            for ki in 0..g.kh {
                let (y0, y1, yoff) =
                    ConvGeom::valid(g.oh, g.h, g.stride[0], ki * g.dil[0], g.pad[0]);
                for kj in 0..g.kw {
                    let (x0, x1, xoff) =
                        ConvGeom::valid(g.ow, g.w, g.stride[1], kj * g.dil[1], g.pad[1]);
                    let mut acc = T::default();
                    if x0 < x1 {
                        let start = ((x0 * g.stride[1]) as isize + xoff) as usize;
                        for ni in 0..g.n {
                            let dyp = &dy[(ni * g.o + o) * plane..][..plane];
                            let xp = &x[(ni * g.c + ci) * g.h * g.w..][..g.h * g.w];
                            for oy in y0..y1 {
                                let iy = (oy * g.stride[0]) as isize + yoff;
                                let xrow = &xp[iy as usize * g.w..][..g.w];
                                let dyrow = &dyp[oy * g.ow..][..g.ow];
                                let dyr = &dyrow[x0..x1];
                                if g.stride[1] == 1 {
                                    acc += dot_lanes(dyr, &xrow[start..start + dyr.len()]);
                                } else {
                                    let xs = xrow[start..].iter().step_by(g.stride[1]);
                                    for (&d, &xv) in dyr.iter().zip(xs) {
                                        acc += d * xv;
                                    }
                                }
                            }
                        }
                    }
                    dwo[(cl * g.kh + ki) * g.kw + kj] = acc;
                }
            }
        }
    });
    Ok(dw)
}

/// Dot product of equal-length slices over 8 interleaved partial sums (element `i` goes
/// to lane `i % 8`; the lanes are added in order at the end): a fixed summation order
/// that the compiler can vectorize.
fn dot_lanes<T: Ring>(a: &[T], b: &[T]) -> T {
    let mut lanes = [T::default(); 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        lanes[l] += x * y;
    }
    let mut s = T::default();
    for v in lanes {
        s += v;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, with every index computed and bounds-checked.
    fn naive(x: &[f64], w: &[f64], g: &ConvGeom) -> Vec<f64> {
        let mut y = vec![0.0; g.y_len()];
        for n in 0..g.n {
            for o in 0..g.o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = 0.0;
                        for cl in 0..g.cg() {
                            let c = (o / g.og()) * g.cg() + cl;
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let iy =
                                        (oy * g.stride[0] + ki * g.dil[0]) as i64 - g.pad[0] as i64;
                                    let ix =
                                        (ox * g.stride[1] + kj * g.dil[1]) as i64 - g.pad[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= g.h as i64 || ix >= g.w as i64 {
                                        continue;
                                    }
                                    acc += x
                                        [((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize]
                                        * w[((o * g.cg() + cl) * g.kh + ki) * g.kw + kj];
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + oy) * g.ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn data(n: usize, seed: u64) -> Vec<f64> {
        // small integers so that f64 sums are exact and orders cannot matter
        (0..n)
            .map(|i| (((i as u64 * 7919 + seed * 104729) % 11) as f64) - 5.0)
            .collect()
    }

    #[test]
    fn conv_matches_the_definition() {
        let cases = [
            // n, c, hw, o, k, stride, pad, dil, groups
            (1, 1, [5, 5], 1, [3, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1),
            (2, 3, [7, 6], 4, [3, 2], [2, 1], [1, 0, 2, 1], [1, 2], 1),
            (2, 4, [6, 6], 4, [3, 3], [1, 2], [1, 1, 1, 1], [2, 1], 4),
            (1, 6, [5, 7], 4, [2, 3], [3, 2], [0, 2, 1, 0], [1, 1], 2),
        ];
        for (n, c, hw, o, k, s, p, d, gr) in cases {
            let g = ConvGeom::new(n, c, hw, o, k, s, p, d, gr).unwrap();
            let x = data(g.x_len(), 1);
            let w = data(g.w_len(), 2);
            assert_eq!(conv2d(&x, &w, &g).unwrap(), naive(&x, &w, &g), "{g:?}");
            // adjointness: <conv(x, w), dy> = <x, grad_input(dy, w)> = <w, grad_weight(dy, x)>
            let dy = data(g.y_len(), 3);
            let y = conv2d(&x, &w, &g).unwrap();
            let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
            let dx = conv2d_grad_input(&dy, &w, &g).unwrap();
            let dw = conv2d_grad_weight(&dy, &x, &g).unwrap();
            let via_x: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            let via_w: f64 = w.iter().zip(&dw).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, via_x, "{g:?}");
            assert_eq!(lhs, via_w, "{g:?}");
        }
    }

    #[test]
    fn conv_hand_computed() {
        // 1x1x3x3 input 1..9, 2x2 kernel of ones, stride 1, no padding: window sums
        let g = ConvGeom::new(1, 1, [3, 3], 1, [2, 2], [1, 1], [0; 4], [1, 1], 1).unwrap();
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let y = conv2d(&x, &[1.0; 4], &g).unwrap();
        assert_eq!(y, [12.0, 16.0, 24.0, 28.0]);
        // padding 1 all round, stride 2: corners of the padded 5x5 grid
        let g = ConvGeom::new(1, 1, [3, 3], 1, [2, 2], [2, 2], [1; 4], [1, 1], 1).unwrap();
        assert_eq!((g.oh, g.ow), (2, 2));
        assert_eq!(conv2d(&x, &[1.0; 4], &g).unwrap(), [1.0, 5.0, 11.0, 28.0]);
    }

    #[test]
    fn gemm_all_transposes() {
        // A = [[1, 2, 3], [4, 5, 6]], B = [[1, 0], [0, 1], [1, 1]]: AB = [[4, 5], [10, 11]]
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let want = [4.0, 5.0, 10.0, 11.0];
        assert_eq!(gemm(&a, &b, 2, 3, 2, false, false).unwrap(), want);
        let at = transpose2(&a, 2, 3);
        let bt = transpose2(&b, 3, 2);
        assert_eq!(gemm(&at, &b, 2, 3, 2, true, false).unwrap(), want);
        assert_eq!(gemm(&a, &bt, 2, 3, 2, false, true).unwrap(), want);
        assert_eq!(gemm(&at, &bt, 2, 3, 2, true, true).unwrap(), want);
        assert!(gemm(&a, &b, 2, 2, 2, false, false).is_err());
    }
}
