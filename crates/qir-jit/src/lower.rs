//! Lowering: a verified qir graph, with its symbolic dimensions bound and its per-axis
//! quantization parameters read from the store, becomes an [`LGraph`]. Every op of the op
//! table has exactly one lowering here (the match is exhaustive), written with the
//! interpreter's arithmetic where results must be bit-exact (fake quantization, observers,
//! quantization parameters, optimizer updates, integer ops).
//!
//! Invariants: only nodes some root needs (an output, the loss, an update, a fetched
//! value) are lowered; every lowered node has concrete dimensions; errors name the node.

use std::collections::HashMap;

use qir::quant::{QparamRule, Rounding};
use qir::{Data, Graph, NodeId, NodeKind, Op, QuantParams};
use qir_exec::{Bindings, Store};

use crate::dtype::DType;
use crate::kernels::Kernel;
use crate::kernels::conv::{Conv, ConvPass};
use crate::kernels::gemm::{Gemm, Mat};
use crate::kernels::integer::{Bounds, Chan, Fast, IntOp, Packed, QP};
use crate::kernels::misc::AllReduce;
use crate::kernels::misc::{Block, Copy};
use crate::kernels::pool::{Pool, PoolKind};
use crate::kernels::softmax::{Argmax, Softmax, SoftmaxCe};
use crate::lgraph::{ArgDims, Ex, Fun, LGraph, LId, LKind, LNode, MapFn, RedOp, Reduce, row_major};
use qir_exec::collective::ReduceOp;

/// The result of lowering a graph: the lowered nodes and the lowered value of every qir
/// node that was needed.
pub struct Lowered {
    /// The lowered graph.
    pub lg: LGraph,
    /// The lowered node of each needed qir node.
    pub values: HashMap<NodeId, LId>,
    /// Store values the lowering read (per-axis quantization parameters), by name, with
    /// what they held: a program is valid while the store still holds them.
    pub baked: Vec<(String, qir::Tensor)>,
}

/// Lowers the nodes of `g` that `roots` need.
pub fn lower(
    g: &Graph,
    bindings: &Bindings,
    store: &Store,
    roots: &[NodeId],
) -> Result<Lowered, String> {
    let order = g
        .topo_order()
        .map_err(|_| "the graph has a cycle".to_string())?;
    let mut needed = vec![false; order.iter().map(|i| i.index() + 1).max().unwrap_or(0)];
    let mut stack: Vec<NodeId> = roots.to_vec();
    while let Some(id) = stack.pop() {
        if needed[id.index()] {
            continue;
        }
        needed[id.index()] = true;
        stack.extend(g.operands(id));
    }
    let mut l = Lower {
        g,
        bindings,
        store,
        roots: roots.iter().copied().collect(),
        lg: LGraph::default(),
        values: HashMap::new(),
        im2col: HashMap::new(),
        baked: Vec::new(),
    };
    for id in order {
        if !needed[id.index()] {
            continue;
        }
        let v = l.node(id).map_err(|e| format!("{}: {e}", g.describe(id)))?;
        l.values.insert(id, v);
    }
    Ok(Lowered {
        lg: l.lg,
        values: l.values,
        baked: l.baked,
    })
}

/// An expression under construction.
#[derive(Default)]
struct Body {
    ex: Vec<Ex>,
}

/// Batches from which forward convolutions (without a weight gradient) and input
/// gradients run blocked over images (`kernels::conv::conv_blocked`); a smaller batch has
/// one im2col matrix and one product split over the threads.
const BLOCKED_MIN_IMAGES: usize = 4;

/// The most bytes of i32 convolution output a fused max pool keeps per thread (an image's
/// output planes; Zen 4 and recent Intel cores have 1-2 MiB of L2).
const FUSED_POOL_SCRATCH: usize = 1 << 20;

impl Body {
    fn push(&mut self, e: Ex) -> usize {
        self.ex.push(e);
        self.ex.len() - 1
    }
    fn arg(&mut self, i: usize) -> usize {
        self.push(Ex::Arg(i))
    }
    fn f(&mut self, v: f32) -> usize {
        self.push(Ex::F(v))
    }
    fn i(&mut self, v: i32) -> usize {
        self.push(Ex::I(v))
    }
    fn add(&mut self, a: usize, b: usize) -> usize {
        self.push(Ex::Add(a, b))
    }
    fn sub(&mut self, a: usize, b: usize) -> usize {
        self.push(Ex::Sub(a, b))
    }
    fn mul(&mut self, a: usize, b: usize) -> usize {
        self.push(Ex::Mul(a, b))
    }
    fn div(&mut self, a: usize, b: usize) -> usize {
        self.push(Ex::Div(a, b))
    }
    fn sel(&mut self, m: usize, a: usize, b: usize) -> usize {
        self.push(Ex::Sel(m, a, b))
    }
    fn lt(&mut self, a: usize, b: usize) -> usize {
        self.push(Ex::Lt(a, b))
    }
    fn gt(&mut self, a: usize, b: usize) -> usize {
        self.push(Ex::Gt(a, b))
    }
    fn is_nan(&mut self, a: usize) -> usize {
        self.push(Ex::IsNan(a))
    }
    fn call(&mut self, f: Fun, a: usize) -> usize {
        self.push(Ex::Call(f, a))
    }
    /// `x < lo ? lo : (x > hi ? hi : x)` (NaN passes through).
    fn clamp(&mut self, x: usize, lo: usize, hi: usize) -> usize {
        let below = self.lt(x, lo);
        let above = self.gt(x, hi);
        let upper = self.sel(above, hi, x);
        self.sel(below, lo, upper)
    }
    /// `max` propagating NaN from either side (the interpreter's `max_nan`).
    fn max_nan(&mut self, a: usize, b: usize) -> usize {
        let an = self.is_nan(a);
        let bn = self.is_nan(b);
        let bigger = self.gt(b, a);
        let m = self.sel(bigger, b, a);
        let m = self.sel(bn, b, m);
        self.sel(an, a, m)
    }
    /// `min` propagating NaN from either side (the interpreter's `min_nan`).
    fn min_nan(&mut self, a: usize, b: usize) -> usize {
        let an = self.is_nan(a);
        let bn = self.is_nan(b);
        let smaller = self.lt(b, a);
        let m = self.sel(smaller, b, a);
        let m = self.sel(bn, b, m);
        self.sel(an, a, m)
    }
    /// `relu`: `x < 0 ? 0 : x`.
    fn relu(&mut self, x: usize) -> usize {
        let z = self.f(0.0);
        let neg = self.lt(x, z);
        self.sel(neg, z, x)
    }
    /// `relu6`: `x < 0 ? 0 : (x > 6 ? 6 : x)`.
    fn relu6(&mut self, x: usize) -> usize {
        let (z, six) = (self.f(0.0), self.f(6.0));
        self.clamp(x, z, six)
    }
    /// The fused activation of an op.
    fn act(&mut self, x: usize, act: Option<&str>) -> usize {
        match act {
            Some("relu") => self.relu(x),
            Some("relu6") => self.relu6(x),
            _ => x,
        }
    }
    /// Fake quantization of `x` with scale `s` and float zero point `z` (PyTorch's
    /// formula: multiply by the f32 inverse, round half to even, clamp, dequantize).
    fn fake_quant(&mut self, x: usize, s: usize, z: usize, lo: i64, hi: i64) -> usize {
        let one = self.f(1.0);
        let inv = self.div(one, s);
        let xi = self.mul(x, inv);
        let r = self.push(Ex::Round(xi));
        let q = self.add(z, r);
        let (lo, hi) = (self.f(lo as f32), self.f(hi as f32));
        let c = self.clamp(q, lo, hi);
        let d = self.sub(c, z);
        let y = self.mul(d, s);
        let nan = self.is_nan(q);
        self.sel(nan, q, y)
    }
    /// The clipped-STE mask test: the grid point of `x` lies in [lo, hi].
    fn in_range(&mut self, x: usize, s: usize, z: usize, lo: i64, hi: i64) -> usize {
        let one = self.f(1.0);
        let inv = self.div(one, s);
        let xi = self.mul(x, inv);
        let r = self.push(Ex::Round(xi));
        let q = self.add(z, r);
        let (lo, hi) = (self.f(lo as f32), self.f(hi as f32));
        let a = self.push(Ex::Le(lo, q));
        let b = self.push(Ex::Le(q, hi));
        self.push(Ex::And(a, b))
    }
    /// The LSQ forward zero point `clamp(round(zp))` as a float (NaN gives 0).
    fn lsq_forward_zp(&mut self, zp: usize, lo: i64, hi: i64) -> usize {
        let r = self.push(Ex::Round(zp));
        let (l, h) = (self.f(lo as f32), self.f(hi as f32));
        let c = self.clamp(r, l, h);
        let nan = self.is_nan(c);
        let zero = self.f(0.0);
        self.sel(nan, zero, c)
    }
    /// The LSQ backward zero point (`nearest`: as the forward; `torch`:
    /// `trunc(clamp(zp + 0.5))`).
    fn lsq_backward_zp(&mut self, zp: usize, lo: i64, hi: i64, torch: bool) -> usize {
        if !torch {
            return self.lsq_forward_zp(zp, lo, hi);
        }
        let half = self.f(0.5);
        let z = self.add(zp, half);
        let (l, h) = (self.f(lo as f32), self.f(hi as f32));
        let c = self.clamp(z, l, h);
        self.push(Ex::Trunc(c))
    }
    fn finish(self, out: usize, arg_dims: Vec<ArgDims>) -> MapFn {
        MapFn {
            arg_dims,
            body: self.ex,
            out,
        }
    }
}

/// The NumPy broadcast of an argument of rank `r` onto `rank` dimensions.
fn bcast(r: usize, rank: usize) -> ArgDims {
    (rank - r..rank).collect()
}

struct Lower<'a> {
    g: &'a Graph,
    bindings: &'a Bindings,
    store: &'a Store,
    roots: std::collections::HashSet<NodeId>,
    lg: LGraph,
    values: HashMap<NodeId, LId>,
    im2col: HashMap<(LId, ConvKey), LId>,
    baked: Vec<(String, qir::Tensor)>,
}

/// What makes two im2col calls the same.
type ConvKey = (
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 4],
    [usize; 2],
    usize,
);

fn key(c: &Conv) -> ConvKey {
    (
        c.c,
        c.h,
        c.w,
        c.kh * 1000 + c.kw,
        c.stride,
        c.pad,
        c.dil,
        c.groups,
    )
}

impl Lower<'_> {
    fn dims_of(&self, id: NodeId) -> Result<Vec<usize>, String> {
        let ty = self.g.ty(id);
        let dims = ty
            .shape
            .bind(&|s| self.bindings.get(s).map(|&v| v as u64))
            .ok_or_else(|| format!("{ty} has a dimension no input binds"))?;
        dims.into_iter()
            .map(|d| usize::try_from(d).map_err(|_| format!("{ty} is too large")))
            .collect()
    }

    fn arg(&self, id: NodeId, i: usize) -> Result<LId, String> {
        let ops = self.g.operands(id);
        let o = ops.get(i).ok_or_else(|| format!("missing operand {i}"))?;
        self.values
            .get(o)
            .copied()
            .ok_or_else(|| format!("operand {} was not lowered", self.g.describe(*o)))
    }

    fn n_args(&self, id: NodeId) -> usize {
        self.g.operands(id).len()
    }

    fn label(&self, id: NodeId, what: &str) -> String {
        let d = self.g.describe(id);
        if what.is_empty() {
            d
        } else {
            format!("{d} ({what})")
        }
    }

    fn push(
        &mut self,
        id: NodeId,
        what: &str,
        kind: LKind,
        args: Vec<LId>,
        dims: Vec<usize>,
        dtype: DType,
    ) -> LId {
        let label = self.label(id, what);
        self.lg.push(LNode {
            kind,
            args,
            dims,
            dtype,
            strides: None,
            layout_fixed: false,
            origin: Some(id),
            label,
            extra_bytes: 0,
        })
    }

    /// A map over `dims` of the arguments broadcast NumPy-style.
    fn map_np(
        &mut self,
        id: NodeId,
        args: Vec<LId>,
        dims: Vec<usize>,
        dtype: DType,
        build: impl FnOnce(&mut Body) -> usize,
    ) -> LId {
        let rank = dims.len();
        let arg_dims = args
            .iter()
            .map(|&a| bcast(self.lg.nodes[a].dims.len(), rank))
            .collect();
        self.map(id, "", args, arg_dims, dims, dtype, build)
    }

    #[allow(clippy::too_many_arguments)]
    fn map(
        &mut self,
        id: NodeId,
        what: &str,
        args: Vec<LId>,
        arg_dims: Vec<ArgDims>,
        dims: Vec<usize>,
        dtype: DType,
        build: impl FnOnce(&mut Body) -> usize,
    ) -> LId {
        let mut b = Body::default();
        let out = build(&mut b);
        let f = b.finish(out, arg_dims);
        self.push(id, what, LKind::Map(f), args, dims, dtype)
    }

    fn kernel(
        &mut self,
        id: NodeId,
        what: &str,
        k: Kernel,
        args: Vec<LId>,
        dims: Vec<usize>,
        dtype: DType,
    ) -> LId {
        self.push(id, what, LKind::Kernel(Box::new(k)), args, dims, dtype)
    }

    /// A reduction of `x` over `axes` (true = reduced) to `dims`.
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &mut self,
        id: NodeId,
        what: &str,
        x: LId,
        axes: Vec<bool>,
        op: RedOp,
        div: f64,
        dims: Vec<usize>,
    ) -> LId {
        self.push(
            id,
            what,
            LKind::Reduce(Reduce { op, axes, div }),
            vec![x],
            dims,
            DType::F32,
        )
    }

    /// Argument `x` as a row-major buffer (a copy when its layout is not).
    fn row_major(&mut self, x: LId) -> LId {
        let n = &self.lg.nodes[x];
        if n.is_row_major() {
            self.lg.nodes[x].layout_fixed = true;
            return x;
        }
        let (dims, dtype, origin) = (n.dims.clone(), n.dtype, n.origin);
        let rank = dims.len();
        let mut b = Body::default();
        let out = b.arg(0);
        let f = b.finish(out, vec![(0..rank).collect()]);
        let label = format!("{} (row-major copy)", n.label);

        self.lg.push(LNode {
            kind: LKind::Map(f),
            args: vec![x],
            dims,
            dtype,
            strides: None,
            layout_fixed: true,
            origin,
            label,
            extra_bytes: 0,
        })
    }

    /// A view of `x` under `dims` (x is made row-major first).
    fn view(&mut self, id: NodeId, x: LId, dims: Vec<usize>) -> LId {
        let x = self.row_major(x);
        let dtype = self.lg.nodes[x].dtype;
        self.push(id, "", LKind::View, vec![x], dims, dtype)
    }

    fn attr_int(&self, id: NodeId, name: &str) -> Result<i64, String> {
        self.g
            .node(id)
            .inst()
            .and_then(|i| i.int(name))
            .ok_or_else(|| format!("attribute '{name}' is missing"))
    }
    fn attr_float(&self, id: NodeId, name: &str) -> Result<f64, String> {
        self.g
            .node(id)
            .inst()
            .and_then(|i| i.float(name))
            .ok_or_else(|| format!("attribute '{name}' is missing"))
    }
    fn attr_ints(&self, id: NodeId, name: &str) -> Option<Vec<i64>> {
        self.g.node(id).inst().and_then(|i| i.ints(name))
    }
    fn attr_bool(&self, id: NodeId, name: &str) -> bool {
        self.g
            .node(id)
            .inst()
            .and_then(|i| i.boolean(name))
            .unwrap_or(false)
    }
    fn attr_choice(&self, id: NodeId, name: &str) -> Option<&'static str> {
        self.g.node(id).inst().and_then(|i| i.choice(name))
    }
    fn usizes<const N: usize>(
        &self,
        id: NodeId,
        name: &str,
        default: usize,
    ) -> Result<[usize; N], String> {
        let mut out = [default; N];
        if let Some(v) = self.attr_ints(id, name) {
            if v.len() != N {
                return Err(format!("'{name}' needs {N} values"));
            }
            for (o, x) in out.iter_mut().zip(v) {
                *o = usize::try_from(x).map_err(|_| format!("'{name}' must not be negative"))?;
            }
        }
        Ok(out)
    }
    fn axis(&self, id: NodeId, name: &str, rank: usize) -> Result<Option<usize>, String> {
        match self.g.node(id).inst().and_then(|i| i.int(name)) {
            None => Ok(None),
            Some(a) => {
                let r = rank as i64;
                let a = if a < 0 { a + r } else { a };
                if (0..r).contains(&a) {
                    Ok(Some(a as usize))
                } else {
                    Err(format!("'{name}' {a} is out of range for rank {rank}"))
                }
            }
        }
    }
    fn axes(&self, id: NodeId, rank: usize) -> Result<Vec<bool>, String> {
        let mut out = vec![false; rank];
        for a in self.attr_ints(id, "axes").unwrap_or_default() {
            let r = rank as i64;
            let a = if a < 0 { a + r } else { a };
            if !(0..r).contains(&a) {
                return Err(format!("axis {a} is out of range for rank {rank}"));
            }
            out[a as usize] = true;
        }
        Ok(out)
    }

    fn conv(&self, id: NodeId, x: [usize; 4], o: usize, k: [usize; 2]) -> Result<Conv, String> {
        let stride = self.usizes::<2>(id, "stride", 1)?;
        let pad = self.usizes::<4>(id, "padding", 0)?;
        let dil = self.usizes::<2>(id, "dilation", 1)?;
        let groups = usize::try_from(self.attr_int(id, "groups")?).map_err(|_| "bad groups")?;
        if groups == 0 || !x[1].is_multiple_of(groups) || !o.is_multiple_of(groups) {
            return Err(format!("groups = {groups} must divide the channels"));
        }
        let out = |input: usize, k: usize, s: usize, p: usize, d: usize| -> Option<usize> {
            let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            let padded = input.checked_add(p)?;
            (padded >= span && s > 0).then(|| (padded - span) / s + 1)
        };
        let oh = out(x[2], k[0], stride[0], pad[0] + pad[2], dil[0]);
        let ow = out(x[3], k[1], stride[1], pad[1] + pad[3], dil[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err("the window does not fit the input".into());
        };
        Ok(Conv {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o,
            kh: k[0],
            kw: k[1],
            oh,
            ow,
            stride,
            pad,
            dil,
            groups,
        })
    }

    fn pool(
        &self,
        id: NodeId,
        x: [usize; 4],
        kind: PoolKind,
        dtype: DType,
    ) -> Result<Pool, String> {
        let k = self.usizes::<2>(id, "kernel", 1)?;
        let stride = match self.attr_ints(id, "stride") {
            Some(_) => self.usizes::<2>(id, "stride", 1)?,
            None => k,
        };
        let pad = self.usizes::<4>(id, "padding", 0)?;
        let out = |input: usize, k: usize, s: usize, p: usize| -> Option<usize> {
            let padded = input.checked_add(p)?;
            (padded >= k && k > 0 && s > 0).then(|| (padded - k) / s + 1)
        };
        let (Some(oh), Some(ow)) = (
            out(x[2], k[0], stride[0], pad[0] + pad[2]),
            out(x[3], k[1], stride[1], pad[1] + pad[3]),
        ) else {
            return Err("the window does not fit the input".into());
        };
        Ok(Pool {
            kind,
            dtype,
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            k,
            stride,
            pad,
            oh,
            ow,
            include_pad: self.attr_bool(id, "count_include_pad"),
        })
    }

    /// Whether the input of convolution `id` also feeds a weight gradient. Training then
    /// keeps the batch's column matrix, built once for the forward product and the
    /// gradient's (one long product split over k, measured faster than blocked shares);
    /// otherwise the forward pass runs blocked over images, its columns in cache.
    fn weight_grad_reads(&self, id: NodeId) -> bool {
        let x = self.g.operands(id)[0];
        self.g
            .users(x)
            .iter()
            .any(|&(u, slot)| slot == 1 && self.g.node(u).op() == Some(Op::Conv2dGradWeight))
    }

    /// The column matrix of `x` for convolution `c` (shared by the forward convolution and
    /// its weight gradient).
    fn im2col(&mut self, id: NodeId, x: LId, c: &Conv) -> LId {
        if let Some(&col) = self.im2col.get(&(x, key(c))) {
            return col;
        }
        let x = self.row_major(x);
        let col = self.kernel(
            id,
            "im2col",
            Kernel::Im2col(*c),
            vec![x],
            vec![c.groups, c.kg(), c.cols()],
            DType::F32,
        );
        self.im2col.insert((x, key(c)), col);
        col
    }

    /// Bias and activation after a contraction with result `raw` (channel axis 1).
    fn bias_act(&mut self, id: NodeId, raw: LId, bias: Option<LId>) -> LId {
        let act = self.attr_choice(id, "act").filter(|a| *a != "none");
        if bias.is_none() && act.is_none() {
            return raw;
        }
        let dims = self.lg.nodes[raw].dims.clone();
        let rank = dims.len();
        let mut args = vec![raw];
        let mut arg_dims = vec![(0..rank).collect()];
        if let Some(b) = bias {
            args.push(b);
            arg_dims.push(vec![1]);
        }
        self.map(id, "", args, arg_dims, dims, DType::F32, |b| {
            let mut v = b.arg(0);
            if bias.is_some() {
                let bv = b.arg(1);
                v = b.add(v, bv);
            }
            b.act(v, act)
        })
    }

    /// The forward f32 max pool of `x` with the geometry of `grad`, switched to record its
    /// argmax positions (one byte per output, after its values), if there is one and its
    /// windows lie inside the input.
    fn indexed_pool(&mut self, x: LId, grad: &Pool) -> Option<LId> {
        let fwd = self.lg.nodes.iter().position(|n| {
            n.args.first() == Some(&x)
                && matches!(&n.kind, LKind::Kernel(k) if matches!(&**k, Kernel::Pool(p)
                    if matches!(p.kind, PoolKind::Max | PoolKind::MaxIndexed)
                        && p.dtype == DType::F32
                        && (p.k, p.stride, p.pad) == (grad.k, grad.stride, grad.pad)))
        })?;
        let node = &mut self.lg.nodes[fwd];
        let LKind::Kernel(k) = &mut node.kind else {
            return None;
        };
        let Kernel::Pool(p) = &mut **k else {
            return None;
        };
        if !p.unpadded() || p.k[0] * p.k[1] > 256 {
            return None;
        }
        p.kind = PoolKind::MaxIndexed;
        node.extra_bytes = node.numel();
        Some(fwd)
    }

    /// The int8 weights of a stored value (packed at compile time, so the store's tensor is
    /// baked: a program is recompiled when it changes), if operand `i` of `id` is one.
    fn stored_i8(&mut self, id: NodeId, i: usize) -> Option<Vec<i8>> {
        let w = self.arg(id, i).ok()?;
        let LKind::Stored(name) = &self.lg.nodes[w].kind else {
            return None;
        };
        let t = self.store.get(name)?;
        let Data::I8(v) = &t.data else { return None };
        let v = v.clone();
        self.baked.push((name.clone(), t.clone()));
        Some(v)
    }

    /// The per-channel (axis 0) or per-tensor weight zero points of `q` for `channels`
    /// output channels, if the weights are quantized that way.
    fn weight_zps(q: &QP, channels: usize, per_channel: usize) -> Option<Vec<i32>> {
        let ok = q.chan.dim == 1 || (q.chan.dim == channels && q.chan.inner == per_channel);
        ok.then(|| {
            (0..channels)
                .map(|c| q.zps[if q.chan.dim == 1 { 0 } else { c }] as i32)
                .collect()
        })
    }

    /// `qlinear` on the int8 kernels, when its operands allow: i8/u8 activations with one
    /// zero point, stored i8 weights (per-tensor or per-output-channel zero points).
    fn qlinear_fast(&mut self, id: NodeId) -> Result<Option<LId>, String> {
        let ops = self.g.operands(id);
        let (xty, wty) = (self.g.ty(ops[0]).clone(), self.g.ty(ops[1]).clone());
        let x = self.arg(id, 0)?;
        let xd = self.lg.nodes[x].dims.clone();
        let wd = self.lg.nodes[self.arg(id, 1)?].dims.clone();
        let ([n, k], [m, k2]) = (two(&xd)?, two(&wd)?);
        let xdt = self.lg.nodes[x].dtype;
        let qx = self.qp(&xty, &xd)?;
        let qw = self.qp(&wty, &wd)?;
        if k != k2
            || !matches!(xdt, DType::I8 | DType::U8)
            || qx.chan.dim != 1
            || qw.dtype != DType::I8
        {
            return Ok(None);
        }
        let Some(zps) = Self::weight_zps(&qw, m, k) else {
            return Ok(None);
        };
        let Some(w) = self.stored_i8(id, 1) else {
            return Ok(None);
        };
        let packed = qir_kernels::PackedB::new(&w, m, k, Some(&zps)).map_err(|e| e.to_string())?;
        let x = self.row_major(x);
        let mut args = vec![x];
        if ops.len() > 2 {
            let b = self.arg(id, 2)?;
            args.push(self.row_major(b));
        }
        let op = IntOp::QlinearFast {
            n,
            k,
            m,
            fast: Fast {
                packed: Packed(std::sync::Arc::new(packed)),
                x: xdt,
                zx: qx.zps[0] as i32,
                bias: ops.len() > 2,
                requant: None,
                out: DType::I32,
            },
        };
        Ok(Some(self.kernel(
            id,
            "",
            Kernel::Integer(Box::new(op)),
            args,
            vec![n, m],
            DType::I32,
        )))
    }

    /// `qconv2d` on the int8 kernels, under the conditions of [`Self::qlinear_fast`].
    fn qconv_fast(&mut self, id: NodeId) -> Result<Option<LId>, String> {
        let ops = self.g.operands(id);
        let (xty, wty) = (self.g.ty(ops[0]).clone(), self.g.ty(ops[1]).clone());
        let x = self.arg(id, 0)?;
        let xd = four(&self.lg.nodes[x].dims.clone())?;
        let wd = four(&self.lg.nodes[self.arg(id, 1)?].dims.clone())?;
        let xdt = self.lg.nodes[x].dtype;
        let c = self.conv(id, xd, wd[0], [wd[2], wd[3]])?;
        let qx = self.qp(&xty, &xd)?;
        let qw = self.qp(&wty, &wd)?;
        if !matches!(xdt, DType::I8 | DType::U8) || qx.chan.dim != 1 || qw.dtype != DType::I8 {
            return Ok(None);
        }
        let Some(zps) = Self::weight_zps(&qw, c.o, c.kg()) else {
            return Ok(None);
        };
        let Ok(geom) = qir_kernels::ConvGeom::new(
            c.n,
            c.c,
            [c.h, c.w],
            c.o,
            [c.kh, c.kw],
            c.stride,
            c.pad,
            c.dil,
            c.groups,
        ) else {
            return Ok(None);
        };
        let Some(w) = self.stored_i8(id, 1) else {
            return Ok(None);
        };
        let packed =
            qir_kernels::PackedConv::new(&w, c.o, c.cg(), [c.kh, c.kw], c.groups, Some(&zps))
                .map_err(|e| e.to_string())?;
        let x = self.row_major(x);
        let mut args = vec![x];
        if ops.len() > 2 {
            let b = self.arg(id, 2)?;
            args.push(self.row_major(b));
        }
        let op = IntOp::QconvFast {
            geom,
            fast: Fast {
                packed: Packed(std::sync::Arc::new(packed)),
                x: xdt,
                zx: qx.zps[0] as i32,
                bias: ops.len() > 2,
                requant: None,
                out: DType::I32,
            },
            pool: None,
        };
        let dims = vec![c.n, c.o, c.oh, c.ow];
        Ok(Some(self.kernel(
            id,
            "",
            Kernel::Integer(Box::new(op)),
            args,
            dims,
            DType::I32,
        )))
    }

    /// A `requantize` of the accumulators of a fast `qlinear`/`qconv2d` that nothing else
    /// reads, folded into that call's epilogue (per-tensor output parameters; multipliers
    /// per tensor or per output channel).
    fn fuse_requantize(&mut self, id: NodeId, dims: &[usize]) -> Result<Option<LId>, String> {
        let acc_id = self.g.operands(id)[0];
        if self.roots.contains(&acc_id)
            || self.g.users(acc_id).len() != 1
            || self.g.ty(acc_id).elem.quant().is_some()
        {
            return Ok(None);
        }
        let acc = self.arg(id, 0)?;
        let fusable = match &self.lg.nodes[acc].kind {
            LKind::Kernel(k) => match &**k {
                Kernel::Integer(op) => match &**op {
                    IntOp::QlinearFast { fast, .. } => fast.requant.is_none(),
                    IntOp::QconvFast { fast, .. } => fast.requant.is_none(),
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        };
        if !fusable {
            return Ok(None);
        }
        let out_ty = self.g.ty(id).clone();
        let out = self.qp(&out_ty, dims)?;
        if out.chan.dim != 1 || !matches!(out.dtype, DType::I8 | DType::U8) {
            return Ok(None);
        }
        let mult = self
            .attr_ints(id, "multiplier")
            .ok_or("attribute 'multiplier' is missing")?;
        let shift = self
            .attr_ints(id, "shift")
            .ok_or("attribute 'shift' is missing")?;
        let channels = dims[1];
        let per_channel = self.axis(id, "axis", dims.len())? == Some(1) && mult.len() == channels;
        if !(mult.len() == 1 && shift.len() == 1 || per_channel && shift.len() == channels) {
            return Ok(None);
        }
        let rounding = rounding_of(self.attr_choice(id, "rounding"));
        let (lo, hi) = Self::bounds(&out, self.attr_choice(id, "act"))[0];
        let clamp = qir_kernels::Clamp {
            lo: lo as i32,
            hi: hi as i32,
        };
        let Ok(r) = qir_kernels::Requant::new(rounding, &mult, &shift, out.zps[0] as i32, clamp)
        else {
            return Ok(None);
        };
        let label = self.label(id, "");
        let node = &mut self.lg.nodes[acc];
        let set = |fast_req: &mut Option<qir_kernels::Requant>, fast_out: &mut DType| {
            *fast_req = Some(r.clone());
            *fast_out = out.dtype;
        };
        if let LKind::Kernel(k) = &mut node.kind
            && let Kernel::Integer(op) = &mut **k
        {
            match &mut **op {
                IntOp::QlinearFast { fast, .. } => set(&mut fast.requant, &mut fast.out),
                IntOp::QconvFast { fast, .. } => set(&mut fast.requant, &mut fast.out),
                _ => return Ok(None),
            }
        }
        node.dtype = out.dtype;
        node.label = format!("{} (with {label})", node.label);
        Ok(Some(acc))
    }

    /// A `max_pool2d` without padding of the result of a fast `qconv2d` (requantized or
    /// not) that nothing else reads, folded into that call: the kernel pools the i32
    /// values of each image while they are in cache and requantizes only the pooled ones
    /// (exact: a requantize keeps order, see `qir_kernels::qconv2d_pool_on`).
    fn fuse_max_pool(&mut self, id: NodeId, dims: &[usize]) -> Result<Option<LId>, String> {
        let x_id = self.g.operands(id)[0];
        if self.roots.contains(&x_id) || self.g.users(x_id).len() != 1 {
            return Ok(None);
        }
        let x = self.arg(id, 0)?;
        let LKind::Kernel(k) = &self.lg.nodes[x].kind else {
            return Ok(None);
        };
        let Kernel::Integer(op) = &**k else {
            return Ok(None);
        };
        let IntOp::QconvFast {
            geom, pool: None, ..
        } = &**op
        else {
            return Ok(None);
        };
        let geom = *geom;
        let p = self.pool(
            id,
            [geom.n, geom.o, geom.oh, geom.ow],
            PoolKind::Max,
            DType::I8,
        )?;
        let wide = if geom.stride == [1, 1] {
            geom.w + geom.pad[1] + geom.pad[3]
        } else {
            geom.ow
        };
        // the kernel keeps one image's i32 output planes (a thread's channel rows) in
        // scratch: fused only while they fit in L2
        let scratch = geom.og() * geom.oh * wide * 4;
        let spec = qir_kernels::MaxPool {
            k: p.k,
            stride: p.stride,
        };
        if p.pad != [0; 4]
            || geom.is_depthwise()
            || scratch > FUSED_POOL_SCRATCH
            || spec.out(geom.oh, geom.ow) != Some((p.oh, p.ow))
            || dims != [geom.n, geom.o, p.oh, p.ow]
        {
            return Ok(None);
        }
        let label = self.label(id, "");
        let node = &mut self.lg.nodes[x];
        if let LKind::Kernel(k) = &mut node.kind
            && let Kernel::Integer(op) = &mut **k
            && let IntOp::QconvFast { pool, .. } = &mut **op
        {
            *pool = Some(spec);
        }
        node.dims = dims.to_vec();
        node.label = format!("{} (with {label})", node.label);
        Ok(Some(x))
    }

    /// Resolved quantization parameters of a quantized type over `dims`.
    fn qp(&mut self, ty: &qir::Type, dims: &[usize]) -> Result<QP, String> {
        let q = ty
            .elem
            .quant()
            .ok_or_else(|| format!("expected a quantized type, found {ty}"))?;
        let dtype = DType::of(&ty.elem)?;
        let (axis, scales, zps) = match &q.params {
            QuantParams::PerTensor { scale, zero_point } => (None, vec![*scale], vec![*zero_point]),
            QuantParams::PerAxis {
                axis,
                scales,
                zero_points,
            } => (Some(*axis), scales.clone(), zero_points.clone()),
            QuantParams::PerAxisRef {
                axis,
                scales,
                zero_points,
            } => {
                let st = self
                    .store
                    .get(scales)
                    .ok_or_else(|| format!("quantization scales %{scales} are not in the store"))?
                    .clone();
                let sv: Vec<f32> = match &st.data {
                    Data::F32(v) => v.clone(),
                    Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
                    d => return Err(format!("scales %{scales} hold {} data", d.dtype())),
                };
                self.baked.push((scales.clone(), st));
                let zv = match zero_points {
                    None => vec![0; sv.len()],
                    Some(z) => {
                        let zt = self
                            .store
                            .get(z)
                            .ok_or_else(|| format!("zero points %{z} are not in the store"))?
                            .clone();
                        let v = zt.data.to_f64().into_iter().map(|x| x as i64).collect();
                        self.baked.push((z.clone(), zt));
                        v
                    }
                };
                (Some(*axis), sv, zv)
            }
        };
        if scales.len() != zps.len() {
            return Err(format!(
                "{} scales but {} zero points in {ty}",
                scales.len(),
                zps.len()
            ));
        }
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("scale {bad} in {ty} is not positive"));
        }
        let chan = match axis {
            None => Chan::TENSOR,
            Some(a) => {
                let dim = *dims.get(a).ok_or("axis out of range")?;
                if dim != scales.len() {
                    return Err(format!(
                        "{} quantization parameters for dimension {a} of size {dim}",
                        scales.len()
                    ));
                }
                Chan {
                    dim,
                    inner: dims[a + 1..].iter().product(),
                }
            }
        };
        Ok(QP {
            dtype,
            axis,
            qmin: q.qmin,
            qmax: q.qmax,
            scales,
            zps,
            chan,
        })
    }

    /// Output clamp bounds per channel of `q` with a fused activation (relu6's upper bound
    /// is 6 quantized half to even, as the interpreter).
    fn bounds(q: &QP, act: Option<&str>) -> Bounds {
        q.scales
            .iter()
            .zip(&q.zps)
            .map(|(&s, &z)| match act {
                Some("relu") => (z.max(q.qmin), q.qmax),
                Some("relu6") => {
                    let v = (6.0f32 * (1.0 / s)).round_ties_even();
                    let q6 = z as f32 + v;
                    let q6 = (q6 as f64).clamp(q.qmin as f64, q.qmax as f64) as i64;
                    (z.max(q.qmin), q6.min(q.qmax))
                }
                _ => (q.qmin, q.qmax),
            })
            .collect()
    }

    /// A constant node holding `data` (the quantization parameters of a type).
    fn constant(&mut self, id: NodeId, what: &str, data: Data, dims: Vec<usize>) -> LId {
        let dtype = match &data {
            Data::F32(_) => DType::F32,
            _ => DType::I32,
        };
        let data = match data {
            Data::I64(v) => Data::I32(v.into_iter().map(|x| x as i32).collect()),
            d => d,
        };
        self.push(id, what, LKind::Const(data), vec![], dims, dtype)
    }

    fn node(&mut self, id: NodeId) -> Result<LId, String> {
        let node = self.g.node(id);
        let name = node.name.clone().unwrap_or_default();
        let dims = self.dims_of(id)?;
        let dtype = DType::of(&node.ty.elem)?;
        let inst = match &node.kind {
            NodeKind::Input => {
                return Ok(self.push(id, "", LKind::Input(name), vec![], dims, dtype));
            }
            NodeKind::Param(_) | NodeKind::State(_) | NodeKind::Const(_) => {
                return Ok(self.push(id, "", LKind::Stored(name), vec![], dims, dtype));
            }
            NodeKind::Op(inst) => inst.clone(),
        };
        let rank = dims.len();
        let adims = |l: &Self, x: LId| l.lg.nodes[x].dims.clone();
        match inst.op {
            // ---- contractions ------------------------------------------------------------
            Op::Linear => {
                let (x, w) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (x, w) = (self.row_major(x), self.row_major(w));
                let [n, k] = two(&adims(self, x))?;
                let m = adims(self, w)[0];
                let gm = Gemm {
                    m: n,
                    n: m,
                    k,
                    batch: 1,
                    a: Mat::row_major(k),
                    b: Mat::transposed(k),
                    c: Mat::row_major(m),
                    accumulate: false,
                };
                let raw = self.kernel(
                    id,
                    "gemm",
                    Kernel::Gemm(gm),
                    vec![x, w],
                    vec![n, m],
                    DType::F32,
                );
                let bias = if self.n_args(id) > 2 {
                    Some(self.arg(id, 2)?)
                } else {
                    None
                };
                Ok(self.bias_act(id, raw, bias))
            }
            Op::Matmul => {
                let (x, y) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (x, y) = (self.row_major(x), self.row_major(y));
                let (ta, tb) = (
                    self.attr_bool(id, "transpose_a"),
                    self.attr_bool(id, "transpose_b"),
                );
                let [a0, a1] = two(&adims(self, x))?;
                let [b0, b1] = two(&adims(self, y))?;
                let (m, k) = if ta { (a1, a0) } else { (a0, a1) };
                let n = if tb { b0 } else { b1 };
                let gm = Gemm {
                    m,
                    n,
                    k,
                    batch: 1,
                    a: if ta {
                        Mat::transposed(m)
                    } else {
                        Mat::row_major(k)
                    },
                    b: if tb {
                        Mat::transposed(k)
                    } else {
                        Mat::row_major(n)
                    },
                    c: Mat::row_major(n),
                    accumulate: false,
                };
                Ok(self.kernel(id, "", Kernel::Gemm(gm), vec![x, y], vec![m, n], DType::F32))
            }
            Op::Conv2d => {
                let (x, w) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let xd = four(&adims(self, x))?;
                let wd = four(&adims(self, w))?;
                let c = self.conv(id, xd, wd[0], [wd[2], wd[3]])?;
                let bias = if self.n_args(id) > 2 {
                    Some(self.arg(id, 2)?)
                } else {
                    None
                };
                let w = self.row_major(w);
                let raw = if c.is_depthwise() {
                    let x = self.row_major(x);
                    self.kernel(
                        id,
                        "depthwise",
                        Kernel::Depthwise(c, ConvPass::Forward),
                        vec![x, w],
                        vec![c.n, c.o, c.oh, c.ow],
                        DType::F32,
                    )
                } else {
                    let (what, kernel, args) =
                        if c.n >= BLOCKED_MIN_IMAGES && !self.weight_grad_reads(id) {
                            let x = self.row_major(x);
                            ("conv", Kernel::Conv(c, ConvPass::Forward), vec![x, w])
                        } else {
                            let col = self.im2col(id, x, &c);
                            let (og, kg, cols) = (c.og(), c.kg(), c.cols());
                            let gm = Gemm {
                                m: og,
                                n: cols,
                                k: kg,
                                batch: c.groups,
                                a: Mat {
                                    batch: og * kg,
                                    ..Mat::row_major(kg)
                                },
                                b: Mat {
                                    batch: kg * cols,
                                    ..Mat::row_major(cols)
                                },
                                c: Mat {
                                    batch: og * cols,
                                    ..Mat::row_major(cols)
                                },
                                accumulate: false,
                            };
                            ("gemm", Kernel::Gemm(gm), vec![w, col])
                        };
                    let raw = self.kernel(
                        id,
                        what,
                        kernel,
                        args,
                        vec![c.n, c.o, c.oh, c.ow],
                        DType::F32,
                    );
                    // the product is [O, N, OH*OW]: the NCHW value with channel-major strides
                    let p = c.p();
                    self.lg.nodes[raw].strides = Some(vec![p, c.n * p, c.ow, 1]);
                    self.lg.nodes[raw].layout_fixed = true;
                    raw
                };
                Ok(self.bias_act(id, raw, bias))
            }

            // ---- pooling and normalization ------------------------------------------------
            Op::MaxPool2d | Op::AvgPool2d => {
                if inst.op == Op::MaxPool2d
                    && let Some(fused) = self.fuse_max_pool(id, &dims)?
                {
                    return Ok(fused);
                }
                let x = self.arg(id, 0)?;
                let x = self.row_major(x);
                let xd = four(&adims(self, x))?;
                let kind = if inst.op == Op::MaxPool2d {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                };
                let p = self.pool(id, xd, kind, dtype)?;
                Ok(self.kernel(id, "", Kernel::Pool(p), vec![x], dims, dtype))
            }
            Op::GlobalAvgPool => {
                let x = self.arg(id, 0)?;
                let xd = adims(self, x);
                let plane = xd[2..].iter().product::<usize>().max(1);
                let axes = (0..xd.len()).map(|d| d >= 2).collect();
                Ok(self.reduce(id, "", x, axes, RedOp::Sum, plane as f64, dims))
            }
            Op::BatchNorm => {
                let eps = self.attr_float(id, "eps")? as f32;
                let args = vec![
                    self.arg(id, 0)?,
                    self.arg(id, 1)?,
                    self.arg(id, 2)?,
                    self.arg(id, 3)?,
                    self.arg(id, 4)?,
                ];
                let arg_dims = vec![(0..rank).collect(), vec![1], vec![1], vec![1], vec![1]];
                Ok(self.map(id, "", args, arg_dims, dims, DType::F32, |b| {
                    let (x, g, be, m, v) = (b.arg(0), b.arg(1), b.arg(2), b.arg(3), b.arg(4));
                    bn_apply(b, x, g, be, m, v, eps)
                }))
            }
            Op::BatchNormTrain => {
                let eps = self.attr_float(id, "eps")? as f32;
                let (x, gamma, beta) = (self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?);
                let (mean, var) = self.batch_stats(id, x)?;
                let args = vec![x, gamma, beta, mean, var];
                let arg_dims = vec![(0..rank).collect(), vec![1], vec![1], vec![1], vec![1]];
                Ok(self.map(id, "", args, arg_dims, dims, DType::F32, |b| {
                    let (x, g, be, m, v) = (b.arg(0), b.arg(1), b.arg(2), b.arg(3), b.arg(4));
                    bn_apply(b, x, g, be, m, v, eps)
                }))
            }

            // ---- elementwise ------------------------------------------------------------------
            Op::Relu => self.unary(id, dims, |b, x| b.relu(x)),
            Op::Relu6 => self.unary(id, dims, |b, x| b.relu6(x)),
            Op::Sigmoid => self.unary(id, dims, |b, x| {
                // x >= 0: 1 / (1 + e^-x); below: e^x / (1 + e^x)
                let (zero, one) = (b.f(0.0), b.f(1.0));
                let nx = b.push(Ex::Neg(x));
                let en = b.call(Fun::Exp, nx);
                let d1 = b.add(one, en);
                let pos = b.div(one, d1);
                let ep = b.call(Fun::Exp, x);
                let d2 = b.add(one, ep);
                let neg = b.div(ep, d2);
                let ge = b.push(Ex::Ge(x, zero));
                b.sel(ge, pos, neg)
            }),
            Op::Tanh => self.unary(id, dims, |b, x| b.call(Fun::Tanh, x)),
            Op::Gelu => self.unary(id, dims, |b, x| {
                // x * 0.5 * (1 + erf(x * FRAC_1_SQRT_2))
                let half = b.f(0.5);
                let one = b.f(1.0);
                let k = b.f(std::f64::consts::FRAC_1_SQRT_2 as f32);
                let xh = b.mul(x, half);
                let xk = b.mul(x, k);
                let e = b.call(Fun::Erf, xk);
                let s = b.add(one, e);
                b.mul(xh, s)
            }),
            Op::Neg => self.unary(id, dims, |b, x| b.push(Ex::Neg(x))),
            Op::Exp => self.unary(id, dims, |b, x| b.call(Fun::Exp, x)),
            Op::Log => self.unary(id, dims, |b, x| b.call(Fun::Ln, x)),
            Op::Sqrt => self.unary(id, dims, |b, x| b.push(Ex::Sqrt(x))),
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let act = self.attr_choice(id, "act").filter(|a| *a != "none");
                let op = inst.op;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?];
                Ok(self.map_np(id, args, dims, DType::F32, |b| {
                    let (x, y) = (b.arg(0), b.arg(1));
                    let v = match op {
                        Op::Add => b.add(x, y),
                        Op::Sub => b.sub(x, y),
                        Op::Mul => b.mul(x, y),
                        _ => b.div(x, y),
                    };
                    b.act(v, act)
                }))
            }

            // ---- shape ----------------------------------------------------------------------
            Op::Reshape | Op::Flatten => {
                let x = self.arg(id, 0)?;
                Ok(self.view(id, x, dims))
            }
            Op::Transpose => {
                let x = self.arg(id, 0)?;
                let perm = self
                    .attr_ints(id, "perm")
                    .ok_or("attribute 'perm' is missing")?;
                let mut ad = vec![0usize; rank];
                for (i, &p) in perm.iter().enumerate() {
                    let p = usize::try_from(p).map_err(|_| "bad perm")?;
                    *ad.get_mut(p).ok_or("bad perm")? = i;
                }
                Ok(self.map(id, "", vec![x], vec![ad], dims, dtype, |b| b.arg(0)))
            }
            Op::Concat => {
                let axis = self
                    .axis(id, "axis", rank)?
                    .ok_or("attribute 'axis' is missing")?;
                let n = self.n_args(id);
                let mut args = Vec::with_capacity(n);
                for i in 0..n {
                    let x = self.arg(id, i)?;
                    args.push(self.row_major(x));
                }
                let outer: usize = dims[..axis].iter().product();
                let inner: usize = dims[axis + 1..].iter().product();
                let total = dims[axis];
                let mut off = 0;
                let mut blocks = Vec::with_capacity(n);
                for (i, &x) in args.iter().enumerate() {
                    let ai = self.lg.nodes[x].dims[axis];
                    blocks.push(Block {
                        arg: i,
                        rows: outer,
                        run: ai * inner,
                        src_offset: 0,
                        src_stride: ai * inner,
                        dst_offset: off * inner,
                        dst_stride: total * inner,
                    });
                    off += ai;
                }
                let k = Kernel::Copy(Copy {
                    elem: dtype.size(),
                    blocks,
                });
                Ok(self.kernel(id, "", k, args, dims, dtype))
            }
            Op::Slice => {
                let axis = self
                    .axis(id, "axis", rank)?
                    .ok_or("attribute 'axis' is missing")?;
                let x = self.arg(id, 0)?;
                let x = self.row_major(x);
                let xd = adims(self, x);
                let start =
                    usize::try_from(self.attr_int(id, "start")?).map_err(|_| "bad start")?;
                let outer: usize = xd[..axis].iter().product();
                let inner: usize = xd[axis + 1..].iter().product();
                let len = dims[axis];
                let k = Kernel::Copy(Copy {
                    elem: dtype.size(),
                    blocks: vec![Block {
                        arg: 0,
                        rows: outer,
                        run: len * inner,
                        src_offset: start * inner,
                        src_stride: xd[axis] * inner,
                        dst_offset: 0,
                        dst_stride: len * inner,
                    }],
                });
                Ok(self.kernel(id, "", k, vec![x], dims, dtype))
            }

            // ---- reductions and losses --------------------------------------------------------
            Op::ReduceSum | Op::ReduceMean => {
                let x = self.arg(id, 0)?;
                let xd = adims(self, x);
                let axes = self.axes(id, xd.len())?;
                let count: usize = xd
                    .iter()
                    .zip(&axes)
                    .filter(|(_, r)| **r)
                    .map(|(d, _)| *d)
                    .product();
                let div = if inst.op == Op::ReduceMean {
                    count.max(1) as f64
                } else {
                    1.0
                };
                Ok(self.reduce(id, "", x, axes, RedOp::Sum, div, dims))
            }
            Op::Variance => {
                let x = self.arg(id, 0)?;
                let xd = adims(self, x);
                let axes = self.axes(id, xd.len())?;
                Ok(self.variance(id, x, axes, dims)?.1)
            }
            Op::Softmax | Op::LogSoftmax => {
                let x = self.arg(id, 0)?;
                let x = self.row_major(x);
                let axis = self.axis(id, "axis", rank)?.ok_or("bad axis")?;
                let s = Softmax {
                    outer: dims[..axis].iter().product(),
                    dim: dims[axis],
                    inner: dims[axis + 1..].iter().product(),
                    log: inst.op == Op::LogSoftmax,
                    grad: false,
                };
                Ok(self.kernel(id, "", Kernel::Softmax(s), vec![x], dims, DType::F32))
            }
            Op::SoftmaxCrossEntropy => {
                let (x, l) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (x, l) = (self.row_major(x), self.row_major(l));
                let [n, c] = two(&adims(self, x))?;
                let s = SoftmaxCe {
                    n,
                    c,
                    mean: self.attr_choice(id, "reduction") != Some("sum"),
                    grad: false,
                    labels: self.lg.nodes[l].dtype,
                };
                Ok(self.kernel(id, "", Kernel::SoftmaxCe(s), vec![x, l], dims, DType::F32))
            }
            Op::Argmax => {
                let x = self.arg(id, 0)?;
                let x = self.row_major(x);
                let xd = adims(self, x);
                let axis = self.axis(id, "axis", xd.len())?.ok_or("bad axis")?;
                let k = Kernel::Argmax(Argmax {
                    outer: xd[..axis].iter().product(),
                    dim: xd[axis],
                    inner: xd[axis + 1..].iter().product(),
                    dtype: self.lg.nodes[x].dtype,
                });
                Ok(self.kernel(id, "", k, vec![x], dims, DType::I64))
            }
            Op::Ema => {
                let m = self.attr_float(id, "momentum")? as f32;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?];
                Ok(self.map_np(id, args, dims, DType::F32, |b| {
                    let (r, v) = (b.arg(0), b.arg(1));
                    let (one, mm) = (b.f(1.0), b.f(m));
                    let k = b.sub(one, mm);
                    let x = b.mul(k, r);
                    let y = b.mul(mm, v);
                    b.add(x, y)
                }))
            }
            Op::AllReduce => {
                let x = self.arg(id, 0)?;
                let x = self.row_major(x);
                let op = self
                    .attr_choice(id, "op")
                    .and_then(ReduceOp::from_name)
                    .ok_or("attribute 'op' must be sum, mean, min or max")?;
                let k = Kernel::AllReduce(AllReduce {
                    len: dims.iter().product(),
                    op,
                    dtype,
                });
                Ok(self.kernel(id, "", k, vec![x], dims, dtype))
            }
            Op::BroadcastLike => {
                let x = self.arg(id, 0)?;
                Ok(self.map_np(id, vec![x], dims, dtype, |b| b.arg(0)))
            }
            Op::SumToLike => {
                let x = self.arg(id, 0)?;
                let xd = adims(self, x);
                let lead = xd.len() - rank;
                let axes: Vec<bool> = (0..xd.len())
                    .map(|d| d < lead || (dims[d - lead] == 1 && xd[d] != 1))
                    .collect();
                Ok(self.reduce(id, "", x, axes, RedOp::Sum, 1.0, dims))
            }

            // ---- fake quantization ------------------------------------------------------------
            Op::FakeQuant => {
                let (lo, hi) = (self.attr_int(id, "qmin")?, self.attr_int(id, "qmax")?);
                let pd = self.param_dims(id, rank)?;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?];
                let arg_dims = vec![(0..rank).collect(), pd.clone(), pd];
                Ok(self.map(id, "", args, arg_dims, dims, DType::F32, |b| {
                    let (x, s, zi) = (b.arg(0), b.arg(1), b.arg(2));
                    let z = b.push(Ex::IToF(zi));
                    b.fake_quant(x, s, z, lo, hi)
                }))
            }
            Op::FakeQuantLsq => {
                let (lo, hi) = (self.attr_int(id, "qmin")?, self.attr_int(id, "qmax")?);
                let pd = self.param_dims(id, rank)?;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?];
                let arg_dims = vec![(0..rank).collect(), pd.clone(), pd];
                Ok(self.map(id, "", args, arg_dims, dims, DType::F32, |b| {
                    let (x, s, zp) = (b.arg(0), b.arg(1), b.arg(2));
                    let z = b.lsq_forward_zp(zp, lo, hi);
                    b.fake_quant(x, s, z, lo, hi)
                }))
            }

            // ---- observers --------------------------------------------------------------------
            Op::ObserveMin | Op::ObserveMax => {
                let is_min = inst.op == Op::ObserveMin;
                let (x, running) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let xd = adims(self, x);
                let axis = self.axis(id, "axis", xd.len())?;
                let axes: Vec<bool> = (0..xd.len()).map(|d| Some(d) != axis).collect();
                let op = if is_min { RedOp::Min } else { RedOp::Max };
                let m = self.reduce(id, "batch extreme", x, axes, op, 1.0, dims.clone());
                let averaging = self.g.node(id).inst().and_then(|i| i.float("averaging"));
                let empty = if is_min {
                    f32::INFINITY
                } else {
                    f32::NEG_INFINITY
                };
                let all: ArgDims = (0..rank).collect();
                Ok(self.map(
                    id,
                    "",
                    vec![running, m],
                    vec![all.clone(), all],
                    dims,
                    DType::F32,
                    |b| {
                        let (r, bv) = (b.arg(0), b.arg(1));
                        let e = b.f(empty);
                        let is_empty = b.push(Ex::Eq(bv, e));
                        let (pinf, ninf) = (b.f(f32::INFINITY), b.f(f32::NEG_INFINITY));
                        let rp = b.push(Ex::Eq(r, pinf));
                        let rn = b.push(Ex::Eq(r, ninf));
                        let unset = b.push(Ex::Or(rp, rn));
                        let combined = match averaging {
                            Some(1.0) => bv,
                            Some(c) => {
                                let c = b.f(c as f32);
                                let d = b.sub(bv, r);
                                let s = b.mul(c, d);
                                b.add(r, s)
                            }
                            None if is_min => b.min_nan(r, bv),
                            None => b.max_nan(r, bv),
                        };
                        let v = b.sel(unset, bv, combined);
                        b.sel(is_empty, r, v)
                    },
                ))
            }
            Op::QparamsScale | Op::QparamsZeroPoint => {
                let rule = QparamRule {
                    qmin: self.attr_int(id, "qmin")?,
                    qmax: self.attr_int(id, "qmax")?,
                    symmetric: self.attr_bool(id, "symmetric"),
                    power_of_two: self.attr_bool(id, "power_of_two"),
                    eps: self.attr_float(id, "eps")?,
                };
                if rule.qmin >= rule.qmax {
                    return Err(format!("empty range [{}, {}]", rule.qmin, rule.qmax));
                }
                let scale = inst.op == Op::QparamsScale;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?];
                Ok(self.map_np(id, args, dims, dtype, |b| {
                    let (mn, mx) = (b.arg(0), b.arg(1));
                    qparams(b, mn, mx, rule, scale)
                }))
            }

            // ---- integer ops --------------------------------------------------------------------
            Op::Quantize => {
                let rounding = rounding_of(self.attr_choice(id, "rounding"));
                let q = self.qp(&node.ty, &dims)?;
                let x = self.arg(id, 0)?;
                let one_scale = q.axis.is_none() && q.scales.len() == 1 && q.zps.len() == 1;
                if one_scale
                    && rounding == Rounding::HalfEven
                    && self.lg.nodes[x].dtype == DType::F32
                    && matches!(dtype, DType::I8 | DType::U8)
                {
                    // the per-tensor input quantize of a converted model: a kernel that
                    // does 16 values per instruction (the loop form does 4)
                    let op = IntOp::Quantize {
                        len: dims.iter().product(),
                        scale: q.scales[0],
                        zp: q.zps[0] as i32,
                        lo: q.qmin as i32,
                        hi: q.qmax as i32,
                    };
                    return Ok(self.kernel(
                        id,
                        "",
                        Kernel::Integer(Box::new(op)),
                        vec![x],
                        dims,
                        dtype,
                    ));
                }
                let (sa, za, pd) = self.qparam_args(id, &q);
                let (lo, hi) = (q.qmin, q.qmax);
                Ok(self.map(
                    id,
                    "",
                    vec![x, sa, za],
                    vec![(0..rank).collect(), pd.clone(), pd],
                    dims,
                    dtype,
                    |b| {
                        let (x, s, zi) = (b.arg(0), b.arg(1), b.arg(2));
                        let one = b.f(1.0);
                        let inv = b.div(one, s);
                        let v = b.mul(x, inv);
                        let r = match rounding {
                            Rounding::HalfEven => b.push(Ex::Round(v)),
                            Rounding::HalfAwayFromZero => b.push(Ex::RoundAway(v)),
                        };
                        let z = b.push(Ex::IToF(zi));
                        let qv = b.add(z, r);
                        let (l, h) = (b.f(lo as f32), b.f(hi as f32));
                        let c = b.clamp(qv, l, h);
                        let ci = b.push(Ex::FToI(c));
                        let nan = b.is_nan(qv);
                        b.sel(nan, zi, ci)
                    },
                ))
            }
            Op::Dequantize => {
                let x = self.arg(id, 0)?;
                let xty = self.g.ty(self.g.operands(id)[0]).clone();
                let q = self.qp(&xty, &dims)?;
                let (sa, za, pd) = self.qparam_args(id, &q);
                Ok(self.map(
                    id,
                    "",
                    vec![x, sa, za],
                    vec![(0..rank).collect(), pd.clone(), pd],
                    dims,
                    DType::F32,
                    |b| {
                        let (v, s, z) = (b.arg(0), b.arg(1), b.arg(2));
                        let d = b.sub(v, z);
                        let f = b.push(Ex::IToF(d));
                        b.mul(f, s)
                    },
                ))
            }
            Op::Requantize => {
                if let Some(fused) = self.fuse_requantize(id, &dims)? {
                    return Ok(fused);
                }
                let x = self.arg(id, 0)?;
                let x = self.row_major(x);
                let xty = self.g.ty(self.g.operands(id)[0]).clone();
                let input = match xty.elem.quant() {
                    Some(_) => (self.lg.nodes[x].dtype, Some(self.qp(&xty, &dims)?)),
                    None => (self.lg.nodes[x].dtype, None),
                };
                let mult = self
                    .attr_ints(id, "multiplier")
                    .ok_or("attribute 'multiplier' is missing")?;
                let shift = self
                    .attr_ints(id, "shift")
                    .ok_or("attribute 'shift' is missing")?;
                if mult.len() != shift.len() || mult.is_empty() {
                    return Err(
                        "'multiplier' and 'shift' must have the same non-zero length".into(),
                    );
                }
                for (&m, &s) in mult.iter().zip(&shift) {
                    if !(0..=i32::MAX as i64).contains(&m) || !(-31..=62).contains(&s) {
                        return Err(format!(
                            "multiplier {m} / shift {s} is outside Q0.31 [0, 2^31) / [-31, 62]"
                        ));
                    }
                }
                let maxis = self.axis(id, "axis", rank)?;
                let mchan = match maxis {
                    None => {
                        if mult.len() != 1 {
                            return Err(format!("{} multipliers need an 'axis'", mult.len()));
                        }
                        Chan::TENSOR
                    }
                    Some(ax) => {
                        if dims[ax] != mult.len() {
                            return Err(format!(
                                "{} multipliers for dimension {ax} of size {}",
                                mult.len(),
                                dims[ax]
                            ));
                        }
                        Chan {
                            dim: dims[ax],
                            inner: dims[ax + 1..].iter().product(),
                        }
                    }
                };
                let out = self.qp(&node.ty, &dims)?;
                let act = self.attr_choice(id, "act");
                let bounds = Self::bounds(&out, act);
                let op = IntOp::Requantize {
                    len: dims.iter().product(),
                    input,
                    mult,
                    shift,
                    mchan,
                    out,
                    bounds,
                    rounding: rounding_of(self.attr_choice(id, "rounding")),
                };
                Ok(self.kernel(id, "", Kernel::Integer(Box::new(op)), vec![x], dims, dtype))
            }
            Op::Qlinear => {
                if let Some(fast) = self.qlinear_fast(id)? {
                    return Ok(fast);
                }
                let ops = self.g.operands(id);
                let (xty, wty) = (self.g.ty(ops[0]).clone(), self.g.ty(ops[1]).clone());
                let (x, w) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (x, w) = (self.row_major(x), self.row_major(w));
                let [n, k] = two(&adims(self, x))?;
                let m = adims(self, w)[0];
                let qx = self.qp(&xty, &[n, k])?;
                let qw = self.qp(&wty, &[m, k])?;
                let mut args = vec![x, w];
                if ops.len() > 2 {
                    let b = self.arg(id, 2)?;
                    args.push(self.row_major(b));
                }
                let op = IntOp::Qlinear {
                    n,
                    k,
                    m,
                    x: qx,
                    w: qw,
                    bias: ops.len() > 2,
                };
                Ok(self.kernel(
                    id,
                    "",
                    Kernel::Integer(Box::new(op)),
                    args,
                    dims,
                    DType::I32,
                ))
            }
            Op::Qconv2d => {
                if let Some(fast) = self.qconv_fast(id)? {
                    return Ok(fast);
                }
                let ops = self.g.operands(id);
                let (xty, wty) = (self.g.ty(ops[0]).clone(), self.g.ty(ops[1]).clone());
                let (x, w) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (x, w) = (self.row_major(x), self.row_major(w));
                let xd = four(&adims(self, x))?;
                let wd = four(&adims(self, w))?;
                let c = self.conv(id, xd, wd[0], [wd[2], wd[3]])?;
                let qx = self.qp(&xty, &xd)?;
                let qw = self.qp(&wty, &wd)?;
                let mut args = vec![x, w];
                if ops.len() > 2 {
                    let b = self.arg(id, 2)?;
                    args.push(self.row_major(b));
                }
                let op = IntOp::Qconv {
                    conv: c,
                    x: qx,
                    w: qw,
                    bias: ops.len() > 2,
                };
                Ok(self.kernel(
                    id,
                    "",
                    Kernel::Integer(Box::new(op)),
                    args,
                    dims,
                    DType::I32,
                ))
            }
            Op::Qadd => {
                let ops = self.g.operands(id);
                let (aty, bty) = (self.g.ty(ops[0]).clone(), self.g.ty(ops[1]).clone());
                let (x, y) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (x, y) = (self.row_major(x), self.row_major(y));
                let (xd, yd) = (adims(self, x), adims(self, y));
                let qa = self.qp(&aty, &xd)?;
                let qb = self.qp(&bty, &yd)?;
                let out = self.qp(&node.ty, &dims)?;
                let bounds = Self::bounds(&out, self.attr_choice(id, "act"));
                let op = IntOp::Qadd {
                    a_strides: bcast_strides(&xd, &dims),
                    b_strides: bcast_strides(&yd, &dims),
                    dims: dims.clone(),
                    a: qa,
                    b: qb,
                    out,
                    bounds,
                    rounding: rounding_of(self.attr_choice(id, "rounding")),
                };
                Ok(self.kernel(
                    id,
                    "",
                    Kernel::Integer(Box::new(op)),
                    vec![x, y],
                    dims,
                    dtype,
                ))
            }
            Op::Qconcat => {
                let axis = self
                    .axis(id, "axis", rank)?
                    .ok_or("attribute 'axis' is missing")?;
                let ops = self.g.operands(id);
                let mut args = Vec::new();
                let mut inputs = Vec::new();
                let mut chunks = Vec::new();
                for (i, &o) in ops.iter().enumerate() {
                    let ty = self.g.ty(o).clone();
                    let x = self.arg(id, i)?;
                    let x = self.row_major(x);
                    let xd = adims(self, x);
                    inputs.push(self.qp(&ty, &xd)?);
                    chunks.push(xd[axis..].iter().product());
                    args.push(x);
                }
                let out = self.qp(&node.ty, &dims)?;
                let bounds = Self::bounds(&out, None);
                let op = IntOp::Qconcat {
                    outer: dims[..axis].iter().product(),
                    chunks,
                    inputs,
                    out,
                    bounds,
                    rounding: rounding_of(self.attr_choice(id, "rounding")),
                };
                Ok(self.kernel(id, "", Kernel::Integer(Box::new(op)), args, dims, dtype))
            }
            Op::QglobalAvgPool => {
                let xty = self.g.ty(self.g.operands(id)[0]).clone();
                let x = self.arg(id, 0)?;
                let x = self.row_major(x);
                let xd = four(&adims(self, x))?;
                let qx = self.qp(&xty, &xd)?;
                if qx.chan.dim > 1 && qx.chan.inner < xd[2] * xd[3] {
                    return Err(
                        "input quantization parameters must be constant over each plane".into(),
                    );
                }
                let out = self.qp(&node.ty, &dims)?;
                let bounds = Self::bounds(&out, None);
                let op = IntOp::QglobalAvgPool {
                    n: xd[0],
                    c: xd[1],
                    plane: xd[2] * xd[3],
                    x: qx,
                    out,
                    bounds,
                    rounding: rounding_of(self.attr_choice(id, "rounding")),
                };
                Ok(self.kernel(id, "", Kernel::Integer(Box::new(op)), vec![x], dims, dtype))
            }

            // ---- backward -------------------------------------------------------------------------
            Op::ReluGrad => self.grad_unary(id, dims, |b, d, x| {
                let z = b.f(0.0);
                let pos = b.gt(x, z);
                b.sel(pos, d, z)
            }),
            Op::Relu6Grad => self.grad_unary(id, dims, |b, d, x| {
                let (z, six) = (b.f(0.0), b.f(6.0));
                let p = b.gt(x, z);
                let q = b.lt(x, six);
                let m = b.push(Ex::And(p, q));
                b.sel(m, d, z)
            }),
            Op::SigmoidGrad => self.grad_unary(id, dims, |b, d, y| {
                let one = b.f(1.0);
                let dy = b.mul(d, y);
                let c = b.sub(one, y);
                b.mul(dy, c)
            }),
            Op::TanhGrad => self.grad_unary(id, dims, |b, d, y| {
                let one = b.f(1.0);
                let yy = b.mul(y, y);
                let c = b.sub(one, yy);
                b.mul(d, c)
            }),
            Op::GeluGrad => self.grad_unary(id, dims, |b, d, x| {
                // Phi(x) + x * phi(x), as the interpreter's gelu_grad
                let half = b.f(0.5);
                let one = b.f(1.0);
                let k = b.f(std::f64::consts::FRAC_1_SQRT_2 as f32);
                let xk = b.mul(x, k);
                let e = b.call(Fun::Erf, xk);
                let s = b.add(one, e);
                let cdf = b.mul(half, s);
                let xx = b.mul(x, x);
                let nxx = b.push(Ex::Neg(xx));
                let h = b.mul(nxx, half);
                let ex = b.call(Fun::Exp, h);
                let c = b.f((0.5
                    * std::f64::consts::FRAC_2_SQRT_PI
                    * std::f64::consts::FRAC_1_SQRT_2) as f32);
                let pdf = b.mul(ex, c);
                let xp = b.mul(x, pdf);
                let g = b.add(cdf, xp);
                b.mul(d, g)
            }),
            Op::Conv2dGradInput => {
                let (dy, w) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let dyd = four(&adims(self, dy))?;
                let wd = four(&adims(self, w))?;
                let [h, wi] = self.usizes::<2>(id, "input_size", 1)?;
                let groups =
                    usize::try_from(self.attr_int(id, "groups")?).map_err(|_| "bad groups")?;
                let c = self.conv(id, [dyd[0], wd[1] * groups, h, wi], dyd[1], [wd[2], wd[3]])?;
                if (c.oh, c.ow) != (dyd[2], dyd[3]) {
                    return Err("dy does not match the convolution".into());
                }
                let w = self.row_major(w);
                if c.is_depthwise() {
                    let dy = self.row_major(dy);
                    return Ok(self.kernel(
                        id,
                        "",
                        Kernel::Depthwise(c, ConvPass::GradInput),
                        vec![dy, w],
                        dims,
                        DType::F32,
                    ));
                }
                let dy = self.channel_major(dy, &c);
                if c.n >= BLOCKED_MIN_IMAGES {
                    return Ok(self.kernel(
                        id,
                        "conv",
                        Kernel::Conv(c, ConvPass::GradInput),
                        vec![dy, w],
                        dims,
                        DType::F32,
                    ));
                }
                let (og, kg, cols) = (c.og(), c.kg(), c.cols());
                let gm = Gemm {
                    m: kg,
                    n: cols,
                    k: og,
                    batch: c.groups,
                    a: Mat {
                        batch: og * kg,
                        ..Mat::transposed(kg)
                    },
                    b: Mat {
                        batch: og * cols,
                        ..Mat::row_major(cols)
                    },
                    c: Mat {
                        batch: kg * cols,
                        ..Mat::row_major(cols)
                    },
                    accumulate: false,
                };
                let dcol = self.kernel(
                    id,
                    "gemm",
                    Kernel::Gemm(gm),
                    vec![w, dy],
                    vec![c.groups, kg, cols],
                    DType::F32,
                );
                Ok(self.kernel(
                    id,
                    "col2im",
                    Kernel::Col2im(c),
                    vec![dcol],
                    dims,
                    DType::F32,
                ))
            }
            Op::Conv2dGradWeight => {
                let (dy, x) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let dyd = four(&adims(self, dy))?;
                let xd = four(&adims(self, x))?;
                let k = self.usizes::<2>(id, "kernel", 1)?;
                let c = self.conv(id, xd, dyd[1], k)?;
                if (c.oh, c.ow) != (dyd[2], dyd[3]) {
                    return Err("dy does not match the convolution".into());
                }
                if c.is_depthwise() {
                    let (dy, x) = (self.row_major(dy), self.row_major(x));
                    return Ok(self.kernel(
                        id,
                        "",
                        Kernel::Depthwise(c, ConvPass::GradWeight),
                        vec![dy, x],
                        dims,
                        DType::F32,
                    ));
                }
                let dy = self.channel_major(dy, &c);
                let col = self.im2col(id, x, &c);
                let (og, kg, cols) = (c.og(), c.kg(), c.cols());
                let gm = Gemm {
                    m: og,
                    n: kg,
                    k: cols,
                    batch: c.groups,
                    a: Mat {
                        batch: og * cols,
                        ..Mat::row_major(cols)
                    },
                    b: Mat {
                        batch: kg * cols,
                        ..Mat::transposed(cols)
                    },
                    c: Mat {
                        batch: og * kg,
                        ..Mat::row_major(kg)
                    },
                    accumulate: false,
                };
                Ok(self.kernel(
                    id,
                    "gemm",
                    Kernel::Gemm(gm),
                    vec![dy, col],
                    dims,
                    DType::F32,
                ))
            }
            Op::MaxPool2dGrad => {
                let (dy, x) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (dy, x) = (self.row_major(dy), self.row_major(x));
                let xd = four(&adims(self, x))?;
                let p = self.pool(id, xd, PoolKind::MaxGrad, DType::F32)?;
                // the forward pool of the same input records where each maximum was, so
                // the gradient need not read the input again
                if let Some(fwd) = self.indexed_pool(x, &p) {
                    let p = Pool {
                        kind: PoolKind::MaxGradIndexed,
                        ..p
                    };
                    return Ok(self.kernel(
                        id,
                        "",
                        Kernel::Pool(p),
                        vec![dy, fwd],
                        dims,
                        DType::F32,
                    ));
                }
                Ok(self.kernel(id, "", Kernel::Pool(p), vec![dy, x], dims, DType::F32))
            }
            Op::AvgPool2dGrad => {
                let dy = self.arg(id, 0)?;
                let dy = self.row_major(dy);
                let p = self.pool(id, four(&dims)?, PoolKind::AvgGrad, DType::F32)?;
                Ok(self.kernel(id, "", Kernel::Pool(p), vec![dy], dims, DType::F32))
            }
            Op::GlobalAvgPoolGrad => {
                let dy = self.arg(id, 0)?;
                let plane = dims[2..].iter().product::<usize>().max(1) as f32;
                Ok(self.map(
                    id,
                    "",
                    vec![dy],
                    vec![(0..4).collect()],
                    dims,
                    DType::F32,
                    |b| {
                        let d = b.arg(0);
                        let p = b.f(plane);
                        b.div(d, p)
                    },
                ))
            }
            Op::BatchNormGradInput => {
                let eps = self.attr_float(id, "eps")? as f32;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?];
                let arg_dims = vec![(0..rank).collect(), vec![1], vec![1]];
                Ok(self.map(id, "", args, arg_dims, dims, DType::F32, |b| {
                    let (d, g, v) = (b.arg(0), b.arg(1), b.arg(2));
                    let istd = inv_std(b, v, eps);
                    let k = b.mul(g, istd);
                    b.mul(d, k)
                }))
            }
            Op::BatchNormGradGamma => {
                let eps = self.attr_float(id, "eps")? as f32;
                let (dy, x, mean, var) = (
                    self.arg(id, 0)?,
                    self.arg(id, 1)?,
                    self.arg(id, 2)?,
                    self.arg(id, 3)?,
                );
                let xd = adims(self, x);
                Ok(self.grad_gamma(id, dy, x, mean, var, eps, xd, dims))
            }
            Op::BatchNormTrainGradInput => {
                let eps = self.attr_float(id, "eps")? as f32;
                let (dy, x, gamma) = (self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?);
                let xd = adims(self, x);
                let (mean, var) = self.batch_stats(id, x)?;
                let count = (xd[0] * xd[2..].iter().product::<usize>()).max(1) as f64;
                let axes: Vec<bool> = (0..xd.len()).map(|d| d != 1).collect();
                let cdims = vec![xd[1]];
                let all: ArgDims = (0..xd.len()).collect();
                let mdy = self.reduce(
                    id,
                    "mean dy",
                    dy,
                    axes.clone(),
                    RedOp::Sum,
                    count,
                    cdims.clone(),
                );
                let dyxh = self.map(
                    id,
                    "dy x_hat",
                    vec![dy, x, mean, var],
                    vec![all.clone(), all.clone(), vec![1], vec![1]],
                    xd.clone(),
                    DType::F32,
                    |b| {
                        let (d, x, m, v) = (b.arg(0), b.arg(1), b.arg(2), b.arg(3));
                        let istd = inv_std(b, v, eps);
                        let c = b.sub(x, m);
                        let xh = b.mul(c, istd);
                        b.mul(d, xh)
                    },
                );
                let mdyx = self.reduce(id, "mean dy x_hat", dyxh, axes, RedOp::Sum, count, cdims);
                let args = vec![dy, x, gamma, mean, var, mdy, mdyx];
                let arg_dims = vec![
                    all.clone(),
                    all,
                    vec![1],
                    vec![1],
                    vec![1],
                    vec![1],
                    vec![1],
                ];
                Ok(self.map(id, "", args, arg_dims, dims, DType::F32, |b| {
                    let (d, x, g, m, v, md, mdx) = (
                        b.arg(0),
                        b.arg(1),
                        b.arg(2),
                        b.arg(3),
                        b.arg(4),
                        b.arg(5),
                        b.arg(6),
                    );
                    let istd = inv_std(b, v, eps);
                    let k = b.mul(g, istd);
                    let c = b.sub(x, m);
                    let xh = b.mul(c, istd);
                    let t1 = b.sub(d, md);
                    let t2 = b.mul(xh, mdx);
                    let t = b.sub(t1, t2);
                    b.mul(k, t)
                }))
            }
            Op::BatchNormTrainGradGamma => {
                let eps = self.attr_float(id, "eps")? as f32;
                let (dy, x) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let xd = adims(self, x);
                let (mean, var) = self.batch_stats(id, x)?;
                Ok(self.grad_gamma(id, dy, x, mean, var, eps, xd, dims))
            }
            Op::ReduceMeanGrad => {
                let dy = self.arg(id, 0)?;
                let xd = dims.clone();
                let axes = self.axes(id, xd.len())?;
                let count = xd
                    .iter()
                    .zip(&axes)
                    .filter(|(_, r)| **r)
                    .map(|(d, _)| *d)
                    .product::<usize>()
                    .max(1) as f32;
                let kept = kept_dims(&axes, self.lg.nodes[dy].dims.len(), rank);
                Ok(
                    self.map(id, "", vec![dy], vec![kept], dims, DType::F32, |b| {
                        let d = b.arg(0);
                        let c = b.f(count);
                        b.div(d, c)
                    }),
                )
            }
            Op::VarianceGrad => {
                let (dy, x) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let xd = adims(self, x);
                let axes = self.axes(id, xd.len())?;
                let count: usize = xd
                    .iter()
                    .zip(&axes)
                    .filter(|(_, r)| **r)
                    .map(|(d, _)| *d)
                    .product();
                let c = count.max(1) as f64;
                let kdims: Vec<usize> = xd
                    .iter()
                    .zip(&axes)
                    .filter(|(_, r)| !**r)
                    .map(|(d, _)| *d)
                    .collect();
                let mean = self.reduce(id, "mean", x, axes.clone(), RedOp::Sum, c, kdims);
                let kept = kept_dims(&axes, self.lg.nodes[dy].dims.len(), rank);
                let kept_mean = kept_dims(&axes, self.lg.nodes[mean].dims.len(), rank);
                let k = (2.0 / c) as f32;
                Ok(self.map(
                    id,
                    "",
                    vec![dy, x, mean],
                    vec![kept, (0..rank).collect(), kept_mean],
                    dims,
                    DType::F32,
                    |b| {
                        let (d, x, m) = (b.arg(0), b.arg(1), b.arg(2));
                        let kk = b.f(k);
                        let dk = b.mul(d, kk);
                        let xm = b.sub(x, m);
                        b.mul(dk, xm)
                    },
                ))
            }
            Op::SoftmaxGrad | Op::LogSoftmaxGrad => {
                let (dy, y) = (self.arg(id, 0)?, self.arg(id, 1)?);
                let (dy, y) = (self.row_major(dy), self.row_major(y));
                let axis = self.axis(id, "axis", rank)?.ok_or("bad axis")?;
                let s = Softmax {
                    outer: dims[..axis].iter().product(),
                    dim: dims[axis],
                    inner: dims[axis + 1..].iter().product(),
                    log: inst.op == Op::LogSoftmaxGrad,
                    grad: true,
                };
                Ok(self.kernel(id, "", Kernel::Softmax(s), vec![dy, y], dims, DType::F32))
            }
            Op::SoftmaxCrossEntropyGrad => {
                let (dl, x, l) = (self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?);
                let (x, l) = (self.row_major(x), self.row_major(l));
                let [n, c] = two(&adims(self, x))?;
                let s = SoftmaxCe {
                    n,
                    c,
                    mean: self.attr_choice(id, "reduction") != Some("sum"),
                    grad: true,
                    labels: self.lg.nodes[l].dtype,
                };
                Ok(self.kernel(
                    id,
                    "",
                    Kernel::SoftmaxCe(s),
                    vec![dl, x, l],
                    dims,
                    DType::F32,
                ))
            }
            Op::FakeQuantGrad => {
                let (lo, hi) = (self.attr_int(id, "qmin")?, self.attr_int(id, "qmax")?);
                let pd = self.param_dims(id, rank)?;
                let all: ArgDims = (0..rank).collect();
                let args = vec![
                    self.arg(id, 0)?,
                    self.arg(id, 1)?,
                    self.arg(id, 2)?,
                    self.arg(id, 3)?,
                ];
                Ok(self.map(
                    id,
                    "",
                    args,
                    vec![all.clone(), all, pd.clone(), pd],
                    dims,
                    DType::F32,
                    |b| {
                        let (d, x, s, zi) = (b.arg(0), b.arg(1), b.arg(2), b.arg(3));
                        let z = b.push(Ex::IToF(zi));
                        let m = b.in_range(x, s, z, lo, hi);
                        let zero = b.f(0.0);
                        b.sel(m, d, zero)
                    },
                ))
            }
            Op::FakeQuantLsqGradX | Op::FakeQuantLsqGradScale | Op::FakeQuantLsqGradZeroPoint => {
                self.lsq_grad(id, inst.op, dims)
            }

            // ---- optimizer --------------------------------------------------------------------------
            Op::SgdUpdate => {
                let wd = self.attr_float(id, "weight_decay")? as f32;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?];
                let all: ArgDims = (0..rank).collect();
                Ok(self.map(
                    id,
                    "",
                    args,
                    vec![all.clone(), all, vec![]],
                    dims,
                    DType::F32,
                    |b| {
                        let (p, g, lr) = (b.arg(0), b.arg(1), b.arg(2));
                        let gd = with_decay(b, g, p, wd);
                        let s = b.mul(lr, gd);
                        b.sub(p, s)
                    },
                ))
            }
            Op::SgdMomentum => {
                let m = self.attr_float(id, "momentum")? as f32;
                let damp = self.attr_float(id, "dampening")? as f32;
                let wd = self.attr_float(id, "weight_decay")? as f32;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?];
                Ok(self.map_np(id, args, dims, DType::F32, |b| {
                    let (buf, g, p) = (b.arg(0), b.arg(1), b.arg(2));
                    let gd = with_decay(b, g, p, wd);
                    let (mm, one, dd) = (b.f(m), b.f(1.0), b.f(damp));
                    let x = b.mul(mm, buf);
                    let k = b.sub(one, dd);
                    let y = b.mul(k, gd);
                    b.add(x, y)
                }))
            }
            Op::AdamMoment => {
                let beta = self.attr_float(id, "beta")? as f32;
                let order = self.attr_int(id, "order")?;
                if order != 1 && order != 2 {
                    return Err(format!("'order' must be 1 or 2, found {order}"));
                }
                let wd = self.attr_float(id, "weight_decay")? as f32;
                let args = vec![self.arg(id, 0)?, self.arg(id, 1)?, self.arg(id, 2)?];
                Ok(self.map_np(id, args, dims, DType::F32, |b| {
                    let (m, g, p) = (b.arg(0), b.arg(1), b.arg(2));
                    let gd = with_decay(b, g, p, wd);
                    let gd = if order == 2 { b.mul(gd, gd) } else { gd };
                    let (be, one) = (b.f(beta), b.f(1.0));
                    let x = b.mul(be, m);
                    let k = b.sub(one, be);
                    let y = b.mul(k, gd);
                    b.add(x, y)
                }))
            }
            Op::AdamUpdate => {
                let b1 = self.attr_float(id, "beta1")?;
                let b2 = self.attr_float(id, "beta2")?;
                let eps = self.attr_float(id, "eps")? as f32;
                let wd = self.attr_float(id, "weight_decay")? as f32;
                let all: ArgDims = (0..rank).collect();
                let args = vec![
                    self.arg(id, 0)?,
                    self.arg(id, 1)?,
                    self.arg(id, 2)?,
                    self.arg(id, 3)?,
                    self.arg(id, 4)?,
                ];
                Ok(self.map(
                    id,
                    "",
                    args,
                    vec![all.clone(), all.clone(), all, vec![], vec![]],
                    dims,
                    DType::F32,
                    |b| {
                        let (p, m, v, step, lr) =
                            (b.arg(0), b.arg(1), b.arg(2), b.arg(3), b.arg(4));
                        let bc1 = b.push(Ex::AdamCorrection(b1, step));
                        let bc2 = b.push(Ex::AdamCorrection(b2, step));
                        // per-step scalars (hoisted out of the loop): one division
                        // per element, as the op table defines it
                        let s = b.div(lr, bc1);
                        let rb2 = b.push(Ex::Sqrt(bc2));
                        let one = b.f(1.0);
                        let r = b.div(one, rb2);
                        let t = b.mul(s, m);
                        let sq = b.push(Ex::Sqrt(v));
                        let sr = b.mul(sq, r);
                        let e = b.f(eps);
                        let den = b.add(sr, e);
                        let upd = b.div(t, den);
                        let p1 = b.sub(p, upd);
                        let w = b.f(wd);
                        let lw = b.mul(lr, w);
                        let dec = b.mul(lw, p);
                        b.sub(p1, dec)
                    },
                ))
            }
        }
    }

    fn unary(
        &mut self,
        id: NodeId,
        dims: Vec<usize>,
        f: impl FnOnce(&mut Body, usize) -> usize,
    ) -> Result<LId, String> {
        let x = self.arg(id, 0)?;
        let rank = dims.len();
        Ok(self.map(
            id,
            "",
            vec![x],
            vec![(0..rank).collect()],
            dims,
            DType::F32,
            |b| {
                let x = b.arg(0);
                f(b, x)
            },
        ))
    }

    fn grad_unary(
        &mut self,
        id: NodeId,
        dims: Vec<usize>,
        f: impl FnOnce(&mut Body, usize, usize) -> usize,
    ) -> Result<LId, String> {
        let (d, x) = (self.arg(id, 0)?, self.arg(id, 1)?);
        Ok(self.map_np(id, vec![d, x], dims, DType::F32, |b| {
            let (d, x) = (b.arg(0), b.arg(1));
            f(b, d, x)
        }))
    }

    /// The dims of a fake-quant's parameters: `[axis]` per channel, none per tensor.
    fn param_dims(&self, id: NodeId, rank: usize) -> Result<ArgDims, String> {
        let op = self.g.node(id).op();
        let si = if matches!(op, Some(Op::FakeQuant | Op::FakeQuantLsq)) {
            1
        } else {
            2
        };
        let scale = &self.lg.nodes[self.arg(id, si)?];
        match (self.axis(id, "axis", rank)?, scale.dims.len()) {
            (_, 0) => Ok(vec![]),
            (Some(a), 1) => Ok(vec![a]),
            (None, 1) if scale.numel() == 1 && rank > 0 => Ok(vec![rank - 1]),
            (None, _) => Err(format!(
                "{} quantization parameters need an 'axis'",
                scale.numel()
            )),
            _ => Err("quantization parameters must be a scalar or a vector".into()),
        }
    }

    /// The scale and zero-point arguments of a quantized type: constants, and the dims
    /// they run along.
    fn qparam_args(&mut self, id: NodeId, q: &QP) -> (LId, LId, ArgDims) {
        let (pd, cdims) = match q.axis {
            Some(a) => (vec![a], vec![q.scales.len()]),
            None => (vec![], vec![]),
        };
        let s = self.constant(id, "scales", Data::F32(q.scales.clone()), cdims.clone());
        let z = self.constant(id, "zero points", Data::I64(q.zps.clone()), cdims);
        (s, z, pd)
    }

    /// Per-channel (axis 1) batch mean and biased variance of `x`, each computed in f64
    /// and rounded once.
    fn batch_stats(&mut self, id: NodeId, x: LId) -> Result<(LId, LId), String> {
        let xd = self.lg.nodes[x].dims.clone();
        if xd.len() < 2 {
            return Err(format!("batch norm needs rank >= 2, found {xd:?}"));
        }
        let axes: Vec<bool> = (0..xd.len()).map(|d| d != 1).collect();
        self.variance(id, x, axes, vec![xd[1]])
    }

    /// The mean and the biased variance of `x` over `axes` (both with result dims `dims`).
    fn variance(
        &mut self,
        id: NodeId,
        x: LId,
        axes: Vec<bool>,
        dims: Vec<usize>,
    ) -> Result<(LId, LId), String> {
        let xd = self.lg.nodes[x].dims.clone();
        let count: usize = xd
            .iter()
            .zip(&axes)
            .filter(|(_, r)| **r)
            .map(|(d, _)| *d)
            .product();
        let c = count.max(1) as f64;
        let mean = self.reduce(id, "mean", x, axes.clone(), RedOp::Sum, c, dims.clone());
        let rank = xd.len();
        let kept = kept_dims(&axes, dims.len(), rank);
        let sq = self.map(
            id,
            "squares",
            vec![x, mean],
            vec![(0..rank).collect(), kept],
            xd,
            DType::F32,
            |b| {
                let (x, m) = (b.arg(0), b.arg(1));
                let d = b.sub(x, m);
                b.mul(d, d)
            },
        );
        let var = self.reduce(id, "variance", sq, axes, RedOp::Sum, c, dims);
        Ok((mean, var))
    }

    #[allow(clippy::too_many_arguments)]
    fn grad_gamma(
        &mut self,
        id: NodeId,
        dy: LId,
        x: LId,
        mean: LId,
        var: LId,
        eps: f32,
        xd: Vec<usize>,
        dims: Vec<usize>,
    ) -> LId {
        let rank = xd.len();
        let all: ArgDims = (0..rank).collect();
        let prod = self.map(
            id,
            "dy x_hat",
            vec![dy, x, mean, var],
            vec![all.clone(), all, vec![1], vec![1]],
            xd,
            DType::F32,
            |b| {
                let (d, x, m, v) = (b.arg(0), b.arg(1), b.arg(2), b.arg(3));
                let istd = inv_std(b, v, eps);
                let c = b.sub(x, m);
                let xh = b.mul(c, istd);
                b.mul(d, xh)
            },
        );
        let axes = (0..rank).map(|d| d != 1).collect();
        self.reduce(id, "", prod, axes, RedOp::Sum, 1.0, dims)
    }

    fn lsq_grad(&mut self, id: NodeId, op: Op, dims: Vec<usize>) -> Result<LId, String> {
        let (lo, hi) = (self.attr_int(id, "qmin")?, self.attr_int(id, "qmax")?);
        let torch = self.attr_choice(id, "zero_point_rounding") == Some("torch");
        let (dy, x, s, z) = (
            self.arg(id, 0)?,
            self.arg(id, 1)?,
            self.arg(id, 2)?,
            self.arg(id, 3)?,
        );
        let xd = self.lg.nodes[x].dims.clone();
        let rank = xd.len();
        let pd = self.param_dims(id, rank)?;
        let nparams = self.lg.nodes[s].numel();
        let per_channel = xd.iter().product::<usize>() / nparams.max(1);
        let gf = match self.g.node(id).inst().and_then(|i| i.float("grad_scale")) {
            Some(g) => g,
            None => {
                let d = per_channel as f64 * hi as f64;
                if d > 0.0 {
                    1.0 / d.sqrt()
                } else {
                    return Err(format!(
                        "the default grad_scale 1/sqrt(numel * qmax) is undefined for {per_channel} elements and qmax {hi}; set 'grad_scale'"
                    ));
                }
            }
        } as f32;
        let all: ArgDims = (0..rank).collect();
        let which = op;
        let contrib = self.map(
            id,
            if op == Op::FakeQuantLsqGradX {
                ""
            } else {
                "contributions"
            },
            vec![dy, x, s, z],
            vec![all.clone(), all, pd.clone(), pd.clone()],
            xd.clone(),
            DType::F32,
            |b| {
                let (d, x, s, zp) = (b.arg(0), b.arg(1), b.arg(2), b.arg(3));
                let one = b.f(1.0);
                let inv = b.div(one, s);
                let zb = b.lsq_backward_zp(zp, lo, hi, torch);
                let f = b.push(Ex::Fma(x, inv, zb));
                let q = b.push(Ex::Round(f));
                let (l, h) = (b.f(lo as f32), b.f(hi as f32));
                let below = b.lt(q, l);
                let above = b.gt(q, h);
                let g = b.f(gf);
                let zero = b.f(0.0);
                match which {
                    Op::FakeQuantLsqGradX => {
                        let nan = b.is_nan(q);
                        let out = b.push(Ex::Or(below, above));
                        let dead = b.push(Ex::Or(out, nan));
                        b.sel(dead, zero, d)
                    }
                    Op::FakeQuantLsqGradScale => {
                        // below: dy * (lo - zb) * gf; above: dy * (hi - zb) * gf;
                        // inside: dy * fma(q - zb, s, -x) * inv * gf
                        let lz = b.sub(l, zb);
                        let hz = b.sub(h, zb);
                        let dl = b.mul(d, lz);
                        let vb = b.mul(dl, g);
                        let dh = b.mul(d, hz);
                        let va = b.mul(dh, g);
                        let qz = b.sub(q, zb);
                        let nx = b.push(Ex::Neg(x));
                        let fm = b.push(Ex::Fma(qz, s, nx));
                        let t = b.mul(d, fm);
                        let t = b.mul(t, inv);
                        let vi = b.mul(t, g);
                        let v = b.sel(above, va, vi);
                        b.sel(below, vb, v)
                    }
                    _ => {
                        // outside: -dy * s * gf; inside 0
                        let nd = b.push(Ex::Neg(d));
                        let t = b.mul(nd, s);
                        let v = b.mul(t, g);
                        let out = b.push(Ex::Or(below, above));
                        b.sel(out, v, zero)
                    }
                }
            },
        );
        if op == Op::FakeQuantLsqGradX {
            return Ok(contrib);
        }
        let axes: Vec<bool> = (0..rank).map(|d| !pd.contains(&d)).collect();
        Ok(self.reduce(id, "", contrib, axes, RedOp::Sum, 1.0, dims))
    }
}

/// `1 / sqrt(var + eps)` (the interpreter's `inv_std`).
fn inv_std(b: &mut Body, v: usize, eps: f32) -> usize {
    let e = b.f(eps);
    let ve = b.add(v, e);
    let s = b.push(Ex::Sqrt(ve));
    let one = b.f(1.0);
    b.div(one, s)
}

/// `(x - mean) * istd * gamma + beta`, in that order.
fn bn_apply(b: &mut Body, x: usize, g: usize, be: usize, m: usize, v: usize, eps: f32) -> usize {
    let istd = inv_std(b, v, eps);
    let c = b.sub(x, m);
    let t = b.mul(c, istd);
    let t = b.mul(t, g);
    b.add(t, be)
}

/// `g + wd * p` (just `g` without decay).
fn with_decay(b: &mut Body, g: usize, p: usize, wd: f32) -> usize {
    if wd == 0.0 {
        return g;
    }
    let w = b.f(wd);
    let wp = b.mul(w, p);
    b.add(g, wp)
}

/// The quantization parameters of an observed range (`qir::quant::qparams_f32`, written
/// as an expression).
fn qparams(b: &mut Body, mn: usize, mx: usize, r: QparamRule, scale: bool) -> usize {
    let zero = b.f(0.0);
    let mn_nan = b.is_nan(mn);
    let mn_neg = b.lt(mn, zero);
    let keep_lo = b.push(Ex::Or(mn_neg, mn_nan));
    let lo = b.sel(keep_lo, mn, zero);
    let mx_nan = b.is_nan(mx);
    let mx_pos = b.gt(mx, zero);
    let keep_hi = b.push(Ex::Or(mx_pos, mx_nan));
    let hi = b.sel(keep_hi, mx, zero);
    let span = (r.qmax - r.qmin) as f64;
    let s = if r.symmetric {
        let nlo = b.push(Ex::Neg(lo));
        let m = b.max_nan(nlo, hi);
        let d = b.f((span / 2.0) as f32);
        b.div(m, d)
    } else {
        let d = b.sub(hi, lo);
        let sp = b.f(span as f32);
        b.div(d, sp)
    };
    let eps = b.f(r.eps as f32);
    let s = b.max_nan(s, eps);
    let s = if r.power_of_two {
        b.call(Fun::Pow2Ceil, s)
    } else {
        s
    };
    if scale {
        return s;
    }
    if r.symmetric {
        let z = if r.qmin < 0 {
            0
        } else {
            (r.qmin + r.qmax + 1) / 2
        };
        return b.i(z as i32);
    }
    let ls = b.div(lo, s);
    let q = b.push(Ex::Round(ls));
    let qn = b.is_nan(q);
    let q = b.sel(qn, zero, q);
    let qmin = b.f(r.qmin as f32);
    let d = b.sub(qmin, q);
    let (l, h) = (b.f(r.qmin as f32), b.f(r.qmax as f32));
    let c = b.clamp(d, l, h);
    b.push(Ex::FToI(c))
}

fn rounding_of(name: Option<&str>) -> Rounding {
    match name {
        Some("half_away_from_zero") => Rounding::HalfAwayFromZero,
        _ => Rounding::HalfEven,
    }
}

/// How a reduced value (rank `rrank`: the kept dims, or all dims with keepdims) runs
/// along the dims of the reduced tensor of rank `rank`.
fn kept_dims(axes: &[bool], rrank: usize, rank: usize) -> ArgDims {
    if rrank == rank {
        return (0..rank).collect();
    }
    (0..rank).filter(|&d| !axes[d]).collect()
}

/// Strides of a NumPy-broadcast argument of dims `a` over `out` (0 where broadcast).
fn bcast_strides(a: &[usize], out: &[usize]) -> Vec<usize> {
    let rm = row_major(a);
    let lead = out.len() - a.len();
    (0..out.len())
        .map(|d| {
            if d < lead || a[d - lead] == 1 {
                0
            } else {
                rm[d - lead]
            }
        })
        .collect()
}

fn two(d: &[usize]) -> Result<[usize; 2], String> {
    match *d {
        [a, b] => Ok([a, b]),
        _ => Err(format!("expected rank 2, found {d:?}")),
    }
}

fn four(d: &[usize]) -> Result<[usize; 4], String> {
    match *d {
        [a, b, c, e] => Ok([a, b, c, e]),
        _ => Err(format!("expected rank 4, found {d:?}")),
    }
}

impl Lower<'_> {
    /// `dy` of a convolution laid out channel-major ([O, N, OH*OW]) for the products of
    /// the gradients: a map producing it stores it that way directly; otherwise a copy.
    fn channel_major(&mut self, dy: LId, c: &Conv) -> LId {
        let p = c.p();
        let want = vec![p, c.n * p, c.ow, 1];
        let n = &self.lg.nodes[dy];
        if n.strides
            .as_ref()
            .is_some_and(|s| crate::lgraph::same_layout(s, &want, &n.dims))
        {
            self.lg.nodes[dy].layout_fixed = true;
            return dy;
        }
        if matches!(n.kind, LKind::Map(_)) && !n.layout_fixed {
            let node = &mut self.lg.nodes[dy];
            node.strides = Some(want);
            node.layout_fixed = true;
            return dy;
        }
        let (dims, origin) = (n.dims.clone(), n.origin);
        let label = format!("{} (channel-major copy)", n.label);
        let mut b = Body::default();
        let out = b.arg(0);
        let f = b.finish(out, vec![(0..4).collect()]);
        self.lg.push(LNode {
            kind: LKind::Map(f),
            args: vec![dy],
            dims,
            dtype: DType::F32,
            strides: Some(want),
            layout_fixed: true,
            origin,
            label,
            extra_bytes: 0,
        })
    }
}
