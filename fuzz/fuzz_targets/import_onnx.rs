//! Fuzz target `import_onnx`: any byte string, read as an ONNX model, must import to a
//! graph or give an error; an imported graph must verify, have a tensor for every external
//! declaration, and print canonical text that reads back to the same text.
//!
//! Seeds: the test models, `python crates/qir-onnx/tests/make_models.py fuzz/corpus/import_onnx`
//! (with the environment of scripts/python-env.sh).

#![no_main]

use libfuzzer_sys::fuzz_target;
use qir::{Init, NodeKind};

fuzz_target!(|data: &[u8]| {
    let Ok(imported) = qir_onnx::import(data, &qir_onnx::ImportOptions::default()) else {
        return;
    };
    let g = &imported.graph;
    qir::verify::verify(g).expect("an imported graph verifies");
    for id in g.node_ids() {
        let node = g.node(id);
        if let NodeKind::Param(Init::External)
        | NodeKind::State(Init::External)
        | NodeKind::Const(Init::External) = &node.kind
        {
            let name = node.name.as_deref().expect("external values are named");
            assert!(imported.weights.contains_key(name), "no tensor for %{name}");
        }
    }
    let printed = qir::print::print(g);
    match qir_reader::parse_and_verify(&printed) {
        Ok(again) => assert_eq!(qir::print::print(&again), printed),
        Err(d) => panic!(
            "canonical text does not read back:\n{}",
            qir_reader::render(&d, "imported.qir", &printed)
        ),
    }
});
