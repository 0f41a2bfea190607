//! Loop fusion: maps and reductions that iterate over the same index space join one loop
//! nest ("cluster"), so that a chain of elementwise ops — a bias, its activation and the
//! observer reductions of the result, or a clipped-STE mask, a relu mask and the bias
//! gradient's column sum — makes one pass over memory.
//!
//! A node joins the cluster of one of its arguments when: it is a map over the cluster's
//! dimensions that reads the argument element for element, or a reduction of that
//! argument; the argument is a map (a reduction's result is not available inside the loop
//! that computes it); and none of its other arguments depends on the cluster (which would
//! make the clusters cyclic).
//!
//! A node that cannot join an argument's cluster joins a sibling instead: a cluster over
//! the same space that already reads one of its arguments (the min and max observers of
//! one tensor then share a pass), under the same acyclicity condition.
//!
//! Invariant: the units returned are in an order where every unit's arguments are computed
//! by earlier units.

use crate::lgraph::{LGraph, LId, LKind};

/// A unit of execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A loop nest over `dims` computing `members` (maps and reductions, in order).
    Loop {
        /// The iteration space.
        dims: Vec<usize>,
        /// The nodes computed, in a topological order.
        members: Vec<LId>,
    },
    /// A node computed (or provided) on its own: a kernel call, a view, an input, a
    /// stored value or a constant.
    Node(LId),
}

impl Unit {
    /// The nodes of the unit.
    pub fn members(&self) -> &[LId] {
        match self {
            Unit::Loop { members, .. } => members,
            Unit::Node(n) => std::slice::from_ref(n),
        }
    }
}

/// A set of clusters, as a bitset.
#[derive(Clone, Debug, Default)]
struct Deps(Vec<u64>);

impl Deps {
    fn insert(&mut self, c: usize) {
        let w = c / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (c % 64);
    }
    fn contains(&self, c: usize) -> bool {
        self.0.get(c / 64).is_some_and(|w| w & (1 << (c % 64)) != 0)
    }
    fn union(&mut self, o: &Deps) {
        if self.0.len() < o.0.len() {
            self.0.resize(o.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= b;
        }
    }
}

/// Groups the nodes of `lg` into units, in execution order. `late` marks nodes whose
/// units should run as late as dependencies allow (updates written in place); among the
/// other ready units, the one that grows the live memory least goes first (a
/// convolution's weight gradient, the last reader of its column matrix, before the input
/// gradient that allocates another), then the earliest.
pub fn fuse(lg: &LGraph, late: &[bool]) -> Vec<Unit> {
    let n = lg.nodes.len();
    let mut cluster: Vec<Option<usize>> = vec![None; n];
    let mut clusters: Vec<(Vec<usize>, Vec<LId>)> = Vec::new();
    // deps[i]: the clusters node i depends on (its own included)
    let mut deps: Vec<Deps> = vec![Deps::default(); n];
    // the clusters that read each node from outside
    let mut readers: std::collections::HashMap<LId, Vec<usize>> = std::collections::HashMap::new();
    for i in 0..n {
        let node = &lg.nodes[i];
        let mut d = Deps::default();
        for &a in &node.args {
            d.union(&deps[a]);
        }
        let space = match &node.kind {
            LKind::Map(_) => Some(node.dims.clone()),
            LKind::Reduce(_) => node.args.first().map(|&a| lg.nodes[a].dims.clone()),
            _ => None,
        };
        if let Some(space) = space {
            let mut joined = None;
            // an argument is read element for element when it runs along the space
            let identity: Vec<usize> = (0..space.len()).collect();
            let aligned = |k: usize, a: LId| match &node.kind {
                LKind::Map(f) => f.arg_dims[k] == identity && lg.nodes[a].dims == space,
                _ => k == 0,
            };
            for (k, &a) in node.args.iter().enumerate() {
                let Some(c) = cluster[a] else { continue };
                if clusters[c].0 != space
                    || !matches!(lg.nodes[a].kind, LKind::Map(_))
                    || !aligned(k, a)
                {
                    continue;
                }
                // every argument in the cluster must be a map read element for element
                // (a reduction is not complete inside its loop), and no other argument
                // may depend on the cluster
                let ok = node.args.iter().enumerate().all(|(j, &b)| {
                    if cluster[b] == Some(c) {
                        matches!(lg.nodes[b].kind, LKind::Map(_)) && aligned(j, b)
                    } else {
                        !deps[b].contains(c)
                    }
                });
                if ok {
                    joined = Some(c);
                    break;
                }
            }
            // else a sibling: a cluster over the same space that already reads one of this
            // node's arguments (two observers of one tensor, min and max, share a pass)
            if joined.is_none() {
                'sib: for &a in &node.args {
                    for &c in readers.get(&a).map(Vec::as_slice).unwrap_or(&[]) {
                        if clusters[c].0 != space {
                            continue;
                        }
                        let ok = node.args.iter().enumerate().all(|(j, &b)| {
                            if cluster[b] == Some(c) {
                                matches!(lg.nodes[b].kind, LKind::Map(_)) && aligned(j, b)
                            } else {
                                !deps[b].contains(c)
                            }
                        });
                        if ok {
                            joined = Some(c);
                            break 'sib;
                        }
                    }
                }
            }
            let c = joined.unwrap_or_else(|| {
                clusters.push((space, Vec::new()));
                clusters.len() - 1
            });
            clusters[c].1.push(i);
            cluster[i] = Some(c);
            d.insert(c);
            for &a in &node.args {
                if cluster[a] != Some(c) {
                    let r = readers.entry(a).or_default();
                    if !r.contains(&c) {
                        r.push(c);
                    }
                }
            }
        }
        deps[i] = d;
    }

    // The quotient graph: one unit per cluster and per other node.
    let mut unit_of = vec![0usize; n];
    let mut units: Vec<Unit> = Vec::new();
    let mut cluster_unit = vec![usize::MAX; clusters.len()];
    for i in 0..n {
        match cluster[i] {
            Some(c) => {
                if cluster_unit[c] == usize::MAX {
                    cluster_unit[c] = units.len();
                    units.push(Unit::Loop {
                        dims: clusters[c].0.clone(),
                        members: clusters[c].1.clone(),
                    });
                }
                unit_of[i] = cluster_unit[c];
            }
            None => {
                unit_of[i] = units.len();
                units.push(Unit::Node(i));
            }
        }
    }
    let m = units.len();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); m];
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); m];
    for i in 0..n {
        for &a in &lg.nodes[i].args {
            let (u, v) = (unit_of[a], unit_of[i]);
            if u != v && !preds[v].contains(&u) {
                preds[v].push(u);
                succs[u].push(v);
            }
        }
    }
    let is_late: Vec<bool> = units
        .iter()
        .map(|u| {
            u.members()
                .iter()
                .any(|&i| late.get(i).copied().unwrap_or(false))
        })
        .collect();
    let first: Vec<usize> = units
        .iter()
        .map(|u| u.members().iter().copied().min().unwrap_or(0))
        .collect();
    // Memory: the buffer each unit's values live in (views share their argument's), the
    // bytes a unit allocates, and the units reading each buffer.
    let mut base: Vec<LId> = (0..n).collect();
    for (i, node) in lg.nodes.iter().enumerate() {
        if matches!(node.kind, LKind::View) {
            base[i] = base[node.args[0]];
        }
    }
    let in_arena = |b: LId| {
        !matches!(
            lg.nodes[b].kind,
            LKind::Input(_) | LKind::Stored(_) | LKind::Const(_)
        )
    };
    let users = lg.users();
    let mut alloc = vec![0i64; m];
    for i in 0..n {
        let materialized = match lg.nodes[i].kind {
            LKind::Kernel(_) | LKind::Reduce(_) => true,
            LKind::Map(_) => users[i].iter().any(|&u| unit_of[u] != unit_of[i]),
            _ => false,
        };
        if materialized {
            alloc[unit_of[i]] += lg.nodes[i].bytes() as i64;
        }
    }
    // reads[u]: the arena buffers unit u reads from other units
    let mut reads: Vec<Vec<LId>> = vec![Vec::new(); m];
    let mut remaining = vec![0usize; n];
    for i in 0..n {
        for &a in &lg.nodes[i].args {
            let b = base[a];
            let u = unit_of[i];
            if unit_of[b] != u && in_arena(b) && !reads[u].contains(&b) {
                reads[u].push(b);
                remaining[b] += 1;
            }
        }
    }
    // List scheduling (Kahn's algorithm): late units last; among the others, the unit
    // that grows the live memory least (its allocations minus the buffers it reads last),
    // then the earliest.
    let mut indeg: Vec<usize> = preds.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..m).filter(|&u| indeg[u] == 0).collect();
    let mut order = Vec::with_capacity(m);
    while !ready.is_empty() {
        let score = |u: usize| -> (bool, i64, usize) {
            let freed: i64 = reads[u]
                .iter()
                .filter(|&&b| remaining[b] == 1)
                .map(|&b| lg.nodes[b].bytes() as i64)
                .sum();
            (is_late[u], alloc[u] - freed, first[u])
        };
        let (k, _) = ready
            .iter()
            .enumerate()
            .min_by_key(|(_, u)| score(**u))
            .map(|(k, &u)| (k, u))
            .unwrap_or((0, ready[0]));
        let u = ready.swap_remove(k);
        order.push(u);
        for &b in &reads[u] {
            remaining[b] -= 1;
        }
        for &v in &succs[u] {
            indeg[v] -= 1;
            if indeg[v] == 0 {
                ready.push(v);
            }
        }
    }
    debug_assert_eq!(order.len(), m, "fusion made a cycle");
    let mut slots: Vec<Option<Unit>> = units.into_iter().map(Some).collect();
    order.into_iter().filter_map(|u| slots[u].take()).collect()
}
