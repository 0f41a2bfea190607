//! Every model of `testdata/models/` prepared for QAT (`prepare-qat`) with every preset:
//! the placement checker finds no violation, the result verifies, prints and parses back,
//! preparing again changes nothing, and the text is snapshotted in
//! `testdata/pipelines/prepare-qat/presets/<model>.<preset>.snap`
//! (accept changes with `cargo insta review`).

mod prepare_common;

use passes::scheme::{PRESETS, Scheme};
use prepare_common::{MODELS, check_placement, default_weights, model, prepare, repo_root};

fn snapshot(name: &str, value: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(repo_root().join("testdata/pipelines/prepare-qat/presets"));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s.bind(|| insta::assert_snapshot!(name, value));
}

#[test]
fn every_model_with_every_preset() {
    for m in MODELS {
        let float = model(m);
        for (preset, _) in PRESETS {
            let scheme = Scheme::preset(preset).unwrap();
            let g = prepare(&float, preset);
            let bad = check_placement(
                &float,
                &g,
                &scheme.activations,
                &default_weights(&float, &scheme),
            );
            let text = qir::print::print(&g);
            assert!(
                bad.is_empty(),
                "{m} with {preset}: placement violations:\n{}\n{text}",
                bad.join("\n")
            );
            // print -> parse -> print is the identity
            let again = qir_reader::parse_and_verify(&text)
                .map(|g| qir::print::print(&g))
                .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, m, &text)));
            assert_eq!(
                again, text,
                "{m} with {preset}: the text does not round-trip"
            );
            // preparing a prepared model changes nothing
            let twice = prepare(&g, preset);
            assert_eq!(
                qir::print::print(&twice),
                text,
                "{m} with {preset}: prepare-qat is not idempotent"
            );
            let header: String = scheme
                .describe()
                .lines()
                .map(|l| format!("// {l}\n"))
                .collect();
            snapshot(&format!("{m}.{preset}"), &format!("{header}{text}"));
        }
    }
}

#[test]
fn quantized_values_per_model() {
    // The fake-quants of tflite-int8, by the value they quantize: one per layer weight,
    // the network input, each fusion unit's output (after its relu), the logits; none
    // inside conv -> batch-norm -> relu, none after max-pool or flatten, one after a
    // concat and none on its single-use inputs.
    let expect: [(&str, &[&str]); 6] = [
        (
            "concat",
            &[
                "x", "b1.w", "b3.w", "cat", "mix.w", "fc.w", "mix.act", "logits",
            ],
        ),
        (
            "depthwise",
            &[
                "x",
                "stem.w.folded",
                "stem.act",
                "dw.w.folded",
                "dw.act",
                "pw.w.folded",
                "pw.act",
                "gap",
                "fc.w",
                "logits",
            ],
        ),
        ("digits_mlp", &["x", "fc1.w", "relu1", "fc2.w", "logits"]),
        (
            "mnist_cnn",
            &[
                "x",
                "conv1.w.folded",
                "relu1",
                "conv2.w.folded",
                "relu2",
                "fc.w",
                "logits",
            ],
        ),
        (
            "mnist_mlp",
            &["x", "fc1.w", "relu1", "fc2.w", "relu2", "fc3.w", "logits"],
        ),
        (
            "residual",
            &[
                "x",
                "stem.w.folded",
                "stem.relu",
                "res.conv1.w.folded",
                "res.relu1",
                "res.conv2.w.folded",
                "res.bn2",
                "res.relu2",
                "gap",
                "fc.w",
                "logits",
            ],
        ),
    ];
    for (m, want) in expect {
        let g = prepare(&model(m), "tflite-int8");
        let names = qir::print::value_names(&g);
        let mut got: Vec<String> = g
            .node_ids()
            .into_iter()
            .filter(|&id| g.node(id).op() == Some(qir::Op::FakeQuant))
            .map(|id| names[&g.operands(id)[0]].clone())
            .collect();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{m}");
    }
}
