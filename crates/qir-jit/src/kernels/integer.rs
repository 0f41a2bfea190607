//! The integer ops of converted graphs, exact: requantize, qlinear, qconv2d, qadd, qconcat
//! and qglobal_avg_pool, with the arithmetic of `qir::quant` (one rounding of an exact
//! product, exact sums of rescaled terms) and the interpreter's definitions: operands are
//! centered by their zero points, accumulators that leave i32 are an error
//! ([`super::status::OVERFLOW`]), and fused activations fold into the output clamp.
//! Quantization parameters are resolved when the program is compiled.

use qir::quant::{Rounding, rescale, rescale_sum};

use super::conv::Conv;
use super::{Bound, Kernel, status};
use crate::dtype::DType;
use crate::rt::{Loc, RunCtx};

/// How per-channel parameters map onto a tensor: element `i` uses channel
/// `(i / inner) % dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chan {
    /// Number of channels (1 for per-tensor parameters).
    pub dim: usize,
    /// Elements after the channel axis.
    pub inner: usize,
}

impl Chan {
    /// One parameter set for every element.
    pub const TENSOR: Chan = Chan { dim: 1, inner: 1 };

    /// The channel of flat element `i`.
    #[inline]
    pub fn of(&self, i: usize) -> usize {
        if self.dim == 1 {
            0
        } else {
            (i / self.inner) % self.dim
        }
    }
}

/// Resolved quantization parameters of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct QP {
    /// Storage type.
    pub dtype: DType,
    /// The axis of per-channel parameters.
    pub axis: Option<usize>,
    /// Smallest value.
    pub qmin: i64,
    /// Largest value.
    pub qmax: i64,
    /// Scales per channel.
    pub scales: Vec<f32>,
    /// Zero points per channel.
    pub zps: Vec<i64>,
    /// The channel of each element.
    pub chan: Chan,
}

/// Output clamp bounds per channel (activation folded in).
pub type Bounds = Vec<(i64, i64)>;

/// Weights packed once for the int8 kernels, shared by the copies of a call description
/// (two descriptions are equal when they share the packing).
#[derive(Clone, Debug)]
pub struct Packed<T>(pub std::sync::Arc<T>);

impl<T> PartialEq for Packed<T> {
    fn eq(&self, o: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &o.0)
    }
}

/// A product or convolution on the int8 kernels (`qir-kernels`, the fastest path the CPU
/// has): activations with a per-tensor zero point, weights packed when the program was
/// compiled, the bias and a following `requantize` fused into the epilogue.
#[derive(Clone, Debug)]
pub struct Fast<T> {
    /// Packed weights.
    pub packed: Packed<T>,
    /// The activations' storage type (i8 or u8).
    pub x: DType,
    /// The activations' zero point.
    pub zx: i32,
    /// A bias argument follows the activations.
    pub bias: bool,
    /// The fused requantize, if any (else the result is the i32 accumulator).
    pub requant: Option<qir_kernels::Requant>,
    /// The result's storage type (i32 without requantize, else i8 or u8).
    pub out: DType,
}

impl<T> PartialEq for Fast<T> {
    fn eq(&self, o: &Self) -> bool {
        self.packed == o.packed
            && (self.x, self.zx, self.bias, self.out) == (o.x, o.zx, o.bias, o.out)
            && self.requant == o.requant
    }
}

/// An integer op with everything resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum IntOp {
    /// `qlinear` (and its `requantize`) on the int8 kernels; arguments x, bias?.
    QlinearFast {
        /// Rows of x.
        n: usize,
        /// Features.
        k: usize,
        /// Output channels.
        m: usize,
        /// The call.
        fast: Fast<qir_kernels::PackedB>,
    },
    /// `qconv2d` (and its `requantize`) on the int8 kernels; arguments x, bias?.
    QconvFast {
        /// Geometry.
        geom: qir_kernels::ConvGeom,
        /// The call.
        fast: Fast<qir_kernels::PackedConv>,
        /// A `max_pool2d` of the (requantized) result fused in: the output is the pooled
        /// plane.
        pool: Option<qir_kernels::MaxPool>,
    },
    /// `y = clamp(zp + round((x - zp_in) * m / 2^(31 + shift)))`.
    Requantize {
        /// Elements.
        len: usize,
        /// The input's type and, for a quantized input, its parameters (centered).
        input: (DType, Option<QP>),
        /// Multipliers per multiplier channel.
        mult: Vec<i64>,
        /// Shifts per multiplier channel.
        shift: Vec<i64>,
        /// The multipliers' channel map.
        mchan: Chan,
        /// The result's parameters.
        out: QP,
        /// Clamp bounds per result channel.
        bounds: Bounds,
        /// Rounding of the rescale.
        rounding: Rounding,
    },
    /// `acc[n, m] = sum_k (x - zx)(w - zw) + b[m]`; arguments x, w, bias?.
    Qlinear {
        /// Rows of x.
        n: usize,
        /// Features.
        k: usize,
        /// Rows of w.
        m: usize,
        /// x's parameters.
        x: QP,
        /// w's parameters.
        w: QP,
        /// A bias argument follows.
        bias: bool,
    },
    /// Integer convolution with i32 accumulators; arguments x, w, bias?.
    Qconv {
        /// Geometry.
        conv: Conv,
        /// x's parameters.
        x: QP,
        /// w's parameters.
        w: QP,
        /// A bias argument follows.
        bias: bool,
    },
    /// `qadd` with broadcasting: per result element the flat indices of a and b.
    Qadd {
        /// Result dims.
        dims: Vec<usize>,
        /// a's strides over the result dims (0 where broadcast).
        a_strides: Vec<usize>,
        /// b's strides over the result dims.
        b_strides: Vec<usize>,
        /// a's parameters.
        a: QP,
        /// b's parameters.
        b: QP,
        /// The result's parameters.
        out: QP,
        /// Clamp bounds per result channel.
        bounds: Bounds,
        /// How the rescaled sum rounds (the op's `rounding`).
        rounding: Rounding,
    },
    /// `qconcat` along an axis: `outer` rows, input `i` contributes `chunks[i]` elements
    /// per row.
    Qconcat {
        /// Rows before the axis.
        outer: usize,
        /// Elements per row of each input.
        chunks: Vec<usize>,
        /// Each input's parameters.
        inputs: Vec<QP>,
        /// The result's parameters.
        out: QP,
        /// Clamp bounds per result channel.
        bounds: Bounds,
        /// How the rescaled values round (the op's `rounding`).
        rounding: Rounding,
    },
    /// Global average pooling of `[n, c, plane]` to `[n, c]`.
    QglobalAvgPool {
        /// Batch.
        n: usize,
        /// Channels.
        c: usize,
        /// Elements per plane.
        plane: usize,
        /// x's parameters.
        x: QP,
        /// The result's parameters.
        out: QP,
        /// Clamp bounds per result channel.
        bounds: Bounds,
        /// How the rescaled means round (the op's `rounding`).
        rounding: Rounding,
    },
    /// `quantize` of f32 values with one scale and zero point and half-to-even rounding,
    /// to i8 or u8 (the input of a converted model): the JIT's loop form, computed 16
    /// values at a time where the CPU has AVX-512.
    Quantize {
        /// Elements.
        len: usize,
        /// The scale.
        scale: f32,
        /// The zero point.
        zp: i32,
        /// The clamp bounds (the storage range).
        lo: i32,
        /// See `lo`.
        hi: i32,
    },
}

impl IntOp {
    /// Scratch bytes the op needs.
    pub fn scratch_bytes(&self) -> usize {
        0
    }
    /// A short description.
    pub fn describe(&self) -> String {
        match self {
            IntOp::Requantize { len, .. } => format!("requantize {len}"),
            IntOp::QlinearFast { n, k, m, fast } => format!(
                "int8 qlinear {n}x{k} . {m}x{k}{}",
                if fast.requant.is_some() {
                    " + requantize"
                } else {
                    ""
                }
            ),
            IntOp::QconvFast { geom, fast, pool } => format!(
                "int8 qconv2d {}x{}x{}x{} -> {}{}{}",
                geom.n,
                geom.c,
                geom.h,
                geom.w,
                geom.o,
                if fast.requant.is_some() {
                    " + requantize"
                } else {
                    ""
                },
                if pool.is_some() { " + max pool" } else { "" }
            ),
            IntOp::Qlinear { n, k, m, .. } => format!("qlinear {n}x{k} . {m}x{k}"),
            IntOp::Qconv { conv, .. } => format!("qconv2d {}", conv.describe()),
            IntOp::Qadd { dims, .. } => format!("qadd {dims:?}"),
            IntOp::Qconcat { chunks, .. } => format!("qconcat {} inputs", chunks.len()),
            IntOp::QglobalAvgPool { n, c, .. } => format!("qglobal_avg_pool {n}x{c}"),
            IntOp::Quantize { len, .. } => format!("quantize {len}"),
        }
    }
}

/// Reads element `i` of an integer buffer.
///
/// # Safety
/// `p` must hold more than `i` elements of `d`.
#[inline]
unsafe fn get(p: *const u8, d: DType, i: usize) -> i64 {
    // SAFETY: as the caller promised.
    unsafe {
        match d {
            DType::I8 => *(p as *const i8).add(i) as i64,
            DType::U8 => *p.add(i) as i64,
            DType::I16 => *(p as *const i16).add(i) as i64,
            DType::I32 => *(p as *const i32).add(i) as i64,
            DType::I64 => *(p as *const i64).add(i),
            DType::Bool => *p.add(i) as i64,
            DType::F32 => *(p as *const f32).add(i) as i64,
            DType::F64 => *(p as *const f64).add(i) as i64,
        }
    }
}

/// Writes element `i` of an integer buffer (the value fits the type).
///
/// # Safety
/// `p` must hold more than `i` elements of `d`.
#[inline]
unsafe fn put(p: *mut u8, d: DType, i: usize, v: i64) {
    // SAFETY: as the caller promised.
    unsafe {
        match d {
            DType::I8 => *(p as *mut i8).add(i) = v as i8,
            DType::U8 => *p.add(i) = v as u8,
            DType::I16 => *(p as *mut i16).add(i) = v as i16,
            DType::I32 => *(p as *mut i32).add(i) = v as i32,
            DType::I64 => *(p as *mut i64).add(i) = v,
            DType::Bool => *p.add(i) = (v != 0) as u8,
            DType::F32 => *(p as *mut f32).add(i) = v as f32,
            DType::F64 => *(p as *mut f64).add(i) = v as f64,
        }
    }
}

/// Element `i` of a quantized buffer, centered by its zero point.
///
/// # Safety
/// As [`get`].
#[inline]
unsafe fn centered(p: *const u8, q: &QP, i: usize) -> i64 {
    // SAFETY: as the caller promised.
    unsafe { get(p, q.dtype, i) - q.zps[q.chan.of(i)] }
}

fn clamp_out(q: &QP, bounds: &Bounds, i: usize, v: i128) -> i64 {
    let c = q.chan.of(i);
    let (lo, hi) = bounds[c];
    (q.zps[c] as i128 + v).clamp(lo as i128, hi as i128) as i64
}

/// Runs an integer op; returns a status code.
///
/// # Safety
/// The buffers at `args` and `out` must be those the plan sized for `op`.
unsafe fn run(ctx: &RunCtx, op: &IntOp, args: &[Loc], out: Loc) -> i32 {
    // SAFETY: the plan sized every buffer for the op's sizes.
    unsafe {
        let y = ctx.ptr(out);
        let arg = |i: usize| ctx.ptr(args[i]) as *const u8;
        match op {
            IntOp::QlinearFast { n, k, m, fast } => {
                return run_fast(
                    ctx,
                    fast,
                    args,
                    out,
                    (n * k, n * m, *m),
                    |a, ops, o, par| {
                        qir_kernels::qgemm_on(
                            par,
                            qir_kernels::Path::Auto,
                            a,
                            *n,
                            fast.zx,
                            &fast.packed.0,
                            ops,
                            o,
                        )
                    },
                );
            }
            IntOp::QconvFast { geom, fast, pool } => {
                let xl = geom.n * geom.c * geom.h * geom.w;
                let plane = match pool {
                    Some(p) => p.out(geom.oh, geom.ow).map_or(0, |(ph, pw)| ph * pw),
                    None => geom.oh * geom.ow,
                };
                let yl = geom.n * geom.o * plane;
                return run_fast(ctx, fast, args, out, (xl, yl, geom.o), |a, ops, o, par| {
                    let (path, zx, w) = (qir_kernels::Path::Auto, fast.zx, &fast.packed.0);
                    match pool {
                        Some(p) => {
                            qir_kernels::qconv2d_pool_on(par, path, a, zx, geom, w, ops, p, o)
                        }
                        None => qir_kernels::qconv2d_on(par, path, a, zx, geom, w, ops, o),
                    }
                });
            }
            IntOp::Requantize {
                len,
                input,
                mult,
                shift,
                mchan,
                out,
                bounds,
                rounding,
            } => {
                let x = arg(0);
                for i in 0..*len {
                    let v = match &input.1 {
                        Some(q) => centered(x, q, i),
                        None => get(x, input.0, i),
                    };
                    let c = mchan.of(i);
                    let Some(r) = rescale(v, mult[c], shift[c], *rounding) else {
                        return status::BAD_SCALE;
                    };
                    put(y, out.dtype, i, clamp_out(out, bounds, i, r));
                }
            }
            IntOp::Qlinear {
                n,
                k,
                m,
                x: qx,
                w: qw,
                bias,
            } => {
                let (x, w) = (arg(0), arg(1));
                let b = bias.then(|| arg(2));
                let wc: Vec<i64> = (0..m * k).map(|i| centered(w, qw, i)).collect();
                for r in 0..*n {
                    let xr: Vec<i64> = (0..*k).map(|j| centered(x, qx, r * k + j)).collect();
                    for c in 0..*m {
                        let mut acc: i64 =
                            xr.iter().zip(&wc[c * k..][..*k]).map(|(a, b)| a * b).sum();
                        if let Some(b) = b {
                            acc += get(b, DType::I32, c);
                        }
                        let Ok(v) = i32::try_from(acc) else {
                            return status::OVERFLOW;
                        };
                        put(y, DType::I32, r * m + c, v as i64);
                    }
                }
            }
            IntOp::Qconv {
                conv: g,
                x: qx,
                w: qw,
                bias,
            } => {
                let (x, w) = (arg(0), arg(1));
                let b = bias.then(|| arg(2));
                let (cg, og) = (g.cg(), g.og());
                for ni in 0..g.n {
                    for o in 0..g.o {
                        let gi = o / og;
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let mut acc = 0i64;
                                for ci in 0..cg {
                                    let ch = gi * cg + ci;
                                    for ky in 0..g.kh {
                                        let Some(iy) = (oy * g.stride[0] + ky * g.dil[0])
                                            .checked_sub(g.pad[0])
                                            .filter(|&v| v < g.h)
                                        else {
                                            continue;
                                        };
                                        for kx in 0..g.kw {
                                            let Some(ix) = (ox * g.stride[1] + kx * g.dil[1])
                                                .checked_sub(g.pad[1])
                                                .filter(|&v| v < g.w)
                                            else {
                                                continue;
                                            };
                                            let xi = ((ni * g.c + ch) * g.h + iy) * g.w + ix;
                                            let wi = ((o * cg + ci) * g.kh + ky) * g.kw + kx;
                                            acc += centered(x, qx, xi) * centered(w, qw, wi);
                                        }
                                    }
                                }
                                if let Some(b) = b {
                                    acc += get(b, DType::I32, o);
                                }
                                let Ok(v) = i32::try_from(acc) else {
                                    return status::OVERFLOW;
                                };
                                let yi = ((ni * g.o + o) * g.oh + oy) * g.ow + ox;
                                put(y, DType::I32, yi, v as i64);
                            }
                        }
                    }
                }
            }
            IntOp::Qadd {
                dims,
                a_strides,
                b_strides,
                a: qa,
                b: qb,
                out,
                bounds,
                rounding,
            } => {
                let (a, b) = (arg(0), arg(1));
                let len: usize = dims.iter().product();
                let mut idx = vec![0usize; dims.len()];
                for i in 0..len {
                    let ia: usize = idx.iter().zip(a_strides).map(|(x, s)| x * s).sum();
                    let ib: usize = idx.iter().zip(b_strides).map(|(x, s)| x * s).sum();
                    let so = out.scales[out.chan.of(i)] as f64;
                    let ra = qa.scales[qa.chan.of(ia)] as f64 / so;
                    let rb = qb.scales[qb.chan.of(ib)] as f64 / so;
                    let Some(v) = rescale_sum(
                        &[(centered(a, qa, ia), ra), (centered(b, qb, ib), rb)],
                        *rounding,
                    ) else {
                        return status::BAD_SCALE;
                    };
                    put(y, out.dtype, i, clamp_out(out, bounds, i, v));
                    for d in (0..dims.len()).rev() {
                        idx[d] += 1;
                        if idx[d] < dims[d] {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
            }
            IntOp::Qconcat {
                outer,
                chunks,
                inputs,
                out,
                bounds,
                rounding,
            } => {
                let mut i = 0usize;
                for o in 0..*outer {
                    for (t, (q, &chunk)) in inputs.iter().zip(chunks).enumerate() {
                        let src = arg(t);
                        for j in 0..chunk {
                            let si = o * chunk + j;
                            let ratio =
                                q.scales[q.chan.of(si)] as f64 / out.scales[out.chan.of(i)] as f64;
                            let Some(v) = rescale_sum(&[(centered(src, q, si), ratio)], *rounding)
                            else {
                                return status::BAD_SCALE;
                            };
                            put(y, out.dtype, i, clamp_out(out, bounds, i, v));
                            i += 1;
                        }
                    }
                }
            }
            IntOp::QglobalAvgPool {
                n,
                c,
                plane,
                x: qx,
                out,
                bounds,
                rounding,
            } => {
                let x = arg(0);
                for p in 0..n * c {
                    let mut sum = 0i64;
                    for j in 0..*plane {
                        sum += centered(x, qx, p * plane + j);
                    }
                    let sx = qx.scales[qx.chan.of(p * plane)] as f64;
                    let real = sx / (out.scales[out.chan.of(p)] as f64 * (*plane).max(1) as f64);
                    let Some(v) = rescale_sum(&[(sum, real)], *rounding) else {
                        return status::BAD_SCALE;
                    };
                    put(y, out.dtype, p, clamp_out(out, bounds, p, v));
                }
            }
            IntOp::Quantize {
                len,
                scale,
                zp,
                lo,
                hi,
            } => {
                let x = std::slice::from_raw_parts(arg(0) as *const f32, *len);
                let y = std::slice::from_raw_parts_mut(y, *len);
                let q = Quant {
                    scale: *scale,
                    zp: *zp,
                    lo: *lo,
                    hi: *hi,
                };
                crate::rt::team::for_chunks(y, 1 << 14, &|i, part| {
                    q.run(&x[i << 14..][..part.len()], part)
                });
            }
        }
    }
    0
}

/// A per-tensor half-to-even `quantize`: [`qir::quant::quantize_f32`] value by value, and
/// on AVX-512 its operations in the same order 16 values at a time (`v = x * (1 / s)` in
/// f32, rounded half to even, plus the zero point, clamped to `[lo, hi]`; NaN gives the
/// zero point). The low byte of the integer is stored (i8 and u8 alike).
#[derive(Clone, Copy)]
struct Quant {
    scale: f32,
    zp: i32,
    lo: i32,
    hi: i32,
}

impl Quant {
    fn one(&self, x: f32) -> u8 {
        let (zp, lo, hi) = (self.zp as i64, self.lo as i64, self.hi as i64);
        qir::quant::quantize_f32(x, self.scale, zp, lo, hi, Rounding::HalfEven) as u8
    }

    fn run(&self, x: &[f32], y: &mut [u8]) {
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the features are present.
            done = unsafe { self.avx512(x, y) };
        }
        for (o, &v) in y[done..].iter_mut().zip(&x[done..]) {
            *o = self.one(v);
        }
    }

    /// Sixteen values per step; returns how many it did (a multiple of 16).
    ///
    /// # Safety
    /// AVX-512 F and BW are available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn avx512(&self, x: &[f32], y: &mut [u8]) -> usize {
        use std::arch::x86_64::*;
        let n = x.len().min(y.len()) / 16 * 16;
        let (inv, z) = (
            _mm512_set1_ps(1.0 / self.scale),
            _mm512_set1_ps(self.zp as f32),
        );
        let (lo, hi) = (
            _mm512_set1_ps(self.lo as f32),
            _mm512_set1_ps(self.hi as f32),
        );
        let zi = _mm512_set1_epi32(self.zp);
        for i in (0..n).step_by(16) {
            let xs: &[f32; 16] = x[i..i + 16].try_into().expect("sixteen values");
            let ys: &mut [u8; 16] = (&mut y[i..i + 16]).try_into().expect("sixteen bytes");
            // SAFETY: `xs` and `ys` are sixteen elements; the features are present.
            unsafe {
                let v = _mm512_mul_ps(_mm512_loadu_ps(xs.as_ptr()), inv);
                let r =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                let q = _mm512_add_ps(z, r);
                let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(q, q);
                // integral and inside [lo, hi]: the conversion is exact
                let c = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(q, lo), hi));
                let b = _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32(nan, c, zi));
                _mm_storeu_si128(ys.as_mut_ptr().cast(), b);
            }
        }
        n
    }
}

/// Runs a fast int8 call: binds the activations, bias and result buffers and calls `f`
/// with the fused epilogue (and the JIT's team when the program uses several threads). `sizes` are the elements
/// of the activations and of the result, and the output channels.
///
/// # Safety
/// The buffers must be those the plan sized.
unsafe fn run_fast<T>(
    ctx: &RunCtx,
    fast: &Fast<T>,
    args: &[Loc],
    out: Loc,
    sizes: (usize, usize, usize),
    f: impl FnOnce(
        qir_kernels::Activations,
        &[qir_kernels::FusedOp],
        qir_kernels::Output,
        qir_kernels::Parallel,
    ) -> qir_kernels::KResult<()>,
) -> i32 {
    let (xl, yl, channels) = sizes;
    // SAFETY: as the caller promised.
    unsafe {
        let x = ctx.ptr(args[0]);
        let a = match fast.x {
            DType::U8 => qir_kernels::Activations::U8(std::slice::from_raw_parts(x, xl)),
            _ => qir_kernels::Activations::I8(std::slice::from_raw_parts(x as *const i8, xl)),
        };
        let mut ops: Vec<qir_kernels::FusedOp> = Vec::with_capacity(2);
        let bias;
        if fast.bias {
            bias = std::slice::from_raw_parts(ctx.ptr(args[1]) as *const i32, channels);
            ops.push(qir_kernels::FusedOp::AddPerChannel(bias));
        }
        if let Some(r) = &fast.requant {
            ops.push(qir_kernels::FusedOp::Requantize(r));
        }
        let y = ctx.ptr(out);
        let o = match fast.out {
            DType::I8 => qir_kernels::Output::I8(std::slice::from_raw_parts_mut(y as *mut i8, yl)),
            DType::U8 => qir_kernels::Output::U8(std::slice::from_raw_parts_mut(y, yl)),
            _ => qir_kernels::Output::I32(std::slice::from_raw_parts_mut(y as *mut i32, yl)),
        };
        // the JIT's own team runs the parts (not rayon's pool, whose threads would compete
        // with the team's for the same cores)
        let run = |parts: usize, job: &(dyn Fn(usize) + Sync)| crate::rt::team::run(parts, job);
        let par = if ctx.threads > 1 {
            qir_kernels::Parallel::Team {
                threads: crate::rt::team::size(),
                run: &run,
            }
        } else {
            qir_kernels::Parallel::None
        };
        match f(a, &ops, o, par) {
            Ok(()) => 0,
            Err(_) => status::BAD_SCALE,
        }
    }
}

/// The `qatc_integer` kernel.
///
/// # Safety
/// `ctx` and `call` must come from the same compiled plan.
pub unsafe extern "C" fn qatc_integer(ctx: *const RunCtx, call: *const Bound) -> i32 {
    // SAFETY: the compiled code passes its own context and call descriptions.
    let (ctx, call) = unsafe { (&*ctx, &*call) };
    let Kernel::Integer(op) = &call.kernel else {
        return -1;
    };
    // SAFETY: the plan sized the buffers for `op`.
    unsafe { run(ctx, op, &call.args, call.out) }
}
