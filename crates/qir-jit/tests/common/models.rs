//! What the JIT-against-interpreter model tests and the `first_difference` example share:
//! a generator, the models of `testdata/models/` as training steps, random batches, and
//! the biases offset from zero.

#![allow(dead_code)]

use std::collections::HashMap;

use qir::{Data, Dim, ElemType, Graph, Tensor};
use qir_exec::Store;
use runtime::train::{build_step, prepare_pipeline};

/// Examples per batch.
pub const BATCH: usize = 5;

/// A tiny deterministic generator.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn unit(&mut self) -> f32 {
        (self.next() % 1_000_001) as f32 / 1_000_000.0
    }
}

pub fn model(name: &str) -> Graph {
    let path = format!(
        "{}/../../testdata/models/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    qir_reader::parse_and_verify(&text)
        .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, name, &text)))
}

/// The training step of `name` prepared with `scheme` (`float`: not prepared).
pub fn step_graph(name: &str, scheme: &str, optimizer: passes::grad::Optimizer) -> Graph {
    let mut g = model(name);
    if scheme != "float" {
        let pm = passes::PassManager::from_pipeline(&prepare_pipeline(scheme).unwrap()).unwrap();
        pm.run(&mut g).unwrap();
    }
    let opts = passes::grad::GradOptions {
        optimizer,
        ..Default::default()
    };
    build_step(&g, &opts).unwrap()
}

/// A random batch for every input of `g`: pixels in [0, 1), labels below the number of
/// classes of the logits, the learning rate `lr`.
pub fn batch(g: &Graph, rng: &mut Rng, lr: f32) -> HashMap<String, Tensor> {
    let classes = g
        .outputs()
        .iter()
        .find(|o| o.name == "logits")
        .map(|o| match g.ty(o.value).shape.dims().last() {
            Some(Dim::Fixed(n)) => *n as usize,
            _ => panic!("logits without a fixed class dimension"),
        })
        .expect("a logits output");
    let mut inputs = HashMap::new();
    for id in g.inputs() {
        let node = g.node(id);
        let name = node.name.clone().unwrap();
        let dims: Vec<usize> = node
            .ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n as usize,
                Dim::Sym(_) => BATCH,
            })
            .collect();
        let n: usize = dims.iter().product();
        let t = match (&node.ty.elem, name.as_str()) {
            (ElemType::F32, "lr") => Tensor::scalar_f32(lr),
            (ElemType::F32, _) => Tensor::f32(dims, (0..n).map(|_| rng.unit()).collect()).unwrap(),
            (ElemType::I32, _) => Tensor::new(
                dims,
                Data::I32(
                    (0..n)
                        .map(|_| (rng.next() % classes as u64) as i32)
                        .collect(),
                ),
            )
            .unwrap(),
            (e, _) => panic!("input %{name} of type {e:?}"),
        };
        inputs.insert(name, t);
    }
    inputs
}

/// Gives every bias (`*.b`, `*.beta`) random values in [-0.05, 0.05] instead of zeros: with
/// zero biases a pre-activation can be a sum of fake-quantized products that is exactly
/// zero, whose sign — and so the ReLU's mask — then depends on the summation order.
pub fn offset_biases(g: &Graph, store: &mut Store, rng: &mut Rng) {
    for id in g.params() {
        let name = g.node(id).name.clone().unwrap();
        if !(name.ends_with(".b") || name.ends_with(".beta")) {
            continue;
        }
        let t = store.get(&name).unwrap().clone();
        let v = (0..t.data.len()).map(|_| rng.unit() * 0.1 - 0.05).collect();
        store.insert(&name, Tensor::f32(t.shape.clone(), v).unwrap());
    }
}
