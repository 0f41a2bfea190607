//! Helpers shared by the integration tests: types, tensors, and graph building shorthands.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use qir::{Attr, Dim, ElemType, Graph, Inst, NodeId, Op, Shape, Tensor, Type};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `f32[dims]` with fixed dimensions.
pub fn f32t(dims: &[u64]) -> Type {
    Type::new(ElemType::F32, Shape::fixed(dims))
}

/// `elem[dims]` where a dimension of 0 stands for the symbolic batch `B`.
pub fn bt(elem: ElemType, dims: &[u64]) -> Type {
    let d: Vec<Dim> = dims
        .iter()
        .map(|&d| {
            if d == 0 {
                Dim::from("B")
            } else {
                Dim::Fixed(d)
            }
        })
        .collect();
    Type::new(elem, Shape(d))
}

/// An op node with attributes, named.
pub fn op(g: &mut Graph, op: Op, args: &[NodeId], attrs: &[(&str, Attr)], name: &str) -> NodeId {
    let mut inst = Inst::new(op);
    for (k, v) in attrs {
        inst.set(k, v.clone())
            .unwrap_or_else(|e| panic!("{op}: {e}"));
    }
    g.add_op(inst, args, Some(name))
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

pub fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

pub fn f64t(shape: &[usize], v: Vec<f64>) -> Tensor {
    Tensor::new(shape.to_vec(), qir::Data::F64(v)).expect("shape matches data")
}

pub fn f32v(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::f32(shape.to_vec(), v).expect("shape matches data")
}

/// Deterministic pseudo-random values in [-1, 1) (a small LCG, so tests need no RNG).
pub fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

pub fn inputs(pairs: Vec<(&str, Tensor)>) -> HashMap<String, Tensor> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// All values of a float tensor as f64.
pub fn floats(t: &Tensor) -> Vec<f64> {
    match &t.data {
        qir::Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
        qir::Data::F64(v) => v.clone(),
        d => panic!("expected float data, found {}", d.dtype()),
    }
}
