//! `bind-state`: binds a checkpoint's trained parameters and state (observer ranges,
//! learned LSQ scales, batch-norm running statistics) into the graph as constants, so that
//! the passes after it (`convert-integer`) see the trained numbers.
//!
//! ```text
//! param %fc.w: f32[3, 4] = kaiming_uniform     =>   const %fc.w: f32[3, 4] = [0.12, ...]
//! state %x.min: f32[] = fill(inf)               =>   const %x.min: f32[] = [-0.42]
//! update %x.min = %x.min.new                    =>   (dropped: a constant is not updated)
//! ```
//!
//! Option `weights`: the safetensors file (a checkpoint of `qatc train`). Every parameter
//! must be in it; state the file lacks keeps its initializer (a checkpoint of a float
//! model holds no observer ranges), and becomes a constant with it when that initializer
//! is deterministic. A tensor whose shape differs from its declaration is an error.

use std::collections::BTreeMap;
use std::path::Path;

use qir::{Graph, Init, NodeKind, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;

/// The `bind-state` pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BindState {
    /// The safetensors file to read.
    pub weights: String,
}

/// Tensors by name: shape and row-major values (integers exact).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// Reads the tensors of a safetensors file as f64 values by name (with their shapes).
pub fn read_tensors(path: &Path) -> Result<Tensors, PassError> {
    let bytes = std::fs::read(path)
        .map_err(|e| PassError::new(format!("cannot read {}: {e}", path.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        PassError::new(format!("{} is not a valid safetensors file: {e}", path.display()))
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let b = view.data();
        fn le<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
            b.chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunk of N bytes")))
                .collect()
        }
        let v = match view.dtype() {
            Dtype::F32 => le(b, |a| f32::from_le_bytes(a) as f64),
            Dtype::F64 => le(b, f64::from_le_bytes),
            Dtype::I8 => le(b, |a: [u8; 1]| a[0] as i8 as f64),
            Dtype::U8 => le(b, |a: [u8; 1]| a[0] as f64),
            Dtype::I32 => le(b, |a| i32::from_le_bytes(a) as f64),
            Dtype::I64 => le(b, |a| i64::from_le_bytes(a) as f64),
            other => {
                return Err(PassError::new(format!(
                    "tensor '{name}' of {} has the unsupported element type {other:?}",
                    path.display()
                )));
            }
        };
        out.insert(name, (view.shape().to_vec(), v));
    }
    Ok(out)
}

/// Binds `tensors` into `g` (see the module docs); returns how many values were bound.
pub fn bind_state(g: &mut Graph, tensors: &Tensors) -> Result<usize, PassError> {
    let mut bound = 0;
    for id in g.node_ids() {
        let node = g.node(id);
        let (is_param, init) = match &node.kind {
            NodeKind::Param(i) => (true, i.clone()),
            NodeKind::State(i) => (false, i.clone()),
            NodeKind::Const(Init::External) => (false, Init::External),
            _ => continue,
        };
        let name = node.name.clone().unwrap_or_default();
        let declared: Option<Vec<usize>> = node
            .ty
            .shape
            .as_fixed()
            .map(|v| v.into_iter().map(|d| d as usize).collect());
        let value = match tensors.get(&name) {
            Some((shape, v)) => {
                if declared.as_ref() != Some(shape) {
                    return Err(PassError::at(
                        id,
                        format!(
                            "the weights hold %{name} with shape {shape:?}, the graph declares {}",
                            node.ty
                        ),
                    ));
                }
                Init::Dense(v.clone())
            }
            None if is_param || matches!(init, Init::External) => {
                return Err(PassError::at(
                    id,
                    format!("the weights have no tensor for %{name}: {}", node.ty),
                ));
            }
            None if init.is_random() => {
                return Err(PassError::at(
                    id,
                    format!("the weights have no tensor for state %{name} (initialized at random)"),
                ));
            }
            None => init,
        };
        g.node_mut(id).kind = NodeKind::Const(value);
        g.updates_mut().retain(|u| u.target != id);
        bound += 1;
    }
    Ok(bound)
}

/// Binds the tensors of a checkpoint already read (as `qir::Tensor`s).
pub fn bind_tensors(g: &mut Graph, tensors: &BTreeMap<String, Tensor>) -> Result<usize, PassError> {
    let t = tensors
        .iter()
        .map(|(k, t)| (k.clone(), (t.shape.clone(), t.data.to_f64())))
        .collect();
    bind_state(g, &t)
}

impl Pass for BindState {
    fn name(&self) -> &'static str {
        "bind-state"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("weights", OptValue::Scalar(self.weights.clone()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        if self.weights.is_empty() {
            return Err(PassError::new(
                "bind-state needs the trained weights: bind-state{weights=CKPT.safetensors}",
            ));
        }
        let t = read_tensors(Path::new(&self.weights))?;
        Ok(Changed::from(bind_state(g, &t)? > 0))
    }
}

impl PassDef for BindState {
    const INFO: PassInfo = PassInfo {
        name: "bind-state",
        summary: "bind a checkpoint's parameters and state into the graph as constants",
        options: &[OptionSpec {
            name: "weights",
            kind: OptionKind::Str,
            default: "\"\"",
            doc: "the safetensors file (a checkpoint of qatc train)",
        }],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        Ok(BindState {
            weights: options.string("weights")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "graph @m {
  input %x: f32[B, 2]
  param %w: f32[2, 2] = kaiming_uniform
  state %x.min: f32[] = fill(inf)
  state %n: f32[2] = zeros

  %x.min.new = observe_min(%x, %x.min) : f32[]
  %y = linear(%x, %w) : f32[B, 2]

  output y = %y
  output m = %x.min.new
  update %x.min = %x.min.new
}
";

    fn t(shape: &[usize], v: &[f64]) -> (Vec<usize>, Vec<f64>) {
        (shape.to_vec(), v.to_vec())
    }

    #[test]
    fn binds_params_and_state_and_drops_their_updates() {
        let mut g = qir_reader::parse_and_verify(G).unwrap();
        let tensors = BTreeMap::from([
            ("w".to_string(), t(&[2, 2], &[1.0, 2.0, 3.0, 4.0])),
            ("x.min".to_string(), t(&[], &[-0.5])),
            ("extra".to_string(), t(&[1], &[9.0])),
        ]);
        // %n is not in the file: it keeps its (deterministic) initializer, as a constant
        assert_eq!(bind_state(&mut g, &tensors).unwrap(), 3);
        qir::verify::verify(&g).unwrap();
        let text = qir::print::print(&g);
        assert!(text.contains("const %w: f32[2, 2] = [1.0, 2.0, 3.0, 4.0]"), "{text}");
        assert!(text.contains("const %x.min: f32[] = [-0.5]"), "{text}");
        assert!(text.contains("const %n: f32[2] = zeros"), "{text}");
        assert!(!text.contains("update"), "{text}");
    }

    #[test]
    fn a_missing_param_or_a_wrong_shape_is_an_error() {
        let mut g = qir_reader::parse_and_verify(G).unwrap();
        let e = bind_state(&mut g, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("the weights have no tensor for %w: f32[2, 2]"), "{e}");
        let tensors = BTreeMap::from([("w".to_string(), t(&[4], &[1.0, 2.0, 3.0, 4.0]))]);
        let e = bind_state(&mut g, &tensors).unwrap_err().to_string();
        assert!(e.contains("the weights hold %w with shape [4], the graph declares f32[2, 2]"), "{e}");
        let e = BindState::default().run(&mut g).unwrap_err().to_string();
        assert!(e.contains("bind-state needs the trained weights"), "{e}");
        let e = BindState {
            weights: "/nonexistent.safetensors".into(),
        }
        .run(&mut g)
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot read /nonexistent.safetensors"), "{e}");
    }
}
