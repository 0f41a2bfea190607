//! The verifier: every structural and typing rule of the IR, checked on a whole graph.
//! Errors accumulate (one bad node does not hide the next) and each points at the node,
//! output, loss or update it concerns; errors caused only by an already-broken operand are
//! not repeated.
//!
//! Rules: names are identifiers and unique; declarations have fixed shapes (inputs may use
//! symbolic dimensions), parameters are float, initializers fit their type; quantized types
//! are well formed; the graph is acyclic; every op has the operands, attributes and result
//! type the op table and shape inference require; outputs are uniquely named; the loss is
//! a float scalar; updates target parameters or state, once each, with a value of the same
//! type.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use petgraph::Direction;

use crate::graph::{Graph, Init, NodeId, NodeKind};
use crate::ops::OpClass;
use crate::shape;
use crate::types::{ElemType, QuantParams, Type};

/// What an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    Graph,
    Node(NodeId),
    Output(usize),
    Loss,
    Update(usize),
}

/// One verifier error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub site: Site,
    /// The value or item at fault as text (`%h1`, `output logits`), for messages.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.subject, self.message)
        }
    }
}

/// All errors of one verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyErrors {}

/// True for names the printer can write and the reader can read back as a named value:
/// an identifier `[A-Za-z_][A-Za-z0-9_.]*` (purely numeric names are anonymous values).
pub fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

struct Checker<'g> {
    g: &'g Graph,
    errors: Vec<VerifyError>,
}

impl Checker<'_> {
    fn err(&mut self, site: Site, message: impl Into<String>) {
        let subject = match site {
            Site::Graph => String::new(),
            Site::Node(id) => self.g.describe(id),
            Site::Output(i) => format!("output {}", self.g.outputs()[i].name),
            Site::Loss => "loss".into(),
            Site::Update(i) => format!("update of {}", self.g.describe(self.g.updates()[i].target)),
        };
        self.errors.push(VerifyError {
            site,
            subject,
            message: message.into(),
        });
    }
}

/// Verifies `g`; `Err` lists every problem found.
pub fn verify(g: &Graph) -> Result<(), VerifyErrors> {
    let mut c = Checker {
        g,
        errors: Vec::new(),
    };
    if !is_valid_name(&g.name) {
        c.err(
            Site::Graph,
            format!("'{}' is not a valid graph name", g.name),
        );
    }
    let mut bad: BTreeSet<NodeId> = BTreeSet::new();
    for id in g.node_ids() {
        let node = g.node(id);
        if let Some(n) = &node.name
            && !is_valid_name(n)
        {
            c.err(Site::Node(id), format!("'{n}' is not a valid value name"));
        }
        if let Err(e) = check_type(g, &node.ty) {
            c.err(Site::Node(id), e);
            bad.insert(id);
            continue;
        }
        match &node.kind {
            NodeKind::Op(_) => {}
            NodeKind::Input => {}
            NodeKind::Param(init) | NodeKind::State(init) | NodeKind::Const(init) => {
                if let Err(e) = check_decl(&node.kind, init, &node.ty) {
                    c.err(Site::Node(id), e);
                }
            }
        }
        if node.op().is_none()
            && g.petgraph()
                .edges_directed(id, Direction::Incoming)
                .next()
                .is_some()
        {
            c.err(Site::Node(id), "a declaration cannot have operands");
        }
    }
    let order = match g.topo_order() {
        Ok(o) => o,
        Err(cyc) => {
            for id in cyc {
                c.err(Site::Node(id), "is part of a cycle (or depends on one)");
            }
            return Err(VerifyErrors(c.errors));
        }
    };
    for id in order {
        let node = g.node(id);
        let Some(inst) = node.inst() else { continue };
        let mut slots: Vec<u32> = g
            .petgraph()
            .edges_directed(id, Direction::Incoming)
            .map(|e| *e.weight())
            .collect();
        slots.sort_unstable();
        if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
            c.err(
                Site::Node(id),
                "operand slots are not contiguous (internal error)",
            );
            bad.insert(id);
            continue;
        }
        let operands = g.operands(id);
        if operands.iter().any(|o| bad.contains(o)) {
            bad.insert(id);
            continue;
        }
        let tys: Vec<&Type> = operands.iter().map(|&o| g.ty(o)).collect();
        if inst.op.class() == OpClass::FakeQuant
            && let Some(&scale) = operands.get(1)
            && let Some(bad) = constant_nonpositive(g, scale)
        {
            c.err(
                Site::Node(id),
                format!(
                    "'{}' scale {} is the constant {bad}: scales must be positive and finite",
                    inst.op,
                    g.describe(scale)
                ),
            );
        }
        match shape::infer(inst, &tys, Some(&node.ty)) {
            Ok(ty) if ty == node.ty => {}
            Ok(ty) => {
                c.err(
                    Site::Node(id),
                    format!(
                        "'{}' result type is written {} but inferred {ty}",
                        inst.op, node.ty
                    ),
                );
                bad.insert(id);
            }
            Err(e) => {
                c.err(Site::Node(id), format!("'{}' {e}", inst.op));
                bad.insert(id);
            }
        }
    }
    let mut out_names = HashSet::new();
    for (i, o) in g.outputs().iter().enumerate() {
        if !out_names.insert(o.name.as_str()) {
            c.err(Site::Output(i), "is declared twice");
        }
        if !is_valid_name(&o.name) {
            c.err(
                Site::Output(i),
                format!("'{}' is not a valid output name", o.name),
            );
        }
        if !g.contains(o.value) {
            c.err(Site::Output(i), "refers to a removed value");
        }
    }
    if let Some(l) = g.loss() {
        if !g.contains(l) {
            c.err(Site::Loss, "refers to a removed value");
        } else {
            let t = g.ty(l);
            if t.rank() != 0 || !t.elem.is_float() {
                c.err(Site::Loss, format!("must be a float scalar, found {t}"));
            }
        }
    }
    let mut targets = HashSet::new();
    for (i, u) in g.updates().iter().enumerate() {
        if !g.contains(u.target) || !g.contains(u.value) {
            c.err(Site::Update(i), "refers to a removed value");
            continue;
        }
        let t = g.node(u.target);
        if !(t.is_param() || t.is_state()) {
            c.err(
                Site::Update(i),
                "can only update a param or a state value".to_string(),
            );
        }
        if !targets.insert(u.target) {
            c.err(Site::Update(i), "updates the same value twice");
        }
        if g.ty(u.value) != &t.ty {
            c.err(
                Site::Update(i),
                format!(
                    "new value has type {} but the target is {}",
                    g.ty(u.value),
                    t.ty
                ),
            );
        }
    }
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors(c.errors))
    }
}

/// The first value of a constant (`const` declaration) that is not a positive finite
/// scale, if `id` is one.
fn constant_nonpositive(g: &Graph, id: NodeId) -> Option<String> {
    let NodeKind::Const(init) = &g.node(id).kind else {
        return None;
    };
    let bad = |v: f64| !(v.is_finite() && v > 0.0);
    match init {
        Init::Zeros => Some("0".into()),
        Init::Fill(v) if bad(*v) => Some(crate::float::fmt_f64(*v)),
        Init::Dense(vs) => vs
            .iter()
            .find(|v| bad(**v))
            .map(|v| crate::float::fmt_f64(*v)),
        _ => None,
    }
}

fn check_type(g: &Graph, ty: &Type) -> Result<(), String> {
    // symbolic dimensions print as written, so they must read back as identifiers
    for d in &ty.shape.0 {
        if let crate::types::Dim::Sym(s) = d
            && !is_valid_name(s)
        {
            return Err(format!("'{s}' is not a valid dimension name"));
        }
    }
    let Some(q) = ty.elem.quant() else {
        return Ok(());
    };
    q.validate()?;
    if let Some(axis) = q.axis() {
        if axis >= ty.rank() {
            return Err(format!("quantization axis {axis} is out of range for {ty}"));
        }
        let dim = ty.shape.0[axis].fixed();
        let n = match &q.params {
            QuantParams::PerAxis { scales, .. } => Some(scales.len() as u64),
            QuantParams::PerAxisRef {
                scales,
                zero_points,
                ..
            } => {
                let n = check_param_ref(g, scales, true)?;
                if let Some(z) = zero_points {
                    let nz = check_param_ref(g, z, false)?;
                    if nz != n {
                        return Err(format!("%{scales} and %{z} have different lengths"));
                    }
                }
                Some(n)
            }
            QuantParams::PerTensor { .. } => None,
        };
        if let (Some(d), Some(n)) = (dim, n)
            && d != n
        {
            return Err(format!(
                "{n} quantization parameters for dimension {axis} of size {d}"
            ));
        }
    }
    Ok(())
}

fn check_param_ref(g: &Graph, name: &str, scale: bool) -> Result<u64, String> {
    let id = g
        .find(name)
        .ok_or_else(|| format!("quantization parameters refer to unknown value %{name}"))?;
    let n = g.node(id);
    let elem_ok = if scale {
        n.ty.elem == ElemType::F32
    } else {
        matches!(n.ty.elem, ElemType::I32 | ElemType::I64)
    };
    if !n.is_const() || n.ty.rank() != 1 || !elem_ok {
        let want = if scale { "f32" } else { "i32" };
        return Err(format!(
            "quantization parameters %{name} must be a {want} vector constant, found {}",
            n.ty
        ));
    }
    n.ty.shape.0[0]
        .fixed()
        .ok_or_else(|| format!("%{name} must have a fixed size"))
}

fn check_decl(kind: &NodeKind, init: &Init, ty: &Type) -> Result<(), String> {
    let numel = ty
        .shape
        .numel()
        .ok_or_else(|| format!("declarations other than inputs need fixed shapes, found {ty}"))?;
    if matches!(kind, NodeKind::Param(_)) && !ty.elem.is_float() {
        return Err(format!("a param must be f32 or f64, found {ty}"));
    }
    if init.is_random() && !ty.elem.is_float() {
        return Err(format!(
            "a random initializer needs a float type, found {ty}"
        ));
    }
    match init {
        Init::Dense(v) if v.len() as u64 != numel => Err(format!(
            "{} values given for {ty}, which has {numel} elements",
            v.len()
        )),
        Init::Uniform(a, b) if !(a.is_finite() && b.is_finite() && a < b) => {
            Err("uniform bounds must be finite with low < high".to_string())
        }
        Init::Normal(m, s) if !(m.is_finite() && s.is_finite() && *s >= 0.0) => {
            Err("normal needs a finite mean and a non-negative std".into())
        }
        Init::KaimingUniform
        | Init::KaimingNormal
        | Init::XavierUniform
        | Init::XavierNormal
        | Init::LecunUniform
            if ty.rank() < 1 =>
        {
            Err(format!("fan-based initializers need rank >= 1, found {ty}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Inst;
    use crate::ops::Op;
    use crate::types::{Dim, Shape};

    #[test]
    fn accumulates_and_does_not_cascade() {
        let mut g = Graph::new("t");
        let x = g
            .add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()]))
            .unwrap();
        let w = g
            .add_param(
                "w",
                Type::f32(&[3u64.into(), 5u64.into()]),
                Init::Dense(vec![0.0; 2]),
            )
            .unwrap();
        // wrong inner dimension: typed by hand so the graph can hold it
        let h = g
            .add_op_typed(
                Inst::new(Op::Linear),
                &[x, w],
                Type::f32(&[Dim::from("B"), 3u64.into()]),
                Some("h"),
            )
            .unwrap();
        let r = g.op(Op::Relu, &[h]).unwrap();
        g.set_loss(Some(r));
        let errs = verify(&g).unwrap_err().0;
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        assert!(msgs[0].starts_with("%w: 2 values"));
        assert!(msgs[1].starts_with("%h: 'linear' input features"));
        assert!(msgs[2].starts_with("loss: must be a float scalar"));
    }

    #[test]
    fn updates_are_checked() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", Type::f32(&[2u64.into()])).unwrap();
        let s = g
            .add_state(
                "s",
                Type::new(ElemType::F32, Shape::fixed(&[3])),
                Init::Zeros,
            )
            .unwrap();
        g.add_update(x, s);
        g.add_update(s, x);
        let errs = verify(&g).unwrap_err().0;
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "update of %x: can only update a param or a state value",
                "update of %x: new value has type f32[3] but the target is f32[2]",
                "update of %s: new value has type f32[2] but the target is f32[3]",
            ]
        );
    }

    #[test]
    fn names() {
        assert!(is_valid_name("fc1.w"));
        assert!(!is_valid_name("1a"));
        assert!(!is_valid_name(""));
    }
}
