//! Export of float graphs: import → export → import gives the same `.qir` and the same
//! weights, for the digits MLP and CNN built in Rust and (with `QATC_PYTHON`) for every
//! model `make_models.py` builds; exported models also run in onnxruntime with the
//! outputs it computed on the original file.

mod common;

use std::collections::BTreeMap;

use common::builder::{digits_cnn, digits_mlp};
use qir_onnx::{ExportError, ImportOptions, Imported, export_bytes, import};

/// The printed graph without its comment lines (the first import says which producer
/// wrote the file, which is not the same producer the second time).
fn text(g: &qir::Graph) -> String {
    qir::print::print(g)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn round_trip(first: &Imported) -> Result<Imported, String> {
    let bytes = export_bytes(&first.graph, &first.weights).map_err(|e| e.to_string())?;
    import(&bytes, &ImportOptions::default()).map_err(|e| e.to_string())
}

fn assert_same(first: &Imported, second: &Imported, what: &str) {
    assert_eq!(text(&first.graph), text(&second.graph), "{what}: graph");
    assert_eq!(first.weights, second.weights, "{what}: weights");
}

#[test]
fn digits_mlp_and_cnn_round_trip() {
    for (what, b) in [("mlp", digits_mlp()), ("cnn", digits_cnn())] {
        let first = import(&b.bytes(), &ImportOptions::default()).unwrap();
        let second = round_trip(&first).unwrap();
        assert_same(&first, &second, what);
        assert_eq!(second.opset, qir_onnx::export::EXPORT_OPSET);
    }
}

#[test]
fn the_loss_is_left_out_of_the_export() {
    let with_loss = ImportOptions {
        loss: Some(qir_onnx::LossSpec::cross_entropy()),
        ..ImportOptions::default()
    };
    let trained = import(&digits_mlp().bytes(), &with_loss).unwrap();
    assert!(trained.graph.loss().is_some());
    let plain = import(&digits_mlp().bytes(), &ImportOptions::default()).unwrap();
    let back = round_trip(&trained).unwrap();
    assert_same(&plain, &back, "mlp with a loss");
}

#[test]
fn what_cannot_be_exported_is_named() {
    let g = qir_reader::parse_and_verify(
        "graph @g {\n  input %x: f32[B, 4]\n  %y = exp(%x) : f32[B, 4]\n  output y = %y\n}\n",
    )
    .unwrap();
    let e = export_bytes(&g, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&e, ExportError::Op { op, .. } if op == "exp"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "node %y (exp): op exp is not supported by the exporter"
    );

    let g = qir_reader::parse_and_verify(
        "graph @g {\n  input %x: f32[B, 4]\n  param %w: f32[2, 4] = external\n  %y = linear(%x, %w) : f32[B, 2]\n  output y = %y\n}\n",
    )
    .unwrap();
    let e = export_bytes(&g, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "%w: is external but the weights have no tensor of this name"
    );
}

#[test]
fn generated_models_round_trip() {
    let Some(py) = common::python() else { return };
    let models = common::generated(&py);
    let mut failures = Vec::new();
    let (mut exact, mut fixed_point) = (0, 0);
    for m in &models {
        let first = qir_onnx::import_file(&m.onnx, &ImportOptions::default()).unwrap();
        // every model, general clamps included (they export as Clip again)
        let result = round_trip(&first);
        let second = match result {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: {e}", m.name));
                continue;
            }
        };
        let anonymous = first
            .graph
            .node_ids()
            .iter()
            .any(|&i| first.graph.node(i).name.is_none());
        // Values the importer adds without a name (Gemm's alpha and beta products) come
        // back named after their printed number; such a graph must then be a fixed point.
        let (a, b) = if anonymous {
            fixed_point += 1;
            (second.clone(), round_trip(&second).unwrap())
        } else {
            exact += 1;
            (first, second)
        };
        if text(&a.graph) != text(&b.graph) || a.weights != b.weights {
            failures.push(format!(
                "{}: differs\n{}\n---\n{}",
                m.name,
                text(&a.graph),
                text(&b.graph)
            ));
        }
    }
    eprintln!("{exact} models round-trip exactly, {fixed_point} after naming anonymous values");
    assert_eq!(exact + fixed_point, models.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
