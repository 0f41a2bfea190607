//! Running a graph: a [`Session`] verifies the graph once and caches its evaluation plan
//! (topological order and operand lists); each run binds the symbolic dimensions from the
//! inputs, loads the store, evaluates every node, checks the loss, and writes the updates
//! back.
//!
//! Invariants: every input is checked against its declared type before anything runs
//! (symbolic dimensions bound consistently across inputs); every stored value against its
//! declaration; every op result against its declared type (a mismatch is an interpreter
//! bug and reported as such); the store changes only after a fully successful run, and
//! then only at the `update` targets, in their declared element type.

use std::collections::{BTreeMap, HashMap};

use qir::{Data, ElemType, Graph, NodeId, NodeKind, Tensor, Type};

use qir_exec::{ExecError as InterpError, Store, check_data, check_stored};

use crate::exec::{Ctx, eval};
use crate::{Precision, RunOptions, RunResult};

/// One node of the plan: the node and the value slots of its operands.
#[derive(Clone, Debug)]
struct Step {
    id: NodeId,
    operands: Vec<NodeId>,
}

/// The evaluation plan of a verified graph: its topological order with operand lists.
/// It does not hold the graph: run it only with the graph it was made from.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    steps: Vec<Step>,
    slots: usize,
}

/// A verified graph with its evaluation order, ready to run many times.
#[derive(Clone, Debug)]
pub struct Session<'g> {
    g: &'g Graph,
    plan: Plan,
}

/// Runs `g` once (see [`Session::run`]); build a [`Session`] to run a graph repeatedly
/// without re-verifying and re-planning it.
pub fn run(
    g: &Graph,
    store: &mut Store,
    inputs: &HashMap<String, Tensor>,
    opts: &RunOptions,
) -> Result<RunResult, InterpError> {
    Session::new(g)?.run(store, inputs, opts)
}

impl Plan {
    /// Verifies `g` and plans its evaluation.
    pub(crate) fn new(g: &Graph) -> Result<Plan, InterpError> {
        qir::verify::verify(g).map_err(|e| {
            let msgs: Vec<String> = e.0.iter().map(|v| v.to_string()).collect();
            InterpError::InvalidGraph(msgs.join("; "))
        })?;
        let order = g
            .topo_order()
            .map_err(|_| InterpError::InvalidGraph("the graph has a cycle".into()))?;
        let slots = order.iter().map(|id| id.index() + 1).max().unwrap_or(0);
        let steps = order
            .into_iter()
            .map(|id| Step {
                id,
                operands: g.operands(id),
            })
            .collect();
        Ok(Plan { steps, slots })
    }
}

impl<'g> Session<'g> {
    /// Verifies `g` and plans its evaluation.
    pub fn new(g: &'g Graph) -> Result<Session<'g>, InterpError> {
        Ok(Session {
            g,
            plan: Plan::new(g)?,
        })
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &'g Graph {
        self.g
    }

    /// Runs the graph on `inputs` (see [`Plan::run`]).
    pub fn run(
        &self,
        store: &mut Store,
        inputs: &HashMap<String, Tensor>,
        opts: &RunOptions,
    ) -> Result<RunResult, InterpError> {
        self.plan.run(self.g, store, inputs, opts)
    }
}

impl Plan {
    /// Runs the graph on `inputs` (by input name, without `%`) with parameters, state and
    /// constants from `store`. Every declared input must be fed, and a name the graph does
    /// not declare is an error (a misspelt input would otherwise go unnoticed). Float data
    /// of either width is accepted for float values and converted to the run's precision. With `apply_updates`, the `update` values are
    /// written back to the store (converted to the target's declared element type) after
    /// the run succeeds.
    pub(crate) fn run(
        &self,
        g: &Graph,
        store: &mut Store,
        inputs: &HashMap<String, Tensor>,
        opts: &RunOptions,
    ) -> Result<RunResult, InterpError> {
        let syms = qir_exec::bind_inputs(g, inputs)?;
        let mut vals: Vec<Option<Tensor>> = vec![None; self.slots];
        for step in &self.steps {
            let node = g.node(step.id);
            let value = match &node.kind {
                NodeKind::Input => {
                    let name = node.name.as_deref().unwrap_or_default();
                    let t = inputs.get(name).ok_or_else(|| {
                        InterpError::Input(format!("missing input %{name} ({})", node.ty))
                    })?;
                    convert(t.clone(), opts.precision)
                }
                NodeKind::Param(_) | NodeKind::State(_) | NodeKind::Const(_) => {
                    let name = node.name.as_deref().unwrap_or_default();
                    let t = store.get(name).ok_or_else(|| {
                        InterpError::Store(format!(
                            "%{name} ({}) is not in the store (initialize it with init_store or load it)",
                            node.ty
                        ))
                    })?;
                    check_stored(name, &node.ty, t).map_err(InterpError::Store)?;
                    convert(t.clone(), opts.precision)
                }
                NodeKind::Op(inst) => {
                    let node_err = |message: String| InterpError::Node {
                        node: g.describe(step.id),
                        message: format!("'{}' {message}", inst.op),
                    };
                    let args = step
                        .operands
                        .iter()
                        .map(|o| {
                            vals.get(o.index()).and_then(Option::as_ref).ok_or_else(|| {
                                node_err(format!(
                                    "operand {} was not computed (internal error)",
                                    g.describe(*o)
                                ))
                            })
                        })
                        .collect::<Result<Vec<&Tensor>, _>>()?;
                    let ctx = Ctx {
                        inst,
                        args,
                        arg_tys: step.operands.iter().map(|&o| g.ty(o)).collect(),
                        out_ty: &node.ty,
                        store,
                    };
                    let out = eval(&ctx, opts.precision).map_err(node_err)?;
                    check_result(&node.ty, &out, &syms, opts.precision)
                        .map_err(|e| node_err(format!("internal error: {e}")))?;
                    out
                }
            };
            if let Some(slot) = vals.get_mut(step.id.index()) {
                *slot = Some(value);
            }
        }
        let get = |id: NodeId| vals.get(id.index()).and_then(Option::as_ref);
        let loss = match g.loss() {
            None => None,
            Some(l) => {
                let t = get(l).ok_or_else(|| InterpError::Loss {
                    node: g.describe(l),
                    value: f64::NAN,
                })?;
                Some(qir_exec::loss_value(g, t)?)
            }
        };
        let mut outputs = BTreeMap::new();
        for o in g.outputs() {
            if let Some(t) = get(o.value) {
                outputs.insert(o.name.clone(), t.clone());
            }
        }
        if opts.apply_updates {
            let mut new = Vec::with_capacity(g.updates().len());
            for u in g.updates() {
                let target = g.node(u.target);
                let name = target.name.as_deref().unwrap_or_default();
                let t = get(u.value).ok_or_else(|| {
                    InterpError::Store(format!("the update of %{name} was not computed"))
                })?;
                new.push((name, to_elem(t.clone(), &target.ty.elem)));
            }
            for (name, t) in new {
                store.insert(name, t);
            }
        }
        let values = self
            .steps
            .iter()
            .filter_map(|s| {
                vals.get_mut(s.id.index())
                    .and_then(Option::take)
                    .map(|t| (s.id, t))
            })
            .collect();
        Ok(RunResult {
            outputs,
            loss,
            values,
        })
    }
}

/// Float data in the run's precision (other data unchanged).
fn convert(t: Tensor, p: Precision) -> Tensor {
    let data = match (t.data, p) {
        (Data::F64(v), Precision::F32) => Data::F32(v.into_iter().map(|x| x as f32).collect()),
        (Data::F32(v), Precision::F64) => Data::F64(v.into_iter().map(f64::from).collect()),
        (d, _) => d,
    };
    Tensor {
        shape: t.shape,
        data,
    }
}

/// Float data in the declared element type (other data unchanged).
fn to_elem(t: Tensor, elem: &ElemType) -> Tensor {
    match elem {
        ElemType::F32 => convert(t, Precision::F32),
        ElemType::F64 => convert(t, Precision::F64),
        _ => t,
    }
}

/// Checks an op result against its declared type with the symbolic dimensions bound.
fn check_result(
    ty: &Type,
    t: &Tensor,
    syms: &qir_exec::Bindings,
    p: Precision,
) -> Result<(), String> {
    check_data(t)?;
    if let Some(want) = ty.shape.bind(&|s| syms.get(s).map(|&v| v as u64))
        && (want.len() != t.shape.len() || want.iter().zip(&t.shape).any(|(&a, &b)| a != b as u64))
    {
        return Err(format!("result shape {:?} does not match {ty}", t.shape));
    }
    let ok = if ty.elem.is_float() {
        matches!(
            (&t.data, p),
            (Data::F32(_), Precision::F32) | (Data::F64(_), Precision::F64)
        )
    } else {
        t.data.matches(&ty.elem)
    };
    if !ok {
        return Err(format!(
            "result holds {} data, declared {ty}",
            t.data.dtype()
        ));
    }
    Ok(())
}
