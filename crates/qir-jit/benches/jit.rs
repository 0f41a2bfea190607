//! Criterion benchmarks of the JIT: the QAT training step (tflite-int8, Adam) of the MNIST
//! MLP (784-256-128-10) and of the small MNIST CNN (testdata/bench/mnist_cnn_small.qir) at
//! batch 128, float inference of both at batch 1 and 256, and the bare matrix products of
//! the same shapes (to compare a step's time with the contractions it contains).
//!
//! Run with `cargo bench -p qir-jit`; `qatc bench` prints the same figures for any model.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use qir_exec::{Executor, init_store};
use qir_jit::Jit;
use qir_jit::kernels::gemm::{Gemm, Mat, run};
use runtime::bench::{BenchConfig, bench_graph, synthetic_inputs};
use runtime::train::Prepare;

fn model(path: &str) -> qir::Graph {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    let text = std::fs::read_to_string(&p).unwrap();
    qir_reader::parse_and_verify(&text).unwrap()
}

const MLP: &str = "testdata/models/mnist_mlp.qir";
const CNN: &str = "testdata/bench/mnist_cnn_small.qir";

fn program_bench(c: &mut Criterion, name: &str, path: &str, batch: usize, train: bool) {
    let cfg = BenchConfig {
        batch,
        train,
        prepare: train.then(|| Prepare::Scheme("tflite-int8".into())),
        grad: passes::grad::GradOptions {
            optimizer: passes::grad::Optimizer::Adam,
            ..Default::default()
        },
        ..BenchConfig::default()
    };
    let g = bench_graph(&model(path), &cfg).unwrap();
    let inputs = synthetic_inputs(&g, batch, 0).unwrap();
    let mut store = init_store(&g, 0).unwrap();
    let mut prog = Jit::default().prepare(&g, &[]).unwrap();
    prog.run(&mut store, &inputs).unwrap();
    c.bench_function(name, |b| {
        b.iter(|| black_box(prog.run(&mut store, &inputs).unwrap()))
    });
}

fn steps(c: &mut Criterion) {
    program_bench(c, "train_step/mnist_mlp_qat_b128", MLP, 128, true);
    program_bench(c, "train_step/mnist_cnn_qat_b128", CNN, 128, true);
    for b in [1, 256] {
        program_bench(c, &format!("infer/mnist_mlp_b{b}"), MLP, b, false);
        program_bench(c, &format!("infer/mnist_cnn_b{b}"), CNN, b, false);
    }
}

fn gemms(c: &mut Criterion) {
    let t = Jit::default().threads;
    let shapes: [(&str, Gemm); 6] = [
        // the MLP's first layer forward and its weight gradient at batch 128
        (
            "gemm/mlp_fc1_fwd_128x256x784",
            Gemm {
                m: 128,
                n: 256,
                k: 784,
                batch: 1,
                a: Mat::row_major(784),
                b: Mat::transposed(784),
                c: Mat::row_major(256),
                accumulate: false,
            },
        ),
        (
            "gemm/mlp_fc1_dw_256x784x128",
            Gemm {
                m: 256,
                n: 784,
                k: 128,
                batch: 1,
                a: Mat::transposed(256),
                b: Mat::row_major(784),
                c: Mat::row_major(784),
                accumulate: false,
            },
        ),
        (
            "gemm/mlp_fc2_fwd_128x128x256",
            Gemm {
                m: 128,
                n: 128,
                k: 256,
                batch: 1,
                a: Mat::row_major(256),
                b: Mat::transposed(256),
                c: Mat::row_major(128),
                accumulate: false,
            },
        ),
        // the CNN's second convolution at batch 128: forward, input and weight gradients
        (
            "gemm/cnn_conv2_fwd_32x15488x144",
            Gemm {
                m: 32,
                n: 15488,
                k: 144,
                batch: 1,
                a: Mat::row_major(144),
                b: Mat::row_major(15488),
                c: Mat::row_major(15488),
                accumulate: false,
            },
        ),
        (
            "gemm/cnn_conv2_dx_144x15488x32",
            Gemm {
                m: 144,
                n: 15488,
                k: 32,
                batch: 1,
                a: Mat::transposed(144),
                b: Mat::row_major(15488),
                c: Mat::row_major(15488),
                accumulate: false,
            },
        ),
        (
            "gemm/cnn_conv2_dw_32x144x15488",
            Gemm {
                m: 32,
                n: 144,
                k: 15488,
                batch: 1,
                a: Mat::row_major(15488),
                b: Mat::transposed(15488),
                c: Mat::row_major(144),
                accumulate: false,
            },
        ),
    ];
    let a = vec![0.5f32; 1 << 22];
    let b = vec![0.25f32; 1 << 22];
    let mut out = vec![0.0f32; 1 << 22];
    for (name, g) in shapes {
        c.bench_function(name, |bn| {
            // SAFETY: the buffers hold 4M elements, more than any of these shapes reads.
            bn.iter(|| unsafe { run(&g, a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), t) })
        });
    }
}

criterion_group!(benches, steps, gemms);
criterion_main!(benches);
