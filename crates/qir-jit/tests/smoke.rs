use std::collections::HashMap;

use qir::{Data, Tensor};
use qir_exec::{Executor, init_store};

fn model(name: &str) -> qir::Graph {
    let text = std::fs::read_to_string(format!("../../testdata/models/{name}.qir")).unwrap();
    qir_reader::parse_and_verify(&text).unwrap()
}

#[test]
fn mlp_forward_matches() {
    let g = model("digits_mlp");
    let store = init_store(&g, 3).unwrap();
    let x: Vec<f32> = (0..5 * 64).map(|i| ((i * 37) % 17) as f32 / 16.0).collect();
    let inputs = HashMap::from([
        ("x".to_string(), Tensor::f32(vec![5, 64], x).unwrap()),
        (
            "label".to_string(),
            Tensor::new(vec![5], Data::I32(vec![1, 2, 3, 4, 5])).unwrap(),
        ),
    ]);
    let mut a = qir_interp::Interpreter::default().prepare(&g, &[]).unwrap();
    let mut b = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
    let ra = a.run(&mut store.clone(), &inputs).unwrap();
    let rb = b.run(&mut store.clone(), &inputs).unwrap();
    let (x, y) = (
        ra.outputs["logits"].as_f32().unwrap(),
        rb.outputs["logits"].as_f32().unwrap(),
    );
    for (p, q) in x.iter().zip(y) {
        assert!((p - q).abs() < 1e-5, "{x:?} vs {y:?}");
    }
    println!("loss {:?} {:?}", ra.loss, rb.loss);
}
