//! Shared by the integration tests: a small deterministic RNG, random problem builders and
//! the reference semantics re-derived from the documented formula (exact i64 accumulation,
//! the interpreter's public `fixed_point::rescale` for the single exact rounding).
#![allow(dead_code)]

use qir_kernels::*;

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
    pub fn usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as i64, hi as i64) as usize
    }
    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    pub fn bytes_u8(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    pub fn bytes_i8(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
}

/// Owned activations of either signedness.
#[derive(Clone, Debug)]
pub enum Acts {
    U8(Vec<u8>),
    I8(Vec<i8>),
}

impl Acts {
    pub fn random(rng: &mut Rng, n: usize, signed: bool) -> Acts {
        if signed {
            Acts::I8(rng.bytes_i8(n))
        } else {
            Acts::U8(rng.bytes_u8(n))
        }
    }
    pub fn view(&self) -> Activations<'_> {
        match self {
            Acts::U8(v) => Activations::U8(v),
            Acts::I8(v) => Activations::I8(v),
        }
    }
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Acts::U8(v) => v[i] as i64,
            Acts::I8(v) => v[i] as i64,
        }
    }
    pub fn random_zero_point(&self, rng: &mut Rng) -> i32 {
        match self {
            Acts::U8(_) => rng.range(0, 255) as i32,
            Acts::I8(_) => rng.range(-128, 127) as i32,
        }
    }
}

/// A random requantize (per-tensor or per-channel) with a random fused activation, its
/// parameters kept for the reference.
#[derive(Clone, Debug)]
pub struct RandRequant {
    pub q: Requant,
    pub mult: Vec<i64>,
    pub shift: Vec<i64>,
    pub zp: i32,
    pub clamp: Clamp,
    pub rounding: Rounding,
    pub ty: OutType,
}

impl RandRequant {
    /// Scales around `1 / (sqrt(k) * 40)` so that outputs spread over the 8-bit range; on
    /// a third of the calls every scale is a power of two, so that an accumulator is a
    /// rounding tie once in every 2^(total shift) values (tie rules are then exercised).
    pub fn random(rng: &mut Rng, channels: usize, k: usize) -> RandRequant {
        let per_channel = rng.bool();
        let nch = if per_channel { channels } else { 1 };
        let ties = rng.next().is_multiple_of(3);
        let mut mult = Vec::new();
        let mut shift = Vec::new();
        for _ in 0..nch {
            let base = (k as f64).sqrt() * 40.0;
            let real = if ties {
                (-(base.log2().floor()) - (rng.next() % 2) as f64).exp2()
            } else {
                (0.5 + (rng.next() % 1000) as f64 / 1000.0) / base
            };
            let (m, s) = quantize_multiplier(real).unwrap();
            mult.push(m);
            shift.push(s);
        }
        let ty = if rng.bool() { OutType::I8 } else { OutType::U8 };
        let (qmin, qmax) = ty.range();
        let zp = rng.range(qmin as i64, qmax as i64) as i32;
        let act = match rng.next() % 3 {
            0 => Activation::None,
            1 => Activation::Relu,
            _ => Activation::Relu6,
        };
        let clamp = Clamp::for_activation(
            act,
            qmin,
            qmax,
            zp,
            0.02 + (rng.next() % 100) as f32 / 1000.0,
        );
        let rounding = if rng.bool() {
            Rounding::HalfEven
        } else {
            Rounding::HalfAwayFromZero
        };
        let q = Requant::new(rounding, &mult, &shift, zp, clamp).unwrap();
        RandRequant {
            q,
            mult,
            shift,
            zp,
            clamp,
            rounding,
            ty,
        }
    }

    /// The reference value of accumulator `acc` (already including the bias) in `ch`.
    pub fn reference(&self, acc: i64, ch: usize) -> i32 {
        let i = if self.mult.len() == 1 { 0 } else { ch };
        let r = match self.rounding {
            Rounding::HalfEven => qir::quant::Rounding::HalfEven,
            Rounding::HalfAwayFromZero => qir::quant::Rounding::HalfAwayFromZero,
        };
        let v = qir::quant::rescale(acc, self.mult[i], self.shift[i], r).unwrap();
        (self.zp as i128 + v).clamp(self.clamp.lo as i128, self.clamp.hi as i128) as i32
    }
}

/// Output buffers of every kind, read back as i32.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl Out {
    pub fn new(kind: Option<OutType>, len: usize) -> Out {
        match kind {
            None => Out::I32(vec![0x5555_5555; len]),
            Some(OutType::I8) => Out::I8(vec![0x55; len]),
            Some(OutType::U8) => Out::U8(vec![0x55; len]),
        }
    }
    pub fn output(&mut self) -> Output<'_> {
        match self {
            Out::I32(v) => Output::I32(v),
            Out::I8(v) => Output::I8(v),
            Out::U8(v) => Output::U8(v),
        }
    }
    pub fn values(&self) -> Vec<i32> {
        match self {
            Out::I32(v) => v.clone(),
            Out::I8(v) => v.iter().map(|&x| x as i32).collect(),
            Out::U8(v) => v.iter().map(|&x| x as i32).collect(),
        }
    }
}

/// A complete random linear-layer problem.
#[derive(Clone, Debug)]
pub struct LinearCase {
    pub n: usize,
    pub k: usize,
    pub m: usize,
    pub a: Acts,
    pub za: i32,
    pub w: Vec<i8>,
    pub zw: Option<Vec<i32>>,
    pub bias: Option<Vec<i32>>,
    pub rq: Option<RandRequant>,
}

impl LinearCase {
    pub fn random(rng: &mut Rng, n: usize, k: usize, m: usize) -> LinearCase {
        let signed = rng.bool();
        let a = Acts::random(rng, n * k, signed);
        let za = a.random_zero_point(rng);
        let w = rng.bytes_i8(m * k);
        let zw = match rng.next() % 4 {
            0 => Some((0..m).map(|_| rng.range(-128, 127) as i32).collect()),
            1 => Some(vec![rng.range(-128, 127) as i32]),
            _ => None,
        };
        let bias = rng.bool().then(|| {
            (0..m)
                .map(|_| rng.range(-100_000, 100_000) as i32)
                .collect()
        });
        let rq = (!rng.next().is_multiple_of(4)).then(|| RandRequant::random(rng, m, k));
        LinearCase {
            n,
            k,
            m,
            a,
            za,
            w,
            zw,
            bias,
            rq,
        }
    }

    pub fn zw(&self, c: usize) -> i64 {
        match &self.zw {
            None => 0,
            Some(v) if v.len() == 1 => v[0] as i64,
            Some(v) => v[c] as i64,
        }
    }

    /// The exact accumulators (i64) by the formula.
    pub fn accumulators(&self) -> Vec<i64> {
        let mut acc = vec![0i64; self.n * self.m];
        for r in 0..self.n {
            for c in 0..self.m {
                let zw = self.zw(c);
                let mut s = 0i64;
                for kk in 0..self.k {
                    s += (self.a.get(r * self.k + kk) - self.za as i64)
                        * (self.w[c * self.k + kk] as i64 - zw);
                }
                if let Some(b) = &self.bias {
                    s += b[c] as i64;
                }
                acc[r * self.m + c] = s;
            }
        }
        acc
    }

    /// The expected output values.
    pub fn expected(&self) -> Vec<i32> {
        self.accumulators()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let v = i32::try_from(v).expect("test accumulators fit i32");
                match &self.rq {
                    Some(rq) => rq.reference(v as i64, i % self.m),
                    None => v,
                }
            })
            .collect()
    }

    pub fn pack(&self) -> PackedB {
        PackedB::new(&self.w, self.m, self.k, self.zw.as_deref()).unwrap()
    }

    /// Runs the case on `path` (`par`: the parallel entry point).
    pub fn run(&self, path: Path, packed: &PackedB, par: bool) -> Out {
        let mut ops = Vec::new();
        if let Some(b) = &self.bias {
            ops.push(FusedOp::AddPerChannel(b));
        }
        if let Some(rq) = &self.rq {
            ops.push(FusedOp::Requantize(&rq.q));
        }
        let mut out = Out::new(self.rq.as_ref().map(|r| r.ty), self.n * self.m);
        let f = if par { qgemm_par } else { qgemm };
        f(
            path,
            self.a.view(),
            self.n,
            self.za,
            packed,
            &ops,
            out.output(),
        )
        .unwrap();
        out
    }
}

/// A complete random convolution problem.
#[derive(Clone, Debug)]
pub struct ConvCase {
    pub g: ConvGeom,
    pub x: Acts,
    pub zx: i32,
    pub w: Vec<i8>,
    pub zw: Option<Vec<i32>>,
    pub bias: Option<Vec<i32>>,
    pub rq: Option<RandRequant>,
}

impl ConvCase {
    pub fn random(rng: &mut Rng, g: ConvGeom) -> ConvCase {
        let signed = rng.bool();
        let x = Acts::random(rng, g.x_len(), signed);
        let zx = x.random_zero_point(rng);
        let w = rng.bytes_i8(g.w_len());
        let zw = match rng.next() % 4 {
            0 => Some((0..g.o).map(|_| rng.range(-128, 127) as i32).collect()),
            1 => Some(vec![rng.range(-128, 127) as i32]),
            _ => None,
        };
        let bias = rng.bool().then(|| {
            (0..g.o)
                .map(|_| rng.range(-100_000, 100_000) as i32)
                .collect()
        });
        let rq = (!rng.next().is_multiple_of(4)).then(|| RandRequant::random(rng, g.o, g.k()));
        ConvCase {
            g,
            x,
            zx,
            w,
            zw,
            bias,
            rq,
        }
    }

    /// A random geometry: small, with edge tiles, groups, stride, dilation, padding.
    pub fn random_geom(rng: &mut Rng, depthwise: bool) -> ConvGeom {
        loop {
            let groups = if depthwise {
                rng.usize(1, 12)
            } else if rng.bool() {
                1
            } else {
                rng.usize(1, 4)
            };
            let (c, o) = if depthwise {
                (groups, groups)
            } else {
                (groups * rng.usize(1, 6), groups * rng.usize(1, 20))
            };
            let kh = rng.usize(1, 4);
            let kw = rng.usize(1, 4);
            let h = rng.usize(1, 19);
            let w = rng.usize(1, 19);
            let stride = [rng.usize(1, 3), rng.usize(1, 3)];
            let dil = [rng.usize(1, 2), rng.usize(1, 2)];
            let pad = [
                rng.usize(0, 2),
                rng.usize(0, 2),
                rng.usize(0, 2),
                rng.usize(0, 2),
            ];
            let n = rng.usize(1, 3);
            if let Ok(g) = ConvGeom::new(n, c, [h, w], o, [kh, kw], stride, pad, dil, groups) {
                return g;
            }
        }
    }

    pub fn zw(&self, o: usize) -> i64 {
        match &self.zw {
            None => 0,
            Some(v) if v.len() == 1 => v[0] as i64,
            Some(v) => v[o] as i64,
        }
    }

    pub fn expected(&self) -> Vec<i32> {
        let g = &self.g;
        let (cg, og) = (g.cg(), g.og());
        let mut y = Vec::with_capacity(g.y_len());
        for ni in 0..g.n {
            for o in 0..g.o {
                let grp = o / og;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0i64;
                        for cl in 0..cg {
                            let ci = grp * cg + cl;
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let iy =
                                        (oy * g.stride[0] + ki * g.dil[0]) as i64 - g.pad[0] as i64;
                                    let ix =
                                        (ox * g.stride[1] + kj * g.dil[1]) as i64 - g.pad[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= g.h as i64 || ix >= g.w as i64 {
                                        continue;
                                    }
                                    let xv = self.x.get(
                                        ((ni * g.c + ci) * g.h + iy as usize) * g.w + ix as usize,
                                    );
                                    let wv = self.w[((o * cg + cl) * g.kh + ki) * g.kw + kj] as i64;
                                    s += (xv - self.zx as i64) * (wv - self.zw(o));
                                }
                            }
                        }
                        if let Some(b) = &self.bias {
                            s += b[o] as i64;
                        }
                        let v = i32::try_from(s).expect("test accumulators fit i32");
                        y.push(match &self.rq {
                            Some(rq) => rq.reference(v as i64, o),
                            None => v,
                        });
                    }
                }
            }
        }
        y
    }

    pub fn pack(&self) -> PackedConv {
        let g = &self.g;
        PackedConv::new(
            &self.w,
            g.o,
            g.cg(),
            [g.kh, g.kw],
            g.groups,
            self.zw.as_deref(),
        )
        .unwrap()
    }

    /// [`Self::expected`] max-pooled with `p` (on the requantized values, as the model's
    /// separate `max_pool2d` does).
    pub fn expected_pooled(&self, p: &MaxPool) -> Vec<i32> {
        let g = &self.g;
        let y = self.expected();
        let (ph, pw) = p.out(g.oh, g.ow).unwrap();
        let mut out = Vec::new();
        for plane in y.chunks_exact(g.oh * g.ow) {
            for py in 0..ph {
                for px in 0..pw {
                    let mut m = i32::MIN;
                    for ky in 0..p.k[0] {
                        for kx in 0..p.k[1] {
                            let (yy, xx) = (py * p.stride[0] + ky, px * p.stride[1] + kx);
                            m = m.max(plane[yy * g.ow + xx]);
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    /// The convolution with the pool `p` fused ([`qconv2d_pool_on`]).
    pub fn run_pooled(&self, path: Path, packed: &PackedConv, p: &MaxPool, par: bool) -> Out {
        let ops = self.ops();
        let (ph, pw) = p.out(self.g.oh, self.g.ow).unwrap();
        let mut out = Out::new(
            self.rq.as_ref().map(|r| r.ty),
            self.g.n * self.g.o * ph * pw,
        );
        let par = if par { Parallel::Rayon } else { Parallel::None };
        qconv2d_pool_on(
            par,
            path,
            self.x.view(),
            self.zx,
            &self.g,
            packed,
            &ops,
            p,
            out.output(),
        )
        .unwrap();
        out
    }

    /// The epilogue of the case: its bias and requantize, if any.
    pub fn ops(&self) -> Vec<FusedOp<'_>> {
        let mut ops = Vec::new();
        if let Some(b) = &self.bias {
            ops.push(FusedOp::AddPerChannel(b));
        }
        if let Some(rq) = &self.rq {
            ops.push(FusedOp::Requantize(&rq.q));
        }
        ops
    }

    pub fn run(&self, path: Path, packed: &PackedConv, par: bool) -> Out {
        let ops = self.ops();
        let mut out = Out::new(self.rq.as_ref().map(|r| r.ty), self.g.y_len());
        let f = if par { qconv2d_par } else { qconv2d };
        f(
            path,
            self.x.view(),
            self.zx,
            &self.g,
            packed,
            &ops,
            out.output(),
        )
        .unwrap();
        out
    }
}
