//! The training loss added on request: `--loss cross-entropy` declares an `i32[B]` label
//! input and `softmax_cross_entropy` of the logits output against it, as the graph's
//! `loss`, so that `qatc prepare` and `qatc train` take the imported model like a
//! hand-written one.
//!
//! The logits are the output named in the [`LossSpec`], else the only output, else the
//! output named `logits`. Invariants: the logits are a float `[N, C]` output (a model whose output is a Softmax
//! gets the loss on the Softmax's input, with a note, since cross-entropy needs logits);
//! the label input's name is free; the graph's outputs are kept as they are.

use qir::{ElemType, Graph, Inst, Op, Shape, Type};

use crate::error::{ImportError, Result};
use crate::names::{Namer, is_valid};
use crate::{LossKind, LossSpec};

/// Adds the loss `spec` asks for. `outputs` pairs each ONNX output name with its qir
/// output name.
pub(crate) fn add_loss(
    g: &mut Graph,
    names: &mut Namer,
    spec: &LossSpec,
    outputs: &[(String, String)],
    notes: &mut Vec<String>,
) -> Result<()> {
    let err = |m: String| ImportError::Loss(m);
    let listed = || {
        outputs
            .iter()
            .map(|(o, _)| format!("'{o}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let qout = match (&spec.logits, outputs) {
        (Some(want), _) => outputs
            .iter()
            .find(|(o, q)| o == want || q == want)
            .map(|(_, q)| q.clone())
            .ok_or_else(|| {
                err(format!(
                    "the model has no output '{want}' (its outputs: {})",
                    listed()
                ))
            })?,
        (None, [(_, q)]) => q.clone(),
        // as the runtime's evaluation does: the output named `logits`
        (None, _) if outputs.iter().any(|(_, q)| q == "logits") => "logits".to_string(),
        (None, _) => {
            return Err(err(format!(
                "the model has several outputs ({}) and none is named 'logits'; name the logits output",
                listed()
            )));
        }
    };
    let mut logits = g
        .output(&qout)
        .ok_or_else(|| err(format!("no output '{qout}'")))?;
    if g.node(logits).op() == Some(Op::Softmax) {
        let input = g.operands(logits)[0];
        notes.push(format!(
            "output '{qout}' is a softmax; the cross-entropy loss takes its input {} (the logits)",
            g.describe(input)
        ));
        logits = input;
    }
    let ty = g.ty(logits).clone();
    if ty.rank() != 2 || !ty.elem.is_float() {
        return Err(err(format!(
            "cross-entropy needs float logits [batch, classes], output '{qout}' is {ty}"
        )));
    }
    if !is_valid(&spec.label) {
        return Err(err(format!(
            "'{}' is not a valid name for the label input",
            spec.label
        )));
    }
    if names.is_taken(&spec.label) || g.find(&spec.label).is_some() {
        return Err(err(format!(
            "the model already has a value named '{}'; choose another label name",
            spec.label
        )));
    }
    let label_name = names.fresh(&spec.label);
    let batch = ty.shape.dims()[0].clone();
    let label = g
        .add_input(&label_name, Type::new(ElemType::I32, Shape(vec![batch])))
        .map_err(|e| err(e.to_string()))?;
    let loss_name = names.fresh("loss");
    let loss = match spec.kind {
        LossKind::CrossEntropy => g
            .add_op(
                Inst::new(Op::SoftmaxCrossEntropy),
                &[logits, label],
                Some(&loss_name),
            )
            .map_err(|e| err(e.to_string()))?,
    };
    g.set_loss(Some(loss));
    Ok(())
}
