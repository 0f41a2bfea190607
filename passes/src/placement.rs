//! Placement: where a quantized model quantizes — which values are quantized, which share
//! one parameter set, and which ops are fused into one quantization unit. Decided once
//! here and read by both sides of QAT: `insert-fake-quant` puts a fake-quant on every
//! [`Site`], and the convert passes lower each [`Unit`] (a fused chain) to one integer
//! layer, so the integer model quantizes exactly where the trained model did.
//!
//! The rules (the textbook's and every framework's):
//! - **layers** (`conv2d`, `linear`, `matmul`): the weight operand is quantized with the
//!   weights spec (whatever computes it: a param, or the folded weight of
//!   `fold-batchnorm-qat`); the activation operands must be on a quantization grid (they
//!   get an activation site if nothing upstream put one). The bias is never fake-quantized
//!   (it becomes int32 with scale `s_in * s_w` at convert).
//! - **fusion chains**: a layer followed by per-channel affine ops with a weight-side
//!   operand (the rescale and bias of simulated batch-norm folding), a `batch_norm`, and a
//!   `relu`/`relu6`; an `add` of two activations followed by a `relu`/`relu6`; the fused
//!   forms (`act = relu`) likewise. A chain continues only through values with exactly one
//!   use that are not graph outputs. Only the chain's last value is quantized.
//! - **other ops** that compute new values (pooling by averaging, sigmoid, softmax, a
//!   standalone batch-norm, ...) are quantized at their output.
//! - **grid-preserving ops** (`max_pool2d`, `reshape`, `flatten`, `transpose`, `slice`,
//!   and `relu`/`relu6` outside a chain) keep their input's grid: no second quantization.
//! - **concat**: one site on the output, one parameter set for all inputs. An input whose
//!   only use is the concat (directly or through grid-preserving single-use ops) gets no
//!   site of its own — its values are quantized with the concat's parameters, which is
//!   what the integer concat needs. A concat whose inputs all lie on the same grid gets no
//!   site.
//! - **graph inputs**: float inputs used by the model are quantized; integer inputs
//!   (labels) are not. **The loss** and the ops that only feed it are not quantized; the
//!   logits (the last layer's output) are.
//! - Values already on a grid (a `fake_quant` reads them, or a `dequantize` produced them)
//!   are left alone, so placement over a prepared graph adds nothing.
//!
//! Scheme overrides select units (or graph inputs) by name, by kind, or first/last of a
//! kind; `skip` leaves a unit in float (no weight or output site). An activation site
//! added only because a quantized layer reads a float value (the output of a skipped
//! layer) uses the scheme's activations spec.
//!
//! Needs an acyclic graph. Integer ops other than `quantize`/`dequantize` and backward or
//! optimizer ops are ignored here (they compute no float activation); the passes that need
//! a pure forward graph refuse them themselves.

use std::collections::{HashMap, HashSet};

use qir::{Dim, ElemType, Graph, Node, NodeId, NodeKind, Op, OpClass};

use crate::pass::PassError;
use crate::scheme::{LayerKind, QuantSpec, Scheme, Selector};

/// The error for a graph with a cycle (through the nodes `c`).
pub fn cycle_error(c: &[NodeId]) -> PassError {
    match c.first() {
        Some(&n) => PassError::at(n, "the graph has a cycle"),
        None => PassError::new("the graph has a cycle"),
    }
}

/// One value to quantize.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// The quantized value.
    pub value: NodeId,
    /// How it is quantized.
    pub spec: QuantSpec,
    /// Per-channel axis (weights only).
    pub axis: Option<usize>,
    /// A weight (not an activation).
    pub weight: bool,
}

/// What an op does for placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not an activation computation (weight-side, integer, loss side, bookkeeping).
    Ignore,
    /// conv2d, linear, matmul: quantized inputs and weight; starts a chain.
    Layer,
    /// add of two activations: starts a chain a relu may end.
    AddActs,
    /// add/sub/mul/div of one activation and one weight-side value.
    Affine,
    /// batch_norm (train or eval form).
    BatchNorm,
    /// relu, relu6.
    Act,
    /// Keeps the quantization grid of its input.
    GridPreserving,
    /// concat.
    Concat,
    /// Any other op computing a new activation.
    Other,
    /// A value already on a grid: a fake-quant, or a dequantized integer value.
    OnGrid,
}

/// What a chain value may be followed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Next {
    affine: bool,
    batch_norm: bool,
    act: bool,
}

const AFTER_LAYER: Next = Next {
    affine: true,
    batch_norm: true,
    act: true,
};
const ONLY_ACT: Next = Next {
    affine: false,
    batch_norm: false,
    act: true,
};

const END: Next = Next {
    affine: false,
    batch_norm: false,
    act: false,
};

/// The chains being built: units, chain-internal values and what may follow each chain
/// value.
struct Chains<'a, 'g> {
    a: &'a Analysis<'g>,
    units: &'a mut Vec<Unit>,
    internal: &'a mut HashSet<NodeId>,
    link: &'a mut HashMap<NodeId, (usize, Next)>,
}

impl Chains<'_, '_> {
    /// Makes `id` the new last value of the chain ending at its operand `o`, if that chain
    /// allows it (`want`) and `o` has no other use; `then` says what may follow `id`.
    fn join(&mut self, o: NodeId, id: NodeId, want: fn(Next) -> bool, then: Next) -> bool {
        let Some(&(u, next)) = self.link.get(&o) else {
            return false;
        };
        if !want(next) || !self.a.single_use(o) {
            return false;
        }
        self.internal.insert(o);
        let unit = &mut self.units[u];
        unit.members.push(id);
        unit.output = id;
        self.link.insert(id, (u, then));
        true
    }
}

/// A quantization unit: a graph input, or a chain of ops whose last value is quantized.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    /// The first op of the chain (or the graph input).
    pub head: NodeId,
    /// The head's op (`None` for a graph input).
    pub op: Option<Op>,
    /// A depthwise conv2d head.
    pub depthwise: bool,
    /// The chain in order, head first.
    pub members: Vec<NodeId>,
    /// The last value of the chain: the one that is quantized.
    pub output: NodeId,
    /// Operands of the head that must arrive quantized (layers and adds).
    pub act_operands: Vec<NodeId>,
    /// Weight operands and their per-channel axis.
    pub weights: Vec<(NodeId, Option<usize>)>,
    /// Left in float by a scheme override.
    pub skip: bool,
    /// The weights spec after overrides.
    pub wspec: QuantSpec,
    /// The activations spec after overrides.
    pub aspec: QuantSpec,
}

impl Unit {
    /// A conv2d, linear or matmul chain.
    pub fn is_layer(&self) -> bool {
        matches!(self.op, Some(Op::Conv2d | Op::Linear | Op::Matmul))
    }
    fn matches(&self, kind: LayerKind) -> bool {
        match kind {
            LayerKind::Op(op) => self.op == Some(op),
            LayerKind::DepthwiseConv2d => self.depthwise,
            LayerKind::Layer => self.is_layer(),
            LayerKind::Input => self.op.is_none(),
        }
    }
    /// The names an override's `node` selector can use.
    fn names<'g>(&self, g: &'g Graph) -> Vec<&'g str> {
        self.members
            .iter()
            .chain(self.weights.iter().map(|(w, _)| w))
            .filter_map(|&id| g.node(id).name.as_deref())
            .collect()
    }
}

/// The facts placement is decided from: topological order, which values carry data,
/// which the model needs, and which only the loss needs.
pub struct Analysis<'g> {
    g: &'g Graph,
    order: Vec<NodeId>,
    /// Values depending on a graph input.
    data: HashSet<NodeId>,
    /// Values an output or the loss depends on.
    model: HashSet<NodeId>,
    /// Values only the loss needs (not quantized).
    loss_side: HashSet<NodeId>,
}

fn is_f32(n: &Node) -> bool {
    n.ty.elem == ElemType::F32
}

impl<'g> Analysis<'g> {
    /// Analyses `g`; an error only for a cycle.
    pub fn new(g: &'g Graph) -> Result<Analysis<'g>, PassError> {
        let order = g.topo_order().map_err(|c| cycle_error(&c))?;
        let mut data = HashSet::new();
        for &id in &order {
            let n = g.node(id);
            let dep = match &n.kind {
                NodeKind::Input => n.ty.elem.is_float(),
                NodeKind::Op(_) => g.operands(id).iter().any(|o| data.contains(o)),
                NodeKind::Param(_) | NodeKind::State(_) | NodeKind::Const(_) => false,
            };
            if dep {
                data.insert(id);
            }
        }
        let mut model: HashSet<NodeId> = g.outputs().iter().map(|o| o.value).collect();
        model.extend(g.loss());
        for &id in order.iter().rev() {
            if model.contains(&id) {
                model.extend(g.operands(id));
            }
        }
        // The loss side: the loss and the ops whose every use is on the loss side, that
        // are no output and not a layer (a layer's output, the logits, is quantized).
        let mut loss_side = HashSet::new();
        if let Some(l) = g.loss() {
            loss_side.insert(l);
            let outputs: HashSet<NodeId> = g.outputs().iter().map(|o| o.value).collect();
            for &id in order.iter().rev() {
                if id == l || outputs.contains(&id) {
                    continue;
                }
                let users = g.users(id);
                let layer = matches!(g.node(id).op(), Some(Op::Conv2d | Op::Linear | Op::Matmul));
                if !users.is_empty() && !layer && users.iter().all(|(u, _)| loss_side.contains(u)) {
                    loss_side.insert(id);
                }
            }
        }
        Ok(Analysis {
            g,
            order,
            data,
            model,
            loss_side,
        })
    }

    /// The graph analysed.
    pub fn graph(&self) -> &'g Graph {
        self.g
    }

    /// The graph's nodes in topological order.
    pub fn order(&self) -> &[NodeId] {
        &self.order
    }

    /// True if `id` depends on a graph input.
    pub fn is_data(&self, id: NodeId) -> bool {
        self.data.contains(&id)
    }

    /// A value with exactly one use that is not an output, the loss or an update value.
    pub fn single_use(&self, id: NodeId) -> bool {
        self.g.users(id).len() == 1 && !self.g.is_root(id)
    }

    /// A float value computed from the data that the model (not only its loss) needs.
    pub fn activation(&self, id: NodeId) -> bool {
        let n = self.g.node(id);
        is_f32(n)
            && self.data.contains(&id)
            && self.model.contains(&id)
            && !self.loss_side.contains(&id)
    }

    /// What `id` does for placement.
    pub fn role(&self, id: NodeId) -> Role {
        let n = self.g.node(id);
        let Some(inst) = n.inst() else {
            return Role::Ignore;
        };
        if inst.op.is_fake_quant() || inst.op == Op::Dequantize {
            return if self.data.contains(&id) {
                Role::OnGrid
            } else {
                Role::Ignore
            };
        }
        if !self.activation(id) || inst.op.class() != OpClass::Forward {
            return Role::Ignore;
        }
        let ops = self.g.operands(id);
        let data_ops = ops.iter().filter(|o| self.data.contains(o)).count();
        match inst.op {
            Op::Conv2d | Op::Linear | Op::Matmul => Role::Layer,
            Op::Add if data_ops == 2 => Role::AddActs,
            // `c / x` is no affine map of `x`: only `x / c` continues a chain.
            Op::Div if data_ops == 1 && !ops.first().is_some_and(|o| self.data.contains(o)) => {
                Role::Other
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div if data_ops == 1 => Role::Affine,
            Op::BatchNorm | Op::BatchNormTrain
                if ops.first().is_some_and(|o| self.data.contains(o)) && data_ops == 1 =>
            {
                Role::BatchNorm
            }
            Op::Relu | Op::Relu6 => Role::Act,
            Op::MaxPool2d | Op::Reshape | Op::Flatten | Op::Transpose | Op::Slice => {
                Role::GridPreserving
            }
            Op::Concat => Role::Concat,
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::BatchNorm
            | Op::BatchNormTrain
            | Op::AvgPool2d
            | Op::GlobalAvgPool
            | Op::Sigmoid
            | Op::Tanh
            | Op::Gelu
            | Op::Neg
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::ReduceSum
            | Op::ReduceMean
            | Op::Variance
            | Op::Softmax
            | Op::LogSoftmax
            | Op::Ema
            | Op::BroadcastLike
            | Op::SumToLike => Role::Other,
            // Integer results never reach here (they are not f32); listed for exhaustiveness.
            Op::SoftmaxCrossEntropy | Op::Argmax => Role::Ignore,
            Op::FakeQuant
            | Op::FakeQuantLsq
            | Op::ObserveMin
            | Op::ObserveMax
            | Op::QparamsScale
            | Op::QparamsZeroPoint
            | Op::Quantize
            | Op::Dequantize
            | Op::Requantize
            | Op::Qlinear
            | Op::Qconv2d
            | Op::Qadd
            | Op::Qconcat
            | Op::QglobalAvgPool
            | Op::ReluGrad
            | Op::Relu6Grad
            | Op::SigmoidGrad
            | Op::TanhGrad
            | Op::GeluGrad
            | Op::Conv2dGradInput
            | Op::Conv2dGradWeight
            | Op::MaxPool2dGrad
            | Op::AvgPool2dGrad
            | Op::GlobalAvgPoolGrad
            | Op::BatchNormGradInput
            | Op::BatchNormGradGamma
            | Op::BatchNormTrainGradInput
            | Op::BatchNormTrainGradGamma
            | Op::ReduceMeanGrad
            | Op::VarianceGrad
            | Op::SoftmaxGrad
            | Op::LogSoftmaxGrad
            | Op::SoftmaxCrossEntropyGrad
            | Op::FakeQuantGrad
            | Op::FakeQuantLsqGradX
            | Op::FakeQuantLsqGradScale
            | Op::FakeQuantLsqGradZeroPoint
            | Op::SgdUpdate
            | Op::SgdMomentum
            | Op::AdamMoment
            | Op::AdamUpdate
            | Op::AllReduce => Role::Ignore,
        }
    }

    /// The fake-quant already reading `id` as its quantized input, if any.
    pub fn existing_fake_quant(&self, id: NodeId) -> Option<NodeId> {
        self.g
            .users(id)
            .into_iter()
            .find(|&(u, slot)| slot == 0 && self.g.node(u).op().is_some_and(Op::is_fake_quant))
            .map(|(u, _)| u)
    }

    /// The per-channel axis of a layer's weight operand `slot`.
    fn weight_axis(&self, layer: NodeId, slot: usize) -> usize {
        let Some(inst) = self.g.node(layer).inst() else {
            return 0;
        };
        match (inst.op, slot) {
            (Op::Matmul, 0) => usize::from(inst.boolean("transpose_a") == Some(true)),
            (Op::Matmul, _) => usize::from(inst.boolean("transpose_b") != Some(true)),
            _ => 0,
        }
    }

    fn depthwise(&self, id: NodeId) -> bool {
        let Some(inst) = self.g.node(id).inst() else {
            return false;
        };
        if inst.op != Op::Conv2d {
            return false;
        }
        let groups = inst.int("groups").unwrap_or(1);
        let channels = self
            .g
            .operands(id)
            .first()
            .and_then(|&x| self.g.ty(x).shape.dims().get(1).and_then(Dim::fixed));
        groups > 1 && channels == Some(groups as u64)
    }
}

/// Builds the units of `a` in topological order; returns them and the chain-internal
/// values.
pub fn build_units(a: &Analysis, scheme: &Scheme) -> (Vec<Unit>, HashSet<NodeId>) {
    let g = a.g;
    let mut units: Vec<Unit> = Vec::new();
    let mut internal: HashSet<NodeId> = HashSet::new();
    // For a chain value: its unit and what may follow it.
    let mut link: HashMap<NodeId, (usize, Next)> = HashMap::new();
    let new_unit = |units: &mut Vec<Unit>, id: NodeId, op: Option<Op>| {
        units.push(Unit {
            head: id,
            op,
            depthwise: a.depthwise(id),
            members: vec![id],
            output: id,
            act_operands: Vec::new(),
            weights: Vec::new(),
            skip: false,
            wspec: scheme.weights,
            aspec: scheme.activations,
        });
        units.len() - 1
    };
    for &id in &a.order {
        let n = g.node(id);
        if n.is_input() {
            if a.activation(id) && !g.users(id).is_empty() {
                new_unit(&mut units, id, None);
            }
            continue;
        }
        let Some(inst) = n.inst() else { continue };
        let fused_act = inst.choice("act").is_some_and(|a| a != "none");
        let ops = g.operands(id);
        let mut chains = Chains {
            a,
            units: &mut units,
            internal: &mut internal,
            link: &mut link,
        };
        match a.role(id) {
            Role::Layer => {
                let u = new_unit(chains.units, id, Some(inst.op));
                let wslots: &[usize] = match inst.op {
                    Op::Matmul => &[0, 1],
                    _ => &[1],
                };
                for (slot, &o) in ops.iter().enumerate() {
                    if a.data.contains(&o) {
                        chains.units[u].act_operands.push(o);
                    } else if wslots.contains(&slot) && is_f32(g.node(o)) {
                        let axis = a.weight_axis(id, slot);
                        chains.units[u].weights.push((o, Some(axis)));
                    }
                }
                if !fused_act {
                    chains.link.insert(id, (u, AFTER_LAYER));
                }
            }
            Role::AddActs => {
                let u = new_unit(chains.units, id, Some(inst.op));
                chains.units[u].act_operands = ops.clone();
                if !fused_act {
                    chains.link.insert(id, (u, ONLY_ACT));
                }
            }
            Role::Affine => {
                let then = if fused_act { END } else { AFTER_LAYER };
                let joined = ops
                    .iter()
                    .copied()
                    .find(|o| a.data.contains(o))
                    .is_some_and(|o| chains.join(o, id, |n| n.affine, then));
                if !joined {
                    new_unit(chains.units, id, Some(inst.op));
                }
            }
            Role::BatchNorm => {
                let joined = ops
                    .first()
                    .is_some_and(|&o| chains.join(o, id, |n| n.batch_norm, ONLY_ACT));
                if !joined {
                    let u = new_unit(chains.units, id, Some(inst.op));
                    chains.link.insert(id, (u, ONLY_ACT));
                }
            }
            Role::Act => {
                // Outside a chain a relu keeps its input's grid.
                if let Some(&o) = ops.first() {
                    chains.join(o, id, |n| n.act, END);
                }
            }
            Role::Concat | Role::Other => {
                new_unit(chains.units, id, Some(inst.op));
            }
            Role::GridPreserving | Role::OnGrid | Role::Ignore => {}
        }
    }
    (units, internal)
}

/// Applies the scheme's overrides to `units`; an override naming no node is an error.
pub fn resolve_overrides(g: &Graph, scheme: &Scheme, units: &mut [Unit]) -> Result<(), PassError> {
    for (i, o) in scheme.overrides.iter().enumerate() {
        let selected: Vec<usize> = match &o.selector {
            Selector::Nodes(names) => {
                let hits: Vec<usize> = (0..units.len())
                    .filter(|&u| {
                        units[u]
                            .names(g)
                            .iter()
                            .any(|n| names.iter().any(|w| w == n))
                    })
                    .collect();
                for name in names {
                    if !units.iter().any(|u| u.names(g).contains(&name.as_str())) {
                        return Err(PassError::new(format!(
                            "scheme '{}', override {}: no quantized layer or input is named '{name}' (a layer is named by its op, a batch-norm or relu fused into it, or its weight)",
                            scheme.name,
                            i + 1
                        )));
                    }
                }
                hits
            }
            Selector::Kind(k) => (0..units.len()).filter(|&u| units[u].matches(*k)).collect(),
            Selector::First(k) => (0..units.len())
                .find(|&u| units[u].matches(*k))
                .into_iter()
                .collect(),
            Selector::Last(k) => (0..units.len())
                .rev()
                .find(|&u| units[u].matches(*k))
                .into_iter()
                .collect(),
        };
        for u in selected {
            let unit = &mut units[u];
            unit.skip |= o.skip;
            unit.wspec = o.weights.apply(&unit.wspec);
            unit.aspec = o.activations.apply(&unit.aspec);
        }
    }
    Ok(())
}

/// The units whose output is quantized by a concat they feed (see the module docs).
fn absorbed_by_concat(
    a: &Analysis,
    units: &[Unit],
    out_unit: &HashMap<NodeId, usize>,
) -> HashSet<usize> {
    let mut absorbed = HashSet::new();
    for unit in units {
        if unit.op != Some(Op::Concat) || unit.skip {
            continue;
        }
        for o in a.g.operands(unit.head) {
            let mut cur = o;
            loop {
                if !a.single_use(cur) {
                    break;
                }
                if let Some(&u) = out_unit.get(&cur) {
                    absorbed.insert(u);
                    break;
                }
                if a.role(cur) != Role::GridPreserving {
                    break;
                }
                match a.g.operands(cur).first() {
                    Some(&x) => cur = x,
                    None => break,
                }
            }
        }
    }
    absorbed
}

/// The values to quantize, in topological order of the values.
pub fn plan(g: &Graph, scheme: &Scheme) -> Result<Vec<Site>, PassError> {
    let a = Analysis::new(g)?;
    let (mut units, internal) = build_units(&a, scheme);
    resolve_overrides(g, scheme, &mut units)?;
    let out_unit: HashMap<NodeId, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.output, i))
        .collect();
    let absorbed = absorbed_by_concat(&a, &units, &out_unit);

    // Quantization grid of each value: `Some(key)` when it lies on the grid of the
    // fake-quant identified by `key` (the quantized value or an existing fake-quant node).
    let mut grid: HashMap<NodeId, Option<NodeId>> = HashMap::new();
    let mut sites: Vec<Site> = Vec::new();
    let mut site_of: HashMap<NodeId, usize> = HashMap::new();
    let add_site = |sites: &mut Vec<Site>,
                    site_of: &mut HashMap<NodeId, usize>,
                    site: Site|
     -> Result<(), PassError> {
        if let Some(&i) = site_of.get(&site.value) {
            let old = &sites[i];
            if old.spec != site.spec || old.axis != site.axis {
                return Err(PassError::at(
                    site.value,
                    format!(
                        "{} is shared by layers quantized differently ({} and {})",
                        g.describe(site.value),
                        old.spec,
                        site.spec
                    ),
                ));
            }
            return Ok(());
        }
        site_of.insert(site.value, sites.len());
        sites.push(site);
        Ok(())
    };

    for &id in &a.order {
        if let Some(&u) = out_unit.get(&id) {
            let unit = &units[u];
            if !unit.skip {
                for &o in &unit.act_operands {
                    if grid.get(&o).copied().flatten().is_none() && a.data.contains(&o) {
                        match a.existing_fake_quant(o) {
                            Some(fq) => {
                                grid.insert(o, Some(fq));
                            }
                            None => {
                                add_site(
                                    &mut sites,
                                    &mut site_of,
                                    Site {
                                        value: o,
                                        spec: scheme.activations,
                                        axis: None,
                                        weight: false,
                                    },
                                )?;
                                grid.insert(o, Some(o));
                            }
                        }
                    }
                }
                for &(w, axis) in &unit.weights {
                    let is_fq = g.node(w).op().is_some_and(Op::is_fake_quant);
                    if is_fq || a.existing_fake_quant(w).is_some() {
                        continue;
                    }
                    let axis = if unit.wspec.per_channel { axis } else { None };
                    add_site(
                        &mut sites,
                        &mut site_of,
                        Site {
                            value: w,
                            spec: unit.wspec,
                            axis,
                            weight: true,
                        },
                    )?;
                }
            }
            let same_grid = if unit.op == Some(Op::Concat) {
                let keys: Vec<Option<NodeId>> = g
                    .operands(id)
                    .iter()
                    .map(|o| grid.get(o).copied().flatten())
                    .collect();
                match keys.first() {
                    Some(Some(k)) if keys.iter().all(|x| *x == Some(*k)) => Some(*k),
                    _ => None,
                }
            } else {
                None
            };
            let state = if unit.skip || absorbed.contains(&u) {
                None
            } else if let Some(k) = same_grid {
                Some(k)
            } else if let Some(fq) = a.existing_fake_quant(id) {
                Some(fq)
            } else {
                add_site(
                    &mut sites,
                    &mut site_of,
                    Site {
                        value: id,
                        spec: unit.aspec,
                        axis: None,
                        weight: false,
                    },
                )?;
                Some(id)
            };
            grid.insert(id, state);
            continue;
        }
        if internal.contains(&id) {
            grid.insert(id, None);
            continue;
        }
        let state = match a.role(id) {
            Role::GridPreserving | Role::Act => g
                .operands(id)
                .first()
                .and_then(|o| grid.get(o).copied().flatten()),
            Role::OnGrid => Some(id),
            Role::Layer
            | Role::AddActs
            | Role::Affine
            | Role::BatchNorm
            | Role::Concat
            | Role::Other
            | Role::Ignore => None,
        };
        grid.insert(id, state);
    }
    let pos: HashMap<NodeId, usize> = a.order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    sites.sort_by_key(|s| pos.get(&s.value).copied().unwrap_or(usize::MAX));
    Ok(sites)
}
