//! Helpers shared by the QAT preparation tests: the repository's models, preparing a model
//! with a scheme through the `prepare-qat` pipeline, bypassing fake-quants, and the
//! placement checker — an independent walk over a prepared graph that checks every
//! placement rule of `insert-fake-quant` (it shares no code with the pass).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use passes::scheme::{Learned, QuantSpec, Scheme};
use passes::{OptValue, PassManager, named_with};
use qir::{Graph, NodeId, Op};

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The models of `testdata/models/`, sorted by name.
pub const MODELS: [&str; 6] = [
    "concat",
    "depthwise",
    "digits_mlp",
    "mnist_cnn",
    "mnist_mlp",
    "residual",
];

/// Reads and verifies `testdata/models/<name>.qir`.
pub fn model(name: &str) -> Graph {
    let path = repo_root()
        .join("testdata/models")
        .join(format!("{name}.qir"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    qir_reader::parse_and_verify(&text).unwrap_or_else(|d| {
        panic!(
            "{}",
            qir_reader::render(&d, &path.display().to_string(), &text)
        )
    })
}

/// `g` after the `prepare-qat` pipeline with `scheme` (a preset name or a file path).
pub fn prepare(g: &Graph, scheme: &str) -> Graph {
    let p = named_with(
        "prepare-qat",
        &[("scheme", OptValue::Scalar(scheme.into()))],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pm = PassManager::from_pipeline(&p).unwrap_or_else(|e| panic!("{e}"));
    let mut g = g.clone();
    pm.run(&mut g).unwrap_or_else(|e| panic!("{e}"));
    g
}

/// `g` with every fake-quant bypassed (its users read its input): the float function of
/// a prepared graph.
pub fn bypass_fake_quant(g: &Graph) -> Graph {
    let mut g = g.clone();
    passes::disable_fake_quant::disable_fake_quant(&mut g, &[]).unwrap_or_else(|e| panic!("{e}"));
    qir::verify::verify(&g).unwrap();
    g
}

/// What a layer's weight should look like: `None` for a layer kept in float.
pub type WeightExpect = HashMap<String, Option<QuantSpec>>;

/// The weight expectation of every conv2d/linear of the float graph under `scheme`
/// without overrides: keyed by the weight param's name.
pub fn default_weights(float: &Graph, scheme: &Scheme) -> WeightExpect {
    let mut m = HashMap::new();
    for id in float.node_ids() {
        if matches!(float.node(id).op(), Some(Op::Conv2d | Op::Linear)) {
            let w = float.operands(id)[1];
            m.insert(name(float, w), Some(scheme.weights));
        }
    }
    m
}

fn name(g: &Graph, id: NodeId) -> String {
    qir::print::value_names(g)
        .get(&id)
        .cloned()
        .unwrap_or_default()
}

fn op(g: &Graph, id: NodeId) -> Option<Op> {
    g.node(id).op()
}

fn is_fq(g: &Graph, id: NodeId) -> bool {
    op(g, id).is_some_and(Op::is_fake_quant)
}

/// Ops that keep a value on its quantization grid.
fn grid_preserving(o: Option<Op>) -> bool {
    matches!(
        o,
        Some(
            Op::MaxPool2d
                | Op::Reshape
                | Op::Flatten
                | Op::Transpose
                | Op::Slice
                | Op::Relu
                | Op::Relu6
        )
    )
}

/// Values depending on a graph input.
fn data_values(g: &Graph) -> HashSet<NodeId> {
    let mut data = HashSet::new();
    for id in g.topo_order().unwrap() {
        let n = g.node(id);
        if (n.is_input() && n.ty.elem.is_float())
            || (n.op().is_some() && g.operands(id).iter().any(|o| data.contains(o)))
        {
            data.insert(id);
        }
    }
    data
}

/// An elementwise op of one activation and one weight-side value (the rescale and bias
/// of simulated batch-norm folding).
fn affine_operand(g: &Graph, data: &HashSet<NodeId>, id: NodeId) -> Option<NodeId> {
    if !matches!(op(g, id), Some(Op::Add | Op::Sub | Op::Mul | Op::Div)) {
        return None;
    }
    let ops = g.operands(id);
    let d: Vec<NodeId> = ops.iter().copied().filter(|o| data.contains(o)).collect();
    (d.len() == 1).then(|| d[0])
}

/// The value a fake-quant's grid comes from: walks back through grid-preserving ops and
/// returns the fake-quant reached, if any.
fn grid_source(g: &Graph, mut v: NodeId) -> Option<NodeId> {
    loop {
        if is_fq(g, v) {
            return Some(v);
        }
        if grid_preserving(op(g, v)) {
            v = g.operands(v)[0];
        } else {
            return None;
        }
    }
}

/// The quantization rule of a fake-quant: (qmin, qmax, axis, symmetric, power_of_two,
/// learned).
fn fq_rule(g: &Graph, fq: NodeId) -> (i64, i64, Option<i64>, bool, bool, Learned) {
    let inst = g.node(fq).inst().unwrap();
    let (qmin, qmax, axis) = (
        inst.int("qmin").unwrap(),
        inst.int("qmax").unwrap(),
        inst.int("axis"),
    );
    if inst.op == Op::FakeQuantLsq {
        let learned = if inst.boolean("learn_zero_point") == Some(true) {
            Learned::LsqPlus
        } else {
            Learned::Lsq
        };
        let zp = g.operands(fq)[2];
        return (
            qmin,
            qmax,
            axis,
            learned == Learned::Lsq && !g.node(zp).is_param(),
            false,
            learned,
        );
    }
    let scale = g.operands(fq)[1];
    let s = g.node(scale).inst().unwrap();
    assert_eq!(
        s.op,
        Op::QparamsScale,
        "{}: scale not from qparams_scale",
        name(g, fq)
    );
    assert_eq!(
        s.int("qmin"),
        Some(qmin),
        "{}: qparams range differs",
        name(g, fq)
    );
    assert_eq!(
        s.int("qmax"),
        Some(qmax),
        "{}: qparams range differs",
        name(g, fq)
    );
    (
        qmin,
        qmax,
        axis,
        s.boolean("symmetric") == Some(true),
        s.boolean("power_of_two") == Some(true),
        Learned::No,
    )
}

fn spec_matches(
    rule: (i64, i64, Option<i64>, bool, bool, Learned),
    spec: &QuantSpec,
    per_channel: bool,
) -> bool {
    let (qmin, qmax, axis, symmetric, pot, learned) = rule;
    qmin == spec.qmin()
        && qmax == spec.qmax()
        && (axis == Some(0)) == per_channel
        && symmetric == spec.symmetric
        && pot == spec.power_of_two
        && learned == spec.learned
}

/// Checks every placement rule on `prepared` (the float model `float` prepared with a
/// scheme whose activations spec is `activations` and whose layers' weights are expected
/// as `weights`). Returns the violations, one line each.
pub fn check_placement(
    float: &Graph,
    prepared: &Graph,
    activations: &QuantSpec,
    weights: &WeightExpect,
) -> Vec<String> {
    let g = prepared;
    let data = data_values(g);
    let mut bad = Vec::new();
    let order = g.topo_order().unwrap();
    let fq_users = |v: NodeId| -> Vec<NodeId> {
        g.users(v)
            .into_iter()
            .filter(|&(u, slot)| slot == 0 && is_fq(g, u))
            .map(|(u, _)| u)
            .collect()
    };
    // Which weights are skipped: the layers of float layers kept in float.
    let float_params: HashSet<String> =
        float.params().into_iter().map(|p| name(float, p)).collect();

    for &id in &order {
        let Some(o) = op(g, id) else { continue };
        let ops = g.operands(id);
        match o {
            // (1) weights: every conv/linear weight is fake-quantized with the layer's spec;
            // (3) the bias never is; (6) the input arrives on a grid.
            Op::Conv2d | Op::Linear => {
                let w = ops[1];
                let (wv, fq) = if is_fq(g, w) {
                    (g.operands(w)[0], Some(w))
                } else {
                    (w, None)
                };
                // Look through simulated folding `mul(w, factor)` to the param.
                let param = if op(g, wv) == Some(Op::Mul) {
                    g.operands(wv)[0]
                } else {
                    wv
                };
                let pname = name(g, param);
                match weights.get(&pname) {
                    None => bad.push(format!(
                        "{}: weight {pname} is not a weight of the float model",
                        name(g, id)
                    )),
                    Some(None) => {
                        if fq.is_some() {
                            bad.push(format!(
                                "{}: weight {pname} of a float layer is fake-quantized",
                                name(g, id)
                            ));
                        }
                    }
                    Some(Some(spec)) => match fq {
                        None => bad.push(format!(
                            "{}: weight {pname} is not fake-quantized",
                            name(g, id)
                        )),
                        Some(fq) => {
                            if !spec_matches(fq_rule(g, fq), spec, spec.per_channel) {
                                bad.push(format!(
                                    "{}: weight fake-quant {} does not follow {spec}: {:?}",
                                    name(g, id),
                                    name(g, fq),
                                    fq_rule(g, fq)
                                ));
                            }
                        }
                    },
                }
                if let Some(&b) = ops.get(2) {
                    let b = if op(g, b) == Some(Op::Reshape) {
                        g.operands(b)[0]
                    } else {
                        b
                    };
                    if is_fq(g, b) || !fq_users(b).is_empty() {
                        bad.push(format!("{}: the bias is fake-quantized", name(g, id)));
                    }
                }
                let quantized_layer = matches!(weights.get(&pname), Some(Some(_)));
                if quantized_layer && grid_source(g, ops[0]).is_none() {
                    bad.push(format!(
                        "{}: the input {} is not on a quantization grid",
                        name(g, id),
                        name(g, ops[0])
                    ));
                }
            }
            // (2) no fake-quant inside a fused chain: between a layer (through the affine
            // ops of simulated folding) and its batch-norm or relu, or an add and its relu.
            Op::BatchNorm | Op::Relu | Op::Relu6 => {
                let mut v = ops[0];
                let mut saw_fq = None;
                loop {
                    if is_fq(g, v) {
                        saw_fq = Some(v);
                        v = g.operands(v)[0];
                    } else if let Some(x) = affine_operand(g, &data, v) {
                        v = x;
                    } else {
                        break;
                    }
                }
                let chain_head = matches!(op(g, v), Some(Op::Conv2d | Op::Linear | Op::Matmul))
                    || (op(g, v) == Some(Op::Add) && affine_operand(g, &data, v).is_none())
                    || (o != Op::BatchNorm && op(g, v) == Some(Op::BatchNorm));
                let fused = g
                    .node(v)
                    .inst()
                    .and_then(|i| i.choice("act"))
                    .is_some_and(|a| a != "none");
                if let Some(fq) = saw_fq
                    && chain_head
                    && !fused
                {
                    bad.push(format!(
                        "{}: fake-quant {} sits between {} and its {o}",
                        name(g, id),
                        name(g, fq),
                        name(g, v)
                    ));
                }
            }
            // (4) no double fake-quant: a fake-quant never reads a value already on a grid
            // (directly or through max-pool, flatten, reshape, ...).
            Op::FakeQuant | Op::FakeQuantLsq => {
                if let Some(src) = grid_source(g, ops[0]) {
                    bad.push(format!(
                        "{}: fake-quant of a value already on the grid of {}",
                        name(g, id),
                        name(g, src)
                    ));
                }
                // (1) every fake-quant of an activation follows the activations spec.
                if data.contains(&ops[0]) && !spec_matches(fq_rule(g, id), activations, false) {
                    bad.push(format!(
                        "{}: activation fake-quant does not follow {activations}: {:?}",
                        name(g, id),
                        fq_rule(g, id)
                    ));
                }
                // Weight-side fake-quants only sit on layer weights.
                if !data.contains(&ops[0]) {
                    let layer_weight = g.users(id).iter().all(|&(u, slot)| {
                        matches!(op(g, u), Some(Op::Conv2d | Op::Linear)) && slot == 1
                    });
                    if !layer_weight {
                        bad.push(format!(
                            "{}: a weight-side fake-quant that feeds no layer weight",
                            name(g, id)
                        ));
                    }
                    if float_params.contains(&name(g, ops[0]))
                        && !weights.contains_key(&name(g, ops[0]))
                    {
                        bad.push(format!(
                            "{}: fake-quant of a parameter that is no layer weight",
                            name(g, id)
                        ));
                    }
                }
            }
            // (5) one parameter set for an add's output (after its relu) and a concat's;
            // a concat's single-use inputs are not quantized on their own.
            Op::Add if affine_operand(g, &data, id).is_none() && data.contains(&id) => {
                let fused = g
                    .node(id)
                    .inst()
                    .and_then(|i| i.choice("act"))
                    .is_some_and(|a| a != "none");
                let out = if fused {
                    id
                } else {
                    match g.users(id).as_slice() {
                        [(u, 0)] if matches!(op(g, *u), Some(Op::Relu | Op::Relu6)) => *u,
                        _ => id,
                    }
                };
                let n = fq_users(out).len();
                if n != 1 {
                    bad.push(format!(
                        "{}: the add's output has {n} fake-quants, not one",
                        name(g, out)
                    ));
                }
                for &x in &ops {
                    if grid_source(g, x).is_none() {
                        bad.push(format!(
                            "{}: add input {} is not on a grid",
                            name(g, id),
                            name(g, x)
                        ));
                    }
                }
            }
            Op::Concat => {
                let n = fq_users(id).len();
                let same = {
                    let srcs: Vec<Option<NodeId>> =
                        ops.iter().map(|&x| grid_source(g, x)).collect();
                    srcs[0].is_some() && srcs.iter().all(|s| *s == srcs[0])
                };
                if n != usize::from(!same) {
                    bad.push(format!(
                        "{}: the concat's output has {n} fake-quants",
                        name(g, id)
                    ));
                }
                for &x in &ops {
                    if is_fq(g, x) {
                        let src = g.operands(x)[0];
                        let other_uses = g
                            .users(src)
                            .iter()
                            .filter(|(u, _)| {
                                !is_fq(g, *u)
                                    && !matches!(op(g, *u), Some(Op::ObserveMin | Op::ObserveMax))
                            })
                            .count();
                        if other_uses == 0 && !g.is_root(src) {
                            bad.push(format!(
                                "{}: concat input {} is quantized on its own though its only use is the concat",
                                name(g, id),
                                name(g, src)
                            ));
                        }
                    }
                }
            }
            Op::SoftmaxCrossEntropy => {
                // (8) the logits are quantized, the loss is not.
                if !is_fq(g, ops[0]) {
                    bad.push(format!(
                        "{}: the logits {} are not fake-quantized",
                        name(g, id),
                        name(g, ops[0])
                    ));
                }
                if !fq_users(id).is_empty() {
                    bad.push(format!("{}: the loss is fake-quantized", name(g, id)));
                }
            }
            _ => {}
        }
    }
    // (7) graph inputs: float inputs read by the model are quantized, integer ones not.
    for i in g.inputs() {
        let n = g.node(i);
        let fqs = fq_users(i).len();
        if n.ty.elem.is_float() {
            let others = g
                .users(i)
                .iter()
                .filter(|(u, _)| {
                    !is_fq(g, *u) && !matches!(op(g, *u), Some(Op::ObserveMin | Op::ObserveMax))
                })
                .count();
            if fqs != 1 || others != 0 {
                bad.push(format!(
                    "input {}: {fqs} fake-quants and {others} unquantized uses",
                    name(g, i)
                ));
            }
        } else if fqs != 0 {
            bad.push(format!(
                "input {}: an integer input is fake-quantized",
                name(g, i)
            ));
        }
    }
    // Every observer and fake-quant state is updated, every observer feeds qparams.
    for s in g.states() {
        let sname = name(g, s);
        if (sname.ends_with(".min") || sname.ends_with(".max")) && g.update_of(s).is_none() {
            bad.push(format!("state {sname} has no update"));
        }
    }
    bad
}

/// The executor the trainer runs graphs with in these tests: the reference interpreter.
#[allow(dead_code)]
pub fn executor() -> runtime::executor::SharedExecutor {
    std::sync::Arc::new(qir_interp::Interpreter::default())
}
