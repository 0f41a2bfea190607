//! `data-parallel`: makes a training step (the grad pass's output) a data-parallel one by
//! inserting collectives, so that every replica of an MPI run, each on its own shard of
//! the global batch, takes the same step and keeps the same quantization parameters.
//!
//! ```text
//! %w1 = sgd_update(%w, %w.grad, %lr)          %g = all_reduce(%w.grad) {op = mean}
//!                                        =>   %w1 = sgd_update(%w, %g, %lr)
//! %x.min.new = observe_min(%x, %x.min)        %x.min.new = observe_min(%x, %x.min)
//! ... uses of %x.min.new                      %m = all_reduce(%x.min.new) {op = min}
//!                                             ... uses of %m
//! ```
//!
//! - Gradients: every gradient an optimizer op reads (operand `grad` of `sgd_momentum`,
//!   `adam_moment`, and of `sgd_update` when it is not a momentum buffer) — LSQ scale and
//!   zero-point gradients included — is averaged over the replicas before the optimizer.
//!   Gradients are bucketed: consecutive gradients (in optimizer order) are flattened,
//!   concatenated into buckets of at most `bucket-kib` KiB and reduced with one
//!   `all_reduce` per bucket, then sliced back (a gradient larger than a bucket, or with a
//!   symbolic shape, is reduced alone).
//! - Observers: the result of every `observe_min`/`observe_max` watching a value that
//!   depends on the batch is reduced by min/max. This is exact: the observer's result is
//!   a monotone non-decreasing function of the batch extreme `m` for a fixed running value
//!   (`min(running, m)`, or the EMA `running + c (m - running)` with `0 < c <= 1`, or `m`
//!   itself when nothing was observed yet), and rounded float arithmetic keeps that
//!   monotonicity, so the min over replicas of `f(m_r)` is `f(min_r m_r)` bit for bit —
//!   the observer of the global batch, at the cost of one value per channel instead of a
//!   reduction of the whole activation. Observers of weights (values that do not depend
//!   on any input) are left alone: the replicas' weights are identical already.
//!   Observer results are not bucketed: each layer's range is needed before the next
//!   layer runs.
//! - Batch-norm (`sync-bn`, on by default): every `batch_norm_train` becomes SyncBatchNorm
//!   — the statistics of the global batch, `M = mean_r(mean(x_r))` and
//!   `V = mean_r(mean(x_r²)) - M²`, feed an eval-form `batch_norm(x, gamma, beta, M, V)`
//!   and the running-statistics updates; its gradient ops are rewritten with the global
//!   means of `dy` and `dy·x̂` (`batch_norm_train_grad_input`) and with the global `x̂`
//!   (`batch_norm_train_grad_gamma`, a parameter gradient averaged like the others).
//!   Rewriting after grad, rather than decomposing before it, keeps the grad pass and
//!   `train-step` unchanged and touches only the ops that read batch statistics.
//!   Assumes equal shards (the driver's sharding gives each replica the same batch size).
//!
//! With one process every `all_reduce` is the identity, so the step computes what the
//! `train-step` graph computes (up to the rounding of `E[x²] - E[x]²` against the
//! two-pass variance). Needs a verified training step; keeps it verified.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use qir::{Attr, Graph, Inst, NodeId, NodeKind, Op, OpClass};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `data-parallel` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct DataParallel {
    /// Largest bucket of concatenated gradients, in KiB (0: one all-reduce per gradient).
    pub bucket_kib: u64,
    /// Synchronize batch-norm statistics over the global batch.
    pub sync_bn: bool,
}

impl Default for DataParallel {
    fn default() -> DataParallel {
        DataParallel {
            bucket_kib: 25 * 1024,
            sync_bn: true,
        }
    }
}

/// What [`data_parallel`] inserted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpReport {
    /// Gradients averaged.
    pub gradients: usize,
    /// `all_reduce` ops on gradients (after bucketing).
    pub gradient_reductions: usize,
    /// Observer results reduced by min or max.
    pub observers: usize,
    /// Batch-norm ops synchronized.
    pub batch_norms: usize,
}

fn all_reduce_inst(op: &'static str) -> Result<Inst, PassError> {
    Inst::new(Op::AllReduce)
        .with("op", Attr::Enum(op))
        .map_err(PassError::new)
}

/// Makes `g` data-parallel; see the module docs.
pub fn data_parallel(g: &mut Graph, opts: &DataParallel) -> Result<DpReport, PassError> {
    let mut report = DpReport::default();
    if opts.sync_bn {
        report.batch_norms = sync_batch_norm(g)?;
    }
    let order = g
        .topo_order()
        .map_err(|_| PassError::new("the graph has a cycle"))?;

    // Gradients, in the order the optimizer reads them.
    let mut grads = Vec::new();
    let mut seen = HashSet::new();
    for &id in &order {
        let Some(op) = g.node(id).op() else { continue };
        let ops = g.operands(id);
        let grad = match op {
            Op::SgdMomentum | Op::AdamMoment => ops.get(1).copied(),
            Op::SgdUpdate => ops
                .get(1)
                .copied()
                .filter(|&v| g.node(v).op() != Some(Op::SgdMomentum)),
            _ => None,
        };
        if let Some(v) = grad
            && seen.insert(v)
        {
            grads.push(v);
        }
    }
    report.gradients = grads.len();
    report.gradient_reductions = bucketed(
        g,
        &grads,
        "mean",
        opts.bucket_kib.saturating_mul(1024),
        true,
    )?;

    // Observers of batch-dependent values.
    let batch = batch_dependent(g, &order);
    let (mut mins, mut maxs) = (Vec::new(), Vec::new());
    for &id in &order {
        let op = g.node(id).op();
        let watched = g.operands(id).first().copied();
        if !watched.is_some_and(|w| batch.contains(&w)) {
            continue;
        }
        match op {
            Some(Op::ObserveMin) => mins.push(id),
            Some(Op::ObserveMax) => maxs.push(id),
            _ => {}
        }
    }
    report.observers = mins.len() + maxs.len();
    // One reduction each: the forward pass needs each layer's range before the next layer
    // runs, so a bucket across layers would be a cycle.
    bucketed(g, &mins, "min", 0, false)?;
    bucketed(g, &maxs, "max", 0, false)?;
    Ok(report)
}

/// The values of `g` that depend on an input.
fn batch_dependent(g: &Graph, order: &[NodeId]) -> HashSet<NodeId> {
    let mut dep = HashSet::new();
    for &id in order {
        let node = g.node(id);
        let d = match node.kind {
            NodeKind::Input => true,
            NodeKind::Op(_) => g.operands(id).iter().any(|o| dep.contains(o)),
            _ => false,
        };
        if d {
            dep.insert(id);
        }
    }
    dep
}

/// Makes the uses of `v` read `new` instead, except `keep` (which reads `v`): every use
/// (updates and outputs included), or with `optimizer_only` only the optimizer ops' (a
/// gradient may also feed the local computation of another one, which must read the
/// replica's own value: the chain rule is linear in it, so averaging afterwards is the
/// same, and reading the reduced value would make a cycle through the bucket).
fn redirect(g: &mut Graph, v: NodeId, new: NodeId, keep: NodeId, optimizer_only: bool) {
    if !optimizer_only {
        g.replace_all_uses(v, new);
        for (slot, o) in g.operands(keep).into_iter().enumerate() {
            if o == new {
                g.set_operand(keep, slot as u32, v);
            }
        }
        return;
    }
    for (user, slot) in g.users(v) {
        if g.node(user).op().map(Op::class) == Some(OpClass::Optimizer) {
            g.set_operand(user, slot, new);
        }
    }
}

/// Reduces every value of `values` over the replicas with `op`, concatenating
/// consecutive values into buckets of at most `limit` bytes; returns the number of
/// `all_reduce` ops added.
fn bucketed(
    g: &mut Graph,
    values: &[NodeId],
    op: &'static str,
    limit: u64,
    optimizer_only: bool,
) -> Result<usize, PassError> {
    let mut buckets: Vec<Vec<(NodeId, Option<Vec<u64>>)>> = Vec::new();
    let mut bytes = 0u64;
    for &v in values {
        let dims = g.ty(v).shape.as_fixed();
        let size = dims
            .as_ref()
            .map(|d| d.iter().product::<u64>() * 4)
            .unwrap_or(u64::MAX);
        let fits = buckets
            .last()
            .is_some_and(|b| b[0].1.is_some() && size <= limit && bytes + size <= limit);
        if fits && dims.is_some() {
            bytes += size;
            if let Some(b) = buckets.last_mut() {
                b.push((v, dims));
            }
        } else {
            bytes = size;
            buckets.push(vec![(v, dims)]);
        }
    }
    for bucket in &buckets {
        if let [(v, _)] = bucket.as_slice() {
            let r = g.add_op(all_reduce_inst(op)?, &[*v], None)?;
            redirect(g, *v, r, r, optimizer_only);
            continue;
        }
        let mut flat = Vec::new();
        for (v, dims) in bucket {
            let n: u64 = dims.as_ref().map_or(0, |d| d.iter().product());
            let i = Inst::new(Op::Reshape)
                .with("shape", Attr::Ints(vec![n as i64]))
                .map_err(PassError::new)?;
            flat.push((g.add_op(i, &[*v], None)?, n));
        }
        let ids: Vec<NodeId> = flat.iter().map(|f| f.0).collect();
        let cat_inst = Inst::new(Op::Concat)
            .with("axis", Attr::Int(0))
            .map_err(PassError::new)?;
        let cat = g.add_op(cat_inst, &ids, None)?;
        let red = g.add_op(all_reduce_inst(op)?, &[cat], None)?;
        let mut start = 0i64;
        for ((v, dims), (f, n)) in bucket.iter().zip(&flat) {
            let end = start + *n as i64;
            let s = Inst::new(Op::Slice)
                .with("axis", Attr::Int(0))
                .and_then(|i| i.with("start", Attr::Int(start)))
                .and_then(|i| i.with("end", Attr::Int(end)))
                .map_err(PassError::new)?;
            let s = g.add_op(s, &[red], None)?;
            let shape: Vec<i64> = dims.iter().flatten().map(|&d| d as i64).collect();
            let back = Inst::new(Op::Reshape)
                .with("shape", Attr::Ints(shape))
                .map_err(PassError::new)?;
            let back = g.add_op(back, &[s], None)?;
            redirect(g, *v, back, *f, optimizer_only);
            start = end;
        }
    }
    Ok(buckets.len())
}

/// The axes a batch-norm over `rank` dimensions reduces (all but 1), and the shape that
/// broadcasts a `[C]` vector against its input.
fn bn_axes(rank: usize, c: u64) -> (Vec<i64>, Vec<i64>) {
    let axes = (0..rank as i64).filter(|&a| a != 1).collect();
    let bshape = (0..rank).map(|a| if a == 1 { c as i64 } else { 1 }).collect();
    (axes, bshape)
}

/// Global statistics of one batch-norm input.
struct Stats {
    mean: NodeId,
    var: NodeId,
    /// `1 / sqrt(var + eps)` broadcastable to x.
    inv_std: NodeId,
    /// `mean` broadcastable to x.
    mean_b: NodeId,
    axes: Vec<i64>,
    bshape: Vec<i64>,
}

fn op_with(g: &mut Graph, op: Op, operands: &[NodeId], attrs: &[(&str, Attr)]) -> Result<NodeId, PassError> {
    let mut i = Inst::new(op);
    for (k, v) in attrs {
        i.set(k, v.clone()).map_err(PassError::new)?;
    }
    Ok(g.add_op(i, operands, None)?)
}

fn global_mean(g: &mut Graph, x: NodeId, axes: &[i64]) -> Result<NodeId, PassError> {
    let m = op_with(g, Op::ReduceMean, &[x], &[("axes", Attr::Ints(axes.to_vec()))])?;
    Ok(g.add_op(all_reduce_inst("mean")?, &[m], None)?)
}

fn f32_scalar(g: &mut Graph, base: &str, v: f64) -> Result<NodeId, PassError> {
    let name = g.fresh_name(base);
    Ok(g.add_const(
        &name,
        qir::Type::scalar(qir::ElemType::F32),
        qir::Init::Dense(vec![v]),
    )?)
}

fn global_stats(g: &mut Graph, x: NodeId, eps: f64) -> Result<Stats, PassError> {
    let ty = g.ty(x).clone();
    let c = ty.shape.dims().get(1).and_then(|d| d.fixed()).ok_or_else(|| {
        PassError::at(x, "sync batch-norm needs a fixed channel dimension (axis 1)")
    })?;
    let (axes, bshape) = bn_axes(ty.rank(), c);
    let mean = global_mean(g, x, &axes)?;
    let sq = g.op(Op::Mul, &[x, x])?;
    let msq = global_mean(g, sq, &axes)?;
    let m2 = g.op(Op::Mul, &[mean, mean])?;
    let var = g.op(Op::Sub, &[msq, m2])?;
    let eps = f32_scalar(g, "sync_bn.eps", eps)?;
    let ve = g.op(Op::Add, &[var, eps])?;
    let sd = g.op(Op::Sqrt, &[ve])?;
    let one = f32_scalar(g, "sync_bn.one", 1.0)?;
    let inv = g.op(Op::Div, &[one, sd])?;
    let reshape = |g: &mut Graph, v| op_with(g, Op::Reshape, &[v], &[("shape", Attr::Ints(bshape.clone()))]);
    let inv_std = reshape(g, inv)?;
    let mean_b = reshape(g, mean)?;
    Ok(Stats {
        mean,
        var,
        inv_std,
        mean_b,
        axes,
        bshape,
    })
}

/// Rewrites every `batch_norm_train` and its gradient ops to use the global batch's
/// statistics; returns how many batch-norms.
fn sync_batch_norm(g: &mut Graph) -> Result<usize, PassError> {
    let order = g
        .topo_order()
        .map_err(|_| PassError::new("the graph has a cycle"))?;
    let bns: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| g.node(id).op() == Some(Op::BatchNormTrain))
        .collect();
    // The statistics of each distinct (input, eps).
    let mut stats: HashMap<(NodeId, u64), Stats> = HashMap::new();
    let eps_of = |g: &Graph, id: NodeId| {
        g.node(id)
            .inst()
            .and_then(|i| i.float("eps"))
            .unwrap_or(1e-5)
    };
    for &bn in &bns {
        let ops = g.operands(bn);
        let (x, gamma, beta) = (ops[0], ops[1], ops[2]);
        let eps = eps_of(g, bn);
        if let Entry::Vacant(slot) = stats.entry((x, eps.to_bits())) {
            let readers = g.users(x);
            let s = global_stats(g, x, eps)?;
            // The running statistics read the global ones (the local reductions go).
            for (user, _) in readers {
                if !g.contains(user) {
                    continue;
                }
                let Some(inst) = g.node(user).inst() else { continue };
                let full = inst.ints("axes").as_deref() == Some(&s.axes[..])
                    && !inst.boolean("keepdims").unwrap_or(false);
                let global = match inst.op {
                    Op::ReduceMean if full => s.mean,
                    Op::Variance if full => s.var,
                    _ => continue,
                };
                g.replace_all_uses(user, global);
                g.remove_node(user);
            }
            slot.insert(s);
        }
        let s = &stats[&(x, eps.to_bits())];
        let mut i = Inst::new(Op::BatchNorm);
        i.set("eps", Attr::Float(eps)).map_err(PassError::new)?;
        let y = g.add_op(i, &[x, gamma, beta, s.mean, s.var], None)?;
        let name = g.node(bn).name.clone();
        g.replace_all_uses(bn, y);
        g.remove_node(bn);
        if let Some(n) = name {
            g.rename(y, Some(n))?;
        }
    }
    // The gradient ops.
    let grads: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| {
            matches!(
                g.get(id).and_then(|n| n.op()),
                Some(Op::BatchNormTrainGradInput | Op::BatchNormTrainGradGamma)
            )
        })
        .collect();
    for id in grads {
        let op = g.node(id).op();
        let ops = g.operands(id);
        let (dy, x) = (ops[0], ops[1]);
        let eps = eps_of(g, id);
        let s = stats.get(&(x, eps.to_bits())).ok_or_else(|| {
            PassError::at(id, "a batch-norm gradient whose batch_norm_train is gone")
        })?;
        let (axes, bshape, inv_std, mean_b) =
            (s.axes.clone(), s.bshape.clone(), s.inv_std, s.mean_b);
        let xc = g.op(Op::Sub, &[x, mean_b])?;
        let xhat = g.op(Op::Mul, &[xc, inv_std])?;
        let dyx = g.op(Op::Mul, &[dy, xhat])?;
        let new = if op == Some(Op::BatchNormTrainGradGamma) {
            op_with(g, Op::ReduceSum, &[dyx], &[("axes", Attr::Ints(axes))])?
        } else {
            let gamma = ops[2];
            let shape = Attr::Ints(bshape);
            let a = global_mean(g, dy, &axes)?;
            let a = op_with(g, Op::Reshape, &[a], &[("shape", shape.clone())])?;
            let c = global_mean(g, dyx, &axes)?;
            let c = op_with(g, Op::Reshape, &[c], &[("shape", shape.clone())])?;
            let gb = op_with(g, Op::Reshape, &[gamma], &[("shape", shape)])?;
            let d1 = g.op(Op::Sub, &[dy, a])?;
            let xcb = g.op(Op::Mul, &[xhat, c])?;
            let d2 = g.op(Op::Sub, &[d1, xcb])?;
            let k = g.op(Op::Mul, &[gb, inv_std])?;
            g.op(Op::Mul, &[d2, k])?
        };
        let name = g.node(id).name.clone();
        g.replace_all_uses(id, new);
        g.remove_node(id);
        if let Some(n) = name {
            g.rename(new, Some(n))?;
        }
    }
    Ok(bns.len())
}

impl Pass for DataParallel {
    fn name(&self) -> &'static str {
        "data-parallel"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![
            ("bucket-kib", OptValue::Scalar(self.bucket_kib.to_string())),
            ("sync-bn", OptValue::Scalar(self.sync_bn.to_string())),
        ]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let r = data_parallel(g, self)?;
        Ok(Changed::from(
            r.gradients + r.observers + r.batch_norms > 0,
        ))
    }
}

impl PassDef for DataParallel {
    const INFO: PassInfo = PassInfo {
        name: "data-parallel",
        summary: "insert the collectives of data-parallel training: averaged gradients, global observer ranges, SyncBatchNorm",
        options: &[
            OptionSpec {
                name: "bucket-kib",
                kind: OptionKind::UInt,
                default: "25600",
                doc: "largest bucket of gradients reduced by one all_reduce, in KiB (0: one per gradient)",
            },
            OptionSpec {
                name: "sync-bn",
                kind: OptionKind::Bool,
                default: "true",
                doc: "normalize with the statistics of the global batch (SyncBatchNorm)",
            },
        ],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(DataParallel {
            bucket_kib: options.uint("bucket-kib")?,
            sync_bn: options.bool("sync-bn")?,
        })
    }
}
