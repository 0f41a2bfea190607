//! The general Clip, back from its exact composition. qir has no clamp op, so the importer
//! writes `Clip(x, lo, hi)` as `max(x, lo)` (a max pool of width 2 over `x` beside a
//! broadcast constant, or a `relu` for 0) and `-max(-y, -hi)`. The exporter finds those
//! shapes and writes one `Clip` again, so that a model with a general clamp round-trips:
//! import → export → import gives the same graph.

use std::collections::{HashMap, HashSet};

use qir::{Graph, Init, NodeId, NodeKind, Op};

/// A recognized clamp: its input and bounds.
#[derive(Clone, Debug)]
pub(crate) struct Clamp {
    pub x: NodeId,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

fn op(g: &Graph, id: NodeId) -> Option<Op> {
    g.node(id).op()
}

fn scalar_const(g: &Graph, id: NodeId) -> Option<f64> {
    match &g.node(id).kind {
        NodeKind::Const(Init::Dense(v)) if v.len() == 1 && g.ty(id).rank() == 0 => Some(v[0]),
        _ => None,
    }
}

/// `max(y, c)` as the importer writes it: `(y, c, nodes)`, the nodes including `id`.
fn max_with(g: &Graph, id: NodeId) -> Option<(NodeId, f64, Vec<NodeId>)> {
    match op(g, id)? {
        Op::Relu => Some((g.operands(id)[0], 0.0, vec![id])),
        Op::Reshape => {
            let mp = g.operands(id)[0];
            let inst = g.node(mp).inst()?;
            if inst.op != Op::MaxPool2d || inst.ints("kernel")? != [2, 1] {
                return None;
            }
            let cat = g.operands(mp)[0];
            let ci = g.node(cat).inst()?;
            if ci.op != Op::Concat || ci.int("axis")? != 2 {
                return None;
            }
            let [r1, bl] = g.operands(cat)[..] else {
                return None;
            };
            if op(g, r1)? != Op::Reshape || op(g, bl)? != Op::BroadcastLike {
                return None;
            }
            let [k, like] = g.operands(bl)[..] else {
                return None;
            };
            if like != r1 {
                return None;
            }
            let c = scalar_const(g, k)?;
            let y = g.operands(r1)[0];
            Some((y, c, vec![id, mp, cat, r1, bl, k]))
        }
        _ => None,
    }
}

/// True if the nodes of a pattern other than its last one are read only inside it.
fn closed(g: &Graph, top: NodeId, inner: &[NodeId]) -> bool {
    let set: HashSet<NodeId> = inner.iter().copied().collect();
    inner
        .iter()
        .filter(|&&n| n != top)
        .all(|&n| g.users(n).iter().all(|(u, _)| set.contains(u)))
        && !g
            .outputs()
            .iter()
            .any(|o| o.value != top && set.contains(&o.value))
}

/// Every clamp of `g` by its last node. A bare `relu` is not one (it exports as Relu).
pub(crate) fn find(g: &Graph) -> HashMap<NodeId, Clamp> {
    let mut out = HashMap::new();
    let mut taken: HashSet<NodeId> = HashSet::new();
    // `-max(-y, -hi)`, with y = max(x, lo) or not
    for id in g.node_ids() {
        if op(g, id) != Some(Op::Neg) {
            continue;
        }
        let m = g.operands(id)[0];
        let Some((n, c, mut inner)) = max_with(g, m) else {
            continue;
        };
        if op(g, n) != Some(Op::Neg) {
            continue;
        }
        let y = g.operands(n)[0];
        inner.extend([id, n]);
        let (x, lo) = match max_with(g, y) {
            Some((x, lo, more)) => {
                inner.extend(more);
                (x, Some(lo))
            }
            None => (y, None),
        };
        if !closed(g, id, &inner) {
            continue;
        }
        taken.extend(inner.iter().copied());
        out.insert(
            id,
            Clamp {
                x,
                lo,
                hi: Some(-c),
            },
        );
    }
    // `max(x, lo)` alone (not a relu, not inside a clamp found above)
    for id in g.node_ids() {
        if taken.contains(&id) || op(g, id) != Some(Op::Reshape) {
            continue;
        }
        if let Some((x, lo, inner)) = max_with(g, id)
            && closed(g, id, &inner)
        {
            out.insert(
                id,
                Clamp {
                    x,
                    lo: Some(lo),
                    hi: None,
                },
            );
        }
    }
    out
}
