use std::collections::HashMap;

use qir::{Data, Tensor};
use qir_exec::{Executor, init_store};

fn model(name: &str) -> qir::Graph {
    let text = std::fs::read_to_string(format!("../../testdata/models/{name}.qir")).unwrap();
    qir_reader::parse_and_verify(&text).unwrap()
}

fn step(name: &str, scheme: Option<&str>) -> qir::Graph {
    let mut g = model(name);
    let text = match scheme {
        Some(s) => format!("prepare-qat{{scheme={s}}},grad,simplify"),
        None => "grad,simplify".to_string(),
    };
    let pm = if let Some(s) = scheme {
        let mut p = passes::named_with(
            "prepare-qat",
            &[("scheme", passes::OptValue::Scalar(s.into()))],
        )
        .unwrap();
        p.passes.push(passes::PassSpec::new("grad"));
        p.passes.push(passes::PassSpec::new("simplify"));
        passes::PassManager::from_pipeline(&p).unwrap()
    } else {
        passes::PassManager::parse(&text).unwrap()
    };
    pm.run(&mut g).unwrap();
    g
}

#[test]
fn train_steps_match() {
    for (name, dims) in [
        ("digits_mlp", vec![64usize]),
        ("mnist_mlp", vec![784]),
        ("mnist_cnn", vec![1, 28, 28]),
        ("residual", vec![1, 8, 8]),
        ("depthwise", vec![1, 8, 8]),
        ("concat", vec![1, 8, 8]),
    ] {
        for scheme in [None, Some("tflite-int8"), Some("lsq")] {
            let g = step(name, scheme);
            let store0 = init_store(&g, 3).unwrap();
            let b = 6usize;
            let per: usize = dims.iter().product();
            let x: Vec<f32> = (0..b * per)
                .map(|i| ((i * 37) % 17) as f32 / 16.0)
                .collect();
            let mut shape = vec![b];
            shape.extend(&dims);
            let inputs = HashMap::from([
                ("x".to_string(), Tensor::f32(shape, x).unwrap()),
                (
                    "label".to_string(),
                    Tensor::new(vec![b], Data::I32(vec![1, 2, 3, 4, 5, 0])).unwrap(),
                ),
                ("lr".to_string(), Tensor::scalar_f32(0.05)),
            ]);
            let t0 = std::time::Instant::now();
            let mut pa = qir_interp::Interpreter::default().prepare(&g, &[]).unwrap();
            let mut pb = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
            let (mut sa, mut sb) = (store0.clone(), store0.clone());
            let mut worst = 0.0f64;
            let mut worst_name = String::new();
            for _ in 0..5 {
                let ra = pa.run(&mut sa, &inputs).unwrap();
                let rb = pb
                    .run(&mut sb, &inputs)
                    .unwrap_or_else(|e| panic!("{name} {scheme:?}: {e}"));
                let d = (ra.loss.unwrap() - rb.loss.unwrap()).abs();
                if d > worst {
                    worst = d;
                    worst_name = "loss".into();
                }
            }
            for (k, t) in sa.iter() {
                let u = sb.get(k).unwrap();
                let (x, y) = (t.data.to_f64(), u.data.to_f64());
                for (p, q) in x.iter().zip(&y) {
                    let d = (p - q).abs() / (1.0 + p.abs());
                    if d > worst {
                        worst = d;
                        worst_name = k.to_string();
                    }
                }
            }
            println!(
                "{name} {scheme:?}: worst {worst:e} at {worst_name} ({:?})",
                t0.elapsed()
            );
        }
    }
}
