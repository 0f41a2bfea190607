//! Evaluation of a classifier on an image set: the forward graph with its observers
//! frozen and nothing written back ([`crate::executor::eval_graph`]), accuracy from the argmax of its `logits` output, and the
//! mean loss when the graph has one.
//!
//! Invariant: the store is never modified; every example of the set is counted once (the
//! last partial batch included, unless the model fixes its batch size).

use std::io::IsTerminal as _;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use qir::{Data, Graph, Tensor};
use qir_exec::Store;

use crate::data::prefetched;
use crate::data::{Dataset, Feed, ImageSet, PixelScale};
use crate::error::{Result, RuntimeError};
use crate::executor::{Executor, Program, eval_graph};

/// The result of an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: usize,
    /// Examples whose argmax matched the label.
    pub correct: usize,
    /// Mean loss per example, if the graph has a loss.
    pub loss: Option<f64>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Evaluation {
    /// No evaluation (a data-parallel replica other than rank 0 does not evaluate): no
    /// examples, no loss.
    pub fn skipped() -> Evaluation {
        Evaluation {
            examples: 0,
            correct: 0,
            loss: None,
            seconds: 0.0,
        }
    }
    /// Fraction correct, in [0, 1] (0 for an empty set).
    pub fn accuracy(&self) -> f64 {
        if self.examples == 0 {
            0.0
        } else {
            self.correct as f64 / self.examples as f64
        }
    }
}

/// The name of the output holding class scores: `logits`, or the only output.
pub fn logits_output(g: &Graph) -> Result<String> {
    if g.output("logits").is_some() {
        return Ok("logits".into());
    }
    match g.outputs() {
        [only] => Ok(only.name.clone()),
        outs => {
            let names: Vec<&str> = outs.iter().map(|o| o.name.as_str()).collect();
            Err(RuntimeError::Data(format!(
                "graph @{} has no 'logits' output to classify with (outputs: {})",
                g.name,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )))
        }
    }
}

/// The number of classes of `g`'s logits output (its last dimension).
pub fn classes(g: &Graph, logits: &str) -> Result<usize> {
    let id = g
        .output(logits)
        .ok_or_else(|| RuntimeError::Data(format!("graph @{} has no output '{logits}'", g.name)))?;
    let ty = g.ty(id);
    match (ty.rank(), ty.shape.dims().last().and_then(|d| d.fixed())) {
        (2, Some(c)) if c > 0 => Ok(c as usize),
        _ => Err(RuntimeError::Data(format!(
            "output {logits} is {ty}; classification needs [batch, classes] with a fixed class count"
        ))),
    }
}

/// Checks that every label of `set` names one of `classes` classes.
pub fn check_labels(set: &ImageSet, what: &str, classes: usize, logits: &str) -> Result<()> {
    match set.max_label() {
        Some(m) if m as usize >= classes => Err(RuntimeError::Data(format!(
            "the {what} labels go up to {m} but output {logits} has {classes} classes"
        ))),
        _ => Ok(()),
    }
}

/// Row-wise argmax of a `[rows, cols]` float tensor (first maximum on ties; NaN never
/// wins).
pub fn argmax_rows(t: &Tensor) -> Result<Vec<usize>> {
    let (rows, cols) = match t.shape[..] {
        [r, c] if c > 0 && t.numel() == r * c => (r, c),
        _ => {
            return Err(RuntimeError::Data(format!(
                "argmax needs a [rows, cols] tensor, got shape {:?}",
                t.shape
            )));
        }
    };
    let get = |i: usize| -> f64 {
        match &t.data {
            Data::F32(v) => v[i] as f64,
            Data::F64(v) => v[i],
            other => other.get_f64(i),
        }
    };
    Ok((0..rows)
        .map(|r| {
            let mut best = 0;
            let mut bv = f64::NEG_INFINITY;
            for c in 0..cols {
                let v = get(r * cols + c);
                if v > bv {
                    bv = v;
                    best = c;
                }
            }
            best
        })
        .collect())
}

/// Evaluates `prog` (a forward graph prepared from [`eval_graph`]) on every example of
/// `set`; batches are assembled while the previous one runs.
pub fn evaluate(
    prog: &mut dyn Program,
    store: &mut Store,
    set: &ImageSet,
    feed: &Feed,
    scale: f32,
    batch_size: usize,
) -> Result<Evaluation> {
    evaluate_with_progress(
        prog,
        store,
        set,
        feed,
        scale,
        batch_size,
        &ProgressBar::hidden(),
    )
}

/// [`evaluate`], advancing `bar` by the examples of each batch.
fn evaluate_with_progress(
    prog: &mut dyn Program,
    store: &mut Store,
    set: &ImageSet,
    feed: &Feed,
    scale: f32,
    batch_size: usize,
    bar: &ProgressBar,
) -> Result<Evaluation> {
    let start = Instant::now();
    let logits = logits_output(prog.graph())?;
    let classes = classes(prog.graph(), &logits)?;
    check_labels(set, "test", classes, &logits)?;
    let has_loss = prog.graph().loss().is_some() && feed.label.is_some();
    let mut examples = 0;
    let mut correct = 0;
    let mut loss_sum = 0.0;
    let batches = feed.batches(set, (0..set.len()).collect(), batch_size, scale);
    prefetched(batches, 2, |batches| -> Result<()> {
        for batch in batches {
            let batch = batch?;
            let out = prog.run(store, &batch.inputs)?;
            let t = out.outputs.get(&logits).ok_or_else(|| {
                RuntimeError::Exec(format!("the run did not produce output {logits}"))
            })?;
            let pred = argmax_rows(t)?;
            correct += pred
                .iter()
                .zip(&batch.labels)
                .filter(|(p, l)| p == l)
                .count();
            examples += batch.len();
            bar.inc(batch.len() as u64);
            if has_loss && let Some(l) = out.loss {
                loss_sum += l * batch.len() as f64;
            }
        }
        Ok(())
    })?;
    Ok(Evaluation {
        examples,
        correct,
        loss: (has_loss && examples > 0).then(|| loss_sum / examples as f64),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Evaluates model `g` with parameters and state from `store` on `data`'s test set, pixels
/// scaled as for training (the factor follows the training set's largest pixel).
pub fn evaluate_model(
    g: &Graph,
    store: &mut Store,
    data: &Dataset,
    pixel_scale: PixelScale,
    batch_size: usize,
    executor: &dyn Executor,
) -> Result<Evaluation> {
    evaluate_model_with_progress(g, store, data, pixel_scale, batch_size, executor, false)
}

/// A progress bar of `len` `what` on standard error when `show` is set and standard error
/// is a terminal (hidden otherwise).
pub fn progress_bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !(show && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{{bar:30}} {{pos}}/{{len}} {what}  [{{elapsed}} < {{eta}}]");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// [`evaluate_model`] with a progress bar of the test examples on standard error when
/// `progress` is set and standard error is a terminal.
pub fn evaluate_model_with_progress(
    g: &Graph,
    store: &mut Store,
    data: &Dataset,
    pixel_scale: PixelScale,
    batch_size: usize,
    executor: &dyn Executor,
    progress: bool,
) -> Result<Evaluation> {
    let feed = Feed::for_graph(g, data.test.example_dims())?;
    let scale = pixel_scale.factor(data.train.max_pixel());
    let mut prog = executor.prepare(&eval_graph(g)?, &[])?;
    let bar = progress_bar(progress, data.test.len() as u64, "test examples");
    let ev = evaluate_with_progress(
        prog.as_mut(),
        store,
        &data.test,
        &feed,
        scale,
        batch_size.max(1),
        &bar,
    );
    bar.finish_and_clear();
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_max_and_nan() {
        let t = Tensor::f32(
            vec![3, 3],
            vec![1.0, 3.0, 3.0, f32::NAN, -1.0, -2.0, 0.0, 0.0, 5.0],
        )
        .unwrap();
        assert_eq!(argmax_rows(&t).unwrap(), [1, 1, 2]);
        assert!(argmax_rows(&Tensor::f32(vec![3], vec![0.0; 3]).unwrap()).is_err());
    }
}
