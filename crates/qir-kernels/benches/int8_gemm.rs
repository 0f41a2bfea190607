//! Int8 GEMM / convolution throughput per path against an f32 reference (the `gemm`
//! crate, AVX-512 dispatch through its `x86-v4` feature) on the same shapes: the MNIST MLP
//! layers 784-256-128-10 and the CNN convolutions (3x3 1->16 on 28x28, 3x3 16->32 on 13x13,
//! no padding) at batch 1 and 256, and a 1024^3 square. Throughput is reported as elements
//! = 2 * multiply-accumulates, so criterion's "elem/s" reads as op/s.
//!
//! Groups: `<shape>/<path>` single-threaded per path, `<shape>/auto-par` on rayon's global
//! pool, `<shape>/f32` single-threaded and `<shape>/f32-par` on two threads. The f32
//! convolution is an f32 im2col plus one GEMM per image (both timed). Set
//! `QK_BENCH_FILTER_PATHS=avx512-vnni,auto-par` to restrict the int8 variants.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qir_kernels::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn variants() -> Vec<(String, Path, bool)> {
    let mut v: Vec<(String, Path, bool)> = Path::available()
        .into_iter()
        .map(|p| (p.name().to_string(), p, false))
        .collect();
    v.push(("auto".into(), Path::Auto, false));
    v.push(("auto-par".into(), Path::Auto, true));
    if let Ok(f) = std::env::var("QK_BENCH_FILTER_PATHS") {
        let keep: Vec<&str> = f.split(',').collect();
        v.retain(|(n, _, _)| keep.contains(&n.as_str()));
    }
    v
}

fn f32_gemm(n: usize, k: usize, m: usize, a: &[f32], w: &[f32], c: &mut [f32], threads: usize) {
    // c[n, m] = a[n, k] . w[m, k]^T, all row-major
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

fn bench_linear(c: &mut Criterion, name: &str, n: usize, k: usize, m: usize) {
    let mut rng = Rng(0x1234_5678);
    let a: Vec<u8> = (0..n * k).map(|_| rng.next() as u8).collect();
    let w: Vec<i8> = (0..m * k).map(|_| rng.next() as i8).collect();
    let bias: Vec<i32> = (0..m).map(|i| i as i32 * 7).collect();
    let packed = PackedB::new(&w, m, k, None).unwrap();
    let q = Requant::per_tensor(
        Rounding::HalfAwayFromZero,
        1_500_000_000,
        12,
        -3,
        Clamp::full(OutType::I8),
    )
    .unwrap();
    let ops = [FusedOp::AddPerChannel(&bias), FusedOp::Requantize(&q)];
    let mut y = vec![0i8; n * m];
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements((2 * n * k * m) as u64));
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_millis(1200));
    for (label, path, par) in variants() {
        if (n * k * m > 1 << 26) && path == Path::Portable {
            continue; // seconds per iteration; not informative
        }
        let f = if par { qgemm_par } else { qgemm };
        g.bench_function(BenchmarkId::from_parameter(&label), |b| {
            b.iter(|| {
                f(
                    path,
                    Activations::U8(black_box(&a)),
                    n,
                    3,
                    &packed,
                    &ops,
                    Output::I8(&mut y),
                )
                .unwrap()
            })
        });
    }
    let af: Vec<f32> = a.iter().map(|&v| v as f32).collect();
    let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let mut cf = vec![0f32; n * m];
    for (label, threads) in [("f32", 1), ("f32-par", 2)] {
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| f32_gemm(n, k, m, black_box(&af), &wf, &mut cf, threads))
        });
    }
    g.finish();
}

fn f32_im2col(x: &[f32], g: &ConvGeom, col: &mut [f32]) {
    // col[pixel, (c, ki, kj)], no padding / stride 1 / groups 1 (the benchmark shapes)
    let k = g.k();
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let row = &mut col[(oy * g.ow + ox) * k..][..k];
            let mut i = 0;
            for c in 0..g.c {
                for ki in 0..g.kh {
                    let src = &x[(c * g.h + oy + ki) * g.w + ox..][..g.kw];
                    row[i..i + g.kw].copy_from_slice(src);
                    i += g.kw;
                }
            }
        }
    }
}

fn bench_conv(c: &mut Criterion, name: &str, g: ConvGeom) {
    let mut rng = Rng(0x9876_5432);
    let x: Vec<u8> = (0..g.x_len()).map(|_| rng.next() as u8).collect();
    let w: Vec<i8> = (0..g.w_len()).map(|_| rng.next() as i8).collect();
    let packed = PackedConv::new(&w, g.o, g.cg(), [g.kh, g.kw], g.groups, None).unwrap();
    let q = Requant::per_tensor(
        Rounding::HalfAwayFromZero,
        1_500_000_000,
        10,
        -3,
        Clamp::full(OutType::I8),
    )
    .unwrap();
    let bias: Vec<i32> = (0..g.o).map(|i| i as i32).collect();
    let ops = [FusedOp::AddPerChannel(&bias), FusedOp::Requantize(&q)];
    let mut y = vec![0i8; g.y_len()];
    let mut grp = c.benchmark_group(name);
    grp.throughput(Throughput::Elements((2 * g.macs()) as u64));
    grp.sample_size(10);
    grp.warm_up_time(std::time::Duration::from_millis(300));
    grp.measurement_time(std::time::Duration::from_millis(1200));
    for (label, path, par) in variants() {
        let f = if par { qconv2d_par } else { qconv2d };
        grp.bench_function(BenchmarkId::from_parameter(&label), |b| {
            b.iter(|| {
                f(
                    path,
                    Activations::U8(black_box(&x)),
                    3,
                    &g,
                    &packed,
                    &ops,
                    Output::I8(&mut y),
                )
                .unwrap()
            })
        });
    }
    // f32: per image im2col + GEMM [pixels, k] x [o, k]^T (output pixel-major; the layout
    // difference is ignored in favour of the f32 side)
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let (plane, k) = (g.plane(), g.k());
    let img = g.c * g.h * g.w;
    for (label, threads) in [("f32", 1usize), ("f32-par", 2)] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let chunk = g.n.div_ceil(threads);
        let mut yf = vec![0f32; g.n * plane * g.o];
        grp.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                pool.install(|| {
                    use rayon::prelude::*;
                    yf.par_chunks_mut(chunk * plane * g.o)
                        .enumerate()
                        .for_each(|(ci, ys)| {
                            let mut col = vec![0f32; plane * k];
                            for (j, yi) in ys.chunks_mut(plane * g.o).enumerate() {
                                let ni = ci * chunk + j;
                                f32_im2col(&xf[ni * img..(ni + 1) * img], &g, &mut col);
                                f32_gemm(plane, k, g.o, &col, &wf, yi, 1);
                            }
                        })
                })
            })
        });
    }
    grp.finish();
}

fn benches(c: &mut Criterion) {
    for n in [1, 256] {
        bench_linear(c, &format!("mlp_fc1_784x256_b{n}"), n, 784, 256);
        bench_linear(c, &format!("mlp_fc2_256x128_b{n}"), n, 256, 128);
        bench_linear(c, &format!("mlp_fc3_128x10_b{n}"), n, 128, 10);
    }
    bench_linear(c, "square_1024", 1024, 1024, 1024);
    for n in [1, 256] {
        let g1 = ConvGeom::new(n, 1, [28, 28], 16, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap();
        let g2 = ConvGeom::new(n, 16, [13, 13], 32, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap();
        bench_conv(c, &format!("conv1_1x16_28_b{n}"), g1);
        bench_conv(c, &format!("conv2_16x32_13_b{n}"), g2);
    }
}

criterion_group!(int8, benches);
criterion_main!(int8);
