//! The first values where the JIT and the interpreter differ in one training step of a
//! model: runs `DIAG_STEPS` steps (default 0) on the interpreter, then the next step on
//! both from the same state, and prints the ops whose results differ (relative 1e-5) with
//! the worst element and its operands. What the model tests' tolerances were derived from.
//!
//! `DIAG_MODEL=mnist_cnn.qir DIAG_SCHEME=tflite-int8 DIAG_ADAM=1 cargo run -p qir-jit
//! --example first_difference`

#[path = "../tests/common/models.rs"]
mod models;

use models::{Rng, batch, offset_biases, step_graph};
use qir_exec::{Executor, init_store};

fn main() {
    let name = std::env::var("DIAG_MODEL").unwrap_or("concat.qir".into());
    let scheme = std::env::var("DIAG_SCHEME").unwrap_or("lsq".into());
    let opt = if std::env::var("DIAG_ADAM").is_ok() {
        passes::grad::Optimizer::Adam
    } else {
        passes::grad::Optimizer::Sgd
    };
    let lr = if opt == passes::grad::Optimizer::Adam {
        1e-3
    } else {
        0.05
    };
    let steps: usize = std::env::var("DIAG_STEPS").map_or(0, |v| v.parse().unwrap());
    let g = step_graph(&name, &scheme, opt);
    let mut store = init_store(&g, 7).unwrap();
    let mut rng = Rng(0x5eed);
    offset_biases(&g, &mut store, &mut rng);
    let ops: Vec<_> = g
        .topo_order()
        .unwrap()
        .into_iter()
        .filter(|&n| g.node(n).inst().is_some())
        .collect();
    let mut pa = qir_interp::Interpreter::default()
        .prepare(&g, &ops)
        .unwrap();
    let mut pb = qir_jit::Jit::default().prepare(&g, &ops).unwrap();
    for _ in 0..steps {
        let inputs = batch(&g, &mut rng, lr);
        pa.run(&mut store, &inputs).unwrap();
    }
    let inputs = batch(&g, &mut rng, lr);
    let ra = pa.run(&mut store.clone(), &inputs).unwrap();
    let rb = pb.run(&mut store.clone(), &inputs).unwrap();
    let mut shown = 0;
    for n in ops {
        let (a, b) = (ra.fetched[&n].data.to_f64(), rb.fetched[&n].data.to_f64());
        let d = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs() / (1.0 + p.abs()))
            .fold(0.0, f64::max);
        if d > 1e-5 && shown < 8 {
            shown += 1;
            let i = (0..a.len())
                .max_by(|&i, &j| (a[i] - b[i]).abs().total_cmp(&(a[j] - b[j]).abs()))
                .unwrap();
            println!("{} d={d:e} at {i}: {} vs {}", g.describe(n), a[i], b[i]);
            for o in g.operands(n) {
                if let (Some(x), Some(y)) = (ra.fetched.get(&o), rb.fetched.get(&o)) {
                    let (x, y) = (x.data.to_f64(), y.data.to_f64());
                    if x.len() == a.len() {
                        println!("   operand {}: {} vs {}", g.describe(o), x[i], y[i]);
                    }
                }
            }
        }
    }
}
