//! Planning: from the lowered graph to what the code generator emits — the order of
//! execution units (from [`crate::fuse`]), where every value lives (the io table for
//! inputs and the store, one arena for intermediates), the loop nests with their memory
//! operands, and the kernel calls.
//!
//! Memory: every intermediate that leaves its unit gets an arena buffer, live from the
//! unit that writes it to the last unit that reads it (to the end for outputs, fetched
//! values and updates copied back); buffers whose lifetimes do not overlap share space
//! (best fit, largest first). An `update` whose value is a map computed after the loss,
//! with every other reader of the target already done, is written straight into the
//! store's tensor (parameters and optimizer moments are updated in place); the others are
//! copied back after a successful run.
//!
//! Invariants: a loop's operands address buffers at least as large as their strides
//! reach; in-place units run after the loss check; the printed plan lists every buffer.

use std::collections::HashMap;
use std::fmt::Write as _;

use qir::{Data, Graph, NodeId};

use crate::dtype::DType;
use crate::fuse::{Unit, fuse};
use crate::kernels::Bound;
use crate::lgraph::{Ex, LGraph, LId, LKind, RedOp, Ty, infer_types, row_major};
use crate::lower::Lowered;
use crate::rt::Loc;

/// Alignment of arena buffers, in bytes.
const ALIGN: usize = 64;

/// Loops over at least this many elements are split over the thread pool.
const PARALLEL_ELEMENTS: usize = 1 << 14;

/// Smaller loops are split too when their elements times their body's entries and memory
/// operands reach this, provided they have at least [`PARALLEL_MIN_ELEMENTS`]. (Measured on
/// the MNIST MLP's QAT step: from 2^16 elements and 2^20 work down to 2^14 and 2^18 — its
/// 32k-element activation, observer and fake-quant loops on two threads — 0.954x the
/// step's time; halving both again changed nothing, and the CNN's step did not move.)
const PARALLEL_WORK: usize = 1 << 18;

/// See [`PARALLEL_WORK`].
const PARALLEL_MIN_ELEMENTS: usize = 1 << 12;

/// One memory operand of a loop nest.
#[derive(Clone, Debug, PartialEq)]
pub struct Operand {
    /// Where the buffer is.
    pub loc: Loc,
    /// Element type in memory.
    pub dtype: DType,
    /// Stride in elements per loop dimension.
    pub strides: Vec<isize>,
    /// For partial accumulators: bytes between the copies of parts.
    pub part_bytes: usize,
}

/// A reduction accumulated by a loop.
#[derive(Clone, Debug, PartialEq)]
pub struct Acc {
    /// The accumulator operand (f32 for min/max, f64 for sums).
    pub op: usize,
    /// The body entry accumulated.
    pub value: usize,
    /// How it combines.
    pub red: RedOp,
}

/// A fused loop nest.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopSpec {
    /// What it computes, for printed plans.
    pub label: String,
    /// Loop dimensions (coalesced), outermost first.
    pub dims: Vec<usize>,
    /// Memory operands; loads are the ones `Ex::Arg` reads.
    pub ops: Vec<Operand>,
    /// The per-element expression.
    pub body: Vec<Ex>,
    /// Types of the body entries.
    pub tys: Vec<Ty>,
    /// Stores: (operand, body entry).
    pub stores: Vec<(usize, usize)>,
    /// Reductions.
    pub accs: Vec<Acc>,
    /// The innermost loop runs 4 lanes at a time.
    pub vector: bool,
    /// The outermost loop is split into this many parts (each with its own partial
    /// accumulators when a reduction runs across it).
    pub parts: usize,
}

impl LoopSpec {
    /// Elements the loop visits.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// One step of a compiled program.
#[derive(Clone, Debug)]
pub enum Step {
    /// Run loop nest `loops[i]`.
    Loop(usize),
    /// Call a kernel.
    Call(Box<Bound>),
    /// Fill `n` f32 values with `value` (min/max accumulators).
    Fill {
        /// The buffer.
        loc: Loc,
        /// Elements.
        n: usize,
        /// The value.
        value: f32,
    },
    /// Zero `n` f64 values (sum accumulators).
    Zero {
        /// The buffer.
        loc: Loc,
        /// Elements.
        n: usize,
    },
    /// Combine partial f64 sums into an f32 result divided by `div`.
    FinishSum {
        /// The partial sums.
        acc: Loc,
        /// Parts.
        parts: usize,
        /// Elements per part.
        n: usize,
        /// The divisor.
        div: f64,
        /// The result.
        out: Loc,
    },
    /// Combine partial minima or maxima.
    FinishExtreme {
        /// The partials.
        acc: Loc,
        /// Parts.
        parts: usize,
        /// Elements per part.
        n: usize,
        /// Maxima (else minima).
        is_max: bool,
        /// The result.
        out: Loc,
    },
    /// Stop with an error unless the f32 loss at `loc` is finite (before anything is
    /// written to the store).
    CheckLoss(Loc),
    /// Stop with an error unless the `n` f32 scales at `loc`, computed by the graph for a
    /// fake-quant op (`op`), are positive and finite (as the interpreter checks them).
    CheckScale {
        /// The scales.
        loc: Loc,
        /// How many.
        n: usize,
        /// The fake-quant op's mnemonic, for the message.
        op: &'static str,
    },
}

/// What an io-table entry points at.
#[derive(Clone, Debug, PartialEq)]
pub enum Io {
    /// The input of this name.
    Input(String),
    /// The store's tensor of this name.
    Stored(String),
    /// Data the program owns.
    Const(Data),
}

/// A value the run hands back: where it is and how it is laid out.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    /// The buffer.
    pub loc: Loc,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Physical strides.
    pub strides: Vec<usize>,
}

/// An arena buffer, for printed plans.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// What it holds.
    pub label: String,
    /// Byte offset.
    pub offset: usize,
    /// Bytes.
    pub bytes: usize,
    /// First and last unit using it.
    pub live: (usize, usize),
}

/// A compiled program's plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// For each step: the node it comes from (for error messages).
    pub step_labels: Vec<String>,
    /// The loop nests.
    pub loops: Vec<LoopSpec>,
    /// The io table.
    pub io: Vec<Io>,
    /// Bytes of the arena.
    pub arena_bytes: usize,
    /// The arena buffers.
    pub buffers: Vec<Buffer>,
    /// Outputs by name.
    pub outputs: Vec<(String, Place)>,
    /// Fetched values.
    pub fetch: Vec<(NodeId, Place)>,
    /// The loss.
    pub loss: Option<Place>,
    /// Updates copied back after the run: (store name, value).
    pub copy_back: Vec<(String, Place)>,
    /// Updates written in place: store names.
    pub in_place: Vec<String>,
    /// Floating-point operations of the contractions (per run).
    pub gemm_flops: f64,
}

impl Plan {
    /// Bytes of every intermediate buffer, as if none shared space.
    pub fn total_intermediate_bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.bytes).sum()
    }

    /// The plan as text: the steps in order, the arena buffers with their offsets and
    /// lifetimes, and the arena size against the sum of all intermediates.
    pub fn print(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "steps:");
        for (i, step) in self.steps.iter().enumerate() {
            let what = match step {
                Step::Loop(l) => {
                    let lp = &self.loops[*l];
                    format!(
                        "loop {:?}{}{}: {}",
                        lp.dims,
                        if lp.vector { " x4" } else { "" },
                        if lp.parts > 1 {
                            format!(" /{}", lp.parts)
                        } else {
                            String::new()
                        },
                        lp.label
                    )
                }
                Step::Call(b) => format!("call {}: {}", b.kernel.describe(), self.step_labels[i]),
                Step::Fill { n, value, .. } => format!("fill {n} with {value}"),
                Step::Zero { n, .. } => format!("zero {n} f64"),
                Step::FinishSum { n, parts, .. } => format!("finish sum of {n} ({parts} part(s))"),
                Step::FinishExtreme {
                    n, parts, is_max, ..
                } => format!(
                    "finish {} of {n} ({parts} part(s))",
                    if *is_max { "max" } else { "min" }
                ),
                Step::CheckLoss(_) => "check the loss is finite".into(),
                Step::CheckScale { n, op, .. } => {
                    format!("check the {n} scale(s) of {op} {}", self.step_labels[i])
                }
            };
            let _ = writeln!(s, "  {i:4}  {what}");
        }
        let _ = writeln!(s, "buffers:");
        let mut bufs: Vec<&Buffer> = self.buffers.iter().collect();
        bufs.sort_by_key(|b| (b.offset, b.live.0));
        for b in bufs {
            let _ = writeln!(
                s,
                "  @{:<10} {:>10} B  units {:>3}..{:<3}  {}",
                b.offset, b.bytes, b.live.0, b.live.1, b.label
            );
        }
        if !self.in_place.is_empty() {
            let _ = writeln!(s, "updated in place: {}", self.in_place.join(", "));
        }
        let total = self.total_intermediate_bytes();
        let _ = writeln!(
            s,
            "arena: {} bytes; all intermediates: {} bytes ({:.1}% with reuse)",
            self.arena_bytes,
            total,
            if total == 0 {
                100.0
            } else {
                100.0 * self.arena_bytes as f64 / total as f64
            }
        );
        s
    }
}

/// What a run must produce: the roots of the graph.
#[derive(Clone, Debug, Default)]
pub struct Roots {
    /// Outputs by name.
    pub outputs: Vec<(String, NodeId)>,
    /// The loss.
    pub loss: Option<NodeId>,
    /// Updates: (target, value).
    pub updates: Vec<(NodeId, NodeId)>,
    /// Fetched values.
    pub fetch: Vec<NodeId>,
    /// Scales computed by the graph for a fake-quant op: (scale, the fake-quant).
    pub scales: Vec<(NodeId, NodeId)>,
}

impl Roots {
    /// The roots of `g` with `fetch`.
    pub fn of(g: &Graph, fetch: &[NodeId]) -> Roots {
        Roots {
            outputs: g
                .outputs()
                .iter()
                .map(|o| (o.name.clone(), o.value))
                .collect(),
            loss: g.loss(),
            updates: g.updates().iter().map(|u| (u.target, u.value)).collect(),
            fetch: fetch.to_vec(),
            scales: g
                .node_ids()
                .into_iter()
                .filter(|&id| {
                    g.node(id)
                        .op()
                        .is_some_and(|op| op.class() == qir::OpClass::FakeQuant)
                })
                .filter_map(|id| {
                    let s = *g.operands(id).get(1)?;
                    g.node(s).inst().is_some().then_some((s, id))
                })
                .collect(),
        }
    }
    /// Every node the run must compute.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.outputs.iter().map(|o| o.1).collect();
        v.extend(self.loss);
        for &(t, val) in &self.updates {
            v.push(t);
            v.push(val);
        }
        v.extend(&self.fetch);
        v
    }
}

/// Plans the lowered graph `low` of `g` for `roots`, with `threads` threads.
pub fn plan(g: &Graph, low: &Lowered, roots: &Roots, threads: usize) -> Result<Plan, String> {
    let lg = &low.lg;
    let n = lg.nodes.len();
    let val = |id: NodeId| -> Result<LId, String> {
        low.values
            .get(&id)
            .copied()
            .ok_or_else(|| format!("{} was not lowered", g.describe(id)))
    };
    let users = lg.users();

    // Updates that may be written in place run late.
    let mut late = vec![false; n];
    let mut candidates = Vec::new();
    for &(t, v) in &roots.updates {
        let (tl, vl) = (val(t)?, val(v)?);
        let (tn, vn) = (&lg.nodes[tl], &lg.nodes[vl]);
        if matches!(tn.kind, LKind::Stored(_))
            && matches!(vn.kind, LKind::Map(_))
            && vn.dims == tn.dims
            && vn.dtype == tn.dtype
            && vn.strides.is_none()
        {
            late[vl] = true;
            candidates.push((tl, vl));
        }
    }
    let units = fuse(lg, &late);
    let mut unit_of = vec![usize::MAX; n];
    for (u, unit) in units.iter().enumerate() {
        for &m in unit.members() {
            unit_of[m] = u;
        }
    }
    let end = units.len();
    let loss_unit = match roots.loss {
        Some(l) => Some(unit_of[val(l)?]),
        None => None,
    };

    // In-place updates.
    let mut in_place: HashMap<LId, LId> = HashMap::new(); // value -> target
    let mut targets_done = std::collections::HashSet::new();
    for &(tl, vl) in &candidates {
        let uk = unit_of[vl];
        let after_loss = loss_unit.is_none_or(|ul| uk > ul);
        let readers_ok = users[tl].iter().all(|&r| {
            if unit_of[r] == uk {
                // read in the same loop: element for element only
                match &lg.nodes[r].kind {
                    LKind::Map(f) => lg.nodes[r]
                        .args
                        .iter()
                        .zip(&f.arg_dims)
                        .filter(|(a, _)| **a == tl)
                        .all(|(_, d)| *d == (0..lg.nodes[tl].dims.len()).collect::<Vec<_>>()),
                    LKind::Reduce(_) => true,
                    _ => false,
                }
            } else {
                unit_of[r] < uk
            }
        });
        if after_loss && readers_ok && targets_done.insert(tl) && !in_place.contains_key(&vl) {
            in_place.insert(vl, tl);
        }
    }

    // The io table.
    let mut io: Vec<Io> = Vec::new();
    let mut io_of_name: HashMap<(bool, String), usize> = HashMap::new();
    let mut loc: Vec<Option<Loc>> = vec![None; n];
    for (i, node) in lg.nodes.iter().enumerate() {
        let entry = match &node.kind {
            LKind::Input(name) => Some((true, name.clone(), Io::Input(name.clone()))),
            LKind::Stored(name) => Some((false, name.clone(), Io::Stored(name.clone()))),
            LKind::Const(d) => {
                io.push(Io::Const(d.clone()));
                loc[i] = Some(Loc::Io(io.len() - 1));
                None
            }
            _ => None,
        };
        if let Some((is_input, name, entry)) = entry {
            let k = *io_of_name.entry((is_input, name)).or_insert_with(|| {
                io.push(entry);
                io.len() - 1
            });
            loc[i] = Some(Loc::Io(k));
        }
    }

    // Which values need a buffer, and until when.
    let mut is_root = vec![false; n];
    for &(_, id) in &roots.outputs {
        is_root[val(id)?] = true;
    }
    if let Some(l) = roots.loss {
        is_root[val(l)?] = true;
    }
    for &id in &roots.fetch {
        is_root[val(id)?] = true;
    }
    // computed scales the run checks (those the lowering kept: a fake-quant nothing needs
    // is not lowered)
    let mut scale_checks: Vec<(LId, NodeId)> = Vec::new();
    for &(s, fq) in &roots.scales {
        if let Some(&sl) = low.values.get(&s)
            && low.values.contains_key(&fq)
            && lg.nodes[sl].dtype == crate::dtype::DType::F32
        {
            is_root[sl] = true;
            scale_checks.push((sl, fq));
        }
    }
    for &(_, v) in &roots.updates {
        is_root[val(v)?] = true;
    }
    // base[i]: the node whose buffer i uses (through views)
    let mut base: Vec<LId> = (0..n).collect();
    for (i, node) in lg.nodes.iter().enumerate() {
        if matches!(node.kind, LKind::View) {
            base[i] = base[node.args[0]];
        }
    }
    let mut last_use = vec![0usize; n];
    for i in 0..n {
        for &u in &users[i] {
            let b = base[i];
            last_use[b] = last_use[b].max(unit_of[u]);
        }
        if is_root[i] {
            let b = base[i];
            last_use[b] = end;
        }
    }
    let needs_buffer = |i: LId| -> bool {
        match &lg.nodes[i].kind {
            LKind::Kernel(_) | LKind::Reduce(_) => true,
            LKind::Map(_) => is_root[i] || users[i].iter().any(|&u| unit_of[u] != unit_of[i]),
            LKind::View | LKind::Input(_) | LKind::Stored(_) | LKind::Const(_) => false,
        }
    };

    let mut arena = Arena::default();
    for i in 0..n {
        if !needs_buffer(i) {
            continue;
        }
        if let Some(&t) = in_place.get(&i) {
            loc[i] = loc[t];
            continue;
        }
        let b = arena.add(
            lg.nodes[i].label.clone(),
            lg.nodes[i].bytes(),
            (unit_of[i], last_use[i].max(unit_of[i])),
        );
        loc[i] = Some(Loc::Arena(b));
    }

    // Loop specs and steps (scratch accumulators are added to the arena as we go).
    let mut loops = Vec::new();
    let mut steps: Vec<(Step, String)> = Vec::new();
    let mut gemm_flops = 0.0;
    for (u, unit) in units.iter().enumerate() {
        match unit {
            Unit::Node(i) => {
                let i = *i;
                let node = &lg.nodes[i];
                match &node.kind {
                    LKind::View => {
                        loc[i] = loc[node.args[0]];
                    }
                    LKind::Kernel(k) => {
                        match &**k {
                            crate::kernels::Kernel::Gemm(gm) => gemm_flops += gm.flops(),
                            crate::kernels::Kernel::Conv(c, _) => gemm_flops += c.flops(),
                            _ => {}
                        }
                        let args = node
                            .args
                            .iter()
                            .map(|&a| {
                                loc[a].ok_or_else(|| format!("{}: argument not placed", node.label))
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        let scratch = match k.scratch_bytes() {
                            0 => None,
                            bytes => Some(Loc::Arena(arena.add(
                                format!("{} (scratch)", node.label),
                                bytes,
                                (u, u),
                            ))),
                        };
                        let out =
                            loc[i].ok_or_else(|| format!("{}: result not placed", node.label))?;
                        steps.push((
                            Step::Call(Box::new(Bound {
                                kernel: (**k).clone(),
                                args,
                                out,
                                scratch,
                            })),
                            node.label.clone(),
                        ));
                    }
                    _ => {}
                }
            }
            Unit::Loop { dims, members } => {
                build_loop(
                    lg, dims, members, &loc, &unit_of, u, threads, &mut arena, &mut loops,
                    &mut steps,
                )?;
            }
        }
        if loss_unit == Some(u)
            && let Some(l) = roots.loss
        {
            let ll = loc[base[val(l)?]].ok_or("the loss is not placed")?;
            steps.push((Step::CheckLoss(ll), g.describe(l)));
        }
        for &(sl, fq) in &scale_checks {
            if unit_of[base[sl]] == u
                && let Some(sloc) = loc[base[sl]]
            {
                let n: usize = lg.nodes[sl].dims.iter().product();
                let op = g.node(fq).op().map_or("fake_quant", |o| o.mnemonic());
                steps.push((Step::CheckScale { loc: sloc, n, op }, g.describe(fq)));
            }
        }
    }

    // Resolve arena offsets.
    let offsets = arena.pack();
    let fix = |l: Loc| -> Loc {
        match l {
            Loc::Arena(b) => Loc::Arena(offsets[b]),
            io => io,
        }
    };
    let fixed_loc: Vec<Option<Loc>> = loc.iter().map(|l| l.map(fix)).collect();
    for lp in &mut loops {
        for op in &mut lp.ops {
            op.loc = fix(op.loc);
        }
    }
    let mut step_list = Vec::with_capacity(steps.len());
    let mut labels = Vec::with_capacity(steps.len());
    for (s, label) in steps {
        let s = match s {
            Step::Call(mut b) => {
                b.args = b.args.into_iter().map(fix).collect();
                b.out = fix(b.out);
                b.scratch = b.scratch.map(fix);
                Step::Call(b)
            }
            Step::Fill { loc, n, value } => Step::Fill {
                loc: fix(loc),
                n,
                value,
            },
            Step::Zero { loc, n } => Step::Zero { loc: fix(loc), n },
            Step::FinishSum {
                acc,
                parts,
                n,
                div,
                out,
            } => Step::FinishSum {
                acc: fix(acc),
                parts,
                n,
                div,
                out: fix(out),
            },
            Step::FinishExtreme {
                acc,
                parts,
                n,
                is_max,
                out,
            } => Step::FinishExtreme {
                acc: fix(acc),
                parts,
                n,
                is_max,
                out: fix(out),
            },
            Step::CheckLoss(l) => Step::CheckLoss(fix(l)),
            Step::CheckScale { loc, n, op } => Step::CheckScale {
                loc: fix(loc),
                n,
                op,
            },
            s @ Step::Loop(_) => s,
        };
        step_list.push(s);
        labels.push(label);
    }

    let place = |id: NodeId| -> Result<Place, String> {
        let l = val(id)?;
        let node = &lg.nodes[l];
        Ok(Place {
            loc: fixed_loc[l].ok_or_else(|| format!("{} is not placed", g.describe(id)))?,
            dims: node.dims.clone(),
            dtype: node.dtype,
            strides: node.phys_strides(),
        })
    };
    let outputs = roots
        .outputs
        .iter()
        .map(|(name, id)| Ok((name.clone(), place(*id)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let fetch = roots
        .fetch
        .iter()
        .map(|&id| Ok((id, place(id)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let loss = roots.loss.map(place).transpose()?;
    let mut copy_back = Vec::new();
    let mut in_place_names = Vec::new();
    for &(t, v) in &roots.updates {
        let name = g.node(t).name.clone().unwrap_or_default();
        if in_place.get(&val(v)?) == Some(&val(t)?) {
            in_place_names.push(name);
        } else {
            copy_back.push((name, place(v)?));
        }
    }
    let buffers = arena
        .bufs
        .iter()
        .zip(&offsets)
        .map(|(b, &off)| Buffer {
            label: b.label.clone(),
            offset: off,
            bytes: b.bytes,
            live: b.live,
        })
        .collect();
    Ok(Plan {
        steps: step_list,
        step_labels: labels,
        loops,
        io,
        arena_bytes: arena.size,
        buffers,
        outputs,
        fetch,
        loss,
        copy_back,
        in_place: in_place_names,
        gemm_flops,
    })
}

/// Arena buffers under construction: `Loc::Arena(i)` names buffer `i` until [`Arena::pack`]
/// gives offsets.
#[derive(Default)]
struct Arena {
    bufs: Vec<ArenaBuf>,
    size: usize,
}

struct ArenaBuf {
    label: String,
    bytes: usize,
    live: (usize, usize),
}

impl Arena {
    fn add(&mut self, label: String, bytes: usize, live: (usize, usize)) -> usize {
        self.bufs.push(ArenaBuf { label, bytes, live });
        self.bufs.len() - 1
    }

    /// Offsets for every buffer: largest first, each at the lowest aligned offset that
    /// overlaps no placed buffer live at the same time.
    fn pack(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.bufs.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(self.bufs[i].bytes), i));
        let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new(); // offset, end, live
        let mut offsets = vec![0usize; self.bufs.len()];
        for i in order {
            let b = &self.bufs[i];
            let size = b.bytes.max(1).div_ceil(ALIGN) * ALIGN;
            let mut conflicts: Vec<(usize, usize)> = placed
                .iter()
                .filter(|(_, _, l)| l.0 <= b.live.1 && b.live.0 <= l.1)
                .map(|&(o, e, _)| (o, e))
                .collect();
            conflicts.sort();
            let mut off = 0usize;
            for (o, e) in conflicts {
                if off + size <= o {
                    break;
                }
                off = off.max(e);
            }
            offsets[i] = off;
            placed.push((off, off + size, b.live));
            self.size = self.size.max(off + size);
        }
        offsets
    }
}

/// Merges adjacent loop dimensions that every operand walks contiguously (and drops
/// dimensions of size 1); `strides` are rewritten for the merged dimensions.
fn coalesce(dims: &[usize], strides: &mut [Vec<isize>]) -> Vec<usize> {
    let mut od: Vec<usize> = Vec::new();
    let mut os: Vec<Vec<isize>> = vec![Vec::new(); strides.len()];
    for (d, &size) in dims.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let merge = !od.is_empty()
            && strides
                .iter()
                .zip(&os)
                .all(|(s, o)| o.last() == Some(&(s[d] * size as isize)));
        if merge {
            if let Some(last) = od.last_mut() {
                *last *= size;
            }
            for (s, o) in strides.iter().zip(os.iter_mut()) {
                if let Some(l) = o.last_mut() {
                    *l = s[d];
                }
            }
        } else {
            od.push(size);
            for (s, o) in strides.iter().zip(os.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    if od.is_empty() {
        od.push(1);
        for o in os.iter_mut() {
            o.push(0);
        }
    }
    for (s, o) in strides.iter_mut().zip(os) {
        *s = o;
    }
    od
}

#[allow(clippy::too_many_arguments)]
fn build_loop(
    lg: &LGraph,
    dims: &[usize],
    members: &[LId],
    loc: &[Option<Loc>],
    unit_of: &[usize],
    u: usize,
    threads: usize,
    arena: &mut Arena,
    loops: &mut Vec<LoopSpec>,
    steps: &mut Vec<(Step, String)>,
) -> Result<(), String> {
    let rank = dims.len();
    let mut ops: Vec<Operand> = Vec::new();
    let mut load_of: HashMap<(LId, Vec<isize>), usize> = HashMap::new();
    let mut body: Vec<Ex> = Vec::new();
    let mut value_of: HashMap<LId, usize> = HashMap::new();
    let mut load_tys: Vec<Ty> = Vec::new();
    let mut label = Vec::new();
    let in_loop = |a: LId| unit_of[a] == u;

    let mut load = |a: LId,
                    strides: Vec<isize>,
                    ops: &mut Vec<Operand>,
                    body: &mut Vec<Ex>,
                    load_tys: &mut Vec<Ty>|
     -> Result<usize, String> {
        if let Some(&k) = load_of.get(&(a, strides.clone())) {
            return Ok(k);
        }
        let node = &lg.nodes[a];
        let l = loc[a].ok_or_else(|| format!("{}: argument not placed", node.label))?;
        ops.push(Operand {
            loc: l,
            dtype: node.dtype,
            strides: strides.clone(),
            part_bytes: 0,
        });
        let op = ops.len() - 1;
        load_tys.push(if node.dtype == DType::F32 {
            Ty::F
        } else {
            Ty::I
        });
        body.push(Ex::Arg(op));
        let e = body.len() - 1;
        load_of.insert((a, strides), e);
        Ok(e)
    };
    // the strides over the loop dims of argument `a` read along `arg_dims`
    let strides_of = |a: LId, arg_dims: &[usize]| -> Vec<isize> {
        let node = &lg.nodes[a];
        let phys = node.phys_strides();
        let mut s = vec![0isize; rank];
        for (j, &d) in arg_dims.iter().enumerate() {
            if node.dims[j] != 1 {
                s[d] += phys[j] as isize;
            }
        }
        s
    };

    let mut stores: Vec<(usize, usize)> = Vec::new();
    let mut accs: Vec<(LId, usize, RedOp, Vec<isize>)> = Vec::new();
    for &m in members {
        let node = &lg.nodes[m];
        label.push(node.label.clone());
        match &node.kind {
            LKind::Map(f) => {
                let mut remap = Vec::with_capacity(f.body.len());
                for e in &f.body {
                    let idx = match e {
                        Ex::Arg(k) => {
                            let a = node.args[*k];
                            if in_loop(a) {
                                *value_of
                                    .get(&a)
                                    .ok_or_else(|| format!("{}: loop value missing", node.label))?
                            } else {
                                let s = strides_of(a, &f.arg_dims[*k]);
                                load(a, s, &mut ops, &mut body, &mut load_tys)?
                            }
                        }
                        other => {
                            body.push(other.remap(|x| remap[x]));
                            body.len() - 1
                        }
                    };
                    remap.push(idx);
                }
                let v = remap[f.out];
                value_of.insert(m, v);
                if let Some(l) = loc[m] {
                    ops.push(Operand {
                        loc: l,
                        dtype: node.dtype,
                        strides: node.phys_strides().iter().map(|&x| x as isize).collect(),
                        part_bytes: 0,
                    });
                    stores.push((ops.len() - 1, v));
                }
            }
            LKind::Reduce(r) => {
                let a = node.args[0];
                let v = if in_loop(a) {
                    *value_of
                        .get(&a)
                        .ok_or_else(|| format!("{}: loop value missing", node.label))?
                } else {
                    let s = strides_of(a, &(0..rank).collect::<Vec<_>>());
                    load(a, s, &mut ops, &mut body, &mut load_tys)?
                };
                // accumulator strides: the row-major strides of the kept dimensions
                let kept: Vec<usize> = dims
                    .iter()
                    .zip(&r.axes)
                    .filter(|(_, red)| !**red)
                    .map(|(d, _)| *d)
                    .collect();
                let rm = row_major(&kept);
                let mut s = vec![0isize; rank];
                let mut k = 0;
                for d in 0..rank {
                    if !r.axes[d] {
                        if dims[d] != 1 {
                            s[d] = rm[k] as isize;
                        }
                        k += 1;
                    }
                }
                accs.push((m, v, r.op, s));
            }
            _ => return Err(format!("{}: not a loop node", node.label)),
        }
    }

    // types of the body: Ex::Arg holds the operand index of a load
    let op_ty: Vec<Ty> = ops
        .iter()
        .map(|o| if o.dtype == DType::F32 { Ty::F } else { Ty::I })
        .collect();
    let tys = infer_types(&body, &|k| op_ty.get(k).copied().unwrap_or(Ty::F))
        .map_err(|e| format!("{}: {e}", label.join(", ")))?;

    // decide parallel split, then add accumulators
    let total: usize = dims.iter().product();
    let mut all_strides: Vec<Vec<isize>> = ops.iter().map(|o| o.strides.clone()).collect();
    for a in &accs {
        all_strides.push(a.3.clone());
    }
    let cdims = coalesce(dims, &mut all_strides);
    let n_ops = ops.len();
    for (o, s) in ops.iter_mut().zip(&all_strides[..n_ops]) {
        o.strides = s.clone();
    }
    let work = total * (body.len() + ops.len());
    let big =
        total >= PARALLEL_ELEMENTS || (total >= PARALLEL_MIN_ELEMENTS && work >= PARALLEL_WORK);
    let parts = if threads > 1 && big && cdims[0] >= threads {
        threads
    } else {
        1
    };
    let mut acc_list = Vec::new();
    let mut post = Vec::new();
    for (k, (m, v, red, _)) in accs.iter().enumerate() {
        let node = &lg.nodes[*m];
        let s = all_strides[n_ops + k].clone();
        let across = s.first().is_some_and(|&x| x == 0) && parts > 1;
        let count = node.numel();
        let out = loc[*m].ok_or_else(|| format!("{}: result not placed", node.label))?;
        let p = if across { parts } else { 1 };
        let (acc_loc, dtype) = match red {
            RedOp::Sum => {
                let b = arena.add(format!("{} (f64 sums)", node.label), count * 8 * p, (u, u));
                steps.push((
                    Step::Zero {
                        loc: Loc::Arena(b),
                        n: count * p,
                    },
                    node.label.clone(),
                ));
                let LKind::Reduce(r) = &node.kind else {
                    unreachable!()
                };
                post.push((
                    Step::FinishSum {
                        acc: Loc::Arena(b),
                        parts: p,
                        n: count,
                        div: r.div,
                        out,
                    },
                    node.label.clone(),
                ));
                (Loc::Arena(b), DType::F64)
            }
            RedOp::Min | RedOp::Max => {
                let init = if *red == RedOp::Min {
                    f32::INFINITY
                } else {
                    f32::NEG_INFINITY
                };
                let acc = if p > 1 {
                    let b = arena.add(format!("{} (partials)", node.label), count * 4 * p, (u, u));
                    post.push((
                        Step::FinishExtreme {
                            acc: Loc::Arena(b),
                            parts: p,
                            n: count,
                            is_max: *red == RedOp::Max,
                            out,
                        },
                        node.label.clone(),
                    ));
                    Loc::Arena(b)
                } else {
                    out
                };
                steps.push((
                    Step::Fill {
                        loc: acc,
                        n: count * p,
                        value: init,
                    },
                    node.label.clone(),
                ));
                (acc, DType::F32)
            }
        };
        ops.push(Operand {
            loc: acc_loc,
            dtype,
            strides: s,
            part_bytes: if p > 1 { count * dtype.size() } else { 0 },
        });
        acc_list.push(Acc {
            op: ops.len() - 1,
            value: *v,
            red: *red,
        });
    }
    let inner = cdims.len() - 1;
    let vector = cdims[inner] >= 4
        && ops.iter().all(|o| {
            matches!(o.strides[inner], 0 | 1)
                && matches!(
                    o.dtype,
                    DType::F32 | DType::I32 | DType::F64 | DType::I8 | DType::U8
                )
        });
    loops.push(LoopSpec {
        label: label.join(", "),
        dims: cdims,
        ops,
        body,
        tys,
        stores,
        accs: acc_list,
        vector,
        parts,
    });
    steps.push((Step::Loop(loops.len() - 1), label.join(", ")));
    steps.extend(post);
    Ok(())
}

/// The kind of a step for profiles: `gemm`, `im2col`, `loop`, ... (a kernel's family or
/// the step's own kind).
pub fn step_kind(s: &Step, plan: &Plan) -> String {
    match s {
        Step::Loop(l) => {
            if plan.loops[*l].accs.is_empty() {
                "loop".into()
            } else {
                "loop+reduce".into()
            }
        }
        Step::Call(b) => b.kernel.symbol().trim_start_matches("qatc_").to_string(),
        Step::Fill { .. }
        | Step::Zero { .. }
        | Step::FinishSum { .. }
        | Step::FinishExtreme { .. } => "reduce setup".into(),
        Step::CheckLoss(_) => "loss check".into(),
        Step::CheckScale { .. } => "scale check".into(),
    }
}
