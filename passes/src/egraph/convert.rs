//! Conversion between a `qir::Graph` and the e-graph: [`to_egraph`] adds every node of the
//! graph (declarations as leaves, ops with their attribute leaves), and [`rebuild`] builds a
//! fresh graph from the e-node chosen for each e-class.
//!
//! Invariants kept by [`rebuild`]: every declaration is copied (name, kind, type, source
//! location, comments) in its original order; ops are emitted in the source graph's print
//! order, so a graph whose extraction chose every original e-node prints exactly as before;
//! an emitted op takes the name, location and comments of the source nodes of its e-class
//! (the first named one gives the name); comments of source ops that vanished move to the
//! next emitted op; outputs, loss and updates keep their names, locations and comments.
//! Ops that are used by nothing are roots too, so no pass built on this drops dead code
//! (that is canonicalize's job).

use std::collections::{HashMap, HashSet};

use egg::Id;
use qir::{Graph, Init, Loss, Node, NodeId, NodeKind, Output, Type, Update, shape};

use super::analysis::{EGraph, LeafInfo, QirAnalysis, uniform_value};
use super::lang::{AttrLeaf, QirLang, has_attr_child};
use crate::pass::PassError;

/// Where the source graph's values live in the e-graph.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    /// The class every node (declaration or op) was added as; not canonical after rewrites.
    pub class_of: HashMap<NodeId, Id>,
    /// The op nodes in print order, each with the e-node it was added as.
    pub ops: Vec<(NodeId, QirLang)>,
    /// Classes of the outputs, the loss, the update values and the unused ops.
    pub roots: Vec<Id>,
}

impl SourceMap {
    /// The source e-nodes, canonical in `egraph`'s current state.
    pub fn canonical_originals(&self, egraph: &EGraph) -> HashSet<QirLang> {
        self.ops.iter().map(|(_, n)| canonical(egraph, n)).collect()
    }
}

/// `enode` with its children replaced by their canonical classes.
pub fn canonical(egraph: &EGraph, enode: &QirLang) -> QirLang {
    let mut n = enode.clone();
    for c in egg::Language::children_mut(&mut n) {
        *c = egraph.find(*c);
    }
    n
}

fn internal(msg: impl Into<String>) -> PassError {
    PassError::new(format!(
        "internal error in the e-graph conversion: {}",
        msg.into()
    ))
}

/// Adds every node of `g` to a new e-graph. Fails on a cyclic graph and on an op whose
/// type the e-graph does not infer as the graph states (the graph must verify).
pub fn to_egraph(g: &Graph) -> Result<(EGraph, SourceMap), PassError> {
    g.topo_order()
        .map_err(|cyc| PassError::at(cyc[0], "the graph has a cycle"))?;
    let mut analysis = QirAnalysis::default();
    for id in g.node_ids() {
        let node = g.node(id);
        let (constant, weight_like) = match &node.kind {
            NodeKind::Input => (None, false),
            NodeKind::Const(init) => (uniform_value(init), true),
            NodeKind::Param(_) | NodeKind::State(_) => (None, true),
            NodeKind::Op(_) => continue,
        };
        analysis.leaves.insert(
            leaf_index(id),
            LeafInfo {
                ty: node.ty.clone(),
                constant,
                weight_like,
            },
        );
    }
    let mut egraph = EGraph::new(analysis);
    let mut map = SourceMap::default();
    for id in qir::print::print_order(g) {
        let node = g.node(id);
        let class = match &node.kind {
            NodeKind::Op(inst) => {
                let op = inst.op;
                let attr = if has_attr_child(op) {
                    let ty = op
                        .result_type_is_written()
                        .then(|| egraph.analysis.types.intern(&node.ty));
                    Some(egraph.add(QirLang::Attrs(AttrLeaf {
                        inst: inst.clone(),
                        ty,
                    })))
                } else {
                    None
                };
                let operands = g
                    .operands(id)
                    .iter()
                    .map(|o| map.class_of.get(o).copied())
                    .collect::<Option<Vec<Id>>>()
                    .ok_or_else(|| PassError::at(id, "an operand is defined after its use"))?;
                let enode = QirLang::op(op, attr, &operands);
                let class = egraph.add(enode.clone());
                match &egraph[class].data.ty {
                    Some(t) if *t == node.ty => {}
                    Some(t) => {
                        return Err(PassError::at(
                            id,
                            format!("'{op}' infers type {t} but the graph says {}", node.ty),
                        ));
                    }
                    None => {
                        return Err(PassError::at(
                            id,
                            format!("'{op}' does not type-check (run the verifier)"),
                        ));
                    }
                }
                map.ops.push((id, enode));
                class
            }
            NodeKind::Input | NodeKind::Param(_) | NodeKind::State(_) | NodeKind::Const(_) => {
                egraph.add(QirLang::Leaf(leaf_index(id)))
            }
        };
        map.class_of.insert(id, class);
    }
    let mut roots = Vec::new();
    let root_nodes = g
        .outputs()
        .iter()
        .map(|o| o.value)
        .chain(g.loss())
        .chain(g.updates().iter().map(|u| u.value))
        .chain(
            map.ops
                .iter()
                .map(|(id, _)| *id)
                .filter(|&id| !g.is_used(id)),
        );
    for id in root_nodes {
        let class = map
            .class_of
            .get(&id)
            .copied()
            .ok_or_else(|| internal(format!("root {} has no class", g.describe(id))))?;
        roots.push(class);
    }
    egraph.analysis.roots = roots.clone();
    map.roots = roots;
    egraph.rebuild();
    Ok((egraph, map))
}

fn leaf_index(id: NodeId) -> u32 {
    id.index() as u32
}

/// Builds a fresh graph from `src` and the e-node `choice` picks for each class (an
/// extraction of `egraph`, which `to_egraph(src)` started). See the module invariants.
pub fn rebuild<'a>(
    src: &Graph,
    map: &SourceMap,
    egraph: &EGraph,
    choice: impl Fn(Id) -> &'a QirLang,
) -> Result<Graph, PassError> {
    let mut b = Builder {
        src,
        egraph,
        out: Graph::new(src.name.clone()),
        leaves: HashMap::new(),
        emitted: HashMap::new(),
        originals: HashMap::new(),
        reserved: HashSet::new(),
        scalars: HashMap::new(),
        pending: Vec::new(),
    };
    b.out.comments = src.comments.clone();
    b.out.loc = src.loc;
    for id in src.node_ids() {
        let node = src.node(id);
        if let Some(n) = &node.name {
            b.reserved.insert(n.clone());
        }
        if node.op().is_none() {
            let new = b.out.add_node(node.clone())?;
            b.leaves.insert(leaf_index(id), new);
        }
    }
    for (id, _) in &map.ops {
        let class = egraph.find(class_of(map, *id)?);
        b.originals.entry(class).or_default().push(*id);
    }
    let needed = needed_ops(egraph, &choice, &map.roots);
    for (id, _) in &map.ops {
        let class = egraph.find(class_of(map, *id)?);
        if needed.contains(&class) {
            b.emit(class, &choice)?;
        } else {
            b.pending.extend(src.node(*id).comments.iter().cloned());
        }
    }
    for o in src.outputs() {
        let value = b.value(class_of(map, o.value)?, &choice)?;
        b.out.outputs_mut().push(Output {
            name: o.name.clone(),
            value,
            loc: o.loc,
            comments: o.comments.clone(),
        });
    }
    if let Some(l) = src.loss_decl() {
        let value = b.value(class_of(map, l.value)?, &choice)?;
        b.out.set_loss_decl(Some(Loss {
            value,
            loc: l.loc,
            comments: l.comments.clone(),
        }));
    }
    for u in src.updates() {
        let value = b.value(class_of(map, u.value)?, &choice)?;
        let target = b
            .leaves
            .get(&leaf_index(u.target))
            .copied()
            .ok_or_else(|| internal("an update target is not a declaration"))?;
        b.out.updates_mut().push(Update {
            target,
            value,
            loc: u.loc,
            comments: u.comments.clone(),
        });
    }
    let mut trailing = std::mem::take(&mut b.pending);
    trailing.extend(src.trailing_comments.iter().cloned());
    b.out.trailing_comments = trailing;
    Ok(b.out)
}

fn class_of(map: &SourceMap, id: NodeId) -> Result<Id, PassError> {
    map.class_of
        .get(&id)
        .copied()
        .ok_or_else(|| internal(format!("node #{} has no class", id.index())))
}

/// The classes reachable from the roots through chosen e-nodes whose chosen e-node is an
/// op (canonical ids).
fn needed_ops<'a>(
    egraph: &EGraph,
    choice: &impl Fn(Id) -> &'a QirLang,
    roots: &[Id],
) -> HashSet<Id> {
    let mut seen = HashSet::new();
    let mut ops = HashSet::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let node = choice(c);
        if matches!(node, QirLang::Op(..)) {
            ops.insert(c);
        }
        stack.extend(
            egg::Language::children(node)
                .iter()
                .map(|&k| egraph.find(k)),
        );
    }
    ops
}

struct Builder<'g> {
    src: &'g Graph,
    egraph: &'g EGraph,
    out: Graph,
    /// Declaration leaves: source node index -> new node.
    leaves: HashMap<u32, NodeId>,
    /// Emitted classes (canonical) -> new node.
    emitted: HashMap<Id, NodeId>,
    /// Canonical class -> its source op nodes, in print order.
    originals: HashMap<Id, Vec<NodeId>>,
    /// Every name of the source graph.
    reserved: HashSet<String>,
    /// Scalar constants created so far, by bits.
    scalars: HashMap<u32, NodeId>,
    /// Comments of vanished source ops, for the next emitted op.
    pending: Vec<String>,
}

impl Builder<'_> {
    /// The new node computing `class`, emitting it if needed.
    fn value<'a>(
        &mut self,
        class: Id,
        choice: &impl Fn(Id) -> &'a QirLang,
    ) -> Result<NodeId, PassError> {
        let class = self.egraph.find(class);
        self.emit(class, choice)?;
        self.emitted
            .get(&class)
            .copied()
            .ok_or_else(|| internal("a value was not emitted"))
    }

    /// Emits `class` and everything it needs, children first (iteratively: graphs can be
    /// deeper than the stack).
    fn emit<'a>(
        &mut self,
        class: Id,
        choice: &impl Fn(Id) -> &'a QirLang,
    ) -> Result<(), PassError> {
        let mut stack = vec![(self.egraph.find(class), false)];
        let mut on_stack = HashSet::new();
        while let Some((c, expanded)) = stack.pop() {
            if self.emitted.contains_key(&c) {
                continue;
            }
            let node = choice(c);
            if !expanded {
                if !on_stack.insert(c) {
                    return Err(internal("the extracted term is cyclic"));
                }
                stack.push((c, true));
                if let Some((_, _, operands)) = node.split() {
                    for &k in operands.iter().rev() {
                        let k = self.egraph.find(k);
                        if !self.emitted.contains_key(&k) {
                            stack.push((k, false));
                        }
                    }
                }
                continue;
            }
            let new = self.create(c, node)?;
            self.emitted.insert(c, new);
        }
        Ok(())
    }

    fn create(&mut self, class: Id, node: &QirLang) -> Result<NodeId, PassError> {
        match node {
            QirLang::Leaf(n) => self
                .leaves
                .get(n)
                .copied()
                .ok_or_else(|| internal(format!("leaf #{n} is not a declaration"))),
            QirLang::Scalar(bits) => self.scalar(*bits),
            QirLang::Attrs(_) => Err(internal("an attribute leaf used as a value")),
            QirLang::Op(..) => {
                let (op, attr, operands) = node
                    .split()
                    .ok_or_else(|| internal("op without its attribute leaf"))?;
                let (inst, written) = match attr {
                    Some(a) => {
                        let leaf = self.egraph[a]
                            .data
                            .attrs
                            .as_ref()
                            .ok_or_else(|| internal(format!("'{op}' lost its attributes")))?;
                        let written = match leaf.ty {
                            Some(t) => Some(
                                self.egraph
                                    .analysis
                                    .types
                                    .get(t)
                                    .ok_or_else(|| internal("unknown interned type"))?
                                    .clone(),
                            ),
                            None => None,
                        };
                        (leaf.inst.clone(), written)
                    }
                    None => (qir::Inst::new(op), None),
                };
                let args = operands
                    .iter()
                    .map(|&k| self.emitted.get(&self.egraph.find(k)).copied())
                    .collect::<Option<Vec<NodeId>>>()
                    .ok_or_else(|| internal(format!("an operand of '{op}' was not emitted")))?;
                let tys: Vec<&Type> = args.iter().map(|&a| self.out.ty(a)).collect();
                let ty = shape::infer(&inst, &tys, written.as_ref())
                    .map_err(|e| internal(format!("rebuilt '{op}' does not type-check: {e}")))?;
                let sources = self.originals.get(&class).cloned().unwrap_or_default();
                let name = sources.iter().find_map(|&s| self.src.node(s).name.clone());
                let loc = sources.iter().find_map(|&s| self.src.node(s).loc);
                let mut comments = std::mem::take(&mut self.pending);
                for &s in &sources {
                    comments.extend(self.src.node(s).comments.iter().cloned());
                }
                let new = self.out.add_op_typed(inst, &args, ty, name.as_deref())?;
                let n = self.out.node_mut(new);
                n.loc = loc;
                n.comments = comments;
                Ok(new)
            }
        }
    }

    /// The `const` declaration of a scalar created by a rule.
    fn scalar(&mut self, bits: u32) -> Result<NodeId, PassError> {
        if let Some(&id) = self.scalars.get(&bits) {
            return Ok(id);
        }
        let name = (0..)
            .map(|i| {
                if i == 0 {
                    "cst".to_string()
                } else {
                    format!("cst.{i}")
                }
            })
            .find(|n| !self.reserved.contains(n) && self.out.find(n).is_none())
            .unwrap_or_default();
        let id = self.out.add_node(Node {
            name: Some(name),
            kind: NodeKind::Const(Init::Dense(vec![f32::from_bits(bits) as f64])),
            ty: Type::scalar(qir::ElemType::F32),
            loc: None,
            comments: Vec::new(),
        })?;
        self.scalars.insert(bits, id);
        Ok(id)
    }
}
