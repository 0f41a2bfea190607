//! `fold-batchnorm-qat`: batch-norm for quantization-aware training, as the scheme says
//! (DESIGN.md §2).
//!
//! With `batch-norm.mode = "simulated"` (every preset), each `batch_norm` that directly
//! follows a `conv2d` or `linear` (no fused activation, no other use of its result) is
//! rewritten into Krishnamoorthi's simulated folding (§3.2.2), as PyTorch's ConvBn QAT
//! modules do:
//!
//! ```text
//! %bn.factor = div(%gamma, sqrt(add(%var, %bn.eps)))     // γ / √(σ² + ε), running statistics
//! %w.folded  = mul(%w, reshape(%bn.factor) {[O, 1, 1, 1]})
//! %conv      = conv2d(%x, %w.folded)                     // the weight fake-quant goes here
//! %conv.rescaled = div(%conv, reshape(%bn.factor) {[1, O, 1, 1]})
//! (%conv.biased  = add(%conv.rescaled, reshape(%b) {[1, O, 1, 1]}))   // with a bias
//! %bn        = batch_norm(%conv.rescaled, %gamma, %beta, %mean, %var)
//! ```
//!
//! The conv computes with the folded weight, so `insert-fake-quant` (run next) quantizes
//! exactly the weight the integer model will hold; dividing by the factor restores the
//! unfolded result, and the ordinary batch-norm after it normalizes with batch statistics
//! during training (the grad pass makes it `batch_norm_train`) and with the running ones
//! in evaluation, where the whole computes `conv(x, fq(w·γ/σ)) + β − γμ/σ`, the folded
//! inference layer. Without fake-quant the graph computes the float model's function
//! (equal up to float rounding). A zero γ makes the factor 0: as in PyTorch, such
//! channels are not supported.
//!
//! With `mode = "unfolded"` nothing is rewritten: conv → batch-norm trains as it is, and
//! `insert-fake-quant` places no fake-quant between them (folding happens at convert).
//!
//! Either way, when the scheme freezes batch-norm statistics after N steps and the graph
//! has a batch-norm, the pass adds the graph note `// qat: freeze-bn-after = N` that
//! [`crate::scheme::freeze_bn_after`] reads back (the trainer then rebuilds the step with
//! `grad{bn=frozen}`).
//!
//! Needs a verified graph; keeps every name (new values get fresh names derived from the
//! batch-norm, conv and weight names); idempotent (a folded batch-norm no longer follows a
//! conv directly).

use qir::{Attr, Dim, Graph, Init, Inst, NodeId, Op, Type};

use crate::insert_fake_quant::{SCHEME_OPTION, scheme_option};
use crate::placement::cycle_error;
use crate::options::{OptionError, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;
use crate::scheme::{BnFolding, Scheme, freeze_bn_after, freeze_bn_note};

/// The `fold-batchnorm-qat` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldBatchNormQat {
    /// The scheme (its batch-norm mode and freeze step are what this pass reads).
    pub scheme: Scheme,
    /// The `scheme` option as written.
    pub source: String,
}

impl FoldBatchNormQat {
    /// The pass with a scheme built in code.
    pub fn new(scheme: Scheme) -> FoldBatchNormQat {
        FoldBatchNormQat {
            source: scheme.name.clone(),
            scheme,
        }
    }
}

impl Default for FoldBatchNormQat {
    /// The `tflite-int8` scheme (simulated folding).
    fn default() -> FoldBatchNormQat {
        let c = crate::insert_fake_quant::InsertFakeQuant::default();
        FoldBatchNormQat {
            scheme: c.scheme,
            source: c.source,
        }
    }
}

impl Pass for FoldBatchNormQat {
    fn name(&self) -> &'static str {
        "fold-batchnorm-qat"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("scheme", OptValue::Scalar(self.source.clone()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        fold_batchnorm_qat(g, &self.scheme)
    }
}

impl PassDef for FoldBatchNormQat {
    const INFO: PassInfo = PassInfo {
        name: "fold-batchnorm-qat",
        summary: "prepare batch-norm for qat: simulated folding into the conv or linear weights, or unfolded, as the scheme says",
        options: &[SCHEME_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        let (scheme, source) = scheme_option("fold-batchnorm-qat", options)?;
        Ok(FoldBatchNormQat { scheme, source })
    }
}

/// One batch-norm to fold: the nodes involved.
struct Candidate {
    bn: NodeId,
    layer: NodeId,
    x: NodeId,
    w: NodeId,
    bias: Option<NodeId>,
    gamma: NodeId,
    var: NodeId,
    channels: u64,
    eps: f64,
}

fn candidates(g: &Graph) -> Result<Vec<Candidate>, PassError> {
    let order = g
        .topo_order()
        .map_err(|c| cycle_error(&c))?;
    let mut out = Vec::new();
    for bn in order {
        let Some(inst) = g.node(bn).inst() else {
            continue;
        };
        if inst.op != Op::BatchNorm {
            continue;
        }
        let Ok([y, gamma, _beta, _mean, var]) = <[NodeId; 5]>::try_from(g.operands(bn)) else {
            continue;
        };
        let Some(layer_inst) = g.node(y).inst() else {
            continue;
        };
        if !matches!(layer_inst.op, Op::Conv2d | Op::Linear)
            || layer_inst.choice("act") != Some("none")
            || g.users(y).len() != 1
            || g.is_root(y)
        {
            continue;
        }
        let ops = g.operands(y);
        let (x, w, bias) = match ops.as_slice() {
            [x, w] => (*x, *w, None),
            [x, w, b] => (*x, *w, Some(*b)),
            _ => continue,
        };
        let Some(channels) = g.ty(w).shape.dims().first().and_then(Dim::fixed) else {
            continue;
        };
        if g.ty(gamma).shape.dims() != [Dim::Fixed(channels)] {
            continue;
        }
        out.push(Candidate {
            bn,
            layer: y,
            x,
            w,
            bias,
            gamma,
            var,
            channels,
            eps: inst.float("eps").unwrap_or(1e-5),
        });
    }
    Ok(out)
}

fn reshape(g: &mut Graph, v: NodeId, shape: Vec<i64>) -> Result<NodeId, PassError> {
    let inst = Inst::new(Op::Reshape)
        .with("shape", Attr::Ints(shape))
        .map_err(PassError::new)?;
    Ok(g.add_op(inst, &[v], None)?)
}

fn name_of(g: &Graph, id: NodeId, fallback: &str) -> String {
    g.node(id)
        .name
        .clone()
        .unwrap_or_else(|| fallback.to_string())
}

fn fold_one(g: &mut Graph, c: &Candidate) -> Result<(), PassError> {
    let conv = g.node(c.layer).op() == Some(Op::Conv2d);
    let bn_name = name_of(g, c.bn, "bn");
    let layer_name = name_of(g, c.layer, if conv { "conv" } else { "linear" });
    let w_name = match &g.node(c.w).name {
        Some(n) => n.clone(),
        None => format!("{layer_name}.w"),
    };
    let o = c.channels as i64;
    let eps_name = g.fresh_name(&format!("{bn_name}.eps"));
    let eps = g.add_const(
        &eps_name,
        Type::scalar(qir::ElemType::F32),
        Init::Dense(vec![c.eps as f32 as f64]),
    )?;
    let var_eps = g.add_op(Inst::new(Op::Add), &[c.var, eps], None)?;
    let std = g.add_op(Inst::new(Op::Sqrt), &[var_eps], None)?;
    let factor_name = g.fresh_name(&format!("{bn_name}.factor"));
    let factor = g.add_op(Inst::new(Op::Div), &[c.gamma, std], Some(&factor_name))?;
    let w_rank = g.ty(c.w).rank();
    let mut w_shape = vec![o];
    w_shape.extend(std::iter::repeat_n(1, w_rank.saturating_sub(1)));
    let factor_w = reshape(g, factor, w_shape)?;
    let folded_name = g.fresh_name(&format!("{w_name}.folded"));
    let folded = g.add_op(Inst::new(Op::Mul), &[c.w, factor_w], Some(&folded_name))?;
    g.set_operands(c.layer, &[c.x, folded]);
    let y_rank = g.ty(c.layer).rank();
    let out_shape: Vec<i64> = (0..y_rank).map(|d| if d == 1 { o } else { 1 }).collect();
    let factor_y = if conv {
        reshape(g, factor, out_shape.clone())?
    } else {
        factor
    };
    let rescaled_name = g.fresh_name(&format!("{layer_name}.rescaled"));
    let mut y = g.add_op(
        Inst::new(Op::Div),
        &[c.layer, factor_y],
        Some(&rescaled_name),
    )?;
    if let Some(b) = c.bias {
        let b = if conv { reshape(g, b, out_shape)? } else { b };
        let biased_name = g.fresh_name(&format!("{layer_name}.biased"));
        y = g.add_op(Inst::new(Op::Add), &[y, b], Some(&biased_name))?;
    }
    g.set_operand(c.bn, 0, y);
    Ok(())
}

/// Prepares the batch-norms of `g` for QAT following `scheme` (see the module docs). On
/// error `g` is unchanged.
pub fn fold_batchnorm_qat(g: &mut Graph, scheme: &Scheme) -> Result<Changed, PassError> {
    scheme
        .validate()
        .map_err(|e| PassError::new(format!("scheme '{}': {e}", scheme.name)))?;
    let todo = match scheme.batch_norm {
        BnFolding::Simulated => candidates(g)?,
        BnFolding::Unfolded => Vec::new(),
    };
    let has_bn = g
        .node_ids()
        .into_iter()
        .any(|id| matches!(g.node(id).op(), Some(Op::BatchNorm | Op::BatchNormTrain)));
    let note = scheme
        .freeze_bn_after
        .filter(|_| has_bn && freeze_bn_after(g).is_none());
    if todo.is_empty() && note.is_none() {
        return Ok(Changed::No);
    }
    let mut work = g.clone();
    for c in &todo {
        fold_one(&mut work, c)?;
    }
    if let Some(n) = note {
        work.comments.push(freeze_bn_note(n));
    }
    *g = work;
    Ok(Changed::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV_BN: &str = "graph @m {
  input %x: f32[B, 1, 4, 4]
  param %c.w: f32[2, 1, 3, 3] = kaiming_uniform
  param %c.b: f32[2] = zeros
  param %bn.gamma: f32[2] = ones
  param %bn.beta: f32[2] = zeros
  state %bn.mean: f32[2] = zeros
  state %bn.var: f32[2] = ones

  %c = conv2d(%x, %c.w, %c.b) {padding = [1, 1, 1, 1]} : f32[B, 2, 4, 4]
  %bn = batch_norm(%c, %bn.gamma, %bn.beta, %bn.mean, %bn.var) : f32[B, 2, 4, 4]
  %r = relu(%bn) : f32[B, 2, 4, 4]
  output r = %r
}";

    #[test]
    fn simulated_folding_rewrites_conv_bn() {
        let mut g = qir_reader::parse_and_verify(CONV_BN).unwrap();
        let mut s = Scheme::preset("tflite-int8").unwrap();
        s.freeze_bn_after = Some(500);
        assert_eq!(fold_batchnorm_qat(&mut g, &s).unwrap(), Changed::Yes);
        qir::verify::verify(&g).unwrap();
        let text = qir::print::print(&g);
        for line in [
            "// qat: freeze-bn-after = 500",
            "const %bn.eps: f32[] = [1e-5]",
            "%bn.factor = div(%bn.gamma, %1) : f32[2]",
            "%c.w.folded = mul(%c.w, %2) : f32[2, 1, 3, 3]",
            "%c = conv2d(%x, %c.w.folded) {padding = [1, 1, 1, 1]} : f32[B, 2, 4, 4]",
            "%c.rescaled = div(%c, %3) : f32[B, 2, 4, 4]",
            "%c.biased = add(%c.rescaled, %4) : f32[B, 2, 4, 4]",
            "%bn = batch_norm(%c.biased, %bn.gamma, %bn.beta, %bn.mean, %bn.var) : f32[B, 2, 4, 4]",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert_eq!(freeze_bn_after(&g), Some(500));
        assert_eq!(fold_batchnorm_qat(&mut g, &s).unwrap(), Changed::No);
    }

    #[test]
    fn unfolded_mode_leaves_the_graph() {
        let mut g = qir_reader::parse_and_verify(CONV_BN).unwrap();
        let mut s = Scheme::preset("tflite-int8").unwrap();
        s.batch_norm = BnFolding::Unfolded;
        assert_eq!(fold_batchnorm_qat(&mut g, &s).unwrap(), Changed::No);
        assert_eq!(qir::print::print(&g), qir::print::print(&qir_reader::parse(CONV_BN).unwrap()));
    }
}
