//! `insert-fake-quant`: prepares a forward graph for quantization-aware training by
//! inserting fake quantization, with its observers, where the integer model will quantize
//! (PyTorch's `prepare_qat`, TF-MOT's `quantize_model`), following a [`Scheme`].
//!
//! A quantized value `%v` becomes (activations per tensor; weights per channel along axis
//! 0 with `[C]` state):
//!
//! ```text
//! state %v.min: f32[] = fill(inf)       // +inf / -inf: nothing observed yet
//! state %v.max: f32[] = fill(-inf)
//! %v.min.new = observe_min(%v, %v.min) {averaging = 0.01}
//! %v.max.new = observe_max(%v, %v.max) {averaging = 0.01}
//! %v.scale = qparams_scale(%v.min.new, %v.max.new) {qmin = -128, qmax = 127}
//! %v.zp = qparams_zero_point(%v.min.new, %v.max.new) {qmin = -128, qmax = 127}
//! %v.fq = fake_quant(%v, %v.scale, %v.zp) {qmin = -128, qmax = 127}
//! update %v.min = %v.min.new
//! update %v.max = %v.max.new
//! ```
//!
//! and every use of `%v` (op operands and outputs) reads `%v.fq`. In the interpreter's eval
//! mode the observers return their state, so the same graph trains and evaluates. With a
//! learned scheme (LSQ) the value instead becomes `fake_quant_lsq(%v, %v.scale, %v.zp)`
//! with `%v.scale` a param (and `%v.zp` a param for LSQ+, a constant otherwise); see
//! [`crate::scheme::lsq`] for their initial values.
//!
//! Where sites go — layer inputs and weights, the last value of each fused chain, shared
//! parameters for concat, nothing on the loss side — is decided by [`crate::placement`],
//! which the convert passes read too. Values already fake-quantized (a `fake_quant` reads
//! them) are left alone, so the pass is idempotent.
//!
//! Needs a verified forward graph (no backward, optimizer or integer ops). Keeps every
//! declaration, name and comment; adds states, params, consts, ops and updates with fresh
//! names derived from the quantized value's name (`%fc1.w.scale`).

use qir::{Attr, Dim, ElemType, Graph, Init, Inst, NodeId, Op, OpClass, Shape, Type};

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, Pass, PassDef, PassError, PassInfo};
use crate::pipeline::OptValue;
use crate::placement::{Site, plan};
use crate::scheme::{Learned, Scheme, lsq};

/// The `insert-fake-quant` pass.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertFakeQuant {
    /// The scheme to follow.
    pub scheme: Scheme,
    /// The `scheme` option as written (a preset name or a file path), for printing.
    pub source: String,
}

impl InsertFakeQuant {
    /// The pass with a scheme built in code (printed as its name).
    pub fn new(scheme: Scheme) -> InsertFakeQuant {
        InsertFakeQuant {
            source: scheme.name.clone(),
            scheme,
        }
    }
}

impl Default for InsertFakeQuant {
    /// The `tflite-int8` scheme.
    fn default() -> InsertFakeQuant {
        match Scheme::preset(DEFAULT_SCHEME) {
            Ok(s) => InsertFakeQuant::new(s),
            // The presets are static data and tested; this arm is unreachable.
            Err(e) => panic!("{e}"),
        }
    }
}

/// The default `scheme` option.
pub const DEFAULT_SCHEME: &str = "tflite-int8";

/// The `scheme` option shared by the QAT passes.
pub const SCHEME_OPTION: OptionSpec = OptionSpec {
    name: "scheme",
    kind: OptionKind::Str,
    default: DEFAULT_SCHEME,
    doc: "a scheme preset (tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq) or the path of a .toml scheme file",
};

/// Loads the `scheme` option of `pass` from `options`.
pub(crate) fn scheme_option(
    pass: &'static str,
    options: &Options,
) -> Result<(Scheme, String), OptionError> {
    let source = options.string("scheme")?;
    let scheme = Scheme::load(&source).map_err(|e| OptionError::Invalid {
        pass: pass.to_string(),
        option: "scheme".to_string(),
        message: e.to_string(),
    })?;
    Ok((scheme, source))
}

impl Pass for InsertFakeQuant {
    fn name(&self) -> &'static str {
        "insert-fake-quant"
    }
    fn options(&self) -> Vec<(&'static str, OptValue)> {
        vec![("scheme", OptValue::Scalar(self.source.clone()))]
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        insert_fake_quant(g, &self.scheme)
    }
}

impl PassDef for InsertFakeQuant {
    const INFO: PassInfo = PassInfo {
        name: "insert-fake-quant",
        summary: "insert fake quantization and observers on layer inputs, weights and activation outputs, following a scheme",
        options: &[SCHEME_OPTION],
    };
    fn from_options(options: &Options) -> Result<Self, OptionError> {
        let (scheme, source) = scheme_option("insert-fake-quant", options)?;
        Ok(InsertFakeQuant { scheme, source })
    }
}

/// Inserts fake quantization into `g` following `scheme` (see the module docs). On error
/// `g` is unchanged.
pub fn insert_fake_quant(g: &mut Graph, scheme: &Scheme) -> Result<Changed, PassError> {
    scheme
        .validate()
        .map_err(|e| PassError::new(format!("scheme '{}': {e}", scheme.name)))?;
    refuse_non_forward(g)?;
    let plan = plan(g, scheme)?;
    if plan.is_empty() {
        return Ok(Changed::No);
    }
    let mut work = g.clone();
    for site in &plan {
        emit(&mut work, site)?;
    }
    *g = work;
    Ok(Changed::Yes)
}

/// Refuses graphs with integer, backward, optimizer or collective ops: this pass prepares forward
/// graphs.
fn refuse_non_forward(g: &Graph) -> Result<(), PassError> {
    for id in g.node_ids() {
        if let Some(op) = g.node(id).op() {
            match op.class() {
                OpClass::Forward | OpClass::FakeQuant | OpClass::Observer => {}
                OpClass::Integer
                | OpClass::Backward
                | OpClass::Optimizer
                | OpClass::Collective => {
                    return Err(PassError::at(
                        id,
                        format!(
                            "insert-fake-quant prepares forward graphs, found the {} op '{op}'",
                            op.class().name()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A base name `b` such that `b.min`, `b.max`, `b.min.new`, `b.max.new`, `b.scale`,
/// `b.zp` and `b.fq` are all free.
fn site_base(g: &Graph, name: &str) -> String {
    let free = |b: &str| {
        ["min", "max", "min.new", "max.new", "scale", "zp", "fq"]
            .iter()
            .all(|s| g.find(&format!("{b}.{s}")).is_none())
    };
    if free(name) {
        return name.to_string();
    }
    (1..)
        .map(|i| format!("{name}.{i}"))
        .find(|b| free(b))
        .unwrap_or_default()
}

fn attr(inst: Inst, name: &str, value: Attr) -> Result<Inst, PassError> {
    inst.with(name, value)
        .map_err(|e| PassError::new(format!("internal error: {e}")))
}

/// The initializer of a learned weight scale (see [`crate::scheme::lsq`]).
fn weight_scale_init(g: &Graph, w: NodeId, axis: Option<usize>, qmax: i64) -> Init {
    let mut cur = w;
    // Look through the folding of `fold-batchnorm-qat` (`mul(w, factor)`, factor ≈ 1 at
    // initialization) to the param.
    for _ in 0..4 {
        if g.node(cur).is_param() {
            break;
        }
        match (g.node(cur).op(), g.operands(cur).first()) {
            (Some(Op::Mul), Some(&x)) => cur = x,
            _ => break,
        }
    }
    let n = g.node(cur);
    let shape: Vec<usize> = n
        .ty
        .shape
        .as_fixed()
        .unwrap_or_default()
        .into_iter()
        .map(|d| d as usize)
        .collect();
    if let Some(init) = n.init().filter(|_| n.is_param()) {
        if axis == Some(0)
            && let Some(per) = lsq::dense_channel_mean_abs(init, &shape)
        {
            return Init::Dense(
                per.into_iter()
                    .map(|m| lsq::scale_from_mean_abs(m, qmax))
                    .collect(),
            );
        }
        if let Some(m) = lsq::expected_mean_abs(init, &shape) {
            return Init::Fill(lsq::scale_from_mean_abs(m, qmax));
        }
    }
    // A typical weight magnitude; `lsq::initialize` replaces it from the data.
    Init::Fill(lsq::scale_from_mean_abs(0.05, qmax))
}

/// Emits the observer and fake-quant nodes of one site and reroutes the uses of its value.
fn emit(g: &mut Graph, site: &Site) -> Result<(), PassError> {
    let v = site.value;
    let base_name = match &g.node(v).name {
        Some(n) => n.clone(),
        None => g
            .node(v)
            .op()
            .map(|op| op.mnemonic().to_string())
            .unwrap_or_else(|| "v".to_string()),
    };
    let base = site_base(g, &base_name);
    let spec = site.spec;
    let (qmin, qmax) = (spec.qmin(), spec.qmax());
    let param_shape = match site.axis {
        Some(ax) => {
            let d = g
                .ty(v)
                .shape
                .dims()
                .get(ax)
                .and_then(Dim::fixed)
                .ok_or_else(|| {
                    PassError::at(
                        v,
                        format!(
                            "per-channel quantization needs a fixed dimension {ax} in {}",
                            g.ty(v)
                        ),
                    )
                })?;
            Shape::fixed(&[d])
        }
        None => Shape::scalar(),
    };
    let pty = Type::new(ElemType::F32, param_shape);
    let mut created: Vec<NodeId> = Vec::new();
    let fq = match spec.learned {
        Learned::No => {
            let mn = g.add_state(&format!("{base}.min"), pty.clone(), Init::Fill(f64::INFINITY))?;
            let mx = g.add_state(
                &format!("{base}.max"),
                pty.clone(),
                Init::Fill(f64::NEG_INFINITY),
            )?;
            let mut observe = |op: Op, state: NodeId, suffix: &str| -> Result<NodeId, PassError> {
                let mut inst = Inst::new(op);
                if let Some(ax) = site.axis {
                    inst = attr(inst, "axis", Attr::Int(ax as i64))?;
                }
                if let Some(c) = spec.observer.averaging() {
                    inst = attr(inst, "averaging", Attr::Float(c))?;
                }
                Ok(g.add_op(inst, &[v, state], Some(&format!("{base}.{suffix}")))?)
            };
            let mn_new = observe(Op::ObserveMin, mn, "min.new")?;
            let mx_new = observe(Op::ObserveMax, mx, "max.new")?;
            let qparams = |op: Op| -> Result<Inst, PassError> {
                let mut inst = attr(Inst::new(op), "qmin", Attr::Int(qmin))?;
                inst = attr(inst, "qmax", Attr::Int(qmax))?;
                inst = attr(inst, "symmetric", Attr::Bool(spec.symmetric))?;
                attr(inst, "power_of_two", Attr::Bool(spec.power_of_two))
            };
            let scale = g.add_op(
                qparams(Op::QparamsScale)?,
                &[mn_new, mx_new],
                Some(&format!("{base}.scale")),
            )?;
            let zp = g.add_op(
                qparams(Op::QparamsZeroPoint)?,
                &[mn_new, mx_new],
                Some(&format!("{base}.zp")),
            )?;
            let mut inst = attr(Inst::new(Op::FakeQuant), "qmin", Attr::Int(qmin))?;
            inst = attr(inst, "qmax", Attr::Int(qmax))?;
            if let Some(ax) = site.axis {
                inst = attr(inst, "axis", Attr::Int(ax as i64))?;
            }
            let fq = g.add_op(inst, &[v, scale, zp], Some(&format!("{base}.fq")))?;
            g.add_update(mn, mn_new);
            g.add_update(mx, mx_new);
            created.extend([mn_new, mx_new, fq]);
            fq
        }
        Learned::Lsq | Learned::LsqPlus => {
            let init = if site.weight {
                weight_scale_init(g, v, site.axis, qmax)
            } else {
                Init::Fill(lsq::scale_from_mean_abs(1.0, qmax))
            };
            let scale = g.add_param(&format!("{base}.scale"), pty.clone(), init)?;
            let learn_zp = spec.learned == Learned::LsqPlus;
            let zp = if learn_zp {
                g.add_param(&format!("{base}.zp"), pty.clone(), Init::Zeros)?
            } else {
                // The zero point of a symmetric grid: 0 when signed, the midpoint when not.
                let z = if qmin < 0 { 0 } else { (qmin + qmax + 1) / 2 };
                let init = if z == 0 {
                    Init::Zeros
                } else {
                    Init::Fill(z as f64)
                };
                g.add_const(&format!("{base}.zp"), pty.clone(), init)?
            };
            let mut inst = attr(Inst::new(Op::FakeQuantLsq), "qmin", Attr::Int(qmin))?;
            inst = attr(inst, "qmax", Attr::Int(qmax))?;
            if let Some(ax) = site.axis {
                inst = attr(inst, "axis", Attr::Int(ax as i64))?;
            }
            inst = attr(inst, "learn_zero_point", Attr::Bool(learn_zp))?;
            let fq = g.add_op(inst, &[v, scale, zp], Some(&format!("{base}.fq")))?;
            created.push(fq);
            fq
        }
    };
    for (user, slot) in g.users(v) {
        if !created.contains(&user) {
            g.set_operand(user, slot, fq);
        }
    }
    for o in g.outputs_mut() {
        if o.value == v {
            o.value = fq;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(src: &str, scheme: &str) -> String {
        let mut g = qir_reader::parse_and_verify(src).unwrap();
        let s = Scheme::preset(scheme).unwrap();
        insert_fake_quant(&mut g, &s).unwrap();
        qir::verify::verify(&g).unwrap();
        qir::print::print(&g)
    }

    #[test]
    fn the_observed_form_of_an_activation() {
        let text = prepare(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = lecun_uniform
  %h = linear(%x, %w) : f32[B, 3]
  output h = %h
}",
            "tflite-int8",
        );
        for line in [
            "state %x.min: f32[] = fill(inf)",
            "state %x.max: f32[] = fill(-inf)",
            "state %w.min: f32[3] = fill(inf)",
            "%x.min.new = observe_min(%x, %x.min) {averaging = 0.01} : f32[]",
            "%x.scale = qparams_scale(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : f32[]",
            "%x.zp = qparams_zero_point(%x.min.new, %x.max.new) {qmin = -128, qmax = 127} : i32[]",
            "%x.fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 4]",
            "%w.min.new = observe_min(%w, %w.min) {axis = 0, averaging = 1.0} : f32[3]",
            "%w.scale = qparams_scale(%w.min.new, %w.max.new) {qmin = -127, qmax = 127, symmetric = true} : f32[3]",
            "%w.fq = fake_quant(%w, %w.scale, %w.zp) {qmin = -127, qmax = 127, axis = 0} : f32[3, 4]",
            "%h = linear(%x.fq, %w.fq) : f32[B, 3]",
            "output h = %h.fq",
            "update %x.min = %x.min.new",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn running_twice_changes_nothing() {
        let mut g = qir_reader::parse_and_verify(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = lecun_uniform
  %h = linear(%x, %w) : f32[B, 3]
  %r = relu(%h) : f32[B, 3]
  output r = %r
}",
        )
        .unwrap();
        let s = Scheme::preset("w4a8").unwrap();
        assert_eq!(insert_fake_quant(&mut g, &s).unwrap(), Changed::Yes);
        let once = qir::print::print(&g);
        assert_eq!(insert_fake_quant(&mut g, &s).unwrap(), Changed::No);
        assert_eq!(qir::print::print(&g), once);
    }

    #[test]
    fn lsq_sites_use_learned_parameters() {
        let text = prepare(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = kaiming_uniform
  %h = linear(%x, %w) : f32[B, 3]
  output h = %h
}",
            "lsq",
        );
        // kaiming_uniform on [3, 4]: E|w| = sqrt(6 / 4) / 2; scale = 2 E|w| / sqrt(127)
        let s = (1.5f64).sqrt() / 127f64.sqrt();
        for line in [
            format!("param %w.scale: f32[3] = fill({})", qir::float::fmt_f32(s as f32)),
            "const %w.zp: f32[3] = zeros".to_string(),
            "param %x.zp: f32[] = zeros".to_string(),
            "%w.fq = fake_quant_lsq(%w, %w.scale, %w.zp) {qmin = -127, qmax = 127, axis = 0} : f32[3, 4]".to_string(),
            "%x.fq = fake_quant_lsq(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127, learn_zero_point = true} : f32[B, 4]".to_string(),
        ] {
            assert!(text.contains(&line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("observe_"), "{text}");
    }

    #[test]
    fn affine_ops_continue_a_chain_but_a_reciprocal_does_not() {
        let text = prepare(
            "graph @m {
  input %x: f32[B, 4]
  param %w: f32[3, 4] = lecun_uniform
  const %c: f32[3] = [0.5, 2.0, 4.0]
  %h = linear(%x, %w) : f32[B, 3]
  %s = mul(%h, %c) : f32[B, 3]
  %r = relu(%s) : f32[B, 3]
  %v = linear(%x, %w) : f32[B, 3]
  %q = div(%c, %v) : f32[B, 3]
  output r = %r
  output q = %q
}",
            "tflite-int8",
        );
        let fq_of: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix('%'))
            .filter(|l| l.contains("= fake_quant("))
            .filter_map(|l| l.split(" = ").next())
            .collect();
        assert_eq!(fq_of, ["x.fq", "w.fq", "r.fq", "v.fq", "q.fq"], "{text}");
    }

    #[test]
    fn a_scheme_built_in_code_is_validated() {
        let mut g = qir_reader::parse_and_verify(
            "graph @m {\n  input %x: f32[B, 4]\n  %r = relu(%x) : f32[B, 4]\n  output r = %r\n}",
        )
        .unwrap();
        let mut s = Scheme::preset("tflite-int8").unwrap();
        s.weights.bits = 0;
        assert_eq!(s.weights.qmax(), 0, "no overflow on a bad spec");
        let e = insert_fake_quant(&mut g, &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "scheme 'tflite-int8': weights.bits must be in 2..=8, found 0"
        );
        let e = crate::fold_batchnorm_qat::fold_batchnorm_qat(&mut g, &s).unwrap_err();
        assert!(e.to_string().contains("weights.bits"));
    }

    #[test]
    fn backward_graphs_are_refused() {
        let mut g = qir_reader::parse_and_verify(
            "graph @m {
  input %x: f32[B, 4]
  input %dy: f32[B, 4]
  %d = relu_grad(%dy, %x) : f32[B, 4]
  output d = %d
}",
        )
        .unwrap();
        let e = insert_fake_quant(&mut g, &Scheme::preset("tflite-int8").unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "insert-fake-quant prepares forward graphs, found the backward op 'relu_grad'"
        );
    }
}
