//! The extraction cost model: what one e-node costs to execute, and the cost function the
//! extractor minimises.
//!
//! Costs saturate at [`INFINITE`], the sentinel for e-nodes that must never be extracted
//! while an alternative exists (today: e-nodes whose type cannot be inferred or differs
//! from their class's type — a guard against unsound rules). Contractions cost far more
//! than elementwise ops; an op with a fused activation costs what the contraction alone
//! costs, so fusion always wins; ops over weight-like values only (params, consts, state)
//! are nearly free, because convert folds them into constants. Ties are broken by the
//! number of e-nodes that were not in the source graph, so an unchanged graph extracts to
//! itself. The extractor sums costs over the tree, which counts a shared value once per
//! use; [`dag_work`] measures the real (shared) work, and the driver never accepts an
//! extraction whose shared work is not lower than the source graph's.

use std::collections::{HashMap, HashSet};

use egg::{CostFunction, Id, Language};
use qir::Op;

use super::analysis::{EGraph, node_type};
use super::lang::QirLang;

/// The saturating "never extract" cost.
pub const INFINITE: u64 = u64::MAX;

/// The cost of an op whose operands are all weight-like (folded away at convert time).
pub const WEIGHT_WORK: u64 = 1;

/// An extraction cost: the work, then the number of e-nodes new to the source graph (the
/// tie-breaker that keeps unchanged parts unchanged). Ordered lexicographically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost {
    /// Execution work in cost-model units, saturating at [`INFINITE`].
    pub work: u64,
    /// E-nodes that were not in the source graph.
    pub fresh: u64,
}

impl Cost {
    /// The cost of leaves.
    pub const ZERO: Cost = Cost { work: 0, fresh: 0 };

    /// True if the cost reached the [`INFINITE`] sentinel.
    pub fn is_infinite(self) -> bool {
        self.work == INFINITE
    }

    /// Saturating sum.
    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            work: self.work.saturating_add(other.work),
            fresh: self.fresh.saturating_add(other.fresh),
        }
    }
}

/// The work of executing one op, operands excluded.
pub fn op_work(op: Op) -> u64 {
    const CONTRACTION: u64 = 1000;
    const WINDOW: u64 = 40;
    const FAKE_QUANT: u64 = 30;
    const INTEGER: u64 = 20;
    const ELEMENTWISE: u64 = 10;
    const VIEW: u64 = 1;
    match op {
        Op::Linear
        | Op::Matmul
        | Op::Conv2d
        | Op::Qlinear
        | Op::Qconv2d
        | Op::Conv2dGradInput
        | Op::Conv2dGradWeight => CONTRACTION,
        Op::MaxPool2d
        | Op::AvgPool2d
        | Op::GlobalAvgPool
        | Op::BatchNorm
        | Op::BatchNormTrain
        | Op::ReduceSum
        | Op::ReduceMean
        | Op::Variance
        | Op::Softmax
        | Op::LogSoftmax
        | Op::SoftmaxCrossEntropy
        | Op::Argmax
        | Op::SumToLike
        | Op::QglobalAvgPool
        | Op::MaxPool2dGrad
        | Op::AvgPool2dGrad
        | Op::GlobalAvgPoolGrad
        | Op::BatchNormGradInput
        | Op::BatchNormGradGamma
        | Op::BatchNormTrainGradInput
        | Op::BatchNormTrainGradGamma
        | Op::ReduceMeanGrad
        | Op::VarianceGrad
        | Op::SoftmaxGrad
        | Op::LogSoftmaxGrad
        | Op::SoftmaxCrossEntropyGrad
        | Op::FakeQuantLsqGradScale
        | Op::FakeQuantLsqGradZeroPoint => WINDOW,
        Op::FakeQuant | Op::FakeQuantLsq | Op::ObserveMin | Op::ObserveMax => FAKE_QUANT,
        Op::Quantize | Op::Dequantize | Op::Requantize | Op::Qadd | Op::Qconcat => INTEGER,
        Op::Relu
        | Op::Relu6
        | Op::Sigmoid
        | Op::Tanh
        | Op::Gelu
        | Op::Neg
        | Op::Exp
        | Op::Log
        | Op::Sqrt
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Ema
        | Op::BroadcastLike
        | Op::Transpose
        | Op::Concat
        | Op::Slice
        | Op::QparamsScale
        | Op::QparamsZeroPoint
        | Op::ReluGrad
        | Op::Relu6Grad
        | Op::SigmoidGrad
        | Op::TanhGrad
        | Op::GeluGrad
        | Op::FakeQuantGrad
        | Op::FakeQuantLsqGradX
        | Op::SgdUpdate
        | Op::SgdMomentum
        | Op::AdamMoment
        | Op::AdamUpdate => ELEMENTWISE,
        Op::Reshape | Op::Flatten => VIEW,
        // Communication: far dearer than a local pass over the same data.
        Op::AllReduce => CONTRACTION,
    }
}

/// The work of one e-node of `egraph`, its children excluded: 0 for leaves, [`INFINITE`]
/// for an op whose inferred type is not its class's type, [`WEIGHT_WORK`] for an op over
/// weight-like values only, else [`op_work`].
pub fn node_work(egraph: &EGraph, class: Id, enode: &QirLang) -> u64 {
    match enode.split() {
        None => 0,
        Some((op, _, operands)) => {
            let ty = node_type(egraph, enode);
            if ty.is_none() || ty.as_ref() != egraph[class].data.ty.as_ref() {
                return INFINITE;
            }
            if operands.iter().all(|&c| egraph[c].data.weight_like) {
                WEIGHT_WORK
            } else {
                op_work(op)
            }
        }
    }
}

/// The extraction cost function: every e-node's own cost, precomputed once per e-graph.
#[derive(Clone, Debug)]
pub struct CostModel {
    local: HashMap<QirLang, Cost>,
}

impl CostModel {
    /// Precomputes the cost of every e-node; `originals` are the (canonical) e-nodes of the
    /// source graph, which cost no `fresh` point.
    pub fn new(egraph: &EGraph, originals: &HashSet<QirLang>) -> CostModel {
        let mut local = HashMap::new();
        for class in egraph.classes() {
            for node in &class.nodes {
                let fresh = u64::from(
                    matches!(node, QirLang::Op(..) | QirLang::Scalar(_))
                        && !originals.contains(node),
                );
                let work = node_work(egraph, class.id, node);
                local.insert(node.clone(), Cost { work, fresh });
            }
        }
        CostModel { local }
    }

    /// The precomputed cost of one e-node (children excluded).
    pub fn local(&self, enode: &QirLang) -> Cost {
        self.local.get(enode).copied().unwrap_or(Cost {
            work: INFINITE,
            fresh: 0,
        })
    }
}

impl CostFunction<QirLang> for CostModel {
    type Cost = Cost;

    fn cost<C>(&mut self, enode: &QirLang, mut costs: C) -> Cost
    where
        C: FnMut(Id) -> Cost,
    {
        let own = self.local(enode);
        enode.fold(own, |sum, id| sum.plus(costs(id)))
    }
}

/// The shared work of the term rooted at `roots` when class `c` is computed by
/// `choice(c)`: every class reached counts once.
pub fn dag_work<'a>(
    egraph: &EGraph,
    model: &CostModel,
    roots: &[Id],
    choice: impl Fn(Id) -> &'a QirLang,
) -> u64 {
    let mut seen = HashSet::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    let mut total = 0u64;
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let node = choice(c);
        total = total.saturating_add(model.local(node).work);
        stack.extend(node.children().iter().map(|&k| egraph.find(k)));
    }
    total
}

/// The cheapest e-node of every class under `model` (tree cost: the node's own cost plus
/// its children's, a child counted once per occurrence), as egg's `Extractor` computes
/// it, but in O(n log n): egg's extractor sweeps every class until nothing changes, which
/// takes a sweep per level of a chain (quadratic: 60 s for 20,000 chained `relu`s).
///
/// A Knuth–Dijkstra search: an e-node is ready when all its child classes have their
/// final cost; the cheapest ready e-node fixes its class's cost. Costs never fall below a
/// child's, so the first cost a class gets is its least. Among equally cheap e-nodes of a
/// class the first in the class's order wins. Classes whose every e-node depends on a
/// cycle get no choice (an acyclic source graph's classes always have one).
pub struct Extraction {
    best: HashMap<Id, (Cost, usize)>,
}

impl Extraction {
    /// Computes the cheapest e-node of every class of `egraph`.
    pub fn new(egraph: &EGraph, model: &CostModel) -> Extraction {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // for every child class, the e-nodes (class, index) waiting for it
        let mut waiting: HashMap<Id, Vec<(Id, usize)>> = HashMap::new();
        let mut pending: HashMap<(Id, usize), usize> = HashMap::new();
        let mut heap = BinaryHeap::new();
        for class in egraph.classes() {
            for (i, node) in class.nodes.iter().enumerate() {
                let mut kids: Vec<Id> = node.children().iter().map(|&k| egraph.find(k)).collect();
                kids.sort_unstable();
                kids.dedup();
                if kids.is_empty() {
                    heap.push(Reverse((model.local(node), class.id, i)));
                } else {
                    pending.insert((class.id, i), kids.len());
                    for k in kids {
                        waiting.entry(k).or_default().push((class.id, i));
                    }
                }
            }
        }
        let mut fixed: HashMap<Id, Cost> = HashMap::new();
        while let Some(Reverse((cost, class, _))) = heap.pop() {
            if fixed.contains_key(&class) {
                continue;
            }
            fixed.insert(class, cost);
            for &(c, i) in waiting.get(&class).map_or(&[][..], Vec::as_slice) {
                let Some(left) = pending.get_mut(&(c, i)) else {
                    continue;
                };
                *left -= 1;
                if *left == 0 && !fixed.contains_key(&c) {
                    let node = &egraph[c].nodes[i];
                    let total =
                        node.fold(model.local(node), |sum, k| sum.plus(fixed[&egraph.find(k)]));
                    heap.push(Reverse((total, c, i)));
                }
            }
        }
        // the first e-node of each class that reaches the class's cost
        let mut best = HashMap::new();
        for class in egraph.classes() {
            let Some(&want) = fixed.get(&class.id) else {
                continue;
            };
            let pick = class.nodes.iter().position(|node| {
                let mut total = Some(model.local(node));
                for &k in node.children() {
                    total = match (total, fixed.get(&egraph.find(k))) {
                        (Some(t), Some(&c)) => Some(t.plus(c)),
                        _ => None,
                    };
                }
                total == Some(want)
            });
            if let Some(i) = pick {
                best.insert(class.id, (want, i));
            }
        }
        Extraction { best }
    }

    /// The cheapest e-node of `class` (any id of it), if it has one.
    pub fn best_node<'e>(&self, egraph: &'e EGraph, class: Id) -> Option<&'e QirLang> {
        let c = egraph.find(class);
        self.best.get(&c).map(|&(_, i)| &egraph[c].nodes[i])
    }

    /// The tree cost of the cheapest e-node of `class`.
    pub fn best_cost(&self, egraph: &EGraph, class: Id) -> Option<Cost> {
        self.best.get(&egraph.find(class)).map(|&(c, _)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_saturate_and_order_by_work_first() {
        let inf = Cost {
            work: INFINITE,
            fresh: 0,
        };
        assert!(inf.plus(Cost { work: 5, fresh: 1 }).is_infinite());
        let a = Cost { work: 10, fresh: 3 };
        let b = Cost { work: 11, fresh: 0 };
        assert!(a < b);
        assert!(Cost { work: 10, fresh: 0 } < a);
    }

    #[test]
    fn contractions_dominate() {
        assert!(op_work(Op::Conv2d) > 10 * op_work(Op::BatchNorm));
        assert!(op_work(Op::Relu) < op_work(Op::FakeQuant));
        assert!(op_work(Op::Reshape) >= WEIGHT_WORK);
    }
}
