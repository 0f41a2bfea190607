//! No input makes the importer panic: truncations and mutations of the test models (the
//! Rust-built ones, and the Python-built ones of `make_models.py` when `QATC_PYTHON` is
//! set) import to a verified graph or an error. `PROPTEST_CASES=100000 cargo test -p
//! qir-onnx --test no_panic` runs it longer; `fuzz/` has the cargo-fuzz target.

mod common;

use std::sync::OnceLock;

use proptest::prelude::*;
use prost::Message;
use qir_onnx::proto::{ModelProto, tensor_shape_proto::dimension, type_proto};
use qir_onnx::{ImportOptions, LossSpec, SUPPORTED_OPS, import};

/// The seed models' bytes.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut v = vec![
            common::builder::digits_mlp().bytes(),
            common::builder::digits_cnn().bytes(),
        ];
        if let Ok(p) = std::env::var("QATC_PYTHON")
            && !p.is_empty()
        {
            for m in common::generated(std::path::Path::new(&p)) {
                if m.name != "mlp_external" {
                    v.push(std::fs::read(&m.onnx).expect("generated model"));
                }
            }
        }
        v
    })
}

/// An edit of a model's bytes.
#[derive(Clone, Debug)]
enum Edit {
    Truncate(usize),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// A run of 0xff: varints that never end, huge lengths.
    Fill(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..12)
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
        (any::<usize>(), 1usize..10).prop_map(|(i, n)| Edit::Fill(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    let len = bytes.len().max(1);
    match e {
        Edit::Truncate(n) => bytes.truncate(n % len),
        Edit::Set(i, b) => {
            if !bytes.is_empty() {
                bytes[i % len] = *b;
            }
        }
        Edit::Insert(i, b) => {
            let at = (i % len).min(bytes.len());
            bytes.splice(at..at, b.iter().copied());
        }
        Edit::Remove(i, n) => {
            let at = (i % len).min(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
        Edit::Fill(i, n) => {
            let at = (i % len).min(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes[at..end].fill(0xff);
        }
    }
}

fn check(bytes: &[u8]) {
    for opts in [
        ImportOptions::default(),
        ImportOptions {
            loss: Some(LossSpec::cross_entropy()),
            ..ImportOptions::default()
        },
    ] {
        if let Ok(imported) = import(bytes, &opts) {
            qir::verify::verify(&imported.graph).expect("an imported graph verifies");
            let _ = qir::print::print(&imported.graph);
        }
    }
}

/// A change to a decoded model: the edits a byte mutation rarely survives to make.
#[derive(Clone, Debug)]
enum Field {
    /// An attribute's integer (or each entry of its list) of node `n`.
    AttrInt(usize, usize, i64),
    /// An attribute's float of node `n`.
    AttrFloat(usize, usize, f32),
    /// A dimension of an input.
    InputDim(usize, usize, i64),
    /// A dimension of an initializer.
    InitDim(usize, usize, i64),
    /// Node `n` becomes another supported op.
    OpType(usize, usize),
    /// Node `n` loses an input, or reads another value.
    Input(usize, usize, Option<usize>),
    /// The default opset.
    Opset(i64),
}

fn interesting_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..10,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::MAX / 2),
        Just(1 << 32),
        any::<i64>(),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), interesting_int())
            .prop_map(|(n, a, v)| Field::AttrInt(n, a, v)),
        (
            any::<usize>(),
            any::<usize>(),
            prop_oneof![
                any::<f32>(),
                Just(0.0f32),
                Just(f32::NAN),
                Just(f32::INFINITY)
            ]
        )
            .prop_map(|(n, a, v)| Field::AttrFloat(n, a, v)),
        (any::<usize>(), any::<usize>(), interesting_int())
            .prop_map(|(i, d, v)| Field::InputDim(i, d, v)),
        (any::<usize>(), any::<usize>(), interesting_int())
            .prop_map(|(i, d, v)| Field::InitDim(i, d, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(n, o)| Field::OpType(n, o)),
        (
            any::<usize>(),
            any::<usize>(),
            proptest::option::of(any::<usize>())
        )
            .prop_map(|(n, i, v)| Field::Input(n, i, v)),
        (10i64..32).prop_map(Field::Opset),
    ]
}

fn change(m: &mut ModelProto, f: &Field) {
    let Some(g) = m.graph.as_mut() else { return };
    let names: Vec<String> = g
        .input
        .iter()
        .filter_map(|i| i.name.clone())
        .chain(g.initializer.iter().filter_map(|t| t.name.clone()))
        .chain(g.node.iter().flat_map(|n| n.output.clone()))
        .collect();
    let nodes = g.node.len().max(1);
    match *f {
        Field::AttrInt(n, a, v) => {
            if let Some(node) = g.node.get_mut(n % nodes)
                && !node.attribute.is_empty()
            {
                let k = a % node.attribute.len();
                let at = &mut node.attribute[k];
                if at.i.is_some() {
                    at.i = Some(v);
                }
                for x in &mut at.ints {
                    *x = v;
                }
            }
        }
        Field::AttrFloat(n, a, v) => {
            if let Some(node) = g.node.get_mut(n % nodes)
                && !node.attribute.is_empty()
            {
                let k = a % node.attribute.len();
                if node.attribute[k].f.is_some() {
                    node.attribute[k].f = Some(v);
                }
            }
        }
        Field::InputDim(i, d, v) => {
            let len = g.input.len().max(1);
            if let Some(vi) = g.input.get_mut(i % len)
                && let Some(qir_onnx::proto::TypeProto {
                    value: Some(type_proto::Value::TensorType(t)),
                    ..
                }) = vi.r#type.as_mut()
                && let Some(shape) = t.shape.as_mut()
                && !shape.dim.is_empty()
            {
                let k = d % shape.dim.len();
                shape.dim[k].value = Some(dimension::Value::DimValue(v));
            }
        }
        Field::InitDim(i, d, v) => {
            let len = g.initializer.len().max(1);
            if let Some(t) = g.initializer.get_mut(i % len)
                && !t.dims.is_empty()
            {
                let k = d % t.dims.len();
                t.dims[k] = v;
            }
        }
        Field::OpType(n, o) => {
            if let Some(node) = g.node.get_mut(n % nodes) {
                node.op_type = Some(SUPPORTED_OPS[o % SUPPORTED_OPS.len()].to_string());
            }
        }
        Field::Input(n, i, v) => {
            if let Some(node) = g.node.get_mut(n % nodes)
                && !node.input.is_empty()
            {
                let k = i % node.input.len();
                match v {
                    Some(v) if !names.is_empty() => node.input[k] = names[v % names.len()].clone(),
                    _ => {
                        node.input.remove(k);
                    }
                }
            }
        }
        Field::Opset(v) => {
            for o in &mut m.opset_import {
                o.version = Some(v);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_models_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let seeds = seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        check(&bytes);
    }

    #[test]
    fn models_with_changed_fields_never_panic(
        seed in any::<prop::sample::Index>(),
        fields in proptest::collection::vec(field(), 1..5),
    ) {
        let seeds = seeds();
        let mut m = ModelProto::decode(seeds[seed.index(seeds.len())].as_slice()).unwrap();
        for f in &fields {
            change(&mut m, f);
        }
        check(&m.encode_to_vec());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }
}

#[test]
fn every_truncation_of_every_test_model_is_an_error() {
    for (k, bytes) in seeds().iter().enumerate() {
        // every prefix of the small models, a spread of them for the large ones
        let step = (bytes.len() / 2000).max(1);
        for n in (0..bytes.len()).step_by(step) {
            assert!(
                import(&bytes[..n], &ImportOptions::default()).is_err(),
                "model {k}: a truncation to {n} of {} bytes imported",
                bytes.len()
            );
        }
    }
}
