//! The kernel family's one test suite (STYLE #17), instantiated for every path by
//! `path_suite!`. Each instance first checks that its path runs on this machine and, if
//! not, prints that it was skipped and passes. Every result is compared bit for bit with
//! the reference semantics re-derived from the documented formula (exact i64 accumulation;
//! the single rounding through the interpreter's public `qir::quant::rescale`)
//! and with the portable path. `tests/interp.rs` closes the loop with the interpreter
//! itself on graphs.

mod common;

use common::*;
use qir_kernels::*;

/// Whether `path` can run; prints the skip otherwise.
fn runs(path: Path, test: &str) -> bool {
    if path.is_available() {
        true
    } else {
        eprintln!(
            "skipped: {test} on path {} (not available on this CPU/OS)",
            path.name()
        );
        false
    }
}

/// Shapes around every tile edge: 1, tile heights +- 1, panel width +- 1, k around 4 / 64.
fn edge_shapes() -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for n in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47] {
        for (m, k) in [
            (1, 1),
            (10, 3),
            (16, 64),
            (17, 65),
            (33, 4),
            (48, 127),
            (65, 200),
            (15, 63),
        ] {
            v.push((n, m, k));
        }
    }
    v
}

pub fn gemm_edge_tiles(path: Path) {
    let mut rng = Rng::new(1);
    for (n, m, k) in edge_shapes() {
        let case = LinearCase::random(&mut rng, n, k, m);
        let packed = case.pack();
        let got = case.run(path, &packed, false).values();
        assert_eq!(
            got,
            case.expected(),
            "{} n={n} m={m} k={k}: {case:?}",
            path.name()
        );
    }
}

pub fn gemm_random_shapes(path: Path) {
    let mut rng = Rng::new(2);
    for _ in 0..60 {
        let (n, m, k) = (rng.usize(1, 70), rng.usize(1, 90), rng.usize(1, 300));
        let case = LinearCase::random(&mut rng, n, k, m);
        let packed = case.pack();
        let got = case.run(path, &packed, false);
        assert_eq!(
            got.values(),
            case.expected(),
            "{} n={n} m={m} k={k}",
            path.name()
        );
        let port = case.run(Path::Portable, &packed, false);
        assert_eq!(
            got,
            port,
            "{} differs from portable, n={n} m={m} k={k}",
            path.name()
        );
    }
}

/// k up to a few thousand with extreme operands: all activations at one end of the range,
/// weights at the other, so the accumulators come close to the documented i32 bound.
pub fn gemm_long_k(path: Path) {
    let mut rng = Rng::new(3);
    for &(n, m, k) in &[(3, 20, 2048), (33, 17, 4099), (1, 40, 8000)] {
        let mut case = LinearCase::random(&mut rng, n, k, m);
        case.a = Acts::U8(vec![255; n * k]);
        case.za = 0;
        case.w = vec![-128; m * k];
        case.zw = None;
        case.bias = None;
        case.rq = None;
        let packed = case.pack();
        assert_eq!(
            case.run(path, &packed, false).values(),
            case.expected(),
            "{} k={k}",
            path.name()
        );
        // and random values at the same k
        let case = LinearCase::random(&mut rng, n, k, m);
        let packed = case.pack();
        assert_eq!(
            case.run(path, &packed, false).values(),
            case.expected(),
            "{} random k={k}",
            path.name()
        );
    }
}

/// Beyond the bound the result wraps, identically on every path.
pub fn gemm_wraps_identically(path: Path) {
    let (n, m, k) = (2, 3, 70_000);
    let a = vec![255u8; n * k];
    let w = vec![127i8; m * k];
    let packed = PackedB::new(&w, m, k, Some(&[-128])).unwrap();
    let mut got = vec![0i32; n * m];
    qgemm(
        path,
        Activations::U8(&a),
        n,
        0,
        &packed,
        &[],
        Output::I32(&mut got),
    )
    .unwrap();
    let want = (255i64 * 255 * k as i64) as i32; // wrapped
    assert!(
        got.iter().all(|&v| v == want),
        "{}: {got:?} vs {want}",
        path.name()
    );
}

pub fn gemm_parallel_equals_single(path: Path) {
    let mut rng = Rng::new(4);
    for &(n, m, k) in &[(256, 256, 784), (200, 130, 100), (97, 10, 128)] {
        let case = LinearCase::random(&mut rng, n, k, m);
        let packed = case.pack();
        let single = case.run(path, &packed, false);
        assert_eq!(
            single,
            case.run(path, &packed, true),
            "{} n={n}",
            path.name()
        );
        assert_eq!(single.values(), case.expected(), "{} n={n}", path.name());
    }
}

pub fn conv_random(path: Path) {
    let mut rng = Rng::new(5);
    for i in 0..80 {
        let g = ConvCase::random_geom(&mut rng, i % 4 == 3);
        let case = ConvCase::random(&mut rng, g);
        let packed = case.pack();
        let got = case.run(path, &packed, false);
        assert_eq!(got.values(), case.expected(), "{} {g:?}", path.name());
        assert_eq!(
            got,
            case.run(Path::Portable, &packed, false),
            "{} vs portable {g:?}",
            path.name()
        );
    }
}

/// The shapes of the benchmarks and models (MNIST CNN blocks, a depthwise block), batch 3.
pub fn conv_model_shapes(path: Path) {
    let mut rng = Rng::new(6);
    let geoms = [
        ConvGeom::new(3, 1, [28, 28], 16, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(3, 16, [13, 13], 32, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(3, 8, [14, 14], 16, [3, 3], [1, 1], [1; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(3, 16, [8, 8], 16, [3, 3], [2, 2], [1; 4], [1, 1], 16).unwrap(),
        ConvGeom::new(3, 16, [4, 4], 32, [1, 1], [1, 1], [0; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(2, 70, [9, 9], 40, [3, 3], [1, 1], [1, 2, 0, 1], [1, 1], 1).unwrap(),
        // large enough (> 2^21 multiply-accumulates) for the batch to be split over threads
        ConvGeom::new(9, 16, [13, 13], 32, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(9, 32, [14, 14], 32, [3, 3], [1, 1], [1; 4], [1, 1], 32).unwrap(),
        // one input channel per group with several outputs each (the direct route): a
        // channel multiplier of 2, a one-channel first layer with stride, padding and
        // dilation, and 7x7 taps (past the direct route's limit: im2col)
        ConvGeom::new(3, 4, [9, 7], 8, [3, 3], [1, 1], [1, 0, 1, 2], [1, 1], 4).unwrap(),
        ConvGeom::new(3, 1, [17, 15], 6, [3, 2], [2, 1], [1, 1, 0, 2], [2, 1], 1).unwrap(),
        ConvGeom::new(2, 1, [12, 12], 4, [7, 7], [1, 1], [0; 4], [1, 1], 1).unwrap(),
        // batch 1, large enough (>= 2^16 multiply-accumulates) for the output channels to
        // be split over two threads: halves of 8 + 8, 16 + 16, 16 + 8 (a second half
        // shorter than a tile) and 24 + 17, with padding and a strided im2col
        ConvGeom::new(1, 1, [28, 28], 16, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(1, 16, [13, 13], 32, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(1, 8, [14, 14], 24, [3, 3], [1, 1], [1; 4], [1, 1], 1).unwrap(),
        ConvGeom::new(1, 6, [15, 17], 41, [3, 3], [2, 1], [1, 0, 2, 1], [1, 1], 1).unwrap(),
    ];
    for g in geoms {
        let case = ConvCase::random(&mut rng, g);
        let packed = case.pack();
        let got = case.run(path, &packed, false);
        assert_eq!(got.values(), case.expected(), "{} {g:?}", path.name());
        assert_eq!(
            got,
            case.run(path, &packed, true),
            "{} parallel {g:?}",
            path.name()
        );
    }
}

/// A max pooling fused after the convolution equals the separate pooling of the
/// requantized output: random geometries and windows (2x2/2 and others, overlapping and
/// gapped), the model's shapes at batch 1 (channel split) and 9 (image split).
pub fn conv_pool_fused(path: Path) {
    let mut rng = Rng::new(8);
    let mut cases = Vec::new();
    while cases.len() < 60 {
        let g = ConvCase::random_geom(&mut rng, false);
        let p = if rng.bool() {
            MaxPool {
                k: [2, 2],
                stride: [2, 2],
            }
        } else {
            MaxPool {
                k: [rng.usize(1, 3), rng.usize(1, 3)],
                stride: [rng.usize(1, 3), rng.usize(1, 3)],
            }
        };
        if p.out(g.oh, g.ow).is_some() && !g.is_depthwise() {
            cases.push((g, p));
        }
    }
    let two = MaxPool {
        k: [2, 2],
        stride: [2, 2],
    };
    for n in [1, 9] {
        cases.push((
            ConvGeom::new(n, 1, [28, 28], 16, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap(),
            two,
        ));
        cases.push((
            ConvGeom::new(n, 16, [13, 13], 32, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap(),
            two,
        ));
        cases.push((
            ConvGeom::new(n, 8, [14, 14], 24, [3, 3], [1, 1], [1; 4], [1, 1], 1).unwrap(),
            two,
        ));
    }
    // windows with gaps between them and overlapping windows on a larger plane, at batch 1
    // (output channels split over two threads) and 2 (images split); weight zero points on
    // every other case (the column-sum term runs before the pooling)
    for n in [1, 2] {
        let big = ConvGeom::new(n, 3, [30, 30], 20, [3, 3], [1, 1], [1; 4], [1, 1], 1).unwrap();
        cases.push((
            big,
            MaxPool {
                k: [2, 2],
                stride: [3, 3],
            },
        ));
        cases.push((
            big,
            MaxPool {
                k: [3, 3],
                stride: [2, 2],
            },
        ));
    }
    // stride-1 convolutions with a 2x2 / stride-2 pool and no weight zero point, which the
    // VNNI path pools in the tiles' registers (row phases, blocks of 2 window-row panels):
    // odd and even planes, padding, dilation, groups, row counts off the tile height, batch
    // 1 (channel split) and 3
    let first_plain = cases.len();
    for n in [1, 3] {
        for (c, hw, o, k, pad, dil, groups) in [
            (1, [28, 28], 16, [3, 3], [0; 4], [1, 1], 1),
            (16, [13, 13], 32, [3, 3], [0; 4], [1, 1], 1),
            (1, [15, 17], 5, [3, 3], [0; 4], [1, 1], 1),
            (2, [20, 21], 9, [5, 5], [1, 0, 2, 1], [1, 1], 1),
            (3, [32, 35], 7, [3, 2], [0; 4], [2, 1], 1),
            (4, [26, 22], 6, [3, 3], [1; 4], [1, 2], 2),
            (1, [30, 30], 20, [3, 3], [1; 4], [1, 1], 1),
            (2, [33, 40], 36, [2, 2], [0, 1, 0, 0], [1, 1], 1),
        ] {
            let g = ConvGeom::new(n, c, hw, o, k, [1, 1], pad, dil, groups).unwrap();
            cases.push((g, two));
        }
    }
    for (i, (g, p)) in cases.into_iter().enumerate() {
        let mut case = ConvCase::random(&mut rng, g);
        if i >= first_plain {
            case.zw = None;
        } else if i % 2 == 0 {
            case.zw = Some((0..g.o).map(|_| rng.range(-128, 127) as i32).collect());
        }
        let packed = case.pack();
        let want = case.expected_pooled(&p);
        for par in [false, true] {
            let got = case.run_pooled(path, &packed, &p, par);
            assert_eq!(
                got.values(),
                want,
                "{} {g:?} {p:?} parallel {par}",
                path.name()
            );
        }
    }
}

pub fn requantize_standalone(path: Path) {
    let mut rng = Rng::new(7);
    for _ in 0..50 {
        let (rows, cols) = (rng.usize(1, 40), rng.usize(1, 150));
        let src: Vec<i32> = (0..rows * cols)
            .map(|_| match rng.next() % 4 {
                0 => rng.next() as i32,
                _ => rng.range(-40_000, 40_000) as i32,
            })
            .collect();
        let by_rows = rng.bool();
        let channels = if by_rows { rows } else { cols };
        let rq = RandRequant::random(&mut rng, channels, 64);
        let axis = if by_rows {
            ChannelAxis::Rows
        } else {
            ChannelAxis::Cols
        };
        let mut out = Out::new(Some(rq.ty), rows * cols);
        requantize(path, &src, rows, cols, &rq.q, axis, out.output()).unwrap();
        let want: Vec<i32> = (0..rows * cols)
            .map(|i| rq.reference(src[i] as i64, if by_rows { i / cols } else { i % cols }))
            .collect();
        assert_eq!(out.values(), want, "{} {rows}x{cols}", path.name());
    }
}

/// Extreme rescales: shifts at both ends of [-31, 62], multipliers 0 and 2^31 - 1, ties.
pub fn requantize_extremes(path: Path) {
    let accs: Vec<i32> = vec![
        0,
        1,
        -1,
        2,
        -2,
        3,
        -3,
        127,
        -128,
        1 << 20,
        -(1 << 20),
        i32::MAX,
        i32::MIN,
        i32::MIN + 1,
        0x4000_0000,
        -0x4000_0000,
        12345,
        -12345,
        6,
        -6,
        10,
        -10,
    ];
    let mults = [0i64, 1, 1 << 30, (1 << 31) - 1, 1_717_986_918];
    let shifts = [-31i64, -30, -1, 0, 1, 2, 30, 31, 32, 33, 61, 62];
    for r in [Rounding::HalfEven, Rounding::HalfAwayFromZero] {
        for &m in &mults {
            for &s in &shifts {
                for zp in [-128, 0, 7] {
                    let clamp = Clamp::full(OutType::I8);
                    let q = Requant::per_tensor(r, m, s, zp.max(-128), clamp).unwrap();
                    let mut out = vec![0i8; accs.len()];
                    requantize(
                        path,
                        &accs,
                        1,
                        accs.len(),
                        &q,
                        ChannelAxis::Cols,
                        Output::I8(&mut out),
                    )
                    .unwrap();
                    let rr = match r {
                        Rounding::HalfEven => qir::quant::Rounding::HalfEven,
                        Rounding::HalfAwayFromZero => qir::quant::Rounding::HalfAwayFromZero,
                    };
                    for (i, &a) in accs.iter().enumerate() {
                        let v = qir::quant::rescale(a as i64, m, s, rr).unwrap();
                        let want = (zp as i128 + v).clamp(-128, 127) as i8;
                        assert_eq!(
                            out[i],
                            want,
                            "{} {r:?} m={m} s={s} zp={zp} acc={a}",
                            path.name()
                        );
                    }
                }
            }
        }
    }
}

/// Epilogue edge cases: i32 output with a clamp step, requantized values kept in i32,
/// errors for a malformed epilogue.
pub fn epilogue_variants(path: Path) {
    let mut rng = Rng::new(8);
    let case = LinearCase::random(&mut rng, 19, 37, 21);
    let packed = case.pack();
    let bias: Vec<i32> = (0..21).map(|i| i * 1000 - 10_000).collect();
    let mut raw = vec![0i32; 19 * 21];
    qgemm(
        path,
        case.a.view(),
        19,
        case.za,
        &packed,
        &[],
        Output::I32(&mut raw),
    )
    .unwrap();
    let mut clamped = vec![0i32; 19 * 21];
    let ops = [
        FusedOp::AddPerChannel(&bias),
        FusedOp::Clamp {
            lo: -500,
            hi: 20_000,
        },
    ];
    qgemm(
        path,
        case.a.view(),
        19,
        case.za,
        &packed,
        &ops,
        Output::I32(&mut clamped),
    )
    .unwrap();
    for (i, (&r, &c)) in raw.iter().zip(&clamped).enumerate() {
        assert_eq!(c, (r + bias[i % 21]).clamp(-500, 20_000), "{}", path.name());
    }
    let q = Requant::per_tensor(
        Rounding::HalfEven,
        1 << 30,
        4,
        3,
        Clamp { lo: -128, hi: 200 },
    )
    .unwrap();
    let mut y = vec![0i32; 19 * 21];
    qgemm(
        path,
        case.a.view(),
        19,
        case.za,
        &packed,
        &[FusedOp::Requantize(&q)],
        Output::I32(&mut y),
    )
    .unwrap();
    for (&r, &v) in raw.iter().zip(&y) {
        assert_eq!(v, q.apply(r, 0), "{}", path.name());
    }
    // a clamp that does not fit i8, a requantize not last, a u8 output without requantize
    let mut o8 = vec![0i8; 19 * 21];
    assert!(
        qgemm(
            path,
            case.a.view(),
            19,
            case.za,
            &packed,
            &[FusedOp::Requantize(&q)],
            Output::I8(&mut o8)
        )
        .is_err()
    );
    let q8 =
        Requant::per_tensor(Rounding::HalfEven, 1 << 30, 4, 3, Clamp::full(OutType::I8)).unwrap();
    assert!(
        qgemm(
            path,
            case.a.view(),
            19,
            case.za,
            &packed,
            &[FusedOp::Requantize(&q8), FusedOp::Clamp { lo: 0, hi: 1 }],
            Output::I8(&mut o8)
        )
        .is_err()
    );
    let mut u8o = vec![0u8; 19 * 21];
    assert!(
        qgemm(
            path,
            case.a.view(),
            19,
            case.za,
            &packed,
            &[],
            Output::U8(&mut u8o)
        )
        .is_err()
    );
    // too many steps
    let many = [FusedOp::Clamp { lo: -5, hi: 5 }; MAX_USER_STEPS + 1];
    assert!(
        qgemm(
            path,
            case.a.view(),
            19,
            case.za,
            &packed,
            &many,
            Output::I32(&mut raw)
        )
        .is_err()
    );
    // wrong sizes
    assert!(
        qgemm(
            path,
            case.a.view(),
            18,
            case.za,
            &packed,
            &[],
            Output::I32(&mut raw)
        )
        .is_err()
    );
}

macro_rules! path_suite {
    ($($name:ident => $path:expr),* $(,)?) => {$(
        mod $name {
            use super::*;
            const PATH: Path = $path;
            #[test] fn gemm_edge_tiles() { if runs(PATH, "gemm_edge_tiles") { super::gemm_edge_tiles(PATH) } }
            #[test] fn gemm_random_shapes() { if runs(PATH, "gemm_random_shapes") { super::gemm_random_shapes(PATH) } }
            #[test] fn gemm_long_k() { if runs(PATH, "gemm_long_k") { super::gemm_long_k(PATH) } }
            #[test] fn gemm_wraps_identically() { if runs(PATH, "gemm_wraps_identically") { super::gemm_wraps_identically(PATH) } }
            #[test] fn gemm_parallel_equals_single() { if runs(PATH, "gemm_parallel_equals_single") { super::gemm_parallel_equals_single(PATH) } }
            #[test] fn conv_random() { if runs(PATH, "conv_random") { super::conv_random(PATH) } }
            #[test] fn conv_model_shapes() { if runs(PATH, "conv_model_shapes") { super::conv_model_shapes(PATH) } }
            #[test] fn conv_pool_fused() { if runs(PATH, "conv_pool_fused") { super::conv_pool_fused(PATH) } }
            #[test] fn requantize_standalone() { if runs(PATH, "requantize_standalone") { super::requantize_standalone(PATH) } }
            #[test] fn requantize_extremes() { if runs(PATH, "requantize_extremes") { super::requantize_extremes(PATH) } }
            #[test] fn epilogue_variants() { if runs(PATH, "epilogue_variants") { super::epilogue_variants(PATH) } }
        }
    )*};
}

path_suite! {
    portable => Path::Portable,
    avx2 => Path::Avx2,
    avx512_vnni => Path::Avx512Vnni,
    amx => Path::Amx,
    amx_emulated => Path::AmxEmulated,
    auto => Path::Auto,
}

#[test]
fn paths_are_listed_and_named() {
    let avail = Path::available();
    assert!(avail.contains(&Path::Portable));
    assert!(!avail.contains(&Path::AmxEmulated) && !avail.contains(&Path::Auto));
    assert_eq!(Path::best(), *avail.last().unwrap());
    for p in Path::ALL {
        assert_eq!(Path::from_name(p.name()), Some(p));
    }
    eprintln!(
        "available paths: {:?}",
        avail.iter().map(|p| p.name()).collect::<Vec<_>>()
    );
}
