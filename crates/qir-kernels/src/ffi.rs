//! The C ABI of the kernels, for the JIT to register as symbols: opaque handles for the
//! packed weights and the requantize parameters (built once at model load, freed by the
//! owner), and one entry point per operation taking raw pointers and sizes.
//!
//! Conventions: every function returns a status ([`QK_OK`] = 0, else one of the negative
//! `QK_ERR_*` codes) or a handle (null on failure); no function unwinds (a panic becomes
//! [`QK_ERR_PANIC`]); pointers may be null only where documented; lengths are in elements.
//! Codes: `path` 0 auto, 1 portable, 2 avx2, 3 avx512-vnni, 4 amx, 5 amx-emulated;
//! `rounding` 0 half away from zero, 1 half even; element types `QK_U8` = 0, `QK_I8` = 1,
//! `QK_I32` = 2.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{
    Activations, ChannelAxis, Clamp, ConvGeom, FusedOp, KernelError, Output, PackedB, PackedConv,
    Path, Requant, Rounding,
};

/// Success.
pub const QK_OK: i32 = 0;
/// A size, shape or parameter is invalid.
pub const QK_ERR_INVALID: i32 = -1;
/// The requested path cannot run on this machine.
pub const QK_ERR_UNAVAILABLE: i32 = -2;
/// A required pointer is null or a code is unknown.
pub const QK_ERR_ARG: i32 = -3;
/// The kernel panicked (a bug); nothing was unwound across the ABI.
pub const QK_ERR_PANIC: i32 = -4;

/// Element type code: u8.
pub const QK_U8: u32 = 0;
/// Element type code: i8.
pub const QK_I8: u32 = 1;
/// Element type code: i32.
pub const QK_I32: u32 = 2;

fn path_of(code: u32) -> Option<Path> {
    Some(match code {
        0 => Path::Auto,
        1 => Path::Portable,
        2 => Path::Avx2,
        3 => Path::Avx512Vnni,
        4 => Path::Amx,
        5 => Path::AmxEmulated,
        _ => return None,
    })
}

fn status(r: Result<Result<(), KernelError>, Box<dyn std::any::Any + Send>>) -> i32 {
    match r {
        Ok(Ok(())) => QK_OK,
        Ok(Err(KernelError::PathUnavailable(_))) => QK_ERR_UNAVAILABLE,
        Ok(Err(_)) => QK_ERR_INVALID,
        Err(_) => QK_ERR_PANIC,
    }
}

/// The code of [`Path::best`] on this machine.
#[unsafe(no_mangle)]
pub extern "C" fn qk_path_best() -> u32 {
    match Path::best() {
        Path::Auto => 0,
        Path::Portable => 1,
        Path::Avx2 => 2,
        Path::Avx512Vnni => 3,
        Path::Amx => 4,
        Path::AmxEmulated => 5,
    }
}

/// Whether the path with this code runs here (unknown codes: false).
#[unsafe(no_mangle)]
pub extern "C" fn qk_path_available(path: u32) -> bool {
    path_of(path).is_some_and(Path::is_available)
}

/// Packs linear weights `w[m, k]` (i8, row-major); `zero_points` is null (all 0) or points
/// to `n_zero_points` values (1 or `m`). Null on invalid input.
///
/// # Safety
/// `w` points to `m * k` readable bytes; `zero_points`, if not null, to `n_zero_points`
/// readable i32.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_packed_b_new(
    w: *const i8,
    m: usize,
    k: usize,
    zero_points: *const i32,
    n_zero_points: usize,
) -> *mut PackedB {
    if w.is_null() || m.checked_mul(k).is_none() {
        return std::ptr::null_mut();
    }
    let r = catch_unwind(|| {
        // SAFETY: the caller's contract.
        let w = unsafe { std::slice::from_raw_parts(w, m * k) };
        // SAFETY: the caller's contract.
        let zp = (!zero_points.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(zero_points, n_zero_points) });
        PackedB::new(w, m, k, zp)
    });
    match r {
        Ok(Ok(p)) => Box::into_raw(Box::new(p)),
        _ => std::ptr::null_mut(),
    }
}

/// Frees packed linear weights (null: no-op).
///
/// # Safety
/// `p` is null or a pointer returned by [`qk_packed_b_new`], not freed before and not used
/// after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_packed_b_free(p: *mut PackedB) {
    if !p.is_null() {
        // SAFETY: the caller's contract: p came from Box::into_raw.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Packs convolution weights `[o, c_per_group, kh, kw]` (i8, OIHW); zero points as in
/// [`qk_packed_b_new`] (1 or `o` values). Null on invalid input.
///
/// # Safety
/// `w` points to `o * c_per_group * kh * kw` readable bytes; `zero_points` as in
/// [`qk_packed_b_new`].
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qk_packed_conv_new(
    w: *const i8,
    o: usize,
    c_per_group: usize,
    kh: usize,
    kw: usize,
    groups: usize,
    zero_points: *const i32,
    n_zero_points: usize,
) -> *mut PackedConv {
    let Some(len) = o
        .checked_mul(c_per_group)
        .and_then(|v| v.checked_mul(kh))
        .and_then(|v| v.checked_mul(kw))
    else {
        return std::ptr::null_mut();
    };
    if w.is_null() {
        return std::ptr::null_mut();
    }
    let r = catch_unwind(|| {
        // SAFETY: the caller's contract.
        let w = unsafe { std::slice::from_raw_parts(w, len) };
        // SAFETY: the caller's contract.
        let zp = (!zero_points.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(zero_points, n_zero_points) });
        PackedConv::new(w, o, c_per_group, [kh, kw], groups, zp)
    });
    match r {
        Ok(Ok(p)) => Box::into_raw(Box::new(p)),
        _ => std::ptr::null_mut(),
    }
}

/// Frees packed convolution weights (null: no-op).
///
/// # Safety
/// As [`qk_packed_b_free`], for [`qk_packed_conv_new`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_packed_conv_free(p: *mut PackedConv) {
    if !p.is_null() {
        // SAFETY: the caller's contract: p came from Box::into_raw.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Requantize parameters: `channels` multipliers (Q0.31, `[0, 2^31)`) and shifts
/// (`[-31, 62]`), 1 for per-tensor; output zero point and clamp `[lo, hi]` (activation
/// folded in); `rounding` 0 = half away from zero, 1 = half even. Null on invalid input.
///
/// # Safety
/// `multipliers` and `shifts` point to `channels` readable i32.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_requant_new(
    rounding: u32,
    multipliers: *const i32,
    shifts: *const i32,
    channels: usize,
    zero_point: i32,
    lo: i32,
    hi: i32,
) -> *mut Requant {
    let rounding = match rounding {
        0 => Rounding::HalfAwayFromZero,
        1 => Rounding::HalfEven,
        _ => return std::ptr::null_mut(),
    };
    if multipliers.is_null() || shifts.is_null() {
        return std::ptr::null_mut();
    }
    let r = catch_unwind(|| {
        // SAFETY: the caller's contract.
        let (m, s) = unsafe {
            (
                std::slice::from_raw_parts(multipliers, channels),
                std::slice::from_raw_parts(shifts, channels),
            )
        };
        let m: Vec<i64> = m.iter().map(|&v| v as i64).collect();
        let s: Vec<i64> = s.iter().map(|&v| v as i64).collect();
        Requant::new(rounding, &m, &s, zero_point, Clamp { lo, hi })
    });
    match r {
        Ok(Ok(q)) => Box::into_raw(Box::new(q)),
        _ => std::ptr::null_mut(),
    }
}

/// Frees requantize parameters (null: no-op).
///
/// # Safety
/// As [`qk_packed_b_free`], for [`qk_requant_new`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qk_requant_free(q: *mut Requant) {
    if !q.is_null() {
        // SAFETY: the caller's contract: q came from Box::into_raw.
        drop(unsafe { Box::from_raw(q) });
    }
}

/// # Safety
/// `p` points to `len` readable elements of type `ty`.
unsafe fn acts<'a>(p: *const c_void, ty: u32, len: usize) -> Option<Activations<'a>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe {
        match ty {
            QK_U8 => Some(Activations::U8(std::slice::from_raw_parts(p.cast(), len))),
            QK_I8 => Some(Activations::I8(std::slice::from_raw_parts(p.cast(), len))),
            _ => None,
        }
    }
}

/// # Safety
/// `p` points to `len` writable elements of type `ty`, not aliased during the call.
unsafe fn output<'a>(p: *mut c_void, ty: u32, len: usize) -> Option<Output<'a>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe {
        match ty {
            QK_U8 => Some(Output::U8(std::slice::from_raw_parts_mut(p.cast(), len))),
            QK_I8 => Some(Output::I8(std::slice::from_raw_parts_mut(p.cast(), len))),
            QK_I32 => Some(Output::I32(std::slice::from_raw_parts_mut(p.cast(), len))),
            _ => None,
        }
    }
}

/// The epilogue of an entry point: bias (nullable, one per channel), requantize (nullable:
/// i32 output).
fn ops<'a>(bias: Option<&'a [i32]>, q: Option<&'a Requant>) -> Vec<FusedOp<'a>> {
    let mut v = Vec::with_capacity(2);
    if let Some(b) = bias {
        v.push(FusedOp::AddPerChannel(b));
    }
    if let Some(q) = q {
        v.push(FusedOp::Requantize(q));
    }
    v
}

/// Int8 linear layer ([`crate::qgemm`], or [`crate::qgemm_par`] if `parallel`):
/// `a[n, k]` of type `a_type` (u8/i8) with zero point `za`, packed weights `w` (`[m, k]`),
/// `bias` null or `m` i32, `requant` null (then `out_type` must be i32) or the
/// requantize; `out` `[n, m]` of `out_type`.
///
/// # Safety
/// `a` points to `n * k` readable elements; `out` to `n * m` writable ones; `w` and
/// `requant` are live handles (or `requant` null); `bias` null or `m` readable i32.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qk_qlinear(
    path: u32,
    a: *const c_void,
    a_type: u32,
    n: usize,
    za: i32,
    w: *const PackedB,
    bias: *const i32,
    requant: *const Requant,
    out: *mut c_void,
    out_type: u32,
    parallel: bool,
) -> i32 {
    let Some(path) = path_of(path) else {
        return QK_ERR_ARG;
    };
    if w.is_null() {
        return QK_ERR_ARG;
    }
    // SAFETY: live handle (caller's contract).
    let w = unsafe { &*w };
    let (Some(nk), Some(nm)) = (n.checked_mul(w.k), n.checked_mul(w.m)) else {
        return QK_ERR_INVALID;
    };
    // SAFETY: the caller's contract for every pointer.
    let (a, o) = unsafe { (acts(a, a_type, nk), output(out, out_type, nm)) };
    let (Some(a), Some(o)) = (a, o) else {
        return QK_ERR_ARG;
    };
    // SAFETY: as above.
    let bias = (!bias.is_null()).then(|| unsafe { std::slice::from_raw_parts(bias, w.m) });
    // SAFETY: as above.
    let q = (!requant.is_null()).then(|| unsafe { &*requant });
    let f = if parallel {
        crate::qgemm_par
    } else {
        crate::qgemm
    };
    status(catch_unwind(AssertUnwindSafe(|| {
        f(path, a, n, za, w, &ops(bias, q), o)
    })))
}

/// The geometry of [`qk_qconv2d`] (all sizes; `oh`/`ow` are computed).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QkConvGeom {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (rows, columns).
    pub stride: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pad: [usize; 4],
    /// Dilation (rows, columns).
    pub dil: [usize; 2],
    /// Groups.
    pub groups: usize,
}

/// Int8 convolution ([`crate::qconv2d`], or [`crate::qconv2d_par`] if `parallel`): `x`
/// NCHW of type `x_type` with zero point `zx`, packed weights `w`, `bias` null or `o`
/// i32, `requant` null (i32 output) or the requantize; `out` NCHW `[n, o, oh, ow]` of
/// `out_type`.
///
/// # Safety
/// `geom` points to a geometry; `x` to `n * c * h * w` readable elements; `out` to
/// `n * o * oh * ow` writable ones; handles live; `bias` null or `o` readable i32.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qk_qconv2d(
    path: u32,
    x: *const c_void,
    x_type: u32,
    zx: i32,
    geom: *const QkConvGeom,
    w: *const PackedConv,
    bias: *const i32,
    requant: *const Requant,
    out: *mut c_void,
    out_type: u32,
    parallel: bool,
) -> i32 {
    let Some(path) = path_of(path) else {
        return QK_ERR_ARG;
    };
    if geom.is_null() || w.is_null() {
        return QK_ERR_ARG;
    }
    // SAFETY: the caller's contract.
    let (gc, w) = unsafe { (*geom, &*w) };
    let Ok(g) = ConvGeom::new(
        gc.n,
        gc.c,
        [gc.h, gc.w],
        gc.o,
        [gc.kh, gc.kw],
        gc.stride,
        gc.pad,
        gc.dil,
        gc.groups,
    ) else {
        return QK_ERR_INVALID;
    };
    // SAFETY: the caller's contract for every pointer.
    let (x, o) = unsafe { (acts(x, x_type, g.x_len()), output(out, out_type, g.y_len())) };
    let (Some(x), Some(o)) = (x, o) else {
        return QK_ERR_ARG;
    };
    // SAFETY: as above.
    let bias = (!bias.is_null()).then(|| unsafe { std::slice::from_raw_parts(bias, g.o) });
    // SAFETY: as above.
    let q = (!requant.is_null()).then(|| unsafe { &*requant });
    let f = if parallel {
        crate::qconv2d_par
    } else {
        crate::qconv2d
    };
    status(catch_unwind(AssertUnwindSafe(|| {
        f(path, x, zx, &g, w, &ops(bias, q), o)
    })))
}

/// Standalone requantize ([`crate::requantize`]) of the `[rows, cols]` i32 matrix `src` into
/// `out` (`out_type` i8/u8/i32); `channels_along_rows`: the per-channel parameters run
/// along rows (NCHW planes, channel `r % channels`) instead of columns.
///
/// # Safety
/// `src` points to `rows * cols` readable i32, `out` to as many writable elements;
/// `requant` is a live handle.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qk_requantize(
    path: u32,
    src: *const i32,
    rows: usize,
    cols: usize,
    requant: *const Requant,
    channels_along_rows: bool,
    out: *mut c_void,
    out_type: u32,
) -> i32 {
    let Some(path) = path_of(path) else {
        return QK_ERR_ARG;
    };
    let Some(len) = rows.checked_mul(cols) else {
        return QK_ERR_INVALID;
    };
    if src.is_null() || requant.is_null() {
        return QK_ERR_ARG;
    }
    // SAFETY: the caller's contract.
    let (src, q, o) = unsafe {
        (
            std::slice::from_raw_parts(src, len),
            &*requant,
            output(out, out_type, len),
        )
    };
    let Some(o) = o else { return QK_ERR_ARG };
    let axis = if channels_along_rows {
        ChannelAxis::Rows
    } else {
        ChannelAxis::Cols
    };
    status(catch_unwind(AssertUnwindSafe(|| {
        crate::requantize(path, src, rows, cols, q, axis, o)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_through_the_c_abi() {
        let (n, k, m) = (3usize, 5usize, 4usize);
        let a: Vec<i8> = (0..(n * k) as i32).map(|v| (v * 7 - 40) as i8).collect();
        let w: Vec<i8> = (0..(m * k) as i32).map(|v| (v * 5 - 30) as i8).collect();
        let bias = [10, -20, 30, -40];
        // SAFETY: all pointers cover the sizes passed; handles are freed once.
        unsafe {
            let pw = qk_packed_b_new(w.as_ptr(), m, k, std::ptr::null(), 0);
            assert!(!pw.is_null());
            let q = qk_requant_new(1, [1 << 30].as_ptr(), [2].as_ptr(), 1, -3, -128, 127);
            assert!(!q.is_null());
            let mut y = vec![0i8; n * m];
            let st = qk_qlinear(
                0,
                a.as_ptr().cast(),
                QK_I8,
                n,
                4,
                pw,
                bias.as_ptr(),
                q,
                y.as_mut_ptr().cast(),
                QK_I8,
                false,
            );
            assert_eq!(st, QK_OK);
            let mut want = vec![0i8; n * m];
            let pb = PackedB::new(&w, m, k, None).unwrap();
            crate::qgemm(
                Path::Portable,
                Activations::I8(&a),
                n,
                4,
                &pb,
                &[FusedOp::AddPerChannel(&bias), FusedOp::Requantize(&*q)],
                Output::I8(&mut want),
            )
            .unwrap();
            assert_eq!(y, want);
            // an i8 output without a requantize is refused; a bad path code too
            let st = qk_qlinear(
                0,
                a.as_ptr().cast(),
                QK_I8,
                n,
                4,
                pw,
                bias.as_ptr(),
                std::ptr::null(),
                y.as_mut_ptr().cast(),
                QK_I8,
                false,
            );
            assert_eq!(st, QK_ERR_INVALID);
            let st = qk_qlinear(
                99,
                a.as_ptr().cast(),
                QK_I8,
                n,
                4,
                pw,
                bias.as_ptr(),
                q,
                y.as_mut_ptr().cast(),
                QK_I8,
                false,
            );
            assert_eq!(st, QK_ERR_ARG);
            qk_packed_b_free(pw);
            qk_requant_free(q);
        }
        assert!(qk_path_available(qk_path_best()));
    }

    #[test]
    fn conv_and_requantize_through_the_c_abi() {
        let g = QkConvGeom {
            n: 2,
            c: 3,
            h: 6,
            w: 5,
            o: 4,
            kh: 3,
            kw: 2,
            stride: [1, 2],
            pad: [1, 0, 1, 1],
            dil: [1, 1],
            groups: 1,
        };
        let geom = ConvGeom::new(2, 3, [6, 5], 4, [3, 2], [1, 2], [1, 0, 1, 1], [1, 1], 1).unwrap();
        let x: Vec<u8> = (0..geom.x_len()).map(|v| (v * 11) as u8).collect();
        let w: Vec<i8> = (0..geom.w_len()).map(|v| (v * 3) as i8).collect();
        // SAFETY: all pointers cover the sizes passed; handles are freed once.
        unsafe {
            let pw = qk_packed_conv_new(w.as_ptr(), 4, 3, 3, 2, 1, std::ptr::null(), 0);
            assert!(!pw.is_null());
            let mut acc = vec![0i32; geom.y_len()];
            let st = qk_qconv2d(
                0,
                x.as_ptr().cast(),
                QK_U8,
                9,
                &g,
                pw,
                std::ptr::null(),
                std::ptr::null(),
                acc.as_mut_ptr().cast(),
                QK_I32,
                true,
            );
            assert_eq!(st, QK_OK);
            let mut want = vec![0i32; geom.y_len()];
            let pc = PackedConv::new(&w, 4, 3, [3, 2], 1, None).unwrap();
            crate::qconv2d(
                Path::Portable,
                Activations::U8(&x),
                9,
                &geom,
                &pc,
                &[],
                Output::I32(&mut want),
            )
            .unwrap();
            assert_eq!(acc, want);
            let q = qk_requant_new(
                0,
                [1 << 30, 1 << 29, 1 << 30, 3 << 28].as_ptr(),
                [3, 4, 5, 6].as_ptr(),
                4,
                0,
                0,
                255,
            );
            let mut y = vec![0u8; geom.y_len()];
            let plane = geom.plane();
            let st = qk_requantize(
                0,
                acc.as_ptr(),
                2 * 4,
                plane,
                q,
                true,
                y.as_mut_ptr().cast(),
                QK_U8,
            );
            assert_eq!(st, QK_OK);
            for (i, (&a, &v)) in acc.iter().zip(&y).enumerate() {
                assert_eq!(v as i32, (*q).apply(a, (i / plane) % 4));
            }
            qk_packed_conv_free(pw);
            qk_requant_free(q);
        }
    }
}
