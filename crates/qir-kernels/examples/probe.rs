//! A quick best-of-N timer (not a benchmark harness): GOP/s of one int8 GEMM or convolution on
//! one path, or of the f32 reference (the `gemm` crate) on the same shape. Best-of timing
//! filters out the preemptions of a shared machine that criterion's medians include.
//!
//! `probe gemm <path|f32> <single|par> n k m` — `a[n, k] x w[m, k]^T`, requantized to i8
//! `probe conv <path|f32> <single|par> n c hw o` — 3x3, stride 1, no padding, requantized
//! (f32: im2col + GEMM per image). `path` as `Path::name`.

use std::time::Instant;

use qir_kernels::*;

fn best_of(work: f64, mut f: impl FnMut()) -> f64 {
    let reps = (2e8 / work).ceil() as usize;
    let mut best = f64::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

fn f32_gemm(n: usize, k: usize, m: usize, a: &[f32], w: &[f32], c: &mut [f32], threads: usize) {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers cover the row-major matrices with the strides given.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            c.as_mut_ptr(),
            1,
            m as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args[1].as_str();
    let f32_ref = args[2] == "f32";
    let path = if f32_ref {
        Path::Portable
    } else {
        Path::from_name(&args[2]).expect("a path name")
    };
    let par = args[3] == "par";
    let dims: Vec<usize> = args[4..].iter().map(|s| s.parse().unwrap()).collect();
    let q =
        Requant::per_tensor(Rounding::HalfEven, 1 << 30, 12, 0, Clamp::full(OutType::I8)).unwrap();
    let bias_ops = |b: &'static [i32]| {
        [
            FusedOp::AddPerChannel(b),
            FusedOp::Requantize(Box::leak(Box::new(q.clone()))),
        ]
    };
    let (secs, macs, label) = if what == "gemm" {
        let (n, k, m) = (dims[0], dims[1], dims[2]);
        let a: Vec<u8> = (0..n * k).map(|i| (i * 7) as u8).collect();
        let w: Vec<i8> = (0..m * k).map(|i| (i * 13) as i8).collect();
        let t = if f32_ref {
            let af: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            let mut c = vec![0f32; n * m];
            best_of((n * k * m) as f64, || {
                f32_gemm(n, k, m, &af, &wf, &mut c, if par { 2 } else { 1 })
            })
        } else {
            let pw = PackedB::new(&w, m, k, None).unwrap();
            let ops = bias_ops(Box::leak(vec![1; m].into_boxed_slice()));
            let mut y = vec![0i8; n * m];
            let f = if par { qgemm_par } else { qgemm };
            best_of((n * k * m) as f64, || {
                f(
                    path,
                    Activations::U8(&a),
                    n,
                    3,
                    &pw,
                    &ops,
                    Output::I8(&mut y),
                )
                .unwrap()
            })
        };
        (t, n * k * m, format!("gemm {n}x{k}x{m}"))
    } else {
        let (n, c, h, o) = (dims[0], dims[1], dims[2], dims[3]);
        let g = ConvGeom::new(n, c, [h, h], o, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap();
        let x: Vec<u8> = (0..g.x_len()).map(|i| (i * 7) as u8).collect();
        let w: Vec<i8> = (0..g.w_len()).map(|i| (i * 13) as i8).collect();
        let t = if f32_ref {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            let (plane, k, img) = (g.plane(), g.k(), c * h * h);
            let threads = if par { 2 } else { 1 };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut yf = vec![0f32; n * plane * o];
            let chunk = n.div_ceil(threads);
            best_of(g.macs() as f64, || {
                pool.install(|| {
                    use rayon::prelude::*;
                    yf.par_chunks_mut(chunk * plane * o)
                        .enumerate()
                        .for_each(|(ci, ys)| {
                            let mut col = vec![0f32; plane * k];
                            for (j, yi) in ys.chunks_mut(plane * o).enumerate() {
                                let xi = &xf[(ci * chunk + j) * img..][..img];
                                for oy in 0..g.oh {
                                    for ox in 0..g.ow {
                                        let row = &mut col[(oy * g.ow + ox) * k..][..k];
                                        let mut i = 0;
                                        for cc in 0..c {
                                            for ki in 0..3 {
                                                row[i..i + 3].copy_from_slice(
                                                    &xi[(cc * h + oy + ki) * h + ox..][..3],
                                                );
                                                i += 3;
                                            }
                                        }
                                    }
                                }
                                f32_gemm(plane, k, o, &col, &wf, yi, 1);
                            }
                        })
                })
            })
        } else {
            let pw = PackedConv::new(&w, o, c, [3, 3], 1, None).unwrap();
            let ops = bias_ops(Box::leak(vec![1; o].into_boxed_slice()));
            let mut y = vec![0i8; g.y_len()];
            let f = if par { qconv2d_par } else { qconv2d };
            best_of(g.macs() as f64, || {
                f(
                    path,
                    Activations::U8(&x),
                    3,
                    &g,
                    &pw,
                    &ops,
                    Output::I8(&mut y),
                )
                .unwrap()
            })
        };
        (t, g.macs(), format!("conv n={n} {c}->{o} {h}x{h}"))
    };
    let n = dims[0] as f64;
    println!(
        "{label} {} {}: {:.1} GOP/s, {:.2} us/call, {:.0} items/s",
        args[2],
        args[3],
        2.0 * macs as f64 / secs / 1e9,
        secs * 1e6,
        n / secs
    );
}
