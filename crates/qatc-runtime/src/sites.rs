//! What every quantization site of a QAT model sees, with the range and grid its state
//! gives now: the data of the per-site histograms of `qatc train --plot` (the picture
//! that shows why a layer clips).
//!
//! The model runs as evaluation does ([`eval_graph`]: observers frozen, nothing written
//! back) on a few training batches, fetching the value each observed fake-quant site
//! quantizes (a value that does not depend on the batch, a weight, counts once). A first pass finds the values' extremes, a second fills an equal-width
//! histogram over those extremes and the quantization range together and counts the
//! values outside their channel's clip points. The clip points are those of the stored
//! range through the site's `qparams_*` rule (`scale * (qmin - zp)` and `scale * (qmax -
//! zp)`, as `fake_quant` clips), or the stored range itself when no rule reads it.

use qir::{Graph, NodeId};
use qir_exec::Store;

use crate::calibrate::{
    BatchSource, Histogram, ImageBatches, ImageSource, QSpec, batch_dependent, find_observers,
    for_each,
};
use crate::data::{Dataset, Feed, shuffled};
use crate::error::{Result, RuntimeError};
use crate::executor::{Executor, eval_graph};

/// What one site saw.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteValues {
    /// The quantized value's name (`%fc1`).
    pub name: String,
    /// The values, all channels together.
    pub hist: Histogram,
    /// The clip points: per channel, then their widest ends in `range`.
    pub clip: Vec<(f64, f64)>,
    /// The widest clip points over the channels.
    pub range: (f64, f64),
    /// The grid of a per-tensor site (scale, zero point), when a rule is known.
    pub qparams: Option<(f64, i64)>,
    /// The site's integer range, when a rule is known.
    pub qrange: Option<(i64, i64)>,
    /// Values outside their channel's clip points.
    pub clipped: u64,
    /// Finite values seen.
    pub total: u64,
}

/// The clip points of a channel whose stored range is `[lo, hi]` under `spec`.
fn clip_points(lo: f64, hi: f64, spec: Option<&QSpec>) -> (f64, f64) {
    match spec {
        Some(q) => {
            let (s, z) = q.qparams(lo, hi);
            (s * (q.qmin - z) as f64, s * (q.qmax - z) as f64)
        }
        None => (lo.min(0.0), hi.max(0.0)),
    }
}

/// The values every observed site of `model` (a prepared model) sees on `batches`, with
/// the clip points of the ranges in `store`; `bins` histogram bins. Sites whose value has
/// no name or whose range is not in the store are left out.
pub fn site_values(
    model: &Graph,
    store: &Store,
    batches: &dyn BatchSource,
    executor: &dyn Executor,
    bins: usize,
) -> Result<Vec<SiteValues>> {
    let eval = eval_graph(model)?;
    struct Site {
        name: String,
        id: NodeId,
        axis: Option<usize>,
        clip: Vec<(f64, f64)>,
        stored: Vec<(f64, f64)>,
        spec: Option<QSpec>,
        /// Whether the value changes with the batch (weights do not: counted once).
        varying: bool,
    }
    let varying = batch_dependent(model)?;
    let mut sites = Vec::new();
    for s in find_observers(model)? {
        let Some(name) = model.node(s.value).name.clone() else {
            continue;
        };
        let Some(id) = eval.find(&name) else {
            continue;
        };
        let read = |state: &Option<String>| -> Option<Vec<f64>> {
            let t = store.get(state.as_deref()?)?;
            Some(t.data.to_f64())
        };
        let (Some(mins), Some(maxs)) = (read(&s.min_state), read(&s.max_state)) else {
            continue;
        };
        let stored: Vec<(f64, f64)> = mins.into_iter().zip(maxs).collect();
        let clip = stored
            .iter()
            .map(|&(lo, hi)| clip_points(lo, hi, s.qspec.as_ref()))
            .collect();
        sites.push(Site {
            name: format!("%{name}"),
            id,
            axis: s.axis,
            clip,
            stored,
            spec: s.qspec,
            varying: varying.contains(&s.value),
        });
    }
    if sites.is_empty() {
        return Ok(Vec::new());
    }
    let fetch: Vec<NodeId> = sites.iter().map(|s| s.id).collect();
    let mut prog = executor.prepare(&eval, &fetch)?;
    let mut scratch = store.clone();
    let value = |out: &qir_exec::RunOutput, s: &Site| {
        out.fetched
            .get(&s.id)
            .cloned()
            .ok_or_else(|| RuntimeError::Exec(format!("{} was not fetched", s.name)))
    };
    // the values' extremes
    let mut ext = vec![(f64::INFINITY, f64::NEG_INFINITY); sites.len()];
    batches.for_each(&mut |inputs| {
        let out = prog.run(&mut scratch, inputs)?;
        for (s, e) in sites.iter().zip(ext.iter_mut()) {
            for_each(&value(&out, s)?, None, |_, v| {
                if v.is_finite() {
                    *e = (e.0.min(v), e.1.max(v));
                }
            })?;
        }
        Ok(())
    })?;
    // the histograms over the extremes and the clip points, and the values clipped
    let mut hists: Vec<(Histogram, u64, u64)> = sites
        .iter()
        .zip(&ext)
        .map(|(s, &(lo, hi))| {
            let (a, b) = widest(&s.clip);
            let (lo, hi) = if lo <= hi {
                (lo.min(a), hi.max(b))
            } else {
                (a, b)
            };
            (Histogram::new(lo, hi, bins), 0, 0)
        })
        .collect();
    let mut first = true;
    batches.for_each(&mut |inputs| {
        let out = prog.run(&mut scratch, inputs)?;
        for (s, (h, clipped, total)) in sites.iter().zip(hists.iter_mut()) {
            if !first && !s.varying {
                continue;
            }
            for_each(&value(&out, s)?, s.axis, |ch, v| {
                if !v.is_finite() {
                    return;
                }
                h.add(v);
                *total += 1;
                let (lo, hi) = s.clip.get(ch).copied().unwrap_or((v, v));
                if v < lo || v > hi {
                    *clipped += 1;
                }
            })?;
        }
        first = false;
        Ok(())
    })?;
    Ok(sites
        .into_iter()
        .zip(hists)
        .map(|(s, (hist, clipped, total))| {
            let range = widest(&s.clip);
            let qparams = match (&s.spec, s.stored.as_slice()) {
                (Some(q), [(lo, hi)]) => Some(q.qparams(*lo, *hi)),
                _ => None,
            };
            SiteValues {
                name: s.name,
                hist,
                range,
                qparams,
                qrange: s.spec.map(|q| (q.qmin, q.qmax)),
                clip: s.clip,
                clipped,
                total,
            }
        })
        .collect())
}

/// The widest ends of per-channel clip points.
fn widest(clip: &[(f64, f64)]) -> (f64, f64) {
    clip.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(lo, hi)| {
            (a.min(lo), b.max(hi))
        })
}

/// [`site_values`] on the first `pick.batches` batches of a shuffle of the training images.
pub fn site_values_images(
    model: &Graph,
    store: &Store,
    data: &Dataset,
    pick: &ImageBatches,
    executor: &dyn Executor,
    bins: usize,
) -> Result<Vec<SiteValues>> {
    let source = ImageSource {
        feed: Feed::for_graph(model, data.train.example_dims())?,
        set: &data.train,
        order: shuffled(data.train.len(), pick.seed, u64::MAX),
        batch_size: pick.batch_size,
        batches: pick.batches,
        scale: pick.pixel_scale.factor(data.train.max_pixel()),
        bar: None,
    };
    site_values(model, store, &source, executor, bins)
}
