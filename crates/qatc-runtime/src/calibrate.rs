//! Calibration (post-training range setting, the initialization of QAT): run a graph over
//! some batches, collect the statistics of every value an observer watches, and set the
//! observers' running min/max state.
//!
//! An observer is an `observe_min` / `observe_max` op: operand 0 is the observed value,
//! operand 1 the running state. A min and a max observer of the same value and axis form
//! one [`ObserverSite`]; the `qparams_scale` / `qparams_zero_point` op that reads the
//! observer (or its state) gives the quantized range `[qmin, qmax]` and the rule
//! (affine or symmetric, power-of-two) — the MSE search needs them. Statistics are per
//! tensor, or per channel along the observer's `axis`.
//!
//! Methods ([`Method`]):
//! - **min-max**: the extremes seen over all batches;
//! - **percentile** `p`: the `p`-th and `(100 - p)`-th percentiles, read from a histogram
//!   of [`HISTOGRAM_BINS`] bins over the observed range (linear interpolation inside a
//!   bin, so the resolution is the range / 2048);
//! - **MSE**: the range `[α·min, α·max]` (after widening to include 0) minimizing the
//!   expected squared quantization error of the histogram, with values spread uniformly
//!   inside each bin and quantized exactly as `fake_quant` does with the scale and zero
//!   point `qparams_*` derive; `α` is searched on a grid of 100 steps over (0, 1], then
//!   refined 100-fold around the best step.
//!
//! Learned quantization steps (`fake_quant_lsq` whose scale, and for LSQ+ zero point, are
//! params: [`LearnedSite`]) have no observers; calibration initializes those params from
//! the values feeding each `fake_quant_lsq`, by the rules of `passes::scheme::lsq`
//! (weights: `2 * mean(|w|) / sqrt(qmax)` per channel; activations the same over every
//! calibration batch, or for LSQ+ the affine range of the batches). The method applies to
//! observers only.
//!
//! While collecting, fake quantization is bypassed (every `fake_quant*` use reads its
//! input instead) so that the statistics are those of the float model, as PyTorch does
//! with observers enabled and fake-quant disabled; runs use train mode without writing
//! anything back, so only the calibration result changes the store.

use std::collections::{HashMap, HashSet};

use qir::quant::{QparamRule, qparams_f64};
use qir::{Data, Graph, NodeId, Op, Tensor};
use qir_exec::{Inputs, Store};

use crate::data::{Dataset, Feed, ImageSet, PixelScale, prefetched, shuffled};
use crate::error::{Result, RuntimeError};
use crate::executor::Executor;

/// Bins of the histograms the percentile and MSE methods read (the TensorRT and PyTorch
/// histogram-observer default).
pub const HISTOGRAM_BINS: usize = 2048;

/// The most histogram bins a calibration may ask for: every observed channel holds one
/// histogram, so the count multiplies memory (8 bytes a bin) and the MSE search's time.
pub const MAX_HISTOGRAM_BINS: usize = 16_384;

/// How calibration turns statistics into a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// The observed extremes.
    MinMax,
    /// The given percentile (e.g. 99.99) of the values at the top and its mirror
    /// (100 - p) at the bottom.
    Percentile(f64),
    /// The clipping range with the least quantization mean squared error.
    Mse,
}

impl Method {
    /// The default percentile.
    pub const DEFAULT_PERCENTILE: f64 = 99.99;

    /// The name as the command line writes it.
    pub fn name(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile:{p}"),
            Method::Mse => "mse".into(),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    /// `minmax`, `percentile` (99.99), `percentile:P` with 50 < P ≤ 100, or `mse`.
    fn from_str(s: &str) -> std::result::Result<Method, String> {
        match s {
            "minmax" | "min-max" => Ok(Method::MinMax),
            "mse" => Ok(Method::Mse),
            "percentile" => Ok(Method::Percentile(Method::DEFAULT_PERCENTILE)),
            _ => match s.strip_prefix("percentile:").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 50.0 && p <= 100.0 => Ok(Method::Percentile(p)),
                Some(_) => Err(format!(
                    "the percentile must be a number in (50, 100], found '{s}'"
                )),
                None => Err(format!(
                    "unknown calibration method '{s}' (valid: minmax, percentile, percentile:P, mse)"
                )),
            },
        }
    }
}

/// The quantization rule of a site, from its `qparams_*` op: the grid and how the
/// scale and zero point follow from a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QSpec {
    /// The smallest quantized value.
    pub qmin: i64,
    /// The largest quantized value.
    pub qmax: i64,
    /// Symmetric range (zero point 0, or the midpoint for unsigned grids).
    pub symmetric: bool,
    /// Scales rounded up to a power of two.
    pub power_of_two: bool,
    /// The smallest scale.
    pub eps: f64,
}

impl QSpec {
    /// Affine (asymmetric) quantization to `[qmin, qmax]` with the ops' default epsilon.
    pub fn affine(qmin: i64, qmax: i64) -> QSpec {
        QSpec {
            qmin,
            qmax,
            symmetric: false,
            power_of_two: false,
            eps: default_eps(),
        }
    }

    /// The rule as `qir::quant` states it.
    pub fn rule(&self) -> QparamRule {
        QparamRule {
            qmin: self.qmin,
            qmax: self.qmax,
            symmetric: self.symmetric,
            power_of_two: self.power_of_two,
            eps: self.eps,
        }
    }

    /// Scale and zero point for the range `[lo, hi]`, by the rules of `qparams_scale` and
    /// `qparams_zero_point` (`qir::quant::qparams_f64`, the ops' rule in f64).
    pub fn qparams(&self, lo: f64, hi: f64) -> (f64, i64) {
        qparams_f64(lo, hi, self.rule())
    }

    /// `x` quantized and dequantized with scale `s` and zero point `z`, as `fake_quant`
    /// computes it: multiplied by the inverse scale and rounded half to even.
    pub fn fake_quant(&self, x: f64, s: f64, z: i64) -> f64 {
        let q = (self.grid(x, s) + z as f64).clamp(self.qmin as f64, self.qmax as f64);
        (q - z as f64) * s
    }

    /// The integer grid point of `x` before the zero point: `round(x * (1 / s))`.
    fn grid(&self, x: f64, s: f64) -> f64 {
        (x * (1.0 / s)).round_ties_even()
    }
}

/// The min and max observers of one value (and axis), and their quantization rule.
#[derive(Clone, Debug, PartialEq)]
pub struct ObserverSite {
    /// The observed value.
    pub value: NodeId,
    /// The channel axis of per-channel observers.
    pub axis: Option<usize>,
    /// The state holding the running minimum, if a min observer watches the value.
    pub min_state: Option<String>,
    /// The state holding the running maximum, if a max observer watches the value.
    pub max_state: Option<String>,
    /// The rule of the `qparams_*` op reading the observers, if there is one.
    pub qspec: Option<QSpec>,
}

/// The `eps` attribute's default in the op table.
fn default_eps() -> f64 {
    qir::Inst::new(Op::QparamsScale)
        .float("eps")
        .unwrap_or(f32::EPSILON as f64)
}

fn qspec_of(g: &Graph, id: NodeId) -> Option<QSpec> {
    let inst = g.node(id).inst()?;
    match inst.op {
        Op::QparamsScale | Op::QparamsZeroPoint => Some(QSpec {
            qmin: inst.int("qmin")?,
            qmax: inst.int("qmax")?,
            symmetric: inst.boolean("symmetric").unwrap_or(false),
            power_of_two: inst.boolean("power_of_two").unwrap_or(false),
            eps: inst.float("eps").unwrap_or_else(default_eps),
        }),
        _ => None,
    }
}

/// Every observer site of `g`, in node order.
pub fn find_observers(g: &Graph) -> Result<Vec<ObserverSite>> {
    let mut sites: Vec<ObserverSite> = Vec::new();
    for id in g.node_ids() {
        let Some(inst) = g.node(id).inst() else {
            continue;
        };
        let is_min = match inst.op {
            Op::ObserveMin => true,
            Op::ObserveMax => false,
            _ => continue,
        };
        let ops = g.operands(id);
        let (Some(&x), Some(&state)) = (ops.first(), ops.get(1)) else {
            continue;
        };
        let sn = g.node(state);
        let state_name = match (&sn.name, sn.is_state()) {
            (Some(n), true) => n.clone(),
            _ => {
                return Err(RuntimeError::Graph(format!(
                    "{}: the running range of '{}' must be a state value, found {}",
                    g.describe(id),
                    inst.op,
                    g.describe(state)
                )));
            }
        };
        let axis = match inst.int("axis") {
            Some(a) => Some(g.ty(x).shape.axis(a).ok_or_else(|| {
                RuntimeError::Graph(format!(
                    "{}: axis {a} is out of range for {}",
                    g.describe(id),
                    g.ty(x)
                ))
            })?),
            None => None,
        };
        let qspec = g
            .users(id)
            .into_iter()
            .chain(g.users(state))
            .find_map(|(u, _)| qspec_of(g, u));
        let slot = sites.iter_mut().find(|s| {
            s.value == x
                && s.axis == axis
                && if is_min {
                    s.min_state.is_none()
                } else {
                    s.max_state.is_none()
                }
        });
        let site = match slot {
            Some(s) => s,
            None => {
                sites.push(ObserverSite {
                    value: x,
                    axis,
                    min_state: None,
                    max_state: None,
                    qspec: None,
                });
                let last = sites.len() - 1;
                &mut sites[last]
            }
        };
        if is_min {
            site.min_state = Some(state_name);
        } else {
            site.max_state = Some(state_name);
        }
        site.qspec = site.qspec.or(qspec);
    }
    Ok(sites)
}

/// A `fake_quant_lsq` (a learned quantization step): calibration sets its scale and zero
/// point from the values it quantizes when they are params.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedSite {
    /// The `fake_quant_lsq` op.
    pub fake_quant: NodeId,
    /// The value it quantizes (operand 0).
    pub value: NodeId,
    /// The channel axis of a per-channel step, resolved against the value's rank.
    pub axis: Option<usize>,
    /// The scale operand's name when it is a param.
    pub scale_param: Option<String>,
    /// The zero point operand's name when it is a param (LSQ+).
    pub zero_point_param: Option<String>,
}

impl LearnedSite {
    /// True if calibration has something to set: the scale or zero point is a param.
    pub fn is_learned(&self) -> bool {
        self.scale_param.is_some() || self.zero_point_param.is_some()
    }
}

/// Every `fake_quant_lsq` of `g` (see [`LearnedSite`]), in node order.
pub fn find_learned(g: &Graph) -> Result<Vec<LearnedSite>> {
    let mut out = Vec::new();
    for id in g.node_ids() {
        let Some(inst) = g.node(id).inst() else {
            continue;
        };
        if inst.op != Op::FakeQuantLsq {
            continue;
        }
        let ops = g.operands(id);
        let (Some(&value), Some(&scale), Some(&zp)) = (ops.first(), ops.get(1), ops.get(2)) else {
            continue;
        };
        let param = |p: NodeId| g.node(p).name.clone().filter(|_| g.node(p).is_param());
        let axis = match inst.int("axis") {
            Some(a) => Some(g.ty(value).shape.axis(a).ok_or_else(|| {
                RuntimeError::Graph(format!(
                    "{}: axis {a} is out of range for {}",
                    g.describe(id),
                    g.ty(value)
                ))
            })?),
            None => None,
        };
        out.push(LearnedSite {
            fake_quant: id,
            value,
            axis,
            scale_param: param(scale),
            zero_point_param: param(zp),
        });
    }
    Ok(out)
}

/// The initial value calibration gave one learned quantization parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedInit {
    /// The param (`fc1.w.scale`, `x.zp`).
    pub param: String,
    /// Its values (one per channel for per-channel steps).
    pub values: Vec<f64>,
}

impl LearnedInit {
    /// One line: `%x.scale = 0.0078` or `%fc1.w.scale (32 values) in [0.001, 0.004]`.
    pub fn summary(&self) -> String {
        match self.values.as_slice() {
            [v] => format!("%{} = {}", self.param, short(*v)),
            vs => {
                let lo = vs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!(
                    "%{} ({} values) in [{}, {}]",
                    self.param,
                    vs.len(),
                    short(lo),
                    short(hi)
                )
            }
        }
    }
}

/// The nodes whose values change from batch to batch: the inputs and everything computed
/// from them.
pub(crate) fn batch_dependent(g: &Graph) -> Result<HashSet<NodeId>> {
    let order = g.topo_order().map_err(|cycle| {
        RuntimeError::Graph(format!(
            "graph @{} has a cycle through {}",
            g.name,
            cycle.first().map(|&id| g.describe(id)).unwrap_or_default()
        ))
    })?;
    let mut out = HashSet::new();
    for id in order {
        if g.node(id).is_input() || g.operands(id).iter().any(|o| out.contains(o)) {
            out.insert(id);
        }
    }
    Ok(out)
}

/// One tensor of the values a learned site saw over every batch: the batch-dependent
/// values joined along axis 0 (the batch axis), unless that is the site's channel axis;
/// otherwise (weights, whose value is the same in every batch) the first batch's.
fn joined(seen: &[Tensor], varying: bool, axis: Option<usize>) -> Option<Tensor> {
    let first = seen.first()?;
    if !varying || seen.len() == 1 || axis == Some(0) {
        return Some(first.clone());
    }
    let mut data = Vec::new();
    let mut rows = 0usize;
    for t in seen {
        if t.shape.get(1..) != first.shape.get(1..) {
            return Some(first.clone());
        }
        rows += t.shape.first().copied().unwrap_or(1);
        data.extend(t.data.to_f64());
    }
    let shape = match first.shape.split_first() {
        Some((_, rest)) => std::iter::once(rows).chain(rest.iter().copied()).collect(),
        None => vec![rows],
    };
    Tensor::new(shape, Data::F64(data))
}

/// Calibration settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalibrationConfig {
    /// How statistics become a range.
    pub method: Method,
    /// Histogram bins for the percentile and MSE methods.
    pub bins: usize,
}

impl Default for CalibrationConfig {
    fn default() -> CalibrationConfig {
        CalibrationConfig {
            method: Method::MinMax,
            bins: HISTOGRAM_BINS,
        }
    }
}

/// Per-channel statistics of one site (one channel for per-tensor sites).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    /// Smallest finite value per channel (+inf if none was seen).
    pub min: Vec<f64>,
    /// Largest finite value per channel (-inf if none was seen).
    pub max: Vec<f64>,
    /// Values seen per channel (non-finite values are skipped).
    pub count: Vec<u64>,
}

impl ChannelStats {
    fn new(c: usize) -> ChannelStats {
        ChannelStats {
            min: vec![f64::INFINITY; c],
            max: vec![f64::NEG_INFINITY; c],
            count: vec![0; c],
        }
    }

    /// Folds the finite values of `t` (channels along `axis`) into the statistics. f32
    /// tensors go through [`f32_extremes`] a channel run at a time (the per-element
    /// closure of [`for_each`] made calibration of an MNIST MLP take longer than its
    /// forward passes); other float data element by element.
    fn observe(&mut self, t: &Tensor, axis: Option<usize>) -> Result<()> {
        let Data::F32(v) = &t.data else {
            return for_each(t, axis, |ch, v| {
                if v.is_finite()
                    && let (Some(a), Some(b), Some(n)) = (
                        self.min.get_mut(ch),
                        self.max.get_mut(ch),
                        self.count.get_mut(ch),
                    )
                {
                    *a = a.min(v);
                    *b = b.max(v);
                    *n += 1;
                }
            });
        };
        let (c, inner) = match axis {
            None => (1, v.len().max(1)),
            Some(a) => {
                let c = *t.shape.get(a).ok_or_else(|| {
                    RuntimeError::Exec(format!("axis {a} is out of range for shape {:?}", t.shape))
                })?;
                (c, t.shape[a + 1..].iter().product::<usize>().max(1))
            }
        };
        for (i, run) in v.chunks(inner).enumerate() {
            let ch = i % c.max(1);
            let (lo, hi, n) = f32_extremes(run);
            if let (Some(a), Some(b), Some(k)) = (
                self.min.get_mut(ch),
                self.max.get_mut(ch),
                self.count.get_mut(ch),
            ) && n > 0
            {
                *a = a.min(lo as f64);
                *b = b.max(hi as f64);
                *k += n as u64;
            }
        }
        Ok(())
    }
}

/// The smallest and largest finite values of `v` and how many values are finite
/// (`(+inf, -inf, 0)` when none is). Non-finite values become the identity of each
/// reduction, so the loops are plain compares that vectorize.
fn f32_extremes(v: &[f32]) -> (f32, f32, usize) {
    let (mut lo, mut hi, mut n) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8], [0u32; 8]);
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            let x = c[j];
            let fin = x.is_finite();
            let a = if fin { x } else { f32::INFINITY };
            let b = if fin { x } else { f32::NEG_INFINITY };
            lo[j] = if a < lo[j] { a } else { lo[j] };
            hi[j] = if b > hi[j] { b } else { hi[j] };
            n[j] += fin as u32;
        }
    }
    let (mut l, mut h, mut k) = (f32::INFINITY, f32::NEG_INFINITY, 0usize);
    for j in 0..8 {
        l = l.min(lo[j]);
        h = h.max(hi[j]);
        k += n[j] as usize;
    }
    for &x in chunks.remainder() {
        if x.is_finite() {
            l = l.min(x);
            h = h.max(x);
            k += 1;
        }
    }
    (l, h, k)
}

/// A histogram of one channel over `[lo, hi]`, equal-width bins.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// The lower end of the first bin.
    pub lo: f64,
    /// The upper end of the last bin.
    pub hi: f64,
    /// Count per bin (at least one bin).
    pub counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram of `bins` bins over `[lo, hi]`.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Histogram {
        Histogram {
            lo,
            hi,
            counts: vec![0; bins.max(1)],
        }
    }

    /// A histogram of `values` (non-finite ones skipped) over their own range.
    pub fn of(values: &[f64], bins: usize) -> Histogram {
        let fin = values.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = fin.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        let mut h = Histogram::new(lo, hi, bins);
        for &v in values {
            h.add(v);
        }
        h
    }

    fn width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len() as f64
    }

    /// Counts `v` (non-finite values and values outside the range are ignored).
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() || v < self.lo || v > self.hi {
            return;
        }
        let n = self.counts.len();
        let w = self.width();
        let b = if w > 0.0 {
            (((v - self.lo) / w) as usize).min(n - 1)
        } else {
            0
        };
        self.counts[b] += 1;
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value below which a fraction `q` of the counts lie, interpolating linearly
    /// inside the bin that crosses it.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.total() as f64;
        let w = self.width();
        if total == 0.0 || w == 0.0 {
            return if q < 0.5 { self.lo } else { self.hi };
        }
        let target = q.clamp(0.0, 1.0) * total;
        let mut cum = 0.0;
        for (b, &c) in self.counts.iter().enumerate() {
            let c = c as f64;
            if c > 0.0 && cum + c >= target {
                let frac = ((target - cum) / c).clamp(0.0, 1.0);
                return self.lo + (b as f64 + frac) * w;
            }
            cum += c;
        }
        self.hi
    }

    /// Expected squared error per value of quantizing the histogram's values with the
    /// range `[lo, hi]` and rule `spec`, the values of each bin spread uniformly over it.
    pub fn quant_mse(&self, lo: f64, hi: f64, spec: &QSpec) -> f64 {
        let total = self.total() as f64;
        if total == 0.0 {
            return 0.0;
        }
        let (s, z) = spec.qparams(lo, hi);
        let w = self.width();
        let mut err = 0.0;
        for (b, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let a = self.lo + b as f64 * w;
            err += bin_error(a, a + w, c as f64, s, z, spec);
        }
        err / total
    }
}

/// `∫ (x - v)^2 dx` over `[a, b]`.
fn sq_integral(a: f64, b: f64, v: f64) -> f64 {
    ((b - v).powi(3) - (a - v).powi(3)) / 3.0
}

/// Squared error of `n` values spread uniformly over `[a, b]`, quantized with (s, z).
fn bin_error(a: f64, b: f64, n: f64, s: f64, z: i64, spec: &QSpec) -> f64 {
    if b <= a {
        let d = a - spec.fake_quant(a, s, z);
        return n * d * d;
    }
    let density = n / (b - a);
    let zf = z as f64;
    let level = |x: f64| (spec.grid(x, s) + zf).clamp(spec.qmin as f64, spec.qmax as f64);
    let (ka, kb) = (level(a), level(b));
    if kb - ka > 64.0 {
        // Many levels inside the bin: the clipped ends exactly, the inside as uniform
        // rounding noise s²/12.
        let vmin = (spec.qmin as f64 - zf) * s;
        let vmax = (spec.qmax as f64 - zf) * s;
        let mut e = 0.0;
        if a < vmin {
            e += sq_integral(a, vmin.min(b), vmin);
        }
        if b > vmax {
            e += sq_integral(vmax.max(a), b, vmax);
        }
        let inner = b.min(vmax) - a.max(vmin);
        if inner > 0.0 {
            e += inner * s * s / 12.0;
        }
        return density * e;
    }
    let mut e = 0.0;
    let mut k = ka;
    while k <= kb {
        let v = (k - zf) * s;
        let lower = if k <= spec.qmin as f64 {
            f64::NEG_INFINITY
        } else {
            v - s / 2.0
        };
        let upper = if k >= spec.qmax as f64 {
            f64::INFINITY
        } else {
            v + s / 2.0
        };
        let (l, u) = (a.max(lower), b.min(upper));
        if u > l {
            e += sq_integral(l, u, v);
        }
        k += 1.0;
    }
    density * e
}

/// The `α` in (0, 1] minimizing the error of the range `[α·lo, α·hi]` (see the module
/// docs), and that error.
fn mse_search(h: &Histogram, lo: f64, hi: f64, spec: &QSpec) -> (f64, f64) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let eval = |a: f64| h.quant_mse(a * lo, a * hi, spec);
    let mut best = (1.0, eval(1.0));
    for k in (1..100).rev() {
        let a = k as f64 / 100.0;
        let e = eval(a);
        if e < best.1 {
            best = (a, e);
        }
    }
    let center = best.0;
    for k in -100..=100 {
        let a = center + k as f64 / 10_000.0;
        if a <= 0.0 || a > 1.0 {
            continue;
        }
        let e = eval(a);
        if e < best.1 {
            best = (a, e);
        }
    }
    best
}

/// The result of calibrating one site.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteRange {
    /// The observers calibrated.
    pub site: ObserverSite,
    /// The observed value's name for messages (`%fc1`).
    pub value_name: String,
    /// What the batches showed.
    pub observed: ChannelStats,
    /// The minimum written to the min state, per channel.
    pub min: Vec<f64>,
    /// The maximum written to the max state, per channel.
    pub max: Vec<f64>,
}

impl SiteRange {
    /// One line: the value, its states and the range written (per-channel ranges as the
    /// spread of their ends): `%x -> %x.min, %x.max: [0, 1]` or
    /// `%fc1.w (axis 0, 32 channels) -> ...: min in [-0.5, -0.1], max in [0.1, 0.6]`.
    pub fn summary(&self) -> String {
        let states: Vec<String> = [&self.site.min_state, &self.site.max_state]
            .into_iter()
            .flatten()
            .map(|s| format!("%{s}"))
            .collect();
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo, hi)
        };
        match (self.site.axis, self.min.as_slice(), self.max.as_slice()) {
            (None, [mn], [mx]) => format!(
                "{} -> {}: [{}, {}]",
                self.value_name,
                states.join(", "),
                short(*mn),
                short(*mx)
            ),
            (axis, mins, maxs) => {
                let (a, b) = spread(mins);
                let (c, d) = spread(maxs);
                format!(
                    "{} (axis {}, {} channels) -> {}: min in [{}, {}], max in [{}, {}]",
                    self.value_name,
                    axis.unwrap_or(0),
                    mins.len(),
                    states.join(", "),
                    short(a),
                    short(b),
                    short(c),
                    short(d)
                )
            }
        }
    }
}

/// A number in at most 6 significant digits.
fn short(v: f64) -> String {
    let s = format!("{v:.6}");
    let t = s.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" { "0".into() } else { t.into() }
}

/// What calibration did.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationReport {
    /// The method used.
    pub method: Method,
    /// Batches run.
    pub batches: usize,
    /// Every observer site, in node order.
    pub sites: Vec<SiteRange>,
    /// Every learned quantization parameter initialized, in node order.
    pub learned: Vec<LearnedInit>,
}

impl CalibrationReport {
    /// The one-line headlines: `calibrated N observer site(s) on M batch(es) with METHOD`
    /// when there are observers, `initialized K learned quantization parameter(s) (LSQ) on
    /// M batch(es)` when there are learned steps.
    pub fn headlines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.sites.is_empty() {
            out.push(format!(
                "calibrated {} observer site(s) on {} batch(es) with {}",
                self.sites.len(),
                self.batches,
                self.method.name()
            ));
        }
        if !self.learned.is_empty() {
            out.push(format!(
                "initialized {} learned quantization parameter(s) (LSQ) on {} batch(es)",
                self.learned.len(),
                self.batches
            ));
        }
        out
    }
}

/// Which training images calibration runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageBatches {
    /// Number of batches.
    pub batches: usize,
    /// Examples per batch (the model's fixed size if it has one).
    pub batch_size: usize,
    /// Seeds the shuffle that picks the examples (stream `u64::MAX` of the seed, apart
    /// from the training epochs' streams).
    pub seed: u64,
    /// How pixels are scaled.
    pub pixel_scale: PixelScale,
}

/// Calibration batches, walked once for min-max and twice for the histogram methods (a
/// second pass over the data instead of keeping every fetched tensor of every batch).
pub trait BatchSource {
    /// Calls `f` on every batch, in the same order on every call.
    fn for_each(&self, f: &mut dyn FnMut(&Inputs) -> Result<()>) -> Result<()>;
}

impl BatchSource for [Inputs] {
    fn for_each(&self, f: &mut dyn FnMut(&Inputs) -> Result<()>) -> Result<()> {
        self.iter().try_for_each(f)
    }
}

impl BatchSource for Vec<Inputs> {
    fn for_each(&self, f: &mut dyn FnMut(&Inputs) -> Result<()>) -> Result<()> {
        self.iter().try_for_each(f)
    }
}

/// The first batches of a shuffle of an image set, assembled on the fly.
pub(crate) struct ImageSource<'a> {
    pub(crate) feed: Feed,
    pub(crate) set: &'a ImageSet,
    pub(crate) order: Vec<usize>,
    pub(crate) batch_size: usize,
    pub(crate) batches: usize,
    pub(crate) scale: f32,
    /// Advanced by one per batch run.
    pub(crate) bar: Option<indicatif::ProgressBar>,
}

impl BatchSource for ImageSource<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&Inputs) -> Result<()>) -> Result<()> {
        let batches = self
            .feed
            .batches(self.set, self.order.clone(), self.batch_size, self.scale);
        prefetched(batches, 2, |it| {
            for b in it.take(self.batches) {
                f(&b?.inputs)?;
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            Ok(())
        })
    }
}

/// Calibrates `g`'s observers on the first batches of a shuffle of `data`'s training
/// set (see [`calibrate`]).
pub fn calibrate_images(
    g: &Graph,
    store: &mut Store,
    data: &Dataset,
    pick: &ImageBatches,
    config: &CalibrationConfig,
    executor: &dyn Executor,
) -> Result<CalibrationReport> {
    calibrate_images_with_progress(g, store, data, pick, config, executor, false)
}

/// [`calibrate_images`] with a progress bar of the batches run (a histogram method runs
/// them twice) on standard error when `progress` is set and standard error is a terminal.
pub fn calibrate_images_with_progress(
    g: &Graph,
    store: &mut Store,
    data: &Dataset,
    pick: &ImageBatches,
    config: &CalibrationConfig,
    executor: &dyn Executor,
    progress: bool,
) -> Result<CalibrationReport> {
    if pick.batches == 0 {
        return Err(RuntimeError::Config(
            "calibration needs at least one batch".into(),
        ));
    }
    let source = ImageSource {
        feed: Feed::for_graph(g, data.train.example_dims())?,
        set: &data.train,
        order: shuffled(data.train.len(), pick.seed, u64::MAX),
        batch_size: pick.batch_size,
        batches: pick.batches,
        scale: pick.pixel_scale.factor(data.train.max_pixel()),
        bar: None,
    };
    let passes = if matches!(config.method, Method::MinMax) {
        1
    } else {
        2
    };
    let bar = crate::eval::progress_bar(
        progress,
        (pick.batches * passes) as u64,
        "calibration batches",
    );
    let source = ImageSource {
        bar: Some(bar.clone()),
        ..source
    };
    let report = calibrate(g, store, &source, config, executor);
    bar.finish_and_clear();
    report
}

/// Calls `f(channel, value)` for every element of `t`, the channel taken along `axis`.
pub(crate) fn for_each(
    t: &Tensor,
    axis: Option<usize>,
    mut f: impl FnMut(usize, f64),
) -> Result<()> {
    let (c, inner) = match axis {
        None => (1, 1),
        Some(a) => {
            let c = *t.shape.get(a).ok_or_else(|| {
                RuntimeError::Exec(format!("axis {a} is out of range for shape {:?}", t.shape))
            })?;
            (c, t.shape[a + 1..].iter().product::<usize>())
        }
    };
    let mut visit = |vals: &mut dyn Iterator<Item = f64>| {
        for (i, v) in vals.enumerate() {
            let ch = if c == 1 { 0 } else { (i / inner.max(1)) % c };
            f(ch, v);
        }
    };
    match &t.data {
        Data::F32(v) => visit(&mut v.iter().map(|&x| x as f64)),
        Data::F64(v) => visit(&mut v.iter().copied()),
        other => {
            return Err(RuntimeError::Exec(format!(
                "observed values must be float, found {} data",
                other.dtype()
            )));
        }
    }
    Ok(())
}

fn channels(g: &Graph, site: &ObserverSite) -> Result<usize> {
    match site.axis {
        None => Ok(1),
        Some(a) => g.ty(site.value).shape.dims()[a]
            .fixed()
            .map(|n| n as usize)
            .ok_or_else(|| {
                RuntimeError::Graph(format!(
                    "per-channel observer of {} needs a fixed size along axis {a}",
                    g.describe(site.value)
                ))
            }),
    }
}

/// The graph with every fake-quant removed (`passes::disable_fake_quant`): the float
/// function whose values calibration collects. Node ids of the remaining values are kept.
fn bypass_fake_quant(g: &Graph) -> Result<Graph> {
    let mut out = g.clone();
    passes::disable_fake_quant::disable_fake_quant(&mut out, &[])
        .map_err(|e| RuntimeError::Graph(format!("bypassing fake quantization: {e}")))?;
    // Calibration only reads values: nothing is written back to the store.
    out.updates_mut().clear();
    Ok(out)
}

/// Calibrates `g`'s observers on `batches` (inputs by name) with `executor`, writes the
/// ranges to their states in `store`, initializes the params of its learned quantization
/// steps (see the module docs), and reports both. The store must hold `g`'s parameters,
/// state and constants.
pub fn calibrate(
    g: &Graph,
    store: &mut Store,
    batches: &dyn BatchSource,
    config: &CalibrationConfig,
    executor: &dyn Executor,
) -> Result<CalibrationReport> {
    let sites = find_observers(g)?;
    let mut learned = find_learned(g)?;
    if !learned.iter().any(LearnedSite::is_learned) {
        learned.clear();
    }
    if sites.is_empty() && learned.is_empty() {
        return Err(RuntimeError::Graph(format!(
            "graph @{} has no observers (observe_min / observe_max) or learned quantization scales (fake_quant_lsq) to calibrate",
            g.name
        )));
    }
    if let Method::Mse = config.method
        && let Some(s) = sites.iter().find(|s| s.qspec.is_none())
    {
        return Err(RuntimeError::Graph(format!(
            "MSE calibration of {} needs the qparams_scale or qparams_zero_point op that reads its observers (for qmin and qmax)",
            g.describe(s.value)
        )));
    }
    let mut chans = Vec::with_capacity(sites.len());
    for s in &sites {
        let c = channels(g, s)?;
        for name in [&s.min_state, &s.max_state].into_iter().flatten() {
            let decl = g.find(name).map(|id| g.ty(id));
            let n = decl.and_then(|t| t.shape.numel()).unwrap_or(0) as usize;
            if n != c {
                return Err(RuntimeError::Graph(format!(
                    "state %{name}: {} does not hold the {c} range value(s) of the observed {}",
                    decl.map(|t| t.to_string()).unwrap_or_default(),
                    g.describe(s.value)
                )));
            }
        }
        chans.push(c);
    }
    let run_graph = bypass_fake_quant(g)?;
    let fetch: Vec<NodeId> = {
        let mut seen = HashSet::new();
        sites
            .iter()
            .map(|s| s.value)
            .chain(learned.iter().map(|s| s.value))
            .filter(|v| seen.insert(*v))
            .collect()
    };
    let mut prog = executor.prepare(&run_graph, &fetch)?;
    let varying = if learned.is_empty() {
        HashSet::new()
    } else {
        batch_dependent(g)?
    };
    let mut learned_seen: HashMap<NodeId, Vec<Tensor>> = HashMap::new();
    let fetched = |out: &qir_exec::RunOutput, id: NodeId| -> Result<Tensor> {
        out.fetched
            .get(&id)
            .cloned()
            .ok_or_else(|| RuntimeError::Exec(format!("{} was not fetched", g.describe(id))))
    };
    // First pass: the ranges (and the values learned scales start from).
    let mut stats: Vec<ChannelStats> = chans.iter().map(|&c| ChannelStats::new(c)).collect();
    let mut n_batches = 0usize;
    batches.for_each(&mut |inputs| {
        let out = prog.run(store, inputs)?;
        n_batches += 1;
        for (site, st) in sites.iter().zip(stats.iter_mut()) {
            let t = out.fetched.get(&site.value).ok_or_else(|| {
                RuntimeError::Exec(format!("{} was not fetched", g.describe(site.value)))
            })?;
            st.observe(t, site.axis)?;
        }
        for site in &learned {
            let seen = learned_seen.entry(site.value).or_default();
            if seen.is_empty() || varying.contains(&site.value) {
                seen.push(fetched(&out, site.value)?);
            }
        }
        Ok(())
    })?;
    if n_batches == 0 {
        return Err(RuntimeError::Config(
            "calibration needs at least one batch".into(),
        ));
    }
    // Second pass for the histogram methods: the same batches again (the run graph writes
    // nothing back, so every value comes out as in the first pass).
    let mut hists: Vec<Vec<Histogram>> = Vec::new();
    if !matches!(config.method, Method::MinMax) {
        for st in &stats {
            hists.push(
                st.min
                    .iter()
                    .zip(&st.max)
                    .map(|(&lo, &hi)| {
                        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
                        Histogram::new(lo, hi, config.bins)
                    })
                    .collect(),
            );
        }
        batches.for_each(&mut |inputs| {
            let out = prog.run(store, inputs)?;
            for (i, site) in sites.iter().enumerate() {
                if let (Some(t), Some(hs)) = (out.fetched.get(&site.value), hists.get_mut(i)) {
                    for_each(t, site.axis, |ch, v| {
                        if let Some(h) = hs.get_mut(ch) {
                            h.add(v);
                        }
                    })?;
                }
            }
            Ok(())
        })?;
    }
    let mut report = Vec::with_capacity(sites.len());
    for (i, site) in sites.into_iter().enumerate() {
        let st = &stats[i];
        let mut min = Vec::with_capacity(st.min.len());
        let mut max = Vec::with_capacity(st.max.len());
        for (ch, (&omin, &omax)) in st.min.iter().zip(&st.max).enumerate() {
            let (lo, hi) = if st.count.get(ch).copied().unwrap_or(0) == 0 {
                (0.0, 0.0)
            } else {
                (omin, omax)
            };
            let hist = hists.get(i).and_then(|h| h.get(ch));
            let spec = site.qspec.unwrap_or(QSpec::affine(-128, 127));
            let (a, b) = choose(config.method, lo, hi, hist, &spec);
            min.push(a);
            max.push(b);
        }
        for (state, vals) in [(&site.min_state, &min), (&site.max_state, &max)] {
            let Some(name) = state else { continue };
            let id = g
                .find(name)
                .ok_or_else(|| RuntimeError::Graph(format!("state %{name} is not in the graph")))?;
            let ty = g.ty(id);
            let shape = ty
                .shape
                .as_fixed()
                .map(|d| d.into_iter().map(|x| x as usize).collect::<Vec<_>>())
                .unwrap_or_default();
            let t = Tensor::new(shape, Data::from_f64(&ty.elem, vals)).ok_or_else(|| {
                RuntimeError::Graph(format!("state %{name}: {ty} does not fit the range"))
            })?;
            store.insert(name, t);
        }
        report.push(SiteRange {
            value_name: g.describe(site.value),
            site,
            observed: stats[i].clone(),
            min,
            max,
        });
    }
    let learned = init_learned(g, store, &learned, &learned_seen, &varying)?;
    Ok(CalibrationReport {
        method: config.method,
        batches: n_batches,
        sites: report,
        learned,
    })
}

/// Initializes the params of the learned steps `sites` from the values `seen` in every
/// batch (see the module docs), writes them to `store` and reports them.
fn init_learned(
    g: &Graph,
    store: &mut Store,
    sites: &[LearnedSite],
    seen: &HashMap<NodeId, Vec<Tensor>>,
    varying: &HashSet<NodeId>,
) -> Result<Vec<LearnedInit>> {
    if sites.is_empty() {
        return Ok(Vec::new());
    }
    let mut values: HashMap<NodeId, Tensor> = HashMap::new();
    for s in sites {
        if values.contains_key(&s.value) {
            continue;
        }
        let joined = seen
            .get(&s.value)
            .and_then(|ts| joined(ts, varying.contains(&s.value), s.axis));
        if let Some(t) = joined {
            values.insert(s.value, t);
        }
    }
    let inits = passes::scheme::lsq::initialize(g, &|id| values.get(&id).cloned())
        .map_err(|e| RuntimeError::Graph(format!("initializing the learned scales: {e}")))?;
    let mut out = Vec::with_capacity(inits.len());
    for (name, t) in inits {
        let id = g
            .find(&name)
            .ok_or_else(|| RuntimeError::Graph(format!("param %{name} is not in the graph")))?;
        let ty = g.ty(id);
        let vals = t.data.to_f64();
        let t = Tensor::new(t.shape, Data::from_f64(&ty.elem, &vals)).ok_or_else(|| {
            RuntimeError::Graph(format!(
                "param %{name}: {ty} does not fit its initial value"
            ))
        })?;
        store.insert(&name, t);
        out.push(LearnedInit {
            param: name,
            values: vals,
        });
    }
    Ok(out)
}

/// The squared quantization error per value of `values` with the range `[lo, hi]`,
/// computed exactly (no histogram); for checking the histogram estimate.
pub fn exact_mse(values: &[f64], lo: f64, hi: f64, spec: &QSpec) -> f64 {
    let (s, z) = spec.qparams(lo, hi);
    let n = values.len().max(1) as f64;
    values
        .iter()
        .map(|&x| {
            let d = x - spec.fake_quant(x, s, z);
            d * d
        })
        .sum::<f64>()
        / n
}

/// The range a method picks for one channel of `values` (a helper for tests and tools
/// that calibrate plain arrays): min-max, percentile or MSE with `spec`.
pub fn range_of(values: &[f64], method: Method, spec: &QSpec, bins: usize) -> (f64, f64) {
    let h = Histogram::of(values, bins);
    choose(method, h.lo, h.hi, Some(&h), spec)
}

/// The range `method` picks for a channel observed over `[lo, hi]` with histogram `hist`
/// (min-max needs none; without one the other methods fall back to min-max).
fn choose(method: Method, lo: f64, hi: f64, hist: Option<&Histogram>, spec: &QSpec) -> (f64, f64) {
    match (method, hist) {
        (Method::MinMax, _) | (_, None) => (lo, hi),
        (Method::Percentile(p), Some(h)) => (h.quantile(1.0 - p / 100.0), h.quantile(p / 100.0)),
        (Method::Mse, Some(h)) => {
            let (alpha, _) = mse_search(h, lo, hi, spec);
            // The search scales the zero-widened range; a side that did not need
            // widening keeps its observed value (qparams widens it again).
            (
                if lo < 0.0 { alpha * lo } else { lo },
                if hi > 0.0 { alpha * hi } else { hi },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10000 quantiles of the exponential distribution (a long tail: the largest is
    /// ln(20000) ≈ 9.9) and one outlier at 20.
    fn tail_with_outlier() -> Vec<f64> {
        let n = 10_000;
        let mut v: Vec<f64> = (0..n)
            .map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln())
            .collect();
        v.push(20.0);
        v
    }

    /// The vectorized statistics equal the element-by-element definition (finite values
    /// only, per channel) on f32 tensors with NaN, infinities and remainders.
    #[test]
    fn f32_statistics_match_the_elementwise_fold() {
        let vals: Vec<f32> = (0..3 * 4 * 19)
            .map(|i| match (i * 7919) % 41 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                k => (k as f32 - 20.0) * 0.37,
            })
            .collect();
        let t = Tensor::f32(vec![3, 4, 19], vals).expect("shape");
        for axis in [None, Some(0), Some(1), Some(2)] {
            let c = axis.map_or(1, |a| t.shape[a]);
            let mut fast = ChannelStats::new(c);
            fast.observe(&t, axis).expect("observe");
            let mut slow = ChannelStats::new(c);
            for_each(&t, axis, |ch, v| {
                if v.is_finite() {
                    slow.min[ch] = slow.min[ch].min(v);
                    slow.max[ch] = slow.max[ch].max(v);
                    slow.count[ch] += 1;
                }
            })
            .expect("fold");
            assert_eq!(
                (&fast.min, &fast.max, &fast.count),
                (&slow.min, &slow.max, &slow.count),
                "{axis:?}"
            );
        }
        let all_nan = Tensor::f32(vec![9], vec![f32::NAN; 9]).expect("shape");
        let mut st = ChannelStats::new(1);
        st.observe(&all_nan, None).expect("observe");
        assert_eq!(
            (st.min[0], st.max[0], st.count[0]),
            (f64::INFINITY, f64::NEG_INFINITY, 0)
        );
    }

    #[test]
    fn qparams_follow_the_op_rules() {
        // Same hand-computed cases as the interpreter's qparams op.
        let i8a = QSpec::affine(-128, 127);
        let (s, z) = i8a.qparams(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-15);
        assert_eq!(z, -64);
        assert_eq!(QSpec::affine(0, 255).qparams(0.5, 2.0), (2.0 / 255.0, 0));
        let sym = QSpec {
            symmetric: true,
            ..i8a
        };
        assert_eq!(sym.qparams(-1.0, 3.0), (3.0 / 127.5, 0));
        let u8sym = QSpec {
            symmetric: true,
            ..QSpec::affine(0, 255)
        };
        assert_eq!(u8sym.qparams(-1.0, 3.0).1, 128);
        assert_eq!(i8a.qparams(0.0, 0.0), (1.1920929e-7, -128));
        let p2 = QSpec {
            power_of_two: true,
            ..sym
        };
        assert_eq!(p2.qparams(-1.0, 3.0).0, 0.03125);
    }

    #[test]
    fn histogram_quantiles() {
        // 0..100 in steps of 1 over 100 bins of width 0.99: the median is ~49.5.
        let v: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let h = Histogram::of(&v, 100);
        assert_eq!(h.total(), 100);
        assert_eq!((h.lo, h.hi), (0.0, 99.0));
        assert!((h.quantile(0.5) - 49.5).abs() < 1.0, "{}", h.quantile(0.5));
        assert_eq!(h.quantile(1.0), 99.0);
        assert_eq!(h.quantile(0.0), 0.0);
        // NaN and infinities are skipped.
        let h = Histogram::of(&[1.0, f64::NAN, f64::INFINITY, 2.0], 4);
        assert_eq!((h.lo, h.hi, h.total()), (1.0, 2.0, 2));
    }

    #[test]
    fn histogram_mse_matches_exact_error() {
        let v = tail_with_outlier();
        let spec = QSpec::affine(0, 15);
        let h = Histogram::of(&v, HISTOGRAM_BINS);
        for hi in [20.0, 9.0, 6.0, 3.0] {
            let est = h.quant_mse(0.0, hi, &spec);
            let exact = exact_mse(&v, 0.0, hi, &spec);
            assert!(
                (est - exact).abs() < 0.02 * exact,
                "range [0, {hi}]: histogram {est} vs exact {exact}"
            );
        }
    }

    #[test]
    fn methods_on_an_outlier() {
        let v = tail_with_outlier();
        // 4-bit unsigned grid: coarse enough that clipping the tail pays off.
        let spec = QSpec::affine(0, 15);
        let mm = range_of(&v, Method::MinMax, &spec, HISTOGRAM_BINS);
        assert_eq!(mm, (v[0], 20.0), "min-max keeps the outlier");
        let pc = range_of(&v, Method::Percentile(99.0), &spec, HISTOGRAM_BINS);
        // The 99th percentile of 10001 values is -ln(0.01) = 4.605 up to a bin (20/2048).
        assert!(
            (pc.1 - 0.01f64.ln().abs()).abs() < 0.02,
            "percentile max {}",
            pc.1
        );
        let ms = range_of(&v, Method::Mse, &spec, HISTOGRAM_BINS);
        assert!(
            pc.1 < ms.1 && ms.1 < mm.1,
            "mse max {} not between {} and {}",
            ms.1,
            pc.1,
            mm.1
        );
        let e_mm = exact_mse(&v, mm.0, mm.1, &spec);
        let e_pc = exact_mse(&v, pc.0, pc.1, &spec);
        let e_ms = exact_mse(&v, ms.0, ms.1, &spec);
        assert!(
            e_ms < e_mm && e_ms < e_pc,
            "mse {e_ms}, min-max {e_mm}, percentile {e_pc}"
        );
        // Min-max: s = 20/15, error ≈ s²/12 = 0.148 over the bulk.
        assert!(
            (e_mm - (20.0f64 / 15.0).powi(2) / 12.0).abs() < 0.01,
            "{e_mm}"
        );
    }

    #[test]
    fn learned_values_join_along_the_batch_axis() {
        let a = Tensor::f32(vec![1, 2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::f32(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let j = joined(&[a.clone(), b.clone()], true, None).unwrap();
        assert_eq!(j.shape, [3, 2]);
        assert_eq!(j.data.to_f64(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            joined(&[a.clone(), b.clone()], true, Some(1))
                .unwrap()
                .shape,
            [3, 2]
        );
        // Weights (the same in every batch), and channels along the batch axis, keep the
        // first batch's value.
        assert_eq!(joined(&[a.clone(), b.clone()], false, None).unwrap(), a);
        assert_eq!(joined(&[a.clone(), b], true, Some(0)).unwrap(), a);
        let s = Tensor::scalar_f32(1.5);
        assert_eq!(joined(&[s.clone(), s], true, None).unwrap().shape, [2]);
        assert_eq!(joined(&[], true, None), None);
    }

    #[test]
    fn method_names_parse() {
        assert_eq!("minmax".parse::<Method>().unwrap(), Method::MinMax);
        assert_eq!(
            "percentile".parse::<Method>().unwrap(),
            Method::Percentile(99.99)
        );
        assert_eq!(
            "percentile:99.9".parse::<Method>().unwrap(),
            Method::Percentile(99.9)
        );
        assert_eq!("mse".parse::<Method>().unwrap(), Method::Mse);
        assert!(
            "percentile:20"
                .parse::<Method>()
                .unwrap_err()
                .contains("(50, 100]")
        );
        assert!(
            "kl".parse::<Method>()
                .unwrap_err()
                .starts_with("unknown calibration method 'kl'")
        );
    }
}
