//! Conformance of the interpreter's fake-quant ops with PyTorch: every vector of
//! `../shared/data/fakequant_vectors.json` (beside the repository) is reproduced by
//! running tiny graphs built with the qir builder. Forward outputs, STE masks and the
//! per-element LSQ gradient contributions match bit for bit; the summed LSQ gradients are
//! bit-exact against the exactly rounded sum of PyTorch's per-element contributions and
//! within 1e-6 (of the contributions' magnitude sum) of PyTorch's own f32 reduction. The
//! `quantize` op reproduces PyTorch's grid on the inverse-scale discriminators. The test
//! fails (never skips) when the file is missing.

use std::collections::HashMap;
use std::path::PathBuf;

use qir::{Dim, ElemType, Graph, Init, Inst, Op, QuantType, Shape, Storage, Tensor, Type};
use qir_exec::Executor;
use qir_interp::init_store;
use serde_json::Value;

/// Runs `g` once on the interpreter.
fn exec_run(
    g: &Graph,
    store: &mut qir_exec::Store,
    inputs: &HashMap<String, Tensor>,
) -> Result<qir_exec::RunOutput, qir_exec::ExecError> {
    qir_interp::Interpreter::default()
        .prepare(g, &[])?
        .run(store, inputs)
}

include!("fakequant_conformance/checks.rs");
