//! `freeze-observers`: stops range observation — every `observe_min`/`observe_max` is
//! removed and its users read the running state it observed, so the quantization
//! parameters come from the stored range and the `update`s of that range are dropped.
//! The switch PyTorch calls `disable_observer`, as a visible graph change.
//!
//! ```text
//! %x.min.new = observe_min(%x, %x.min) {averaging = 0.01}      %x.scale = qparams_scale(%x.min, %x.max) ...
//! %x.scale = qparams_scale(%x.min.new, %x.max.new) ...    =>   (no observer, no update of %x.min)
//! update %x.min = %x.min.new
//! ```
//!
//! Option `values`: the names of the observed values to freeze (`[x, relu1]`); empty (the
//! default) freezes every observer. A name that observes nothing is an error. Needs a
//! verified graph; keeps it verified (an observer's result has its running state's type).

use qir::{Graph, NodeId, Op};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `freeze-observers` pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FreezeObservers {
    /// Names of the observed values to freeze; empty = all.
    pub values: Vec<String>,
}

/// The observers of `g` whose observed value (operand 0) is selected by `values`
/// (every observer when `values` is empty). Errors name a value no observer watches.
pub(crate) fn select(
    g: &Graph,
    ops: &[Op],
    values: &[String],
    what: &str,
) -> Result<Vec<NodeId>, PassError> {
    let mut found = Vec::new();
    let mut matched = vec![false; values.len()];
    for id in g.node_ids() {
        if !g.node(id).op().is_some_and(|op| ops.contains(&op)) {
            continue;
        }
        let Some(&watched) = g.operands(id).first() else {
            continue;
        };
        let name = g.node(watched).name.as_deref().unwrap_or("");
        let hit = values.iter().position(|v| v == name);
        if let Some(i) = hit {
            matched[i] = true;
        }
        if values.is_empty() || hit.is_some() {
            found.push(id);
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(PassError::new(format!(
            "no {what} on a value named '%{}'",
            values[i]
        )));
    }
    Ok(found)
}

/// Freezes the observers of `g` selected by `values` (all when empty); returns how many.
pub fn freeze_observers(g: &mut Graph, values: &[String]) -> Result<usize, PassError> {
    let observers = select(g, &[Op::ObserveMin, Op::ObserveMax], values, "observer")?;
    for &obs in &observers {
        let running = g.operands(obs)[1];
        // the state keeps its value: its update (to the observer's result) goes
        g.updates_mut().retain(|u| u.value != obs);
        g.replace_all_uses(obs, running);
        g.remove_node(obs);
    }
    Ok(observers.len())
}

impl Pass for FreezeObservers {
    fn name(&self) -> &'static str {
        "freeze-observers"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("values", OptValue::List(self.values.clone()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        Ok(Changed::from(freeze_observers(g, &self.values)? > 0))
    }
}

impl PassDef for FreezeObservers {
    const INFO: PassInfo = PassInfo {
        name: "freeze-observers",
        summary: "stop range observation: quantization parameters come from the stored ranges",
        options: &[OptionSpec {
            name: "values",
            kind: OptionKind::List,
            default: "[]",
            doc: "names of the observed values to freeze; empty freezes every observer",
        }],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(FreezeObservers {
            values: options.list("values")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREPARED: &str = "graph @m {
  input %x: f32[B, 4]
  state %x.min: f32[] = fill(inf)
  state %x.max: f32[] = fill(-inf)
  state %h.min: f32[] = fill(inf)
  state %h.max: f32[] = fill(-inf)

  %x.min.new = observe_min(%x, %x.min) {averaging = 0.01} : f32[]
  %x.max.new = observe_max(%x, %x.max) {averaging = 0.01} : f32[]
  %x.scale = qparams_scale(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : f32[]
  %x.zp = qparams_zero_point(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : i32[]
  %x.fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 4]
  %h = relu(%x.fq) : f32[B, 4]
  %h.min.new = observe_min(%h, %h.min) : f32[]
  %h.max.new = observe_max(%h, %h.max) : f32[]
  %h.scale = qparams_scale(%h.min.new, %h.max.new) {qmin = -128, qmax = 127} : f32[]
  %h.zp = qparams_zero_point(%h.min.new, %h.max.new) {qmin = -128, qmax = 127} : i32[]
  %h.fq = fake_quant(%h, %h.scale, %h.zp) {qmin = -128, qmax = 127} : f32[B, 4]

  output y = %h.fq
  update %x.min = %x.min.new
  update %x.max = %x.max.new
  update %h.min = %h.min.new
  update %h.max = %h.max.new
}
";

    fn prepared() -> Graph {
        qir_reader::parse_and_verify(PREPARED).unwrap()
    }

    #[test]
    fn freezes_every_observer_and_drops_their_updates() {
        let mut g = prepared();
        let changed = FreezeObservers::default().run(&mut g).unwrap();
        assert_eq!(changed, Changed::Yes);
        qir::verify::verify(&g).unwrap();
        let text = qir::print::print(&g);
        assert!(!text.contains("observe_"), "{text}");
        assert!(!text.contains("update"), "{text}");
        assert!(
            text.contains("qparams_scale(%x.min, %x.max)"),
            "the parameters come from the stored range: {text}"
        );
        // a second run has nothing left to freeze
        assert_eq!(FreezeObservers::default().run(&mut g).unwrap(), Changed::No);
    }

    /// Fake quantization with the affine int8 parameters of the range [lo, hi], computed
    /// here from the formulas of DESIGN §2 (not through qatc's kernels).
    fn fq_reference(x: f32, lo: f32, hi: f32) -> f32 {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let s = (hi - lo) / 255.0;
        let z = (-128.0 - (lo / s).round_ties_even()).clamp(-128.0, 127.0);
        let q = ((x * (1.0 / s)).round_ties_even() + z).clamp(-128.0, 127.0);
        (q - z) * s
    }

    #[test]
    fn a_frozen_graph_quantizes_with_the_stored_ranges() {
        use qir_interp::{RunOptions, init_store, run};
        use std::collections::HashMap;
        let observed = prepared();
        let mut frozen = prepared();
        FreezeObservers::default().run(&mut frozen).unwrap();
        let mut store = init_store(&observed, 1).unwrap();
        // a stored range, as calibration would leave it
        for (n, v) in [("x.min", -2.0f32), ("x.max", 2.0), ("h.min", 0.0), ("h.max", 1.5)] {
            store.insert(n, qir::Tensor::scalar_f32(v));
        }
        let x: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.6).collect();
        let inputs = HashMap::from([(
            "x".to_string(),
            qir::Tensor::f32(vec![3, 4], x.clone()).unwrap(),
        )]);
        let mut trained = store.clone();
        let got = run(&frozen, &mut trained, &inputs, &RunOptions::default()).unwrap();
        let want: Vec<f32> = x
            .iter()
            .map(|&v| fq_reference(fq_reference(v, -2.0, 2.0).max(0.0), 0.0, 1.5))
            .collect();
        assert_eq!(got.outputs["y"].as_f32().unwrap(), want);
        for n in ["x.min", "x.max", "h.min", "h.max"] {
            assert_eq!(trained.get(n), store.get(n), "{n} changed");
        }
        // while the observed graph moves its ranges
        let mut moved = store.clone();
        run(&observed, &mut moved, &inputs, &RunOptions::default()).unwrap();
        assert_ne!(moved.get("x.max"), store.get("x.max"));
    }

    #[test]
    fn freezes_only_the_named_values() {
        let mut g = prepared();
        let p = FreezeObservers {
            values: vec!["h".into()],
        };
        p.run(&mut g).unwrap();
        qir::verify::verify(&g).unwrap();
        let text = qir::print::print(&g);
        assert!(text.contains("observe_min(%x, %x.min)"), "{text}");
        assert!(!text.contains("observe_min(%h"), "{text}");
        assert_eq!(g.updates().len(), 2);
    }

    #[test]
    fn a_name_that_observes_nothing_is_an_error() {
        let mut g = prepared();
        let p = FreezeObservers {
            values: vec!["fc9".into()],
        };
        let e = p.run(&mut g).unwrap_err().to_string();
        assert_eq!(e, "no observer on a value named '%fc9'");
    }
}
