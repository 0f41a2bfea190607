//! Train-mode conversion: every eval-mode `batch_norm(x, gamma, beta, mean, var)` whose
//! statistics are `state` becomes `batch_norm_train(x, gamma, beta)` (normalizing with the
//! batch's own statistics), and the running statistics get their updates:
//!
//! ```text
//! %bn.mean.new = ema(%bn.mean, reduce_mean(%x){axes = all but 1}){momentum}
//! %bn.var.new  = ema(%bn.var,  variance(%x){axes = all but 1}){momentum}
//! update %bn.mean = %bn.mean.new
//! update %bn.var = %bn.var.new
//! ```
//!
//! The running variance is the batch's *biased* variance (the `variance` op); PyTorch
//! stores the unbiased one (times n / (n - 1)), which the IR cannot write while the batch
//! size is symbolic. The difference is a factor (n-1)/n on the running variance, which
//! only matters for tiny batches.
//!
//! Keeps: node ids and names (each batch-norm node is switched in place, so its users and
//! its printed position are unchanged). A batch-norm whose statistics are not both state
//! (constants after folding, say) stays in eval mode.

use qir::{Attr, Graph, Inst, NodeId, NodeKind, Op};

use super::GradError;

/// Whether the training step runs batch-norm with batch statistics or frozen ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// `batch_norm_train` plus running-statistics updates.
    Train,
    /// Keep eval-mode `batch_norm` with the stored statistics (after "freeze BN
    /// statistics"); gamma and beta still train.
    Frozen,
}

impl BnMode {
    /// The option text: `train` or `frozen`.
    pub fn name(self) -> &'static str {
        match self {
            BnMode::Train => "train",
            BnMode::Frozen => "frozen",
        }
    }
    /// Parses the option text.
    pub fn from_name(s: &str) -> Option<BnMode> {
        [BnMode::Train, BnMode::Frozen]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// Switches every eval-mode batch-norm with state statistics of `g` to training mode and
/// adds the running-statistics updates with EMA `momentum` (PyTorch's default is 0.1).
/// Returns how many batch-norm nodes were switched. On error `g` is unchanged.
pub fn train_mode(g: &mut Graph, momentum: f64) -> Result<usize, GradError> {
    if !(0.0..=1.0).contains(&momentum) {
        return Err(GradError::Invalid(format!(
            "batch-norm momentum must be in [0, 1], found {momentum}"
        )));
    }
    let order = g
        .topo_order()
        .map_err(|_| GradError::Invalid("the graph has a cycle".into()))?;
    let mut todo: Vec<(NodeId, [NodeId; 5])> = Vec::new();
    let mut seen_stats: Vec<NodeId> = Vec::new();
    for id in order {
        if g.node(id).op() != Some(Op::BatchNorm) {
            continue;
        }
        let Ok(ops) = <[NodeId; 5]>::try_from(g.operands(id)) else {
            continue;
        };
        let [_, _, _, mean, var] = ops;
        if !(g.node(mean).is_state() && g.node(var).is_state()) {
            continue;
        }
        for s in [mean, var] {
            if g.update_of(s).is_some() || seen_stats.contains(&s) {
                return Err(GradError::Invalid(format!(
                    "cannot switch {} to training mode: its statistic {} already has an update",
                    g.describe(id),
                    g.describe(s)
                )));
            }
            seen_stats.push(s);
        }
        todo.push((id, ops));
    }
    // Everything is checked; from here on only edits that cannot fail on a verified graph,
    // but keep the graph unchanged on any error all the same.
    let mut work = g.clone();
    for &(id, [x, gamma, beta, mean, var]) in &todo {
        convert_one(&mut work, id, [x, gamma, beta, mean, var], momentum).map_err(|m| {
            GradError::Rule {
                id,
                node: g.describe(id),
                message: m,
            }
        })?;
    }
    *g = work;
    Ok(todo.len())
}

fn convert_one(g: &mut Graph, id: NodeId, ops: [NodeId; 5], momentum: f64) -> Result<(), String> {
    let [x, gamma, beta, mean, var] = ops;
    let Some(old) = g.node(id).inst().cloned() else {
        return Err("not an op node".into());
    };
    let mut inst = Inst::new(Op::BatchNormTrain);
    if let Some(eps) = old.get("eps") {
        inst.set("eps", eps)?;
    }
    g.node_mut(id).kind = NodeKind::Op(inst);
    g.set_operands(id, &[x, gamma, beta]);
    let axes: Vec<i64> = (0..g.ty(x).rank() as i64).filter(|&a| a != 1).collect();
    let mut ema_inst = Inst::new(Op::Ema);
    ema_inst.set("momentum", Attr::Float(momentum))?;
    for (stat, op) in [(mean, Op::ReduceMean), (var, Op::Variance)] {
        let batch = g
            .add_op(Inst::new(op).with("axes", axes.clone())?, &[x], None)
            .map_err(|e| e.0)?;
        let name = match &g.node(stat).name {
            Some(n) => g.fresh_name(&format!("{n}.new")),
            None => g.fresh_name("bn.stat.new"),
        };
        let new = g
            .add_op(ema_inst.clone(), &[stat, batch], Some(&name))
            .map_err(|e| e.0)?;
        g.add_update(stat, new);
    }
    Ok(())
}
