//! Imported models compute what onnxruntime computes: every model `make_models.py` builds
//! (the MLP, the conv-BN-ReLU CNN, the residual and depthwise-separable blocks, and one
//! model per op form) is imported, checked to verify and print canonically, run by the
//! reference interpreter on the random inputs onnxruntime ran on, and compared.
//!
//! Tolerance, per element of a float output:
//!
//! `|ours - ort| <= 1e-5 * max(|ort|, 0.1 * max_abs(ort))`
//!
//! where `max_abs(ort)` is the largest magnitude in that output tensor: 1e-5 relative for
//! every value of at least a tenth of the tensor's scale; a smaller value is held to 1e-6
//! of the scale rather than to its own magnitude, because a sum that cancels to nearly 0
//! keeps the f32 rounding error of its terms (a conv output of 0.0017 beside values of
//! 1.8 differs from onnxruntime's by 1.2e-7, one rounding of the terms, whatever the
//! summation order). Non-float outputs must be equal.
//!
//! Needs `QATC_PYTHON` (see `common::python`); skipped without it.

mod common;

use qir::Data;
use qir_onnx::{ImportOptions, import_file};

fn compare(name: &str, ours: &qir::Tensor, ort: &qir::Tensor) -> Result<f64, String> {
    if ours.shape != ort.shape {
        return Err(format!(
            "{name}: shape {:?}, onnxruntime {:?}",
            ours.shape, ort.shape
        ));
    }
    let (Data::F32(a), Data::F32(b)) = (&ours.data, &ort.data) else {
        return if ours.data == ort.data {
            Ok(0.0)
        } else {
            Err(format!(
                "{name}: {:?} vs onnxruntime {:?}",
                ours.data, ort.data
            ))
        };
    };
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let mut worst = 0f64;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x as f64, y as f64);
        let allowed = 1e-5 * y.abs().max(0.1 * scale);
        let err = (x - y).abs();
        if err > allowed || x.is_nan() != y.is_nan() {
            return Err(format!(
                "{name}[{i}]: {x} vs onnxruntime {y} (error {err:e}, allowed {allowed:e})"
            ));
        }
        if allowed > 0.0 {
            worst = worst.max(err / allowed);
        }
    }
    Ok(worst)
}

#[test]
fn imported_models_match_onnxruntime() {
    let Some(py) = common::python() else { return };
    let models = common::generated(&py);
    assert!(models.len() >= 50, "only {} models generated", models.len());
    let mut failures = Vec::new();
    for m in &models {
        let result = (|| -> Result<f64, String> {
            let imported =
                import_file(&m.onnx, &ImportOptions::default()).map_err(|e| e.to_string())?;
            assert_eq!(imported.opset, m.opset, "{}", m.name);
            common::assert_canonical(&imported.graph, &m.name);
            let inputs = m
                .arrays
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("in.").map(|k| (k.to_string(), v.clone())))
                .collect();
            let outputs = common::run(&imported, &inputs)?;
            let mut worst = 0f64;
            for (k, want) in &m.arrays {
                let Some(out) = k.strip_prefix("out.") else {
                    continue;
                };
                let qname = qir_onnx::names::sanitize(out);
                let got = outputs
                    .get(&qname)
                    .ok_or_else(|| format!("no output {qname}"))?;
                worst = worst.max(compare(out, got, want)?);
            }
            Ok(worst)
        })();
        match result {
            Ok(w) => eprintln!("{:<24} ok (worst error {:.3} of the allowed)", m.name, w),
            Err(e) => failures.push(format!("{}: {e}", m.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
