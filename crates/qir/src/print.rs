//! The canonical text form of a graph (what `qatc fmt` writes).
//!
//! Layout: the graph's leading comments, `graph @name {`, then sections separated by one
//! blank line — declarations (inputs, params, state, consts, each group in index order),
//! ops in deterministic topological order, then outputs, loss and updates, then the
//! comments before the closing brace. Attributes print in table order and only when they
//! differ from their default; floats print in their shortest exact form. Anonymous values
//! are numbered `%0, %1, ...` in print order. Printing then reading then printing gives the
//! same text.

use std::collections::HashMap;
use std::fmt::Write;

use crate::float::{fmt_f32, fmt_f64};
use crate::graph::{Graph, Init, Node, NodeId, NodeKind};
use crate::types::{ElemType, Type};

/// Canonical text of `g`.
pub fn print(g: &Graph) -> String {
    Printer::new(g).print(&HashMap::new())
}

/// Canonical text of `g` with notes (verifier errors) shown under the nodes they concern.
pub fn print_annotated(g: &Graph, notes: &[(NodeId, String)]) -> String {
    let mut map: HashMap<NodeId, Vec<String>> = HashMap::new();
    for (id, msg) in notes {
        map.entry(*id).or_default().push(msg.clone());
    }
    Printer::new(g).print(&map)
}

/// The printed name of every node (`name` or the canonical number), without `%`.
pub fn value_names(g: &Graph) -> HashMap<NodeId, String> {
    Printer::new(g).names
}

/// One node's line as it prints in `g`, without indentation (for messages).
pub fn node_line(g: &Graph, id: NodeId) -> String {
    let p = Printer::new(g);
    let mut s = String::new();
    p.node_line(&mut s, id);
    s
}

/// Declarations first (grouped by kind), then ops in topological order. A graph with a
/// cycle prints its remaining nodes in index order so that it can still be shown.
pub fn print_order(g: &Graph) -> Vec<NodeId> {
    let kind_rank = |n: &Node| match n.kind {
        NodeKind::Input => 0,
        NodeKind::Param(_) => 1,
        NodeKind::State(_) => 2,
        NodeKind::Const(_) => 3,
        NodeKind::Op(_) => 4,
    };
    let mut decls: Vec<NodeId> = g
        .node_ids()
        .into_iter()
        .filter(|&i| g.node(i).op().is_none())
        .collect();
    decls.sort_by_key(|&i| (kind_rank(g.node(i)), i));
    let topo = g.topo_order().unwrap_or_else(|_| g.node_ids());
    decls.extend(topo.into_iter().filter(|&i| g.node(i).op().is_some()));
    decls
}

struct Printer<'g> {
    g: &'g Graph,
    order: Vec<NodeId>,
    names: HashMap<NodeId, String>,
}

impl<'g> Printer<'g> {
    fn new(g: &'g Graph) -> Printer<'g> {
        let order = print_order(g);
        let mut names = HashMap::new();
        let mut next = 0usize;
        for &id in &order {
            let name = match &g.node(id).name {
                Some(n) => n.clone(),
                None => {
                    next += 1;
                    (next - 1).to_string()
                }
            };
            names.insert(id, name);
        }
        Printer { g, order, names }
    }

    fn name(&self, id: NodeId) -> String {
        match self.names.get(&id) {
            Some(n) => format!("%{n}"),
            None => format!("%<removed {}>", id.index()),
        }
    }

    fn print(&self, notes: &HashMap<NodeId, Vec<String>>) -> String {
        let g = self.g;
        let mut out = String::new();
        for c in &g.comments {
            let _ = writeln!(out, "//{c}");
        }
        let _ = writeln!(out, "graph @{} {{", g.name);
        let mut sections: Vec<String> = Vec::new();
        let (decls, ops): (Vec<NodeId>, Vec<NodeId>) =
            self.order.iter().partition(|&&i| g.node(i).op().is_none());
        for group in [decls, ops] {
            let mut s = String::new();
            for id in group {
                comments(&mut s, &g.node(id).comments);
                s.push_str("  ");
                self.node_line(&mut s, id);
                s.push('\n');
                if let Some(ns) = notes.get(&id) {
                    for n in ns {
                        let _ = writeln!(s, "//^ error: {n}");
                    }
                }
            }
            sections.push(s);
        }
        let mut tail = String::new();
        for o in g.outputs() {
            comments(&mut tail, &o.comments);
            let _ = writeln!(tail, "  output {} = {}", o.name, self.name(o.value));
        }
        if let Some(l) = g.loss_decl() {
            comments(&mut tail, &l.comments);
            let _ = writeln!(tail, "  loss {}", self.name(l.value));
        }
        for u in g.updates() {
            comments(&mut tail, &u.comments);
            let _ = writeln!(
                tail,
                "  update {} = {}",
                self.name(u.target),
                self.name(u.value)
            );
        }
        sections.push(tail);
        let mut trailing = String::new();
        comments(&mut trailing, &g.trailing_comments);
        sections.push(trailing);
        let body: Vec<String> = sections.into_iter().filter(|s| !s.is_empty()).collect();
        out.push_str(&body.join("\n"));
        out.push_str("}\n");
        out
    }

    fn node_line(&self, s: &mut String, id: NodeId) {
        let g = self.g;
        let node = g.node(id);
        let decl = |s: &mut String, kw: &str| {
            let _ = write!(s, "{kw} {}: {}", self.name(id), node.ty);
        };
        match &node.kind {
            NodeKind::Input => decl(s, "input"),
            NodeKind::Param(init) => {
                decl(s, "param");
                write_init(s, init, &node.ty);
            }
            NodeKind::State(init) => {
                decl(s, "state");
                write_init(s, init, &node.ty);
            }
            NodeKind::Const(init) => {
                decl(s, "const");
                write_init(s, init, &node.ty);
            }
            NodeKind::Op(inst) => {
                let operands: Vec<String> =
                    g.operands(id).into_iter().map(|o| self.name(o)).collect();
                let _ = write!(
                    s,
                    "{} = {}({})",
                    self.name(id),
                    inst.op.mnemonic(),
                    operands.join(", ")
                );
                let attrs: Vec<String> = inst
                    .written_attrs()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect();
                if !attrs.is_empty() {
                    let _ = write!(s, " {{{}}}", attrs.join(", "));
                }
                let _ = write!(s, " : {}", node.ty);
            }
        }
    }
}

fn comments(s: &mut String, cs: &[String]) {
    for c in cs {
        let _ = writeln!(s, "  //{c}");
    }
}

/// A number in the element type's own form: shortest f32/f64 text for floats, integers
/// for everything else.
pub fn fmt_number(v: f64, elem: &ElemType) -> String {
    match elem {
        ElemType::F32 => fmt_f32(v as f32),
        ElemType::F64 => fmt_f64(v),
        _ => format!("{}", v as i64),
    }
}

fn write_init(s: &mut String, init: &Init, ty: &Type) {
    s.push_str(" = ");
    let num = |v: f64| fmt_number(v, &ty.elem);
    let _ = match init {
        Init::Zeros => write!(s, "zeros"),
        Init::Ones => write!(s, "ones"),
        Init::Fill(v) => write!(s, "fill({})", num(*v)),
        Init::Uniform(a, b) => write!(s, "uniform({}, {})", fmt_f64(*a), fmt_f64(*b)),
        Init::Normal(a, b) => write!(s, "normal({}, {})", fmt_f64(*a), fmt_f64(*b)),
        Init::KaimingUniform => write!(s, "kaiming_uniform"),
        Init::KaimingNormal => write!(s, "kaiming_normal"),
        Init::XavierUniform => write!(s, "xavier_uniform"),
        Init::XavierNormal => write!(s, "xavier_normal"),
        Init::LecunUniform => write!(s, "lecun_uniform"),
        Init::External => write!(s, "external"),
        Init::Dense(vs) => {
            let items: Vec<String> = vs.iter().map(|&v| num(v)).collect();
            write!(s, "[{}]", items.join(", "))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Inst;
    use crate::ops::Op;
    use crate::types::Dim;

    #[test]
    fn prints_sections_and_numbers_anonymous_values() {
        let mut g = Graph::new("m");
        g.comments.push(" a model".into());
        let x = g
            .add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()]))
            .unwrap();
        let w = g
            .add_param(
                "w",
                Type::f32(&[2u64.into(), 4u64.into()]),
                Init::LecunUniform,
            )
            .unwrap();
        let c = g
            .add_const(
                "c",
                Type::f32(&[2u64.into()]),
                Init::Dense(vec![0.1f32 as f64, 2.0]),
            )
            .unwrap();
        let h = g.add_op(Inst::new(Op::Linear), &[x, w, c], None).unwrap();
        let r = g.op(Op::Relu, &[h]).unwrap();
        g.add_output("y", r);
        let text = print(&g);
        assert_eq!(
            text,
            "// a model
graph @m {
  input %x: f32[B, 4]
  param %w: f32[2, 4] = lecun_uniform
  const %c: f32[2] = [0.1, 2.0]

  %0 = linear(%x, %w, %c) : f32[B, 2]
  %1 = relu(%0) : f32[B, 2]

  output y = %1
}
"
        );
    }
}
