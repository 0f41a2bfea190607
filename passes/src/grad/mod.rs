//! The grad pass: turns a forward graph with a `loss` into one training-step graph — the
//! forward ops (batch-norm switched to training mode), the reverse-mode backward ops and
//! the optimizer updates — all as ordinary QIR that prints, diffs and snapshots.
//!
//! Needs: a verified graph with a float scalar `loss`. Keeps: every forward value, output
//! and the loss (ops are only added, batch-norm nodes are switched in place). Guarantees:
//! the result verifies; gradients are built only for values on a differentiable path from
//! a trainable `param` to the loss (inputs, consts, state, labels and anything not
//! depending on a param get none); fan-out is accumulated with `add`; the gradient of a
//! named value `%v` is `%v.grad` (anonymous values keep anonymous gradients).
//!
//! A param whose path to the loss goes through an op without a gradient rule (the integer
//! ops of a converted graph, backward and optimizer ops) is an error naming that op, since
//! dropping that path would silently give a wrong gradient. Ops that stop gradients by
//! definition (argmax, observers, `qparams_*`, `ema`, the scale and zero point of
//! `fake_quant`, the labels of the loss) are simply not differentiated through.
//!
//! The per-op vector-Jacobian products live in `rules.rs`, the optimizer in
//! `optimizer.rs`, the train-mode conversion (reused by other passes) in `train_mode.rs`.
//!
//! ```
//! use passes::grad::{GradOptions, Optimizer, grad};
//!
//! let g = qir_reader::parse_and_verify("graph @m {
//!   input %x: f32[B, 4]
//!   input %label: i32[B]
//!   param %w: f32[3, 4] = lecun_uniform
//!
//!   %h = linear(%x, %w) {act = relu} : f32[B, 3]
//!   %loss = softmax_cross_entropy(%h, %label) : f32[]
//!
//!   loss %loss
//! }").unwrap();
//! let opts = GradOptions { optimizer: Optimizer::Sgd, momentum: 0.9, ..GradOptions::default() };
//! let step = qir::print::print(&grad(&g, &opts).unwrap());
//! for line in [
//!     "%h.grad = softmax_cross_entropy_grad(%loss.grad, %h, %label) : f32[B, 3]",
//!     "%0 = relu_grad(%h.grad, %h) : f32[B, 3]",
//!     "%w.grad = matmul(%0, %x) {transpose_a = true} : f32[3, 4]",
//!     "%w.momentum.new = sgd_momentum(%w.momentum, %w.grad, %w) {momentum = 0.9} : f32[3, 4]",
//!     "%w.new = sgd_update(%w, %w.momentum.new, %lr) : f32[3, 4]",
//!     "update %w = %w.new",
//! ] {
//!     assert!(step.contains(line), "{step}");
//! }
//! ```

mod optimizer;
mod rules;
mod train_mode;

use std::collections::{HashMap, HashSet};
use std::fmt;

use qir::{Graph, Init, NodeId, Op, Type};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

pub use optimizer::Optimizer;
pub use train_mode::{BnMode, train_mode};

use rules::{Builder, SlotKind, slot_kind};

/// Options of the grad pass (pipeline text `grad{optimizer=adam,beta1=0.9,bn=frozen}`).
#[derive(Clone, Debug, PartialEq)]
pub struct GradOptions {
    /// How parameters are updated; [`Optimizer::None`] emits the gradients as outputs.
    pub optimizer: Optimizer,
    /// SGD momentum; 0 means plain SGD (no momentum buffer).
    pub momentum: f64,
    /// Weight decay: L2 for SGD and Adam, decoupled for AdamW.
    pub weight_decay: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// Adam's denominator epsilon.
    pub eps: f64,
    /// Batch-norm in training mode (batch statistics, running-statistics updates) or frozen
    /// (eval-mode batch-norm with the stored statistics).
    pub bn: BnMode,
    /// Momentum of the running-statistics EMA in training mode (PyTorch's 0.1).
    pub bn_momentum: f64,
}

impl Default for GradOptions {
    fn default() -> GradOptions {
        GradOptions {
            optimizer: Optimizer::Sgd,
            momentum: 0.0,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            bn: BnMode::Train,
            bn_momentum: 0.1,
        }
    }
}

impl GradOptions {
    /// Checks the ranges: momenta and decays in [0, 1) (`bn_momentum` in [0, 1]), a
    /// non-negative weight decay and a positive epsilon. The error names the option in its
    /// pipeline spelling, what it expects and the value found.
    pub fn validate(&self) -> Result<(), BadOption> {
        let checks: [(&'static str, f64, &'static str, bool); 6] = [
            (
                "momentum",
                self.momentum,
                "a number in [0, 1)",
                (0.0..1.0).contains(&self.momentum),
            ),
            (
                "beta1",
                self.beta1,
                "a number in [0, 1)",
                (0.0..1.0).contains(&self.beta1),
            ),
            (
                "beta2",
                self.beta2,
                "a number in [0, 1)",
                (0.0..1.0).contains(&self.beta2),
            ),
            (
                "bn-momentum",
                self.bn_momentum,
                "a number in [0, 1]",
                (0.0..=1.0).contains(&self.bn_momentum),
            ),
            (
                "weight-decay",
                self.weight_decay,
                "a number >= 0",
                self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            ),
            (
                "eps",
                self.eps,
                "a number > 0",
                self.eps.is_finite() && self.eps > 0.0,
            ),
        ];
        match checks.into_iter().find(|c| !c.3) {
            Some((option, found, expected, _)) => Err(BadOption {
                option,
                expected,
                found: qir::float::fmt_f64(found),
            }),
            None => Ok(()),
        }
    }
}

/// An option value out of its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadOption {
    /// The option's pipeline name (`weight-decay`).
    pub option: &'static str,
    pub expected: &'static str,
    pub found: String,
}

impl fmt::Display for BadOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "option '{}' of pass 'grad' expects {}, found '{}'",
            self.option, self.expected, self.found
        )
    }
}

/// Why the grad pass could not build a training step.
#[derive(Clone, Debug, PartialEq)]
pub enum GradError {
    /// The graph designates no loss.
    NoLoss,
    /// The loss is not a float scalar.
    BadLoss(String),
    /// A param reaches the loss through an op that has no gradient rule.
    NotDifferentiable {
        op: Op,
        /// The op node.
        id: NodeId,
        /// The op node, as `%name` or a node description.
        node: String,
        /// One param whose gradient would need it.
        param: String,
    },
    /// A gradient rule could not be built (an unsupported shape, for instance).
    Rule {
        id: NodeId,
        node: String,
        message: String,
    },
    /// The options or the graph do not allow the optimizer or train-mode rewrite.
    Invalid(String),
    /// The result failed verification (an internal error of the pass).
    Verify(String),
}

impl fmt::Display for GradError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GradError::NoLoss => {
                f.write_str("the graph has no loss: grad differentiates the value named by `loss`")
            }
            GradError::BadLoss(ty) => write!(f, "the loss must be a float scalar, found {ty}"),
            GradError::NotDifferentiable {
                op, node, param, ..
            } => write!(
                f,
                "{param} reaches the loss through '{op}' ({node}), which has no gradient"
            ),
            GradError::Rule { node, message, .. } => {
                write!(f, "cannot build the gradient of {node}: {message}")
            }
            GradError::Invalid(m) => f.write_str(m),
            GradError::Verify(m) => write!(f, "the training-step graph does not verify: {m}"),
        }
    }
}

impl std::error::Error for GradError {}

/// Builds the training-step graph of `g` (see the module docs); `g` is left untouched.
pub fn grad(g: &Graph, opts: &GradOptions) -> Result<Graph, GradError> {
    opts.validate()
        .map_err(|e| GradError::Invalid(e.to_string()))?;
    let mut out = g.clone();
    let loss = out.loss().ok_or(GradError::NoLoss)?;
    let lt = out.ty(loss);
    if lt.rank() != 0 || !lt.elem.is_float() {
        return Err(GradError::BadLoss(lt.to_string()));
    }
    if opts.bn == BnMode::Train {
        train_mode(&mut out, opts.bn_momentum)?;
    }
    let grads = backward(&mut out, loss)?;
    optimizer::emit(&mut out, &grads, opts)?;
    qir::verify::verify(&out).map_err(|e| GradError::Verify(e.to_string()))?;
    Ok(out)
}

/// The values that need a gradient: those that depend on a param through differentiable
/// operand slots (`active`) and lie on such a path to the loss. Fails when a
/// param-dependent value reaches the loss through an op without gradient rule.
fn needed_values(g: &Graph, order: &[NodeId], loss: NodeId) -> Result<HashSet<NodeId>, GradError> {
    let mut active: HashSet<NodeId> = HashSet::new();
    // Any-edge dependence on a param, remembering one such param for messages.
    let mut depends: HashMap<NodeId, NodeId> = HashMap::new();
    for &v in order {
        let node = g.node(v);
        if node.is_param() {
            active.insert(v);
            depends.insert(v, v);
            continue;
        }
        let Some(inst) = node.inst() else { continue };
        for (slot, o) in g.operands(v).into_iter().enumerate() {
            if let Some(&p) = depends.get(&o) {
                depends.entry(v).or_insert(p);
            }
            if active.contains(&o) && slot_kind(inst, slot) == SlotKind::Diff {
                active.insert(v);
            }
        }
    }
    // Ancestors of the loss along any edge, and the values that need a gradient.
    let mut reaches: HashSet<NodeId> = HashSet::from([loss]);
    let mut needed: HashSet<NodeId> = HashSet::new();
    if active.contains(&loss) {
        needed.insert(loss);
    }
    for &v in order.iter().rev() {
        if !reaches.contains(&v) {
            continue;
        }
        let Some(inst) = g.node(v).inst() else {
            continue;
        };
        for (slot, o) in g.operands(v).into_iter().enumerate() {
            reaches.insert(o);
            if needed.contains(&v) && slot_kind(inst, slot) == SlotKind::Diff && active.contains(&o)
            {
                needed.insert(o);
            }
        }
    }
    // A param-dependent value entering an op without gradient rule on the way to the loss:
    // report the first such op in topological order (the one nearest the params).
    for &v in order {
        let Some(inst) = g.node(v).inst() else {
            continue;
        };
        if !reaches.contains(&v) {
            continue;
        }
        for (slot, o) in g.operands(v).into_iter().enumerate() {
            if let (SlotKind::NoRule, Some(&p)) = (slot_kind(inst, slot), depends.get(&o)) {
                return Err(GradError::NotDifferentiable {
                    op: inst.op,
                    id: v,
                    node: g.describe(v),
                    param: g.describe(p),
                });
            }
        }
    }
    Ok(needed)
}

/// Emits the backward ops; returns `(param, gradient)` for every param that gets one, in
/// param index order.
fn backward(g: &mut Graph, loss: NodeId) -> Result<Vec<(NodeId, NodeId)>, GradError> {
    let order = g
        .topo_order()
        .map_err(|_| GradError::Invalid("the graph has a cycle".into()))?;
    let needed = needed_values(g, &order, loss)?;
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = Builder::new(g);
    let loss_ty: Type = b.g.ty(loss).clone();
    let seed_name = match &b.g.node(loss).name {
        Some(n) => b.g.fresh_name(&format!("{n}.grad")),
        None => b.g.fresh_name("loss.grad"),
    };
    let seed =
        b.g.add_const(&seed_name, loss_ty, Init::Dense(vec![1.0]))
            .map_err(|e| GradError::Invalid(e.0))?;
    let mut contribs: HashMap<NodeId, Vec<NodeId>> = HashMap::from([(loss, vec![seed])]);
    let mut grads: HashMap<NodeId, NodeId> = HashMap::new();
    let mut grad_nodes: HashSet<NodeId> = HashSet::new();
    for &v in order.iter().rev() {
        if !needed.contains(&v) {
            continue;
        }
        let Some(cs) = contribs.remove(&v) else {
            continue;
        };
        let rule_err = |b: &Builder, message: String| GradError::Rule {
            id: v,
            node: b.g.describe(v),
            message,
        };
        let gv = b.sum(&cs).map_err(|m| rule_err(&b, m))?;
        name_gradient(&mut b, v, gv, &grad_nodes);
        grads.insert(v, gv);
        grad_nodes.insert(gv);
        let Some(inst) = b.g.node(v).inst().cloned() else {
            continue;
        };
        let operands = b.g.operands(v);
        let wanted: Vec<bool> = operands
            .iter()
            .enumerate()
            .map(|(s, o)| slot_kind(&inst, s) == SlotKind::Diff && needed.contains(o))
            .collect();
        if !wanted.contains(&true) {
            continue;
        }
        let parts =
            rules::vjp(&mut b, v, &inst, &operands, gv, &wanted).map_err(|m| rule_err(&b, m))?;
        for (slot, c) in parts {
            if let Some(&o) = operands.get(slot) {
                contribs.entry(o).or_default().push(c);
            }
        }
    }
    let params = b.g.params();
    Ok(params
        .into_iter()
        .filter_map(|p| grads.get(&p).map(|&gp| (p, gp)))
        .collect())
}

/// Names the gradient of `v` `%v.grad` when it is a node the pass created, still
/// anonymous, and not already the gradient of another value (a pass-through gradient shared
/// by two operands keeps one name and never a misleading one).
fn name_gradient(b: &mut Builder, v: NodeId, gv: NodeId, grad_nodes: &HashSet<NodeId>) {
    let Some(name) = b.g.node(v).name.clone() else {
        return;
    };
    if !b.created(gv) || b.g.node(gv).name.is_some() || grad_nodes.contains(&gv) {
        return;
    }
    let fresh = b.g.fresh_name(&format!("{name}.grad"));
    // The name is fresh, so renaming cannot clash.
    let _ = b.g.rename(gv, Some(fresh));
}

/// The `grad` pass: [`grad`] behind the [`Pass`] interface, configured from pipeline text
/// (`grad{optimizer=adamw,weight-decay=0.01}`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grad {
    pub opts: GradOptions,
}

const OPTIMIZERS: &[&str] = &Optimizer::NAMES;

impl PassDef for Grad {
    const INFO: PassInfo = PassInfo {
        name: "grad",
        summary: "derive the training step: train-mode batch-norm, backward ops and optimizer updates",
        options: &[
            OptionSpec {
                name: "optimizer",
                kind: OptionKind::Choice(OPTIMIZERS),
                default: "sgd",
                doc: "parameter update; none emits the gradients as outputs <param>.grad",
            },
            OptionSpec {
                name: "momentum",
                kind: OptionKind::Float,
                default: "0.0",
                doc: "sgd momentum in [0, 1); 0 is plain sgd",
            },
            OptionSpec {
                name: "weight-decay",
                kind: OptionKind::Float,
                default: "0.0",
                doc: "weight decay: l2 for sgd and adam, decoupled for adamw",
            },
            OptionSpec {
                name: "beta1",
                kind: OptionKind::Float,
                default: "0.9",
                doc: "adam first-moment decay",
            },
            OptionSpec {
                name: "beta2",
                kind: OptionKind::Float,
                default: "0.999",
                doc: "adam second-moment decay",
            },
            OptionSpec {
                name: "eps",
                kind: OptionKind::Float,
                default: "1e-8",
                doc: "adam denominator epsilon",
            },
            OptionSpec {
                name: "bn",
                kind: OptionKind::Choice(&["train", "frozen"]),
                default: "train",
                doc: "batch-norm with batch statistics and running updates, or frozen statistics",
            },
            OptionSpec {
                name: "bn-momentum",
                kind: OptionKind::Float,
                default: "0.1",
                doc: "ema momentum of the batch-norm running statistics",
            },
        ],
    };

    fn from_options(o: &Options) -> Result<Grad, OptionError> {
        let bad = |option: &str, found: String, expected: &str| OptionError::BadValue {
            pass: "grad".into(),
            option: option.into(),
            expected: expected.into(),
            found,
        };
        let optimizer = o.choice("optimizer")?;
        let bn = o.choice("bn")?;
        let opts = GradOptions {
            optimizer: Optimizer::from_name(optimizer)
                .ok_or_else(|| bad("optimizer", optimizer.into(), "an optimizer"))?,
            momentum: o.float("momentum")?,
            weight_decay: o.float("weight-decay")?,
            beta1: o.float("beta1")?,
            beta2: o.float("beta2")?,
            eps: o.float("eps")?,
            bn: BnMode::from_name(bn).ok_or_else(|| bad("bn", bn.into(), "train or frozen"))?,
            bn_momentum: o.float("bn-momentum")?,
        };
        opts.validate()
            .map_err(|e| bad(e.option, e.found, e.expected))?;
        Ok(Grad { opts })
    }
}

impl Pass for Grad {
    fn name(&self) -> &'static str {
        Self::INFO.name
    }

    fn options(&self) -> Vec<(&'static str, OptValue)> {
        let f = |x: f64| OptValue::Scalar(qir::float::fmt_f64(x));
        let word = |s: &str| OptValue::Scalar(s.to_string());
        let o = &self.opts;
        vec![
            ("optimizer", word(o.optimizer.name())),
            ("momentum", f(o.momentum)),
            ("weight-decay", f(o.weight_decay)),
            ("beta1", f(o.beta1)),
            ("beta2", f(o.beta2)),
            ("eps", f(o.eps)),
            ("bn", word(o.bn.name())),
            ("bn-momentum", f(o.bn_momentum)),
        ]
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let out = grad(g, &self.opts).map_err(|e| match &e {
            GradError::NotDifferentiable { id, .. } | GradError::Rule { id, .. } => {
                PassError::at(*id, e.to_string())
            }
            GradError::NoLoss
            | GradError::BadLoss(_)
            | GradError::Invalid(_)
            | GradError::Verify(_) => PassError::new(e.to_string()),
        })?;
        // The pass only ever adds nodes, so an unchanged count means an unchanged graph.
        let changed = out.node_count() != g.node_count();
        *g = out;
        Ok(Changed::from(changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;
    use qir::{Dim, ElemType, Inst};

    fn mlp() -> Graph {
        let mut g = Graph::new("m");
        let x = g
            .add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()]))
            .unwrap();
        let label = g
            .add_input(
                "label",
                Type::new(ElemType::I32, qir::Shape(vec![Dim::from("B")])),
            )
            .unwrap();
        let w = g
            .add_param("w", Type::f32(&[3u64.into(), 4u64.into()]), Init::Zeros)
            .unwrap();
        let h = g.add_op(Inst::new(Op::Linear), &[x, w], Some("h")).unwrap();
        let loss = g
            .add_op(
                Inst::new(Op::SoftmaxCrossEntropy),
                &[h, label],
                Some("loss"),
            )
            .unwrap();
        g.set_loss(Some(loss));
        g
    }

    #[test]
    fn options_round_trip_through_the_registry() {
        let passes = registry::parse_and_create("grad{optimizer=adamw,weight-decay=0.01}").unwrap();
        let opts = passes[0].options();
        assert_eq!(opts[0], ("optimizer", OptValue::Scalar("adamw".into())));
        assert_eq!(opts[2], ("weight-decay", OptValue::Scalar("0.01".into())));
        let e = registry::parse_and_create("grad{beta2=1}").err().unwrap();
        assert_eq!(
            e.to_string(),
            "option 'beta2' of pass 'grad' expects a number in [0, 1), found '1.0'"
        );
        let e = registry::parse_and_create("grad{optimizer=lion}")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("one of none, sgd, adam, adamw"),
            "{e}"
        );
    }

    #[test]
    fn the_pass_rewrites_in_place_and_reports_a_change() {
        let mut g = mlp();
        let pass = Grad::default();
        assert_eq!(pass.run(&mut g).unwrap(), Changed::Yes);
        let w = g.find("w").unwrap();
        let new = g.update_of(w).unwrap();
        assert_eq!(g.node(new).name.as_deref(), Some("w.new"));
        assert_eq!(g.node(new).op(), Some(Op::SgdUpdate));
        assert!(g.find("lr").is_some_and(|lr| g.node(lr).is_input()));
    }

    #[test]
    fn a_graph_without_params_is_unchanged() {
        let mut g = mlp();
        let w = g.find("w").unwrap();
        g.node_mut(w).kind = qir::NodeKind::Const(Init::Zeros);
        assert_eq!(Grad::default().run(&mut g).unwrap(), Changed::No);
        assert!(g.find("lr").is_none());
    }

    #[test]
    fn stop_and_rule_slots() {
        let fq = Inst::new(Op::FakeQuantLsq);
        assert_eq!(slot_kind(&fq, 1), SlotKind::Diff);
        assert_eq!(slot_kind(&fq, 2), SlotKind::Stop);
        let fq = fq.with("learn_zero_point", true).unwrap();
        assert_eq!(slot_kind(&fq, 2), SlotKind::Diff);
        assert_eq!(
            slot_kind(&Inst::new(Op::SoftmaxCrossEntropy), 1),
            SlotKind::Stop
        );
        assert_eq!(slot_kind(&Inst::new(Op::Qlinear), 0), SlotKind::NoRule);
    }
}
