//! Quick timing probe (not a benchmark): GOP/s of qgemm / qconv2d per path, plain loops.
use qir_kernels::*;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("gemm");
    let path = Path::from_name(args.get(2).map(String::as_str).unwrap_or("auto")).unwrap();
    let par = args.get(3).is_some_and(|s| s == "par");
    if what == "gemm" {
        let dims: Vec<usize> = args[4..].iter().map(|s| s.parse().unwrap()).collect();
        let (n, k, m) = (dims[0], dims[1], dims[2]);
        let a: Vec<u8> = (0..n * k).map(|i| (i * 7) as u8).collect();
        let w: Vec<i8> = (0..m * k).map(|i| (i * 13) as i8).collect();
        let pw = PackedB::new(&w, m, k, None).unwrap();
        let q = Requant::per_tensor(Rounding::HalfEven, 1 << 30, 12, 0, Clamp::full(OutType::I8))
            .unwrap();
        let raw = std::env::var("RAW").is_ok();
        let ops = [FusedOp::Requantize(&q)];
        let mut y = vec![0i8; n * m];
        let mut y32 = vec![0i32; n * m];
        let f = if par { qgemm_par } else { qgemm };
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            let reps = (2e8 / (n * k * m) as f64).ceil() as usize;
            for _ in 0..reps {
                if raw {
                    f(
                        path,
                        Activations::U8(&a),
                        n,
                        3,
                        &pw,
                        &[],
                        Output::I32(&mut y32),
                    )
                    .unwrap();
                } else {
                    f(
                        path,
                        Activations::U8(&a),
                        n,
                        3,
                        &pw,
                        &ops,
                        Output::I8(&mut y),
                    )
                    .unwrap();
                }
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "gemm {n}x{k}x{m} {}: {:.1} GOP/s ({:.2} us)",
            path.name(),
            2.0 * (n * k * m) as f64 / best / 1e9,
            best * 1e6
        );
    } else {
        let dims: Vec<usize> = args[4..].iter().map(|s| s.parse().unwrap()).collect();
        let (n, c, h, o) = (dims[0], dims[1], dims[2], dims[3]);
        let g = ConvGeom::new(n, c, [h, h], o, [3, 3], [1, 1], [0; 4], [1, 1], 1).unwrap();
        let x: Vec<u8> = (0..g.x_len()).map(|i| (i * 7) as u8).collect();
        let w: Vec<i8> = (0..g.w_len()).map(|i| (i * 13) as i8).collect();
        let pw = PackedConv::new(&w, o, c, [3, 3], 1, None).unwrap();
        let q = Requant::per_tensor(Rounding::HalfEven, 1 << 30, 12, 0, Clamp::full(OutType::I8))
            .unwrap();
        let ops = [FusedOp::Requantize(&q)];
        let raw = std::env::var("RAW").is_ok();
        let mut y = vec![0i8; g.y_len()];
        let mut y32 = vec![0i32; g.y_len()];
        let f = if par { qconv2d_par } else { qconv2d };
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            let reps = (1e8 / g.macs() as f64).ceil() as usize;
            for _ in 0..reps {
                if raw {
                    f(
                        path,
                        Activations::U8(&x),
                        3,
                        &g,
                        &pw,
                        &[],
                        Output::I32(&mut y32),
                    )
                    .unwrap();
                } else {
                    f(
                        path,
                        Activations::U8(&x),
                        3,
                        &g,
                        &pw,
                        &ops,
                        Output::I8(&mut y),
                    )
                    .unwrap();
                }
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "conv {g:?} {}: {:.1} GOP/s ({:.2} us, {:.0} img/s)",
            path.name(),
            2.0 * g.macs() as f64 / best / 1e9,
            best * 1e6,
            n as f64 / best
        );
    }
}
