//! `disable-fake-quant`: turns fake quantization off — every `fake_quant`/`fake_quant_lsq`
//! is removed and its users read its float input. Observers are left as they are, so the
//! ranges keep being observed (PyTorch's `disable_fake_quant`); freeze them separately
//! with `freeze-observers`. Quantization parameters that nothing reads any more are left
//! for `canonicalize` to remove.
//!
//! ```text
//! %h.fq = fake_quant(%h, %h.scale, %h.zp) {...}      =>   (users of %h.fq read %h)
//! ```
//!
//! Option `values`: the names of the quantized values (the fake-quant's input, `[x, fc1.w]`)
//! whose fake-quant to disable; empty (the default) disables all. A name that no fake-quant
//! quantizes is an error. Needs a verified graph; keeps it verified (a fake-quant's result
//! has its input's type).

use qir::{Graph, Op};

use crate::freeze_observers::select;
use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `disable-fake-quant` pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DisableFakeQuant {
    /// Names of the quantized values whose fake-quant to disable; empty = all.
    pub values: Vec<String>,
}

/// Removes the fake-quants of `g` selected by `values` (all when empty); returns how many.
pub fn disable_fake_quant(g: &mut Graph, values: &[String]) -> Result<usize, PassError> {
    let fqs = select(g, &[Op::FakeQuant, Op::FakeQuantLsq], values, "fake-quant")?;
    for &fq in &fqs {
        let input = g.operands(fq)[0];
        g.replace_all_uses(fq, input);
        g.remove_node(fq);
    }
    Ok(fqs.len())
}

impl Pass for DisableFakeQuant {
    fn name(&self) -> &'static str {
        "disable-fake-quant"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("values", OptValue::List(self.values.clone()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        Ok(Changed::from(disable_fake_quant(g, &self.values)? > 0))
    }
}

impl PassDef for DisableFakeQuant {
    const INFO: PassInfo = PassInfo {
        name: "disable-fake-quant",
        summary: "turn fake quantization off (observers keep observing)",
        options: &[OptionSpec {
            name: "values",
            kind: OptionKind::List,
            default: "[]",
            doc: "names of the quantized values whose fake-quant to disable; empty disables all",
        }],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(DisableFakeQuant {
            values: options.list("values")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use qir::Tensor;
    use qir_interp::{RunOptions, init_store, run};

    const MODEL: &str = "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = kaiming_uniform
  param %w.scale: f32[] = fill(0.05)
  state %x.min: f32[] = fill(-1.0)
  state %x.max: f32[] = fill(1.0)
  const %w.zp: f32[] = zeros

  %x.min.new = observe_min(%x, %x.min) : f32[]
  %x.max.new = observe_max(%x, %x.max) : f32[]
  %x.scale = qparams_scale(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : f32[]
  %x.zp = qparams_zero_point(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : i32[]
  %x.fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 4]
  %w.fq = fake_quant_lsq(%w, %w.scale, %w.zp) {qmin = -127, qmax = 127} : f32[3, 4]
  %y = linear(%x.fq, %w.fq) : f32[B, 3]

  output y = %y
  update %x.min = %x.min.new
  update %x.max = %x.max.new
}
";

    fn graph() -> Graph {
        qir_reader::parse_and_verify(MODEL).unwrap()
    }

    fn eval(g: &Graph) -> Vec<f32> {
        let mut store = init_store(g, 3).unwrap();
        let x: Vec<f32> = (0..8).map(|i| (i as f32 - 3.3) * 0.37).collect();
        let inputs = HashMap::from([("x".to_string(), Tensor::f32(vec![2, 4], x).unwrap())]);
        let r = run(g, &mut store, &inputs, &RunOptions::default()).unwrap();
        r.outputs["y"].as_f32().unwrap().to_vec()
    }

    #[test]
    fn disabling_every_fake_quant_gives_the_float_function() {
        let quantized = graph();
        let mut g = graph();
        assert_eq!(DisableFakeQuant::default().run(&mut g).unwrap(), Changed::Yes);
        qir::verify::verify(&g).unwrap();
        let text = qir::print::print(&g);
        assert!(text.contains("%y = linear(%x, %w)"), "{text}");
        // the observers keep observing
        assert!(text.contains("update %x.min = %x.min.new"), "{text}");
        // the float model, written directly
        let float = qir_reader::parse_and_verify(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = kaiming_uniform

  %y = linear(%x, %w) : f32[B, 3]

  output y = %y
}
",
        )
        .unwrap();
        assert_eq!(eval(&g), eval(&float));
        assert_ne!(eval(&quantized), eval(&float), "the fake-quants did something");
        assert_eq!(DisableFakeQuant::default().run(&mut g).unwrap(), Changed::No);
    }

    #[test]
    fn disables_only_the_named_values() {
        let mut g = graph();
        let p = DisableFakeQuant {
            values: vec!["w".into()],
        };
        p.run(&mut g).unwrap();
        qir::verify::verify(&g).unwrap();
        let text = qir::print::print(&g);
        assert!(text.contains("%y = linear(%x.fq, %w)"), "{text}");
        let e = DisableFakeQuant {
            values: vec!["nope".into()],
        }
        .run(&mut g)
        .unwrap_err()
        .to_string();
        assert_eq!(e, "no fake-quant on a value named '%nope'");
    }
}
