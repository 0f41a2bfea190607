//! Graphviz rendering of a graph. Declarations are boxes (parameters green, state grey,
//! inputs blue, constants white); ops are ellipses coloured by class, and fake-quant nodes
//! stand out as orange double octagons labelled `FQ`. Edges carry the operand slot when an
//! op has more than one operand.

use std::fmt::Write;

use crate::graph::{Graph, NodeKind};
use crate::ops::OpClass;
use crate::print::{print_order, value_names};

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph in Graphviz `dot` syntax.
pub fn to_dot(g: &Graph) -> String {
    let names = value_names(g);
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", escape(&g.name));
    let _ = writeln!(s, "  rankdir=TB;");
    let _ = writeln!(s, "  node [fontname=\"monospace\", fontsize=10];");
    for id in print_order(g) {
        let node = g.node(id);
        let name = names.get(&id).cloned().unwrap_or_default();
        let ty = node.ty.to_string();
        let (label, style) = match &node.kind {
            NodeKind::Input => (
                format!("input %{name}\\n{ty}"),
                "shape=box, style=filled, fillcolor=\"#cfe2ff\"",
            ),
            NodeKind::Param(_) => (
                format!("param %{name}\\n{ty}"),
                "shape=box, style=filled, fillcolor=\"#d1e7dd\"",
            ),
            NodeKind::State(_) => (
                format!("state %{name}\\n{ty}"),
                "shape=box, style=filled, fillcolor=\"#e2e3e5\"",
            ),
            NodeKind::Const(_) => (format!("const %{name}\\n{ty}"), "shape=box"),
            NodeKind::Op(inst) => {
                let style = match inst.op.class() {
                    OpClass::FakeQuant => {
                        "shape=doubleoctagon, style=\"filled,bold\", fillcolor=\"#fd7e14\", penwidth=2"
                    }
                    OpClass::Observer => "shape=ellipse, style=filled, fillcolor=\"#fff3cd\"",
                    OpClass::Integer => "shape=ellipse, style=filled, fillcolor=\"#9ec5fe\"",
                    OpClass::Backward => "shape=ellipse, style=filled, fillcolor=\"#f8d7da\"",
                    OpClass::Optimizer => "shape=ellipse, style=filled, fillcolor=\"#e0cffc\"",
                    OpClass::Collective => "shape=hexagon, style=filled, fillcolor=\"#d1e7dd\"",
                    OpClass::Forward => "shape=ellipse",
                };
                let tag = if inst.op.is_fake_quant() { "FQ " } else { "" };
                let attrs: Vec<String> = inst
                    .written_attrs()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!("\\n{}", attrs.join(", "))
                };
                (
                    format!("{tag}{}\\n%{name}: {ty}{attrs}", inst.op.mnemonic()),
                    style,
                )
            }
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"{}\", {style}];",
            id.index(),
            escape(&label).replace("\\\\n", "\\n")
        );
    }
    for id in g.node_ids() {
        let ops = g.operands(id);
        let many = ops.len() > 1;
        for (slot, o) in ops.into_iter().enumerate() {
            if many {
                let _ = writeln!(s, "  n{} -> n{} [label=\"{slot}\"];", o.index(), id.index());
            } else {
                let _ = writeln!(s, "  n{} -> n{};", o.index(), id.index());
            }
        }
    }
    for (i, o) in g.outputs().iter().enumerate() {
        let _ = writeln!(
            s,
            "  out{i} [label=\"output {}\", shape=plaintext];\n  n{} -> out{i};",
            escape(&o.name),
            o.value.index()
        );
    }
    if let Some(l) = g.loss() {
        let _ = writeln!(
            s,
            "  loss [label=\"loss\", shape=plaintext];\n  n{} -> loss;",
            l.index()
        );
    }
    for u in g.updates() {
        let _ = writeln!(
            s,
            "  n{} -> n{} [style=dashed, color=\"#6c757d\", label=\"update\", constraint=false];",
            u.value.index(),
            u.target.index()
        );
    }
    s.push_str("}\n");
    s
}
