//! The in-memory graph: a `petgraph` `StableGraph` whose nodes are declarations (inputs,
//! parameters, state, constants) and single-result ops, and whose edges carry the operand
//! slot they fill. Node indices stay valid when other nodes are removed, so passes and
//! source maps can hold them.
//!
//! Invariants kept by every mutating method here: the incoming edges of an op occupy slots
//! `0..n` exactly once; node names are unique (the name index always agrees with the
//! nodes); outputs, the loss and updates refer to live nodes. Acyclicity and typing are
//! checked by the verifier, not maintained here.

use std::collections::{BTreeSet, HashMap};

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;

use crate::attr::{Attr, Attrs};
use crate::ops::Op;
use crate::shape;
use crate::types::Type;

/// Index of a node; also the handle of the value the node defines.
pub type NodeId = NodeIndex<u32>;

/// A byte range in the source text a node was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    pub start: u32,
    pub end: u32,
}

/// How a parameter, state or constant gets its initial value.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Fill(f64),
    Uniform(f64, f64),
    Normal(f64, f64),
    /// He/Kaiming uniform for ReLU nets: U(-b, b) with b = sqrt(6 / fan_in).
    KaimingUniform,
    /// He/Kaiming normal: N(0, 2 / fan_in).
    KaimingNormal,
    /// Glorot uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out)).
    XavierUniform,
    /// Glorot normal: N(0, 2 / (fan_in + fan_out)).
    XavierNormal,
    /// U(-b, b) with b = 1 / sqrt(fan_in) (PyTorch's default for linear and conv layers).
    LecunUniform,
    /// Read from the weights file by the value's name.
    External,
    /// Inline values, row-major; integers are stored exactly.
    Dense(Vec<f64>),
}

impl Init {
    pub const KEYWORDS: [(&'static str, Init); 8] = [
        ("zeros", Init::Zeros),
        ("ones", Init::Ones),
        ("kaiming_uniform", Init::KaimingUniform),
        ("kaiming_normal", Init::KaimingNormal),
        ("xavier_uniform", Init::XavierUniform),
        ("xavier_normal", Init::XavierNormal),
        ("lecun_uniform", Init::LecunUniform),
        ("external", Init::External),
    ];
    /// The initializer named by a bare keyword.
    pub fn from_keyword(s: &str) -> Option<Init> {
        Init::KEYWORDS
            .iter()
            .find(|(k, _)| *k == s)
            .map(|(_, i)| i.clone())
    }
    /// True for initializers drawing random numbers.
    pub fn is_random(&self) -> bool {
        match self {
            Init::Uniform(..)
            | Init::Normal(..)
            | Init::KaimingUniform
            | Init::KaimingNormal
            | Init::XavierUniform
            | Init::XavierNormal
            | Init::LecunUniform => true,
            Init::Zeros | Init::Ones | Init::Fill(_) | Init::External | Init::Dense(_) => false,
        }
    }
}

/// The (fan_in, fan_out) of a weight of this shape: rank 1 `[n]` gives (n, n); rank >= 2
/// `[out, in, k...]` gives (in * prod(k), out * prod(k)) — for a linear weight [out, in]
/// that is (in, out), for a conv weight [O, C/g, KH, KW] (C/g*KH*KW, O*KH*KW), as PyTorch.
pub fn fans(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [] => None,
        [n] => Some((*n, *n)),
        [out, inp, rest @ ..] => {
            let receptive = rest.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
            Some((inp.checked_mul(receptive)?, out.checked_mul(receptive)?))
        }
    }
}

/// What a node is.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A value fed at every run (a batch of data, labels, the learning rate).
    Input,
    /// A trained value.
    Param(Init),
    /// A value carried across runs but not trained (running statistics, observer ranges,
    /// optimizer moments, step counters).
    State(Init),
    /// A fixed value.
    Const(Init),
    /// An op applied to operands (the incoming edges).
    Op(Inst),
}

/// An op with its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Inst {
    pub op: Op,
    pub attrs: Attrs,
}

impl Inst {
    pub fn new(op: Op) -> Inst {
        Inst {
            op,
            attrs: Attrs::empty(op.info().attrs.len()),
        }
    }

    /// Sets an attribute (checked against the op table), builder style.
    pub fn with(mut self, name: &str, value: impl Into<Attr>) -> Result<Inst, String> {
        self.set(name, value.into())?;
        Ok(self)
    }

    /// Sets an attribute; a value equal to the default is stored as absent so that every
    /// attribute set has one stored form.
    pub fn set(&mut self, name: &str, value: Attr) -> Result<(), String> {
        let info = self.op.info();
        let Some(i) = info.attr_index(name) else {
            return Err(unknown_attr(self.op, name));
        };
        let spec = &info.attrs[i];
        let value = spec.coerce(value)?;
        let stored = if spec.default.value().as_ref() == Some(&value) {
            None
        } else {
            Some(value)
        };
        self.attrs.set_slot(i, stored);
        Ok(())
    }

    /// Removes an attribute (it reverts to its default or to absent).
    pub fn unset(&mut self, name: &str) {
        if let Some(i) = self.op.info().attr_index(name) {
            self.attrs.set_slot(i, None);
        }
    }

    /// The value of an attribute: the stored one, else the default; `None` when absent
    /// without default (or not an attribute of this op).
    pub fn get(&self, name: &str) -> Option<Attr> {
        let info = self.op.info();
        let i = info.attr_index(name)?;
        self.attrs
            .slot(i)
            .cloned()
            .or_else(|| info.attrs[i].default.value())
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Attr::Int(v) => Some(v),
            _ => None,
        }
    }
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Attr::Float(v) => Some(v),
            Attr::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Attr::Bool(v) => Some(v),
            _ => None,
        }
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        match self.get(name)? {
            Attr::Ints(v) => Some(v),
            _ => None,
        }
    }
    pub fn floats(&self, name: &str) -> Option<Vec<f64>> {
        match self.get(name)? {
            Attr::Floats(v) => Some(v),
            _ => None,
        }
    }
    pub fn choice(&self, name: &str) -> Option<&'static str> {
        match self.get(name)? {
            Attr::Enum(v) => Some(v),
            _ => None,
        }
    }
    /// The attributes that are stored (written in text), in table order.
    pub fn written_attrs(&self) -> impl Iterator<Item = (&'static str, &Attr)> {
        let info = self.op.info();
        info.attrs
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| self.attrs.slot(i).map(|a| (spec.name, a)))
    }
    /// Names of required attributes that are missing.
    pub fn missing_required(&self) -> Vec<&'static str> {
        let info = self.op.info();
        info.attrs
            .iter()
            .enumerate()
            .filter(|(i, spec)| {
                matches!(spec.default, crate::attr::AttrDefault::Required)
                    && self.attrs.slot(*i).is_none()
            })
            .map(|(_, spec)| spec.name)
            .collect()
    }
}

fn unknown_attr(op: Op, name: &str) -> String {
    let names: Vec<&str> = op.info().attrs.iter().map(|a| a.name).collect();
    if names.is_empty() {
        format!("'{op}' has no attributes, found '{name}'")
    } else {
        format!(
            "'{op}' has no attribute '{name}' (its attributes: {})",
            names.join(", ")
        )
    }
}

impl From<i64> for Attr {
    fn from(v: i64) -> Attr {
        Attr::Int(v)
    }
}
impl From<f64> for Attr {
    fn from(v: f64) -> Attr {
        Attr::Float(v)
    }
}
impl From<bool> for Attr {
    fn from(v: bool) -> Attr {
        Attr::Bool(v)
    }
}
impl From<Vec<i64>> for Attr {
    fn from(v: Vec<i64>) -> Attr {
        Attr::Ints(v)
    }
}
impl From<&[i64]> for Attr {
    fn from(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }
}

/// A node: what it is, its type, optional name and source location, and the comments
/// written before it (kept so that `qatc fmt` loses nothing a user wrote).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// `None` for anonymous values (printed `%0`, `%1`, ... in print order).
    pub name: Option<String>,
    pub kind: NodeKind,
    pub ty: Type,
    pub loc: Option<Loc>,
    pub comments: Vec<String>,
}

impl Node {
    pub fn inst(&self) -> Option<&Inst> {
        match &self.kind {
            NodeKind::Op(i) => Some(i),
            _ => None,
        }
    }
    pub fn op(&self) -> Option<Op> {
        self.inst().map(|i| i.op)
    }
    pub fn is_param(&self) -> bool {
        matches!(self.kind, NodeKind::Param(_))
    }
    pub fn is_state(&self) -> bool {
        matches!(self.kind, NodeKind::State(_))
    }
    pub fn is_input(&self) -> bool {
        matches!(self.kind, NodeKind::Input)
    }
    pub fn is_const(&self) -> bool {
        matches!(self.kind, NodeKind::Const(_))
    }
    pub fn init(&self) -> Option<&Init> {
        match &self.kind {
            NodeKind::Param(i) | NodeKind::State(i) | NodeKind::Const(i) => Some(i),
            NodeKind::Input | NodeKind::Op(_) => None,
        }
    }
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub value: NodeId,
    pub loc: Option<Loc>,
    pub comments: Vec<String>,
}

/// `update %target = %value`: after a run, parameter or state `target` takes `value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub target: NodeId,
    pub value: NodeId,
    pub loc: Option<Loc>,
    pub comments: Vec<String>,
}

/// The designated loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    pub value: NodeId,
    pub loc: Option<Loc>,
    pub comments: Vec<String>,
}

/// A whole model or training step.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    /// Comments before `graph`.
    pub comments: Vec<String>,
    /// Comments before the closing brace.
    pub trailing_comments: Vec<String>,
    pub loc: Option<Loc>,
    g: StableGraph<Node, u32>,
    names: HashMap<String, NodeId>,
    outputs: Vec<Output>,
    loss: Option<Loss>,
    updates: Vec<Update>,
}

/// An error from a graph edit (bad operand, name clash, failed type inference).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EditError(pub String);

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    // ---- nodes --------------------------------------------------------------------------

    /// Adds a node of any kind without operands. Named nodes must have unique names.
    pub fn add_node(&mut self, node: Node) -> Result<NodeId, EditError> {
        if let Some(name) = &node.name
            && self.names.contains_key(name)
        {
            return Err(EditError(format!("value '%{name}' is defined twice")));
        }
        let name = node.name.clone();
        let id = self.g.add_node(node);
        if let Some(name) = name {
            self.names.insert(name, id);
        }
        Ok(id)
    }

    fn decl(&mut self, name: &str, kind: NodeKind, ty: Type) -> Result<NodeId, EditError> {
        self.add_node(Node {
            name: Some(name.to_string()),
            kind,
            ty,
            loc: None,
            comments: Vec::new(),
        })
    }
    pub fn add_input(&mut self, name: &str, ty: Type) -> Result<NodeId, EditError> {
        self.decl(name, NodeKind::Input, ty)
    }
    pub fn add_param(&mut self, name: &str, ty: Type, init: Init) -> Result<NodeId, EditError> {
        self.decl(name, NodeKind::Param(init), ty)
    }
    pub fn add_state(&mut self, name: &str, ty: Type, init: Init) -> Result<NodeId, EditError> {
        self.decl(name, NodeKind::State(init), ty)
    }
    pub fn add_const(&mut self, name: &str, ty: Type, init: Init) -> Result<NodeId, EditError> {
        self.decl(name, NodeKind::Const(init), ty)
    }

    /// Adds an op node with a given result type (no inference; the verifier checks it).
    pub fn add_op_typed(
        &mut self,
        inst: Inst,
        operands: &[NodeId],
        ty: Type,
        name: Option<&str>,
    ) -> Result<NodeId, EditError> {
        for &o in operands {
            if !self.g.contains_node(o) {
                return Err(EditError(format!("operand {} does not exist", o.index())));
            }
        }
        let id = self.add_node(Node {
            name: name.map(str::to_string),
            kind: NodeKind::Op(inst),
            ty,
            loc: None,
            comments: Vec::new(),
        })?;
        for (slot, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, id, slot as u32);
        }
        Ok(id)
    }

    /// Adds an op node whose result type is inferred from its operands.
    pub fn add_op(
        &mut self,
        inst: Inst,
        operands: &[NodeId],
        name: Option<&str>,
    ) -> Result<NodeId, EditError> {
        let tys: Vec<&Type> = operands
            .iter()
            .map(|&o| {
                self.g
                    .node_weight(o)
                    .map(|n| &n.ty)
                    .ok_or_else(|| EditError(format!("operand {} does not exist", o.index())))
            })
            .collect::<Result<_, _>>()?;
        let ty =
            shape::infer(&inst, &tys, None).map_err(|e| EditError(format!("{}: {e}", inst.op)))?;
        self.add_op_typed(inst, operands, ty, name)
    }

    /// Shorthand for [`Graph::add_op`] of an op without attributes.
    pub fn op(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId, EditError> {
        self.add_op(Inst::new(op), operands, None)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }
    /// The node `id`. Panics if it was removed: ids come from this graph.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.g.node_weight(id)
    }
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }
    pub fn ty(&self, id: NodeId) -> &Type {
        &self.g[id].ty
    }
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }
    /// Count of op nodes (declarations excluded).
    pub fn op_count(&self) -> usize {
        self.g.node_weights().filter(|n| n.op().is_some()).count()
    }
    /// All node ids in index order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.g.node_indices().collect()
    }
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// Renames a node (`None` makes it anonymous).
    pub fn rename(&mut self, id: NodeId, name: Option<String>) -> Result<(), EditError> {
        if let Some(n) = &name {
            match self.names.get(n) {
                Some(&other) if other != id => {
                    return Err(EditError(format!("value '%{n}' is defined twice")));
                }
                _ => {}
            }
        }
        if let Some(old) = self.g[id].name.take() {
            self.names.remove(&old);
        }
        if let Some(n) = &name {
            self.names.insert(n.clone(), id);
        }
        self.g[id].name = name;
        Ok(())
    }

    /// A name not yet used in the graph, `base` itself if free, else `base.1`, `base.2`, ...
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.names.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}.{i}"))
            .find(|n| !self.names.contains_key(n))
            .unwrap_or_default()
    }

    /// The operands of `id`, in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut v: Vec<(u32, NodeId)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, n)| n).collect()
    }

    /// The op nodes using `id`, with the slot, sorted; a node using a value twice appears
    /// twice.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u32)> {
        let mut v: Vec<(NodeId, u32)> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        v.sort_unstable();
        v
    }

    /// True if `id` is used by an op, an output, the loss or as the value of an update.
    pub fn is_used(&self, id: NodeId) -> bool {
        self.g
            .edges_directed(id, Direction::Outgoing)
            .next()
            .is_some()
            || self.is_root(id)
    }

    /// True if `id` is an output, the loss, or the new value of an update.
    pub fn is_root(&self, id: NodeId) -> bool {
        self.outputs.iter().any(|o| o.value == id)
            || self.loss.as_ref().is_some_and(|l| l.value == id)
            || self.updates.iter().any(|u| u.value == id)
    }

    /// Replaces operand `slot` of `id` by `new`.
    pub fn set_operand(&mut self, id: NodeId, slot: u32, new: NodeId) {
        let edge = self
            .g
            .edges_directed(id, Direction::Incoming)
            .find(|e| *e.weight() == slot)
            .map(|e| e.id());
        if let Some(e) = edge {
            self.g.remove_edge(e);
        }
        self.g.add_edge(new, id, slot);
    }

    /// Replaces every operand list of an op node, keeping its other data.
    pub fn set_operands(&mut self, id: NodeId, operands: &[NodeId]) {
        let edges: Vec<_> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in edges {
            self.g.remove_edge(e);
        }
        for (slot, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, id, slot as u32);
        }
    }

    /// Makes every use of `old` (operands, outputs, loss, update values) use `new` instead.
    /// Update targets are definitions, not uses, and are kept.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        for (user, slot) in self.users(old) {
            self.set_operand(user, slot, new);
        }
        for o in &mut self.outputs {
            if o.value == old {
                o.value = new;
            }
        }
        if let Some(l) = &mut self.loss
            && l.value == old
        {
            l.value = new;
        }
        for u in &mut self.updates {
            if u.value == old {
                u.value = new;
            }
        }
    }

    /// Removes a node and its edges; outputs, loss and updates mentioning it are dropped.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        let node = self.g.remove_node(id)?;
        if let Some(name) = &node.name {
            self.names.remove(name);
        }
        self.outputs.retain(|o| o.value != id);
        if self.loss.as_ref().is_some_and(|l| l.value == id) {
            self.loss = None;
        }
        self.updates.retain(|u| u.value != id && u.target != id);
        Some(node)
    }

    /// Nodes in a deterministic topological order: Kahn's algorithm that always takes the
    /// smallest ready index, so a graph read from text comes back in text order. `Err`
    /// holds the nodes on or behind a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, Vec<NodeId>> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        let mut ready = BTreeSet::new();
        for id in self.g.node_indices() {
            let d = self.g.edges_directed(id, Direction::Incoming).count();
            indeg.insert(id, d);
            if d == 0 {
                ready.insert(id);
            }
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for e in self.g.edges_directed(id, Direction::Outgoing) {
                let t = e.target();
                let d = indeg.get_mut(&t).expect("node in degree table");
                *d -= 1;
                if *d == 0 {
                    ready.insert(t);
                }
            }
        }
        if order.len() == self.g.node_count() {
            Ok(order)
        } else {
            let done: BTreeSet<NodeId> = order.into_iter().collect();
            Err(self
                .g
                .node_indices()
                .filter(|n| !done.contains(n))
                .collect())
        }
    }

    /// Recomputes the result type of every op node from its operands, in topological
    /// order. Types the op cannot infer (quantized results) keep their written element type
    /// and have their shape checked. Returns every failure.
    pub fn infer_types(&mut self) -> Result<(), Vec<(NodeId, String)>> {
        let order = self
            .topo_order()
            .map_err(|cyc| vec![(cyc[0], "the graph has a cycle".to_string())])?;
        let mut errors = Vec::new();
        let mut failed: BTreeSet<NodeId> = BTreeSet::new();
        for id in order {
            let Some(inst) = self.g[id].inst().cloned() else {
                continue;
            };
            let operands = self.operands(id);
            if operands.iter().any(|o| failed.contains(o)) {
                failed.insert(id);
                continue;
            }
            let tys: Vec<&Type> = operands.iter().map(|&o| &self.g[o].ty).collect();
            let written = self.g[id].ty.clone();
            match shape::infer(&inst, &tys, Some(&written)) {
                Ok(ty) => self.g[id].ty = ty,
                Err(e) => {
                    errors.push((id, e));
                    failed.insert(id);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    // ---- outputs, loss, updates ------------------------------------------------------------

    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }
    pub fn outputs_mut(&mut self) -> &mut Vec<Output> {
        &mut self.outputs
    }
    pub fn add_output(&mut self, name: &str, value: NodeId) {
        self.outputs.push(Output {
            name: name.to_string(),
            value,
            loc: None,
            comments: Vec::new(),
        });
    }
    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.value)
    }
    pub fn loss(&self) -> Option<NodeId> {
        self.loss.as_ref().map(|l| l.value)
    }
    pub fn loss_decl(&self) -> Option<&Loss> {
        self.loss.as_ref()
    }
    pub fn set_loss(&mut self, value: Option<NodeId>) {
        self.loss = value.map(|value| Loss {
            value,
            loc: None,
            comments: Vec::new(),
        });
    }
    pub fn set_loss_decl(&mut self, loss: Option<Loss>) {
        self.loss = loss;
    }
    pub fn updates(&self) -> &[Update] {
        &self.updates
    }
    pub fn updates_mut(&mut self) -> &mut Vec<Update> {
        &mut self.updates
    }
    pub fn add_update(&mut self, target: NodeId, value: NodeId) {
        self.updates.push(Update {
            target,
            value,
            loc: None,
            comments: Vec::new(),
        });
    }
    /// The update of a parameter or state, if any.
    pub fn update_of(&self, target: NodeId) -> Option<NodeId> {
        self.updates
            .iter()
            .find(|u| u.target == target)
            .map(|u| u.value)
    }

    /// Inputs, parameters, states and constants in index order.
    pub fn inputs(&self) -> Vec<NodeId> {
        self.filter(Node::is_input)
    }
    pub fn params(&self) -> Vec<NodeId> {
        self.filter(Node::is_param)
    }
    pub fn states(&self) -> Vec<NodeId> {
        self.filter(Node::is_state)
    }
    pub fn consts(&self) -> Vec<NodeId> {
        self.filter(Node::is_const)
    }
    fn filter(&self, f: impl Fn(&Node) -> bool) -> Vec<NodeId> {
        self.g.node_indices().filter(|&i| f(&self.g[i])).collect()
    }

    /// The underlying petgraph graph (read-only; edges carry operand slots).
    pub fn petgraph(&self) -> &StableGraph<Node, u32> {
        &self.g
    }

    /// Display name of a node for messages: `%name` or `%<index>` for anonymous nodes
    /// (the printer's canonical numbering is only known at print time).
    pub fn describe(&self, id: NodeId) -> String {
        match self.g.node_weight(id) {
            Some(Node { name: Some(n), .. }) => format!("%{n}"),
            Some(n) => match n.op() {
                Some(op) => format!("'{op}' node #{}", id.index()),
                None => format!("node #{}", id.index()),
            },
            None => format!("removed node #{}", id.index()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Dim, ElemType, Shape};

    fn t(dims: &[u64]) -> Type {
        Type::new(ElemType::F32, Shape::fixed(dims))
    }

    #[test]
    fn build_and_replace() {
        let mut g = Graph::new("t");
        let x = g
            .add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()]))
            .unwrap();
        let w = g.add_param("w", t(&[3, 4]), Init::KaimingUniform).unwrap();
        let h = g.add_op(Inst::new(Op::Linear), &[x, w], Some("h")).unwrap();
        assert_eq!(g.ty(h).to_string(), "f32[B, 3]");
        let r = g.op(Op::Relu, &[h]).unwrap();
        g.add_output("y", r);
        let r2 = g.op(Op::Relu, &[h]).unwrap();
        g.replace_all_uses(r, r2);
        assert_eq!(g.outputs()[0].value, r2);
        assert!(!g.is_used(r));
        g.remove_node(r);
        assert_eq!(g.topo_order().unwrap(), vec![x, w, h, r2]);
        assert!(g.add_input("h", t(&[1])).is_err());
        assert_eq!(g.fresh_name("h"), "h.1");
    }

    #[test]
    fn attrs_store_one_form() {
        let i = Inst::new(Op::Conv2d)
            .with("stride", vec![1i64, 1])
            .unwrap()
            .with("groups", 4i64)
            .unwrap();
        assert_eq!(i.written_attrs().count(), 1);
        assert_eq!(i.ints("stride"), Some(vec![1, 1]));
        assert!(Inst::new(Op::Relu).with("x", 1i64).is_err());
        assert!(Inst::new(Op::Conv2d).with("groups", 1.5).is_err());
    }
}
