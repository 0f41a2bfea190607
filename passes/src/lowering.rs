//! What the passes of the integer conversion share (`fold-constants`, `quantize-weights`,
//! `fake-quant-to-qdq`, `sink-dequantize`, `lower-layers`, `lower-rescale-ops`):
//!
//! - [`Rebuild`]: a pass walks its input in topological order and builds a new graph, each
//!   node copied or replaced where it stood, so that the result keeps the source's order;
//! - [`relayout`]: the order every such pass leaves — declarations first, then the ops in
//!   the order they were built, each constant (and each op of constants only, such as the
//!   `dequantize` of an integer weight) placed right before its first use, a constant a
//!   per-axis type names (`%w.scales`) right before that type's constant. The passes of the
//!   chain thus print the converted model in one order whichever of them ran;
//! - the f32 values of constants ([`Ct`]) and the per-tensor grid of a quantized type
//!   ([`Grid`]).
//!
//! Errors name the value at fault (`%name: message`).

use std::collections::{HashMap, HashSet};

use qir::quant::Rounding;
use qir::{
    ElemType, Graph, Init, Inst, NodeId, NodeKind, Op, QuantParams, QuantType, Storage, Type,
};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::PassError;

/// An error at `id` whose message starts with the value's name.
pub(crate) fn err(g: &Graph, id: NodeId, msg: impl std::fmt::Display) -> PassError {
    PassError::at(id, format!("{}: {msg}", g.describe(id)))
}

/// The roundings a rescaling op may name.
pub(crate) const ROUNDINGS: &[&str] = &["half_even", "half_away_from_zero"];

/// The `rounding` option of the passes that emit rescaling ops.
pub(crate) const ROUNDING_OPTION: OptionSpec = OptionSpec {
    name: "rounding",
    kind: OptionKind::Choice(ROUNDINGS),
    default: "half_even",
    doc: "rounding of every rescaling op it emits (half_even is fake_quant's)",
};

/// The `rounding` option's value.
pub(crate) fn rounding_option(options: &Options) -> Result<Rounding, OptionError> {
    let r = options.choice("rounding")?;
    Ok(Rounding::from_name(r).unwrap_or(Rounding::HalfEven))
}

/// An f32 constant, row-major.
#[derive(Clone, Debug)]
pub(crate) struct Ct {
    pub shape: Vec<usize>,
    pub v: Vec<f32>,
}

/// The fixed dimensions of a value.
pub(crate) fn dims(g: &Graph, id: NodeId) -> Option<Vec<usize>> {
    g.ty(id)
        .shape
        .as_fixed()
        .map(|v| v.into_iter().map(|d| d as usize).collect())
}

/// The values of an initializer for `shape`, when it is deterministic.
pub(crate) fn values_of_init(init: &Init, shape: &[usize]) -> Option<Vec<f32>> {
    let n: usize = shape.iter().product();
    Some(match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Fill(v) => vec![*v as f32; n],
        Init::Dense(v) if v.len() == n => v.iter().map(|&x| x as f32).collect(),
        Init::Dense(v) if v.len() == 1 => vec![v[0] as f32; n],
        _ => return None,
    })
}

/// The values of `id` if it is a constant with a fixed shape and known values.
pub(crate) fn const_values(g: &Graph, id: NodeId) -> Option<Ct> {
    let NodeKind::Const(init) = &g.node(id).kind else {
        return None;
    };
    let shape = dims(g, id)?;
    let v = values_of_init(init, &shape)?;
    Some(Ct { shape, v })
}

/// Per-channel values of a constant for `channels` channels: a scalar broadcasts, else the
/// constant must hold exactly one value per channel.
pub(crate) fn per_channel(k: &Ct, channels: usize) -> Option<Vec<f64>> {
    match k.v.len() {
        1 => Some(vec![k.v[0] as f64; channels]),
        n if n == channels => Some(k.v.iter().map(|&x| x as f64).collect()),
        _ => None,
    }
}

/// The per-tensor grid of a quantized value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Grid {
    pub storage: Storage,
    pub qmin: i64,
    pub qmax: i64,
    pub scale: f32,
    pub zp: i64,
}

impl Grid {
    /// The grid of a per-tensor quantized type.
    pub fn of(ty: &Type) -> Option<Grid> {
        let q = ty.elem.quant()?;
        match q.params {
            QuantParams::PerTensor { scale, zero_point } => Some(Grid {
                storage: q.storage,
                qmin: q.qmin,
                qmax: q.qmax,
                scale,
                zp: zero_point,
            }),
            _ => None,
        }
    }

    /// The element type of values on this grid.
    pub fn elem(self) -> ElemType {
        ElemType::Quant(Box::new(QuantType::per_tensor(
            self.storage,
            self.qmin,
            self.qmax,
            self.scale,
            self.zp,
        )))
    }
}

/// The 8-bit storage of a range `[qmin, qmax]`.
pub(crate) fn storage_8bit(qmin: i64, qmax: i64) -> Option<Storage> {
    if qmin >= -128 && qmax <= 127 {
        Some(Storage::I8)
    } else if qmin >= 0 && qmax <= 255 {
        Some(Storage::U8)
    } else {
        None
    }
}

/// The operand of `id` if `id` is a `dequantize` op.
pub(crate) fn dequantized(g: &Graph, id: NodeId) -> Option<NodeId> {
    (g.node(id).op() == Some(Op::Dequantize)).then(|| g.operands(id)[0])
}

/// A graph being rebuilt from `src` (see the module docs). Every declaration is copied up
/// front; ops are copied ([`Rebuild::copy`]) or replaced ([`Rebuild::add`],
/// [`Rebuild::set`]) by the pass in topological order.
pub(crate) struct Rebuild<'a> {
    pub src: &'a Graph,
    pub out: Graph,
    map: HashMap<NodeId, NodeId>,
}

impl<'a> Rebuild<'a> {
    pub fn new(src: &'a Graph) -> Result<Rebuild<'a>, PassError> {
        let mut out = Graph::new(src.name.clone());
        out.comments = src.comments.clone();
        out.trailing_comments = src.trailing_comments.clone();
        out.loc = src.loc;
        let mut map = HashMap::new();
        for id in src.node_ids() {
            let node = src.node(id);
            if node.op().is_none() {
                map.insert(id, out.add_node(node.clone())?);
            }
        }
        Ok(Rebuild { src, out, map })
    }

    /// The ops of the source in topological order.
    pub fn ops(&self) -> Result<Vec<NodeId>, PassError> {
        let order = self
            .src
            .topo_order()
            .map_err(|_| PassError::new("the graph has a cycle"))?;
        Ok(order
            .into_iter()
            .filter(|&id| self.src.node(id).op().is_some())
            .collect())
    }

    /// The new node a source node became.
    pub fn get(&self, id: NodeId) -> Result<NodeId, PassError> {
        self.map
            .get(&id)
            .copied()
            .ok_or_else(|| err(self.src, id, "value was not lowered"))
    }

    /// The new node a source node became, if it became one.
    pub fn try_get(&self, id: NodeId) -> Option<NodeId> {
        self.map.get(&id).copied()
    }

    /// Records that source node `id` became `new`.
    pub fn set(&mut self, id: NodeId, new: NodeId) {
        self.map.insert(id, new);
    }

    /// The source name of `id` (`v<index>` for an anonymous value).
    pub fn src_name(&self, id: NodeId) -> String {
        self.src
            .node(id)
            .name
            .clone()
            .unwrap_or_else(|| format!("v{}", id.index()))
    }

    /// Copies source op `id` with its operands mapped, its name (made fresh if a new node
    /// took it), location and comments.
    pub fn copy(&mut self, id: NodeId) -> Result<NodeId, PassError> {
        let node = self.src.node(id);
        let inst = node
            .inst()
            .cloned()
            .ok_or_else(|| err(self.src, id, "is not an op"))?;
        let operands = self
            .src
            .operands(id)
            .into_iter()
            .map(|o| self.get(o))
            .collect::<Result<Vec<_>, _>>()?;
        let name = node.name.as_ref().map(|n| self.out.fresh_name(n));
        let new = self
            .out
            .add_op_typed(inst, &operands, node.ty.clone(), name.as_deref())
            .map_err(|e| err(self.src, id, e.0))?;
        let n = self.out.node_mut(new);
        n.loc = node.loc;
        n.comments = node.comments.clone();
        self.map.insert(id, new);
        Ok(new)
    }

    /// Adds an op named `base` (made fresh); `at` is the source node it stands for, named
    /// by errors.
    pub fn add(
        &mut self,
        at: NodeId,
        inst: Inst,
        operands: &[NodeId],
        ty: Type,
        base: &str,
    ) -> Result<NodeId, PassError> {
        let name = self.out.fresh_name(base);
        self.out
            .add_op_typed(inst, operands, ty, Some(&name))
            .map_err(|e| err(self.src, at, e.0))
    }

    /// An op `op` with attributes, errors at source node `at`.
    pub fn inst(&self, at: NodeId, op: Op, attrs: &[(&str, qir::Attr)]) -> Result<Inst, PassError> {
        let mut inst = Inst::new(op);
        for (k, v) in attrs {
            inst.set(k, v.clone()).map_err(|e| err(self.src, at, e))?;
        }
        Ok(inst)
    }

    /// Adds a constant named `base` (made fresh) with inline values.
    pub fn constant(&mut self, base: &str, ty: Type, v: Vec<f64>) -> Result<NodeId, PassError> {
        let n = self.out.fresh_name(base);
        Ok(self.out.add_const(&n, ty, Init::Dense(v))?)
    }

    /// The dequantized (f32) form of quantized `q`, standing for source value `at`: named
    /// after the output it is, else `<at>.real`.
    pub fn dequantize(&mut self, at: NodeId, q: NodeId) -> Result<NodeId, PassError> {
        let base = match self.src.outputs().iter().find(|o| o.value == at) {
            Some(o) => o.name.clone(),
            None => format!("{}.real", self.src_name(at)),
        };
        let ty = self.src.ty(at).with_elem(ElemType::F32);
        self.add(at, Inst::new(Op::Dequantize), &[q], ty, &base)
    }

    /// The outputs, loss and updates mapped; the result laid out by [`relayout`].
    pub fn finish(mut self) -> Result<Graph, PassError> {
        for o in self.src.outputs() {
            let v = self.get(o.value)?;
            self.out.add_output(&o.name, v);
        }
        if let Some(l) = self.src.loss_decl() {
            let mut l = l.clone();
            l.value = self.get(l.value)?;
            self.out.set_loss_decl(Some(l));
        }
        for u in self.src.updates() {
            let mut u = u.clone();
            u.target = self.get(u.target)?;
            u.value = self.get(u.value)?;
            self.out.updates_mut().push(u);
        }
        output_names(&mut self.out);
        relayout(&self.out)
    }
}

/// A `dequantize` that is an output takes the output's name once no other value holds it
/// (the name a lowered op left free).
fn output_names(g: &mut Graph) {
    let outs: Vec<(String, NodeId)> = g
        .outputs()
        .iter()
        .map(|o| (o.name.clone(), o.value))
        .collect();
    for (name, v) in outs {
        if g.node(v).op() == Some(Op::Dequantize)
            && g.node(v).name.as_deref() != Some(name.as_str())
            && g.find(&name).is_none()
        {
            // the name is free: renaming cannot clash
            let _ = g.rename(v, Some(name));
        }
    }
}

/// `g` with its nodes in the order the module docs describe.
pub(crate) fn relayout(g: &Graph) -> Result<Graph, PassError> {
    let order = g
        .topo_order()
        .map_err(|_| PassError::new("the graph has a cycle"))?;
    // constants and ops of constants only: placed before their first use
    let mut lazy = HashSet::new();
    for &id in &order {
        let node = g.node(id);
        let is_lazy = match &node.kind {
            NodeKind::Const(_) => true,
            NodeKind::Op(_) => {
                let ops = g.operands(id);
                !ops.is_empty() && ops.iter().all(|o| lazy.contains(o))
            }
            _ => false,
        };
        if is_lazy {
            lazy.insert(id);
        }
    }
    let mut l = Layout {
        g,
        out: Graph::new(g.name.clone()),
        map: HashMap::new(),
    };
    l.out.comments = g.comments.clone();
    l.out.trailing_comments = g.trailing_comments.clone();
    l.out.loc = g.loc;
    for id in g.node_ids() {
        if matches!(
            g.node(id).kind,
            NodeKind::Input | NodeKind::Param(_) | NodeKind::State(_)
        ) {
            l.emit(id)?;
        }
    }
    for &id in &order {
        if !lazy.contains(&id) {
            l.emit(id)?;
        }
    }
    for id in g.node_ids() {
        l.emit(id)?;
    }
    let mut out = l.out;
    for o in g.outputs() {
        out.add_output(&o.name, l.map[&o.value]);
    }
    if let Some(loss) = g.loss_decl() {
        let mut loss = loss.clone();
        loss.value = l.map[&loss.value];
        out.set_loss_decl(Some(loss));
    }
    for u in g.updates() {
        let mut u = u.clone();
        u.target = l.map[&u.target];
        u.value = l.map[&u.value];
        out.updates_mut().push(u);
    }
    Ok(out)
}

struct Layout<'a> {
    g: &'a Graph,
    out: Graph,
    map: HashMap<NodeId, NodeId>,
}

impl Layout<'_> {
    fn emit(&mut self, id: NodeId) -> Result<NodeId, PassError> {
        if let Some(&n) = self.map.get(&id) {
            return Ok(n);
        }
        let node = self.g.node(id);
        // the constant a per-axis type names comes first
        if let Some(QuantType {
            params:
                QuantParams::PerAxisRef {
                    scales,
                    zero_points,
                    ..
                },
            ..
        }) = node.ty.elem.quant()
        {
            for name in std::iter::once(scales).chain(zero_points) {
                if let Some(r) = self.g.find(name) {
                    self.emit(r)?;
                }
            }
        }
        let new = match node.inst() {
            None => self.out.add_node(node.clone())?,
            Some(inst) => {
                let mut operands = Vec::new();
                for o in self.g.operands(id) {
                    operands.push(self.emit(o)?);
                }
                let new = self.out.add_op_typed(
                    inst.clone(),
                    &operands,
                    node.ty.clone(),
                    node.name.as_deref(),
                )?;
                let n = self.out.node_mut(new);
                n.loc = node.loc;
                n.comments = node.comments.clone();
                new
            }
        };
        self.map.insert(id, new);
        Ok(new)
    }
}
