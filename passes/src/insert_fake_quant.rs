//! `insert-fake-quant`: prepares a forward graph for quantization-aware training by
//! inserting fake quantization, with its observers, where the integer model will quantize
//! (PyTorch's `prepare_qat`, TF-MOT's `quantize_model`), following a [`Scheme`].
//!
//! A quantized value `%v` becomes (activations per tensor; weights per channel along axis
//! 0 with `[C]` state):
//!
//! ```text
//! state %v.min: f32[] = fill(inf)       // +inf / -inf: nothing observed yet
//! state %v.max: f32[] = fill(-inf)
//! %v.min.new = observe_min(%v, %v.min) {averaging = 0.01}
//! %v.max.new = observe_max(%v, %v.max) {averaging = 0.01}
//! %v.scale = qparams_scale(%v.min.new, %v.max.new) {qmin = -128, qmax = 127}
//! %v.zp = qparams_zero_point(%v.min.new, %v.max.new) {qmin = -128, qmax = 127}
//! %v.fq = fake_quant(%v, %v.scale, %v.zp) {qmin = -128, qmax = 127}
//! update %v.min = %v.min.new
//! update %v.max = %v.max.new
//! ```
//!
//! and every use of `%v` (op operands and outputs) reads `%v.fq`. In the interpreter's eval
//! mode the observers return their state, so the same graph trains and evaluates. With a
//! learned scheme (LSQ) the value instead becomes `fake_quant_lsq(%v, %v.scale, %v.zp)`
//! with `%v.scale` a param (and `%v.zp` a param for LSQ+, a constant otherwise); see
//! [`crate::scheme::lsq`] for their initial values.
//!
//! Placement (the textbook's and every framework's):
//! - **layers** (`conv2d`, `linear`, `matmul`): the weight operand is fake-quantized with
//!   the weights spec (whatever computes it: a param, or the folded weight of
//!   `fold-batchnorm-qat`); the activation operands must be on a quantization grid (they
//!   get an activation fake-quant if nothing upstream put one). The bias is never
//!   fake-quantized (it becomes int32 with scale `s_in * s_w` at convert).
//! - **fusion chains**: a layer followed by per-channel affine ops with a weight-side
//!   operand (the rescale and bias of simulated batch-norm folding), a `batch_norm`, and a
//!   `relu`/`relu6`; an `add` of two activations followed by a `relu`/`relu6`; the fused
//!   forms (`act = relu`) likewise. A chain continues only through values with exactly one
//!   use that are not graph outputs. Only the chain's last value gets a fake-quant.
//! - **other ops** that compute new values (pooling by averaging, sigmoid, softmax, a
//!   standalone batch-norm, ...) get a fake-quant on their output.
//! - **grid-preserving ops** (`max_pool2d`, `reshape`, `flatten`, `transpose`, `slice`,
//!   and `relu`/`relu6` outside a chain) keep their input's grid: no second fake-quant.
//! - **concat**: one fake-quant on the output, one parameter set for all inputs. An input
//!   whose only use is the concat (directly or through grid-preserving single-use ops)
//!   gets no fake-quant of its own — its values are quantized with the concat's
//!   parameters, which is what the integer concat needs. A concat whose inputs all lie on
//!   the same grid gets no fake-quant.
//! - **graph inputs**: float inputs used by the model get an activation fake-quant;
//!   integer inputs (labels) do not. **The loss** and the ops that only feed it are not
//!   quantized; the logits (the last layer's output) are.
//! - Values already fake-quantized (a `fake_quant` reads them) are left alone, so the pass
//!   is idempotent.
//!
//! Scheme overrides select layers (units as above, or graph inputs) by name, by kind, or
//! first/last of a kind; `skip` leaves a unit in float (no weight or output fake-quant).
//! An activation fake-quant added only because a quantized layer reads a float value
//! (the output of a skipped layer) uses the scheme's activations spec.
//!
//! Needs a verified forward graph (no backward, optimizer or integer ops). Keeps every
//! declaration, name and comment; adds states, params, consts, ops and updates with fresh
//! names derived from the quantized value's name (`%fc1.w.scale`).

use std::collections::{HashMap, HashSet};

use qir::{Attr, Graph, Init, Inst, Node, NodeId, NodeKind, Op, OpClass, Type};
use qir::{Dim, ElemType, Shape};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;
use crate::scheme::{LayerKind, Learned, QuantSpec, Scheme, Selector, lsq};

/// The `insert-fake-quant` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertFakeQuant {
    /// The scheme to follow.
    pub scheme: Scheme,
    /// The `scheme` option as written (a preset name or a file path), for printing.
    pub source: String,
}

impl InsertFakeQuant {
    /// The pass with a scheme built in code (printed as its name).
    pub fn new(scheme: Scheme) -> InsertFakeQuant {
        InsertFakeQuant {
            source: scheme.name.clone(),
            scheme,
        }
    }
}

impl Default for InsertFakeQuant {
    /// The `tflite-int8` scheme.
    fn default() -> InsertFakeQuant {
        match Scheme::preset(DEFAULT_SCHEME) {
            Ok(s) => InsertFakeQuant::new(s),
            // The presets are static data and tested; this arm is unreachable.
            Err(e) => panic!("{e}"),
        }
    }
}

/// The default `scheme` option.
pub const DEFAULT_SCHEME: &str = "tflite-int8";

/// The `scheme` option shared by the QAT passes.
pub const SCHEME_OPTION: OptionSpec = OptionSpec {
    name: "scheme",
    kind: OptionKind::Str,
    default: DEFAULT_SCHEME,
    doc: "a scheme preset (tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq) or the path of a .toml scheme file",
};

/// Loads the `scheme` option of `pass` from `options`.
pub(crate) fn scheme_option(
    pass: &'static str,
    options: &Options,
) -> Result<(Scheme, String), OptionError> {
    let source = options.string("scheme")?;
    let scheme = Scheme::load(&source).map_err(|e| OptionError::Invalid {
        pass: pass.to_string(),
        option: "scheme".to_string(),
        message: e.to_string(),
    })?;
    Ok((scheme, source))
}

impl Pass for InsertFakeQuant {
    fn name(&self) -> &'static str {
        "insert-fake-quant"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("scheme", OptValue::Scalar(self.source.clone()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        insert_fake_quant(g, &self.scheme)
    }
}

impl PassDef for InsertFakeQuant {
    const INFO: PassInfo = PassInfo {
        name: "insert-fake-quant",
        summary: "insert fake quantization and observers on layer inputs, weights and activation outputs, following a scheme",
        options: &[SCHEME_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        let (scheme, source) = scheme_option("insert-fake-quant", options)?;
        Ok(InsertFakeQuant { scheme, source })
    }
}

/// Inserts fake quantization into `g` following `scheme` (see the module docs). On error
/// `g` is unchanged.
pub fn insert_fake_quant(g: &mut Graph, scheme: &Scheme) -> Result<Changed, PassError> {
    scheme
        .validate()
        .map_err(|e| PassError::new(format!("scheme '{}': {e}", scheme.name)))?;
    let plan = plan(g, scheme)?;
    if plan.is_empty() {
        return Ok(Changed::No);
    }
    let mut work = g.clone();
    for site in &plan {
        emit(&mut work, site)?;
    }
    *g = work;
    Ok(Changed::Yes)
}

/// The error for a graph with a cycle (through the nodes `c`).
pub(crate) fn cycle_error(c: &[NodeId]) -> PassError {
    match c.first() {
        Some(&n) => PassError::at(n, "the graph has a cycle"),
        None => PassError::new("the graph has a cycle"),
    }
}

/// One value to fake-quantize.
#[derive(Clone, Debug)]
struct Site {
    value: NodeId,
    spec: QuantSpec,
    /// Per-channel axis (weights only).
    axis: Option<usize>,
    weight: bool,
}

/// What an op does for placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
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
    /// A fake-quant already in the graph.
    FakeQuant,
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
#[derive(Clone, Debug)]
struct Unit {
    head: NodeId,
    /// The head's op (`None` for a graph input).
    op: Option<Op>,
    depthwise: bool,
    members: Vec<NodeId>,
    output: NodeId,
    /// Operands of the head that must arrive quantized (layers and adds).
    act_operands: Vec<NodeId>,
    /// Weight operands and their per-channel axis.
    weights: Vec<(NodeId, Option<usize>)>,
    skip: bool,
    wspec: QuantSpec,
    aspec: QuantSpec,
}

impl Unit {
    fn is_layer(&self) -> bool {
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

struct Analysis<'g> {
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
    fn new(g: &'g Graph) -> Result<Analysis<'g>, PassError> {
        let order = g
            .topo_order()
            .map_err(|c| cycle_error(&c))?;
        for &id in &order {
            if let Some(op) = g.node(id).op() {
                match op.class() {
                    OpClass::Forward | OpClass::FakeQuant | OpClass::Observer => {}
                    OpClass::Integer | OpClass::Backward | OpClass::Optimizer => {
                        return Err(PassError::at(
                            id,
                            format!(
                                "insert-fake-quant prepares forward graphs, found the {} op '{op}'",
                                op.class().name()
                            ),
                        ));
                    }
                }
            }
        }
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
                let layer = matches!(
                    g.node(id).op(),
                    Some(Op::Conv2d | Op::Linear | Op::Matmul)
                );
                if !users.is_empty()
                    && !layer
                    && users.iter().all(|(u, _)| loss_side.contains(u))
                {
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

    /// A value with exactly one use that is not an output, the loss or an update value.
    fn single_use(&self, id: NodeId) -> bool {
        self.g.users(id).len() == 1 && !self.g.is_root(id)
    }

    fn activation(&self, id: NodeId) -> bool {
        let n = self.g.node(id);
        is_f32(n)
            && self.data.contains(&id)
            && self.model.contains(&id)
            && !self.loss_side.contains(&id)
    }

    fn role(&self, id: NodeId) -> Role {
        let n = self.g.node(id);
        let Some(inst) = n.inst() else {
            return Role::Ignore;
        };
        if inst.op.is_fake_quant() {
            return if self.data.contains(&id) {
                Role::FakeQuant
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
            | Op::AdamUpdate => Role::Ignore,
        }
    }

    /// The fake-quant already reading `id` as its quantized input, if any.
    fn existing_fake_quant(&self, id: NodeId) -> Option<NodeId> {
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
fn build_units(a: &Analysis, scheme: &Scheme) -> (Vec<Unit>, HashSet<NodeId>) {
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
            Role::GridPreserving | Role::FakeQuant | Role::Ignore => {}
        }
    }
    (units, internal)
}

/// Applies the scheme's overrides to `units`; an override naming no node is an error.
fn resolve_overrides(g: &Graph, scheme: &Scheme, units: &mut [Unit]) -> Result<(), PassError> {
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
            Selector::First(k) => (0..units.len()).find(|&u| units[u].matches(*k)).into_iter().collect(),
            Selector::Last(k) => (0..units.len()).rev().find(|&u| units[u].matches(*k)).into_iter().collect(),
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
fn absorbed_by_concat(a: &Analysis, units: &[Unit], out_unit: &HashMap<NodeId, usize>) -> HashSet<usize> {
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

/// The values to fake-quantize, in topological order of the values.
fn plan(g: &Graph, scheme: &Scheme) -> Result<Vec<Site>, PassError> {
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
            Role::FakeQuant => Some(id),
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

/// A base name `b` such that `b.min`, `b.max`, `b.min.new`, `b.max.new`, `b.scale`,
/// `b.zp` and `b.fq` are all free.
fn site_base(g: &Graph, name: &str) -> String {
    let free = |b: &str| {
        ["min", "max", "min.new", "max.new", "scale", "zp", "fq"]
            .iter()
            .all(|s| g.find(&format!("{b}.{s}")).is_none())
    };
    if free(name) {
        return name.to_string();
    }
    (1..)
        .map(|i| format!("{name}.{i}"))
        .find(|b| free(b))
        .unwrap_or_default()
}

fn attr(inst: Inst, name: &str, value: Attr) -> Result<Inst, PassError> {
    inst.with(name, value)
        .map_err(|e| PassError::new(format!("internal error: {e}")))
}

/// The initializer of a learned weight scale (see [`crate::scheme::lsq`]).
fn weight_scale_init(g: &Graph, w: NodeId, axis: Option<usize>, qmax: i64) -> Init {
    let mut cur = w;
    // Look through the folding of `fold-batchnorm-qat` (`mul(w, factor)`, factor ≈ 1 at
    // initialization) to the param.
    for _ in 0..4 {
        if g.node(cur).is_param() {
            break;
        }
        match (g.node(cur).op(), g.operands(cur).first()) {
            (Some(Op::Mul), Some(&x)) => cur = x,
            _ => break,
        }
    }
    let n = g.node(cur);
    let shape: Vec<usize> = n
        .ty
        .shape
        .as_fixed()
        .unwrap_or_default()
        .into_iter()
        .map(|d| d as usize)
        .collect();
    if let Some(init) = n.init().filter(|_| n.is_param()) {
        if axis == Some(0)
            && let Some(per) = lsq::dense_channel_mean_abs(init, &shape)
        {
            return Init::Dense(
                per.into_iter()
                    .map(|m| lsq::scale_from_mean_abs(m, qmax))
                    .collect(),
            );
        }
        if let Some(m) = lsq::expected_mean_abs(init, &shape) {
            return Init::Fill(lsq::scale_from_mean_abs(m, qmax));
        }
    }
    // A typical weight magnitude; `lsq::initialize` replaces it from the data.
    Init::Fill(lsq::scale_from_mean_abs(0.05, qmax))
}

/// Emits the observer and fake-quant nodes of one site and reroutes the uses of its value.
fn emit(g: &mut Graph, site: &Site) -> Result<(), PassError> {
    let v = site.value;
    let base_name = match &g.node(v).name {
        Some(n) => n.clone(),
        None => g
            .node(v)
            .op()
            .map(|op| op.mnemonic().to_string())
            .unwrap_or_else(|| "v".to_string()),
    };
    let base = site_base(g, &base_name);
    let spec = site.spec;
    let (qmin, qmax) = (spec.qmin(), spec.qmax());
    let param_shape = match site.axis {
        Some(ax) => {
            let d = g
                .ty(v)
                .shape
                .dims()
                .get(ax)
                .and_then(Dim::fixed)
                .ok_or_else(|| {
                    PassError::at(
                        v,
                        format!(
                            "per-channel quantization needs a fixed dimension {ax} in {}",
                            g.ty(v)
                        ),
                    )
                })?;
            Shape::fixed(&[d])
        }
        None => Shape::scalar(),
    };
    let pty = Type::new(ElemType::F32, param_shape);
    let mut created: Vec<NodeId> = Vec::new();
    let fq = match spec.learned {
        Learned::No => {
            let mn = g.add_state(&format!("{base}.min"), pty.clone(), Init::Fill(f64::INFINITY))?;
            let mx = g.add_state(
                &format!("{base}.max"),
                pty.clone(),
                Init::Fill(f64::NEG_INFINITY),
            )?;
            let mut observe = |op: Op, state: NodeId, suffix: &str| -> Result<NodeId, PassError> {
                let mut inst = Inst::new(op);
                if let Some(ax) = site.axis {
                    inst = attr(inst, "axis", Attr::Int(ax as i64))?;
                }
                if let Some(c) = spec.observer.averaging() {
                    inst = attr(inst, "averaging", Attr::Float(c))?;
                }
                Ok(g.add_op(inst, &[v, state], Some(&format!("{base}.{suffix}")))?)
            };
            let mn_new = observe(Op::ObserveMin, mn, "min.new")?;
            let mx_new = observe(Op::ObserveMax, mx, "max.new")?;
            let qparams = |op: Op| -> Result<Inst, PassError> {
                let mut inst = attr(Inst::new(op), "qmin", Attr::Int(qmin))?;
                inst = attr(inst, "qmax", Attr::Int(qmax))?;
                inst = attr(inst, "symmetric", Attr::Bool(spec.symmetric))?;
                attr(inst, "power_of_two", Attr::Bool(spec.power_of_two))
            };
            let scale = g.add_op(
                qparams(Op::QparamsScale)?,
                &[mn_new, mx_new],
                Some(&format!("{base}.scale")),
            )?;
            let zp = g.add_op(
                qparams(Op::QparamsZeroPoint)?,
                &[mn_new, mx_new],
                Some(&format!("{base}.zp")),
            )?;
            let mut inst = attr(Inst::new(Op::FakeQuant), "qmin", Attr::Int(qmin))?;
            inst = attr(inst, "qmax", Attr::Int(qmax))?;
            if let Some(ax) = site.axis {
                inst = attr(inst, "axis", Attr::Int(ax as i64))?;
            }
            let fq = g.add_op(inst, &[v, scale, zp], Some(&format!("{base}.fq")))?;
            g.add_update(mn, mn_new);
            g.add_update(mx, mx_new);
            created.extend([mn_new, mx_new, fq]);
            fq
        }
        Learned::Lsq | Learned::LsqPlus => {
            let init = if site.weight {
                weight_scale_init(g, v, site.axis, qmax)
            } else {
                Init::Fill(lsq::scale_from_mean_abs(1.0, qmax))
            };
            let scale = g.add_param(&format!("{base}.scale"), pty.clone(), init)?;
            let learn_zp = spec.learned == Learned::LsqPlus;
            let zp = if learn_zp {
                g.add_param(&format!("{base}.zp"), pty.clone(), Init::Zeros)?
            } else {
                // The zero point of a symmetric grid: 0 when signed, the midpoint when not.
                let z = if qmin < 0 { 0 } else { (qmin + qmax + 1) / 2 };
                let init = if z == 0 {
                    Init::Zeros
                } else {
                    Init::Fill(z as f64)
                };
                g.add_const(&format!("{base}.zp"), pty.clone(), init)?
            };
            let mut inst = attr(Inst::new(Op::FakeQuantLsq), "qmin", Attr::Int(qmin))?;
            inst = attr(inst, "qmax", Attr::Int(qmax))?;
            if let Some(ax) = site.axis {
                inst = attr(inst, "axis", Attr::Int(ax as i64))?;
            }
            inst = attr(inst, "learn_zero_point", Attr::Bool(learn_zp))?;
            let fq = g.add_op(inst, &[v, scale, zp], Some(&format!("{base}.fq")))?;
            created.push(fq);
            fq
        }
    };
    for (user, slot) in g.users(v) {
        if !created.contains(&user) {
            g.set_operand(user, slot, fq);
        }
    }
    for o in g.outputs_mut() {
        if o.value == v {
            o.value = fq;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(src: &str, scheme: &str) -> String {
        let mut g = qir_reader::parse_and_verify(src).unwrap();
        let s = Scheme::preset(scheme).unwrap();
        insert_fake_quant(&mut g, &s).unwrap();
        qir::verify::verify(&g).unwrap();
        qir::print::print(&g)
    }

    #[test]
    fn the_observed_form_of_an_activation() {
        let text = prepare(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = lecun_uniform
  %h = linear(%x, %w) : f32[B, 3]
  output h = %h
}",
            "tflite-int8",
        );
        for line in [
            "state %x.min: f32[] = fill(inf)",
            "state %x.max: f32[] = fill(-inf)",
            "state %w.min: f32[3] = fill(inf)",
            "%x.min.new = observe_min(%x, %x.min) {averaging = 0.01} : f32[]",
            "%x.scale = qparams_scale(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : f32[]",
            "%x.zp = qparams_zero_point(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : i32[]",
            "%x.fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 4]",
            "%w.min.new = observe_min(%w, %w.min) {axis = 0, averaging = 1.0} : f32[3]",
            "%w.scale = qparams_scale(%w.min.new, %w.max.new) {qmin = -127, qmax = 127, symmetric = true} : f32[3]",
            "%w.fq = fake_quant(%w, %w.scale, %w.zp) {qmin = -127, qmax = 127, axis = 0} : f32[3, 4]",
            "%h = linear(%x.fq, %w.fq) : f32[B, 3]",
            "output h = %h.fq",
            "update %x.min = %x.min.new",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn running_twice_changes_nothing() {
        let mut g = qir_reader::parse_and_verify(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = lecun_uniform
  %h = linear(%x, %w) : f32[B, 3]
  %r = relu(%h) : f32[B, 3]
  output r = %r
}",
        )
        .unwrap();
        let s = Scheme::preset("w4a8").unwrap();
        assert_eq!(insert_fake_quant(&mut g, &s).unwrap(), Changed::Yes);
        let once = qir::print::print(&g);
        assert_eq!(insert_fake_quant(&mut g, &s).unwrap(), Changed::No);
        assert_eq!(qir::print::print(&g), once);
    }

    #[test]
    fn lsq_sites_use_learned_parameters() {
        let text = prepare(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = kaiming_uniform
  %h = linear(%x, %w) : f32[B, 3]
  output h = %h
}",
            "lsq",
        );
        // kaiming_uniform on [3, 4]: E|w| = sqrt(6 / 4) / 2; scale = 2 E|w| / sqrt(127)
        let s = (1.5f64).sqrt() / 127f64.sqrt();
        for line in [
            format!("param %w.scale: f32[3] = fill({})", qir::float::fmt_f32(s as f32)),
            "const %w.zp: f32[3] = zeros".to_string(),
            "param %x.zp: f32[] = zeros".to_string(),
            "%w.fq = fake_quant_lsq(%w, %w.scale, %w.zp) {qmin = -127, qmax = 127, axis = 0} : f32[3, 4]".to_string(),
            "%x.fq = fake_quant_lsq(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127, learn_zero_point = true} : f32[B, 4]".to_string(),
        ] {
            assert!(text.contains(&line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("observe_"), "{text}");
    }

    #[test]
    fn affine_ops_continue_a_chain_but_a_reciprocal_does_not() {
        let text = prepare(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = lecun_uniform
  const %c: f32[3] = [0.5, 2.0, 4.0]
  %h = linear(%x, %w) : f32[B, 3]
  %s = mul(%h, %c) : f32[B, 3]
  %r = relu(%s) : f32[B, 3]
  %v = linear(%x, %w) : f32[B, 3]
  %q = div(%c, %v) : f32[B, 3]
  output r = %r
  output q = %q
}",
            "tflite-int8",
        );
        let fq_of: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix('%'))
            .filter(|l| l.contains("= fake_quant("))
            .filter_map(|l| l.split(" = ").next())
            .collect();
        assert_eq!(fq_of, ["x.fq", "w.fq", "r.fq", "v.fq", "q.fq"], "{text}");
    }

    #[test]
    fn a_scheme_built_in_code_is_validated() {
        let mut g = qir_reader::parse_and_verify(
            "graph @m {\n  input %x: f32[B, 4]\n  %r = relu(%x) : f32[B, 4]\n  output r = %r\n}",
        )
        .unwrap();
        let mut s = Scheme::preset("tflite-int8").unwrap();
        s.weights.bits = 0;
        assert_eq!(s.weights.qmax(), 0, "no overflow on a bad spec");
        let e = insert_fake_quant(&mut g, &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "scheme 'tflite-int8': weights.bits must be in 2..=8, found 0"
        );
        let e = crate::fold_batchnorm_qat::fold_batchnorm_qat(&mut g, &s).unwrap_err();
        assert!(e.to_string().contains("weights.bits"));
    }

    #[test]
    fn backward_graphs_are_refused() {
        let mut g = qir_reader::parse_and_verify(
            "graph @m {
  input %x: f32[B, 4]
  input %dy: f32[B, 4]
  %d = relu_grad(%dy, %x) : f32[B, 4]
  output d = %d
}",
        )
        .unwrap();
        let e = insert_fake_quant(&mut g, &Scheme::preset("tflite-int8").unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "insert-fake-quant prepares forward graphs, found the backward op 'relu_grad'"
        );
    }
}
