//! The optimizer part of the training step: given each param's gradient, the update ops,
//! the optimizer state and the `update` declarations.
//!
//! - `none`: no update; every gradient becomes an output `output <param>.grad = ...`.
//! - `sgd`: `%p.new = sgd_update(%p, %p.grad, %lr){weight_decay}`; with momentum, a state
//!   `%p.momentum` (zeros), `%p.momentum.new = sgd_momentum(...)` (which applies the weight
//!   decay) and `sgd_update(%p, %p.momentum.new, %lr)`.
//! - `adam` / `adamw`: states `%p.adam_m`, `%p.adam_v` (zeros) and one shared step counter
//!   `%opt.step` incremented by `add(%opt.step, %opt.one)`; `adam_moment` of order 1 and 2,
//!   then `adam_update` with bias correction at the new step. Adam puts the weight decay in
//!   the moments (L2), AdamW in `adam_update` (decoupled).
//!
//! The learning rate is the graph input `%lr` (a scalar of the params' element type), so a
//! schedule is just data. Weight decay applies to every trained param, biases and
//! batch-norm gamma/beta included (PyTorch's default when one parameter group is used).
//! Invariants: every param with a gradient gets exactly one update; a param that already
//! has one is an error; params without gradient (not reaching the loss) are left alone.

use qir::{Attr, ElemType, Graph, Init, Inst, NodeId, NodeKind, Op, Type};

use super::{GradError, GradOptions};

/// The optimizer the training step applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Optimizer {
    /// No update: the gradients are graph outputs (for gradient checks and for users who
    /// apply updates themselves).
    None,
    /// Stochastic gradient descent, with optional momentum and L2 weight decay.
    Sgd,
    /// Adam with L2 weight decay.
    Adam,
    /// Adam with decoupled weight decay.
    AdamW,
}

impl Optimizer {
    /// The option texts, in declaration order.
    pub const NAMES: [&'static str; 4] = ["none", "sgd", "adam", "adamw"];

    /// The option text.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::None => "none",
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
            Optimizer::AdamW => "adamw",
        }
    }

    /// Parses the option text.
    pub fn from_name(s: &str) -> Option<Optimizer> {
        [
            Optimizer::None,
            Optimizer::Sgd,
            Optimizer::Adam,
            Optimizer::AdamW,
        ]
        .into_iter()
        .find(|o| o.name() == s)
    }
}

fn edit(e: qir::EditError) -> GradError {
    GradError::Invalid(e.0)
}

fn inst(op: Op, attrs: &[(&str, Attr)]) -> Result<Inst, GradError> {
    qir::shape::inst_with(op, attrs).map_err(GradError::Invalid)
}

fn param_name(g: &Graph, p: NodeId) -> String {
    g.node(p).name.clone().unwrap_or_else(|| "param".into())
}

/// Emits the optimizer for `grads` (`(param, gradient)` pairs).
pub(super) fn emit(
    g: &mut Graph,
    grads: &[(NodeId, NodeId)],
    opts: &GradOptions,
) -> Result<(), GradError> {
    if grads.is_empty() {
        return Ok(());
    }
    if opts.optimizer == Optimizer::None {
        for &(p, gp) in grads {
            let base = format!("{}.grad", param_name(g, p));
            let mut name = base.clone();
            let mut i = 1;
            while g.output(&name).is_some() {
                name = format!("{base}.{i}");
                i += 1;
            }
            g.add_output(&name, gp);
        }
        return Ok(());
    }
    for &(p, _) in grads {
        if g.update_of(p).is_some() {
            return Err(GradError::Invalid(format!(
                "{} already has an update; the optimizer cannot add another",
                g.describe(p)
            )));
        }
    }
    let elem = g.ty(grads[0].0).elem.clone();
    if let Some(&(p, _)) = grads.iter().find(|(p, _)| g.ty(*p).elem != elem) {
        return Err(GradError::Invalid(format!(
            "params of different element types ({} and {}) cannot share the learning rate %lr",
            elem,
            g.ty(p).elem
        )));
    }
    let lr = lr_input(g, &elem)?;
    match opts.optimizer {
        Optimizer::None => Ok(()),
        Optimizer::Sgd => {
            for &(p, gp) in grads {
                sgd(g, p, gp, lr, opts)?;
            }
            Ok(())
        }
        Optimizer::Adam | Optimizer::AdamW => {
            let scalar = Type::scalar(elem.clone());
            let step = g
                .add_state(&g.fresh_name("opt.step"), scalar.clone(), Init::Zeros)
                .map_err(edit)?;
            let one = g
                .add_const(&g.fresh_name("opt.one"), scalar, Init::Dense(vec![1.0]))
                .map_err(edit)?;
            let step_name = g.fresh_name(&format!("{}.new", param_name(g, step)));
            let step1 = g
                .add_op(Inst::new(Op::Add), &[step, one], Some(&step_name))
                .map_err(edit)?;
            for &(p, gp) in grads {
                adam(g, p, gp, lr, step1, opts)?;
            }
            g.add_update(step, step1);
            Ok(())
        }
    }
}

/// The learning-rate input `%lr`, reused when the graph already declares it as a scalar
/// input of the right type.
fn lr_input(g: &mut Graph, elem: &ElemType) -> Result<NodeId, GradError> {
    let ty = Type::scalar(elem.clone());
    match g.find("lr") {
        Some(id) if g.node(id).kind == NodeKind::Input && g.ty(id) == &ty => Ok(id),
        Some(id) => Err(GradError::Invalid(format!(
            "{} is taken: the optimizer needs it as the learning-rate input {ty}",
            g.describe(id)
        ))),
        None => g.add_input("lr", ty).map_err(edit),
    }
}

fn state_like(g: &mut Graph, p: NodeId, suffix: &str) -> Result<NodeId, GradError> {
    let name = g.fresh_name(&format!("{}.{suffix}", param_name(g, p)));
    let ty = g.ty(p).clone();
    g.add_state(&name, ty, Init::Zeros).map_err(edit)
}

fn new_name(g: &Graph, v: NodeId) -> String {
    g.fresh_name(&format!("{}.new", param_name(g, v)))
}

fn sgd(
    g: &mut Graph,
    p: NodeId,
    gp: NodeId,
    lr: NodeId,
    opts: &GradOptions,
) -> Result<(), GradError> {
    let wd = ("weight_decay", Attr::Float(opts.weight_decay));
    let step_grad = if opts.momentum > 0.0 {
        let buf = state_like(g, p, "momentum")?;
        let i = inst(
            Op::SgdMomentum,
            &[("momentum", Attr::Float(opts.momentum)), wd.clone()],
        )?;
        let name = new_name(g, buf);
        let buf1 = g.add_op(i, &[buf, gp, p], Some(&name)).map_err(edit)?;
        g.add_update(buf, buf1);
        buf1
    } else {
        gp
    };
    // With momentum the decay is already inside the buffer.
    let decay = if opts.momentum > 0.0 {
        0.0
    } else {
        opts.weight_decay
    };
    let i = inst(Op::SgdUpdate, &[("weight_decay", Attr::Float(decay))])?;
    let name = new_name(g, p);
    let p1 = g
        .add_op(i, &[p, step_grad, lr], Some(&name))
        .map_err(edit)?;
    g.add_update(p, p1);
    Ok(())
}

fn adam(
    g: &mut Graph,
    p: NodeId,
    gp: NodeId,
    lr: NodeId,
    step: NodeId,
    opts: &GradOptions,
) -> Result<(), GradError> {
    let (l2, decoupled) = match opts.optimizer {
        Optimizer::AdamW => (0.0, opts.weight_decay),
        Optimizer::None | Optimizer::Sgd | Optimizer::Adam => (opts.weight_decay, 0.0),
    };
    let mut moments = Vec::new();
    for (suffix, beta, order) in [("adam_m", opts.beta1, 1i64), ("adam_v", opts.beta2, 2)] {
        let m = state_like(g, p, suffix)?;
        let i = inst(
            Op::AdamMoment,
            &[
                ("beta", Attr::Float(beta)),
                ("order", Attr::Int(order)),
                ("weight_decay", Attr::Float(l2)),
            ],
        )?;
        let name = new_name(g, m);
        let m1 = g.add_op(i, &[m, gp, p], Some(&name)).map_err(edit)?;
        moments.push((m, m1));
    }
    let [(m, m1), (v, v1)] = moments[..] else {
        return Err(GradError::Invalid("adam needs two moments".into()));
    };
    let i = inst(
        Op::AdamUpdate,
        &[
            ("beta1", Attr::Float(opts.beta1)),
            ("beta2", Attr::Float(opts.beta2)),
            ("eps", Attr::Float(opts.eps)),
            ("weight_decay", Attr::Float(decoupled)),
        ],
    )?;
    let name = new_name(g, p);
    let p1 = g
        .add_op(i, &[p, m1, v1, step, lr], Some(&name))
        .map_err(edit)?;
    g.add_update(p, p1);
    g.add_update(m, m1);
    g.add_update(v, v1);
    Ok(())
}
