//! Export: a qir graph (and the tensors of its `external` declarations) as an ONNX model
//! of opset [`EXPORT_OPSET`].
//!
//! Only what the graph's outputs depend on is written: a training graph loses its loss
//! and label input (the export is an inference model). Float ops are the inverse of the
//! importer's table, so that import → export → import gives the same graph:
//!
//! | qir | ONNX |
//! |---|---|
//! | `linear` | Gemm (transB = 1, C = the bias) |
//! | `matmul` | MatMul, or Gemm with transA/transB |
//! | `add`, `sub`, `mul`, `div` | Add, Sub, Mul, Div |
//! | `conv2d` | Conv |
//! | `batch_norm` | BatchNormalization |
//! | `relu`, `sigmoid`, `tanh`, `relu6` | Relu, Sigmoid, Tanh, Clip [0, 6] |
//! | a general clamp as the importer composes it | Clip (see `clip.rs`) |
//! | `max_pool2d`, `avg_pool2d`, `global_avg_pool`, `reduce_mean` | MaxPool, AveragePool, GlobalAveragePool, ReduceMean |
//! | `flatten`, `reshape`, `transpose`, `concat` | Flatten, Reshape (constant shape), Transpose, Concat |
//! | `softmax`, `log_softmax` | Softmax, LogSoftmax |
//! | `fake_quant`, `fake_quant_lsq` | QuantizeLinear → DequantizeLinear (see below; a learned step exports its trained value) |
//!
//! Declarations: params and state are initializers; constants are `Constant` nodes when
//! float (so that they import back as constants, not params), initializers otherwise.
//! params and state take their trained values from the given weights when they hold them
//! (`external` values must be there); otherwise `dense`, `zeros`, `ones` and `fill` are
//! computed and random initializers are an error (export the trained weights).
//!
//! Fake quantization (a prepared model): `fake_quant(x, scale, zp) {qmin, qmax, axis}`
//! becomes QuantizeLinear → DequantizeLinear with int8 (qmin ≥ -128, qmax ≤ 127) or
//! uint8 (0 ≤ qmin, qmax ≤ 255) zero points, per-axis when the scale is a vector. The
//! scale and zero point must be computable without data: constants and state, and the
//! observers frozen at their running ranges (`observe_min`/`observe_max` give their
//! `running` operand; `qparams_scale`/`qparams_zero_point` are evaluated with
//! [`qir::quant`]). A range narrower than the storage type (e.g. [-127, 127]) adds an exact
//! clamp after the DequantizeLinear: `Max`/`Min` with the dequantized bounds, which are the
//! very f32 products DequantizeLinear computes for qmin and qmax.
//!
//! Integer models (the output of `qatc convert`): `quantize`, `dequantize`, `qlinear` /
//! `qconv2d` with their `requantize`, `qadd`, `qconcat` and `qglobal_avg_pool` become the
//! QDQ form that onnxruntime, TensorRT and OpenVINO consume, with int8 weight initializers
//! and per-channel scales (see the `integer` module for the table and why the real
//! numbers are the integer model's).
//!
//! Anything else is an [`ExportError::Op`] naming the node and its op.

use std::collections::{BTreeMap, HashMap, HashSet};

use qir::{Data, Dim, ElemType, Graph, Init, NodeId, NodeKind, Op, Tensor};

use crate::proto::tensor_proto::DataType;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto, type_proto,
};

/// The default-domain opset of exported models.
pub const EXPORT_OPSET: i64 = 17;

/// Why a graph could not be exported.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// A node whose op (or form of the op) has no ONNX translation here.
    #[error("node %{node} ({op}): {message}")]
    Op {
        /// The node's name.
        node: String,
        /// The op's mnemonic.
        op: String,
        /// What is not supported.
        message: String,
    },
    /// A declaration whose value cannot be written.
    #[error("%{node}: {message}")]
    Value {
        /// The declaration's name.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// The graph as a whole (a cycle, no outputs).
    #[error("{0}")]
    Graph(String),
}

type XResult<T> = std::result::Result<T, ExportError>;

fn onnx_elem(e: &ElemType) -> Option<DataType> {
    Some(match e {
        ElemType::F32 => DataType::Float,
        ElemType::F64 => DataType::Double,
        ElemType::I8 => DataType::Int8,
        ElemType::U8 => DataType::Uint8,
        ElemType::I32 => DataType::Int32,
        ElemType::I64 => DataType::Int64,
        ElemType::Bool => DataType::Bool,
        ElemType::Quant(_) => return None,
    })
}

/// A tensor as an ONNX `TensorProto` (little-endian `raw_data`).
pub fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    let (dt, raw): (DataType, Vec<u8>) = match &t.data {
        Data::F32(v) => (
            DataType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::F64(v) => (
            DataType::Double,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I8(v) => (DataType::Int8, v.iter().map(|&x| x as u8).collect()),
        Data::U8(v) => (DataType::Uint8, v.clone()),
        Data::I16(v) => (
            DataType::Int16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I32(v) => (
            DataType::Int32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I64(v) => (
            DataType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::Bool(v) => (DataType::Bool, v.iter().map(|&x| x as u8).collect()),
    };
    TensorProto {
        name: Some(name.to_string()),
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(dt as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn value_info(name: &str, ty: &qir::Type) -> Option<ValueInfoProto> {
    let dims = ty
        .shape
        .dims()
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    Some(ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(onnx_elem(&ty.elem)? as i32),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(crate) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// The value of a declaration: a param's or state's tensor from `weights` when it holds
/// one (the trained value), else the graph's initializer (`external` must be in `weights`).
fn decl_value(
    g: &Graph,
    id: NodeId,
    name: &str,
    weights: &BTreeMap<String, Tensor>,
) -> XResult<Tensor> {
    let node = g.node(id);
    let ty = &node.ty;
    let bad = |message: String| ExportError::Value {
        node: name.to_string(),
        message,
    };
    let shape: Vec<usize> = ty
        .shape
        .dims()
        .iter()
        .map(|d| d.fixed().map(|n| n as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("the type {ty} is not fixed")))?;
    let numel: usize = shape.iter().product();
    let init = node.init().ok_or_else(|| bad("not a declaration".into()))?;
    let fill = |v: f64| Data::from_f64(&ty.elem, &vec![v; numel]);
    // trained values (a param's or state's tensor in the weights) win over the graph's
    // initializer; constants keep the graph's value unless they are external
    let trained = node.is_param() || node.is_state() || matches!(init, Init::External);
    if trained && let Some(t) = weights.get(name) {
        if t.shape != shape || !t.data.matches(&ty.elem) {
            return Err(bad(format!(
                "the weights hold a {}{:?}, the graph declares {ty}",
                t.data.dtype(),
                t.shape
            )));
        }
        return Ok(t.clone());
    }
    let data = match init {
        Init::External => {
            return Err(bad(
                "is external but the weights have no tensor of this name".into(),
            ));
        }
        Init::Dense(v) if v.len() == numel => Data::from_f64(&ty.elem, v),
        Init::Dense(v) if v.len() == 1 => fill(v[0]),
        Init::Dense(v) => {
            return Err(bad(format!("{} values for {numel} elements", v.len())));
        }
        Init::Zeros => fill(0.0),
        Init::Ones => fill(1.0),
        Init::Fill(v) => fill(*v),
        other => {
            return Err(bad(format!(
                "has the random initializer {other:?}; export trained weights (--weights)"
            )));
        }
    };
    Ok(Tensor { shape, data })
}

pub(crate) struct Exporter<'a> {
    pub(crate) g: &'a Graph,
    weights: &'a BTreeMap<String, Tensor>,
    names: HashMap<NodeId, String>,
    taken: HashSet<String>,
    out: GraphProto,
    /// Values of declarations and frozen quantization parameters, evaluated on demand.
    consts: HashMap<NodeId, Tensor>,
    /// General clamps in the importer's composition, by their last node.
    clamps: HashMap<NodeId, crate::clip::Clamp>,
}

impl Exporter<'_> {
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut n = base.to_string();
        let mut k = 0;
        while !self.taken.insert(n.clone()) {
            k += 1;
            n = format!("{base}.{k}");
        }
        n
    }

    pub(crate) fn name(&self, id: NodeId) -> &str {
        &self.names[&id]
    }

    pub(crate) fn op_err(&self, id: NodeId, message: impl Into<String>) -> ExportError {
        ExportError::Op {
            node: self.name(id).to_string(),
            op: self
                .g
                .node(id)
                .op()
                .map_or("declaration", |o| o.info().mnemonic)
                .to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) {
        self.out.node.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(output.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs,
            ..Default::default()
        });
    }

    /// An initializer named after `base`; returns its name.
    pub(crate) fn initializer(&mut self, base: &str, t: &Tensor) -> String {
        let name = self.fresh(base);
        self.out.initializer.push(tensor_proto(&name, t));
        name
    }

    /// The value of a node that can be computed without data.
    pub(crate) fn constant(&mut self, id: NodeId) -> XResult<Tensor> {
        if let Some(t) = self.consts.get(&id) {
            return Ok(t.clone());
        }
        let node = self.g.node(id);
        let t = match &node.kind {
            NodeKind::Param(_) | NodeKind::State(_) | NodeKind::Const(_) => {
                let name = self.name(id).to_string();
                decl_value(self.g, id, &name, self.weights)?
            }
            NodeKind::Op(inst) => {
                let ops = self.g.operands(id);
                match inst.op {
                    // frozen observers: the running range
                    Op::ObserveMin | Op::ObserveMax => self.constant(ops[1])?,
                    Op::QparamsScale | Op::QparamsZeroPoint => {
                        let mn = self.constant(ops[0])?;
                        let mx = self.constant(ops[1])?;
                        crate::qdq::qparams(inst, &mn, &mx, &node.ty)
                            .map_err(|e| self.op_err(id, e))?
                    }
                    _ => {
                        return Err(self.op_err(
                            id,
                            "a quantization parameter must be computable without data (constants, state, observers and qparams)",
                        ));
                    }
                }
            }
            NodeKind::Input => {
                return Err(self.op_err(id, "a quantization parameter cannot be an input"));
            }
        };
        self.consts.insert(id, t.clone());
        Ok(t)
    }

    fn declaration(&mut self, id: NodeId) -> XResult<()> {
        let name = self.name(id).to_string();
        let node = self.g.node(id);
        if let NodeKind::Input = node.kind {
            let vi = value_info(&name, &node.ty).ok_or_else(|| ExportError::Value {
                node: name.clone(),
                message: format!("the input type {} has no ONNX element type", node.ty),
            })?;
            self.out.input.push(vi);
            return Ok(());
        }
        let t = self.constant(id)?;
        if node.is_const() && node.ty.elem.is_float() {
            self.node(
                "Constant",
                &[],
                &name,
                vec![attr_tensor("value", tensor_proto("", &t))],
            );
        } else {
            self.out.initializer.push(tensor_proto(&name, &t));
        }
        Ok(())
    }

    fn op(&mut self, id: NodeId) -> XResult<()> {
        let Some(inst) = self.g.node(id).inst().cloned() else {
            return self.declaration(id);
        };
        if let Some(c) = self.clamps.get(&id).cloned() {
            let out = self.name(id).to_string();
            let x = self.name(c.x).to_string();
            let elem = self.g.ty(id).elem.clone();
            let bound = |ex: &mut Self, v: Option<f64>, what: &str| -> String {
                match v {
                    Some(v) => {
                        let t = Tensor::new(vec![], Data::from_f64(&elem, &[v])).expect("scalar");
                        ex.initializer(&format!("{out}.{what}"), &t)
                    }
                    None => String::new(),
                }
            };
            let lo = bound(self, c.lo, "min");
            let hi = bound(self, c.hi, "max");
            let ins: Vec<&str> = if hi.is_empty() {
                vec![&x, &lo]
            } else {
                vec![&x, &lo, &hi]
            };
            self.node("Clip", &ins, &out, vec![]);
            return Ok(());
        }
        let out = self.name(id).to_string();
        let operands = self.g.operands(id);
        let ins: Vec<String> = operands.iter().map(|o| self.name(*o).to_string()).collect();
        let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
        let ints = |n: &str| inst.ints(n).unwrap_or_default();
        if self.integer_op(id, &inst)? {
            return Ok(());
        }
        // a fused activation (`linear {act = relu}`) follows the op as its own node
        let act = inst.choice("act").unwrap_or("none").to_string();
        if !matches!(act.as_str(), "none" | "relu" | "relu6") {
            return Err(self.op_err(
                id,
                format!("the fused activation act = {act} is not exported"),
            ));
        }
        let final_out = out;
        let out = if act == "none" {
            final_out.clone()
        } else {
            self.fresh(&format!("{final_out}.pre"))
        };
        match inst.op {
            Op::Linear => {
                self.node("Gemm", &ins, &out, vec![attr_int("transB", 1)]);
            }
            Op::Matmul => {
                let ta = inst.boolean("transpose_a").unwrap_or(false);
                let tb = inst.boolean("transpose_b").unwrap_or(false);
                if !ta && !tb {
                    self.node("MatMul", &ins, &out, vec![]);
                } else {
                    self.node(
                        "Gemm",
                        &ins,
                        &out,
                        vec![attr_int("transA", ta as i64), attr_int("transB", tb as i64)],
                    );
                }
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div => {
                let t = match inst.op {
                    Op::Add => "Add",
                    Op::Sub => "Sub",
                    Op::Mul => "Mul",
                    _ => "Div",
                };
                self.node(t, &ins, &out, vec![]);
            }
            Op::Relu => self.node("Relu", &ins, &out, vec![]),
            Op::Sigmoid => self.node("Sigmoid", &ins, &out, vec![]),
            Op::Tanh => self.node("Tanh", &ins, &out, vec![]),
            Op::Relu6 => {
                let elem = self.g.ty(id).elem.clone();
                let lo = Tensor::new(vec![], Data::from_f64(&elem, &[0.0])).expect("scalar");
                let hi = Tensor::new(vec![], Data::from_f64(&elem, &[6.0])).expect("scalar");
                let lo = self.initializer(&format!("{out}.min"), &lo);
                let hi = self.initializer(&format!("{out}.max"), &hi);
                self.node("Clip", &[ins[0], &lo, &hi], &out, vec![]);
            }
            Op::Conv2d => {
                let attrs = self.conv_attrs(&inst, operands[1]);
                self.node("Conv", &ins, &out, attrs);
            }
            Op::BatchNorm => {
                let eps = inst.float("eps").unwrap_or(1e-5) as f32;
                self.node(
                    "BatchNormalization",
                    &ins,
                    &out,
                    vec![attr_float("epsilon", eps)],
                );
            }
            Op::MaxPool2d | Op::AvgPool2d => {
                let k = ints("kernel");
                let stride = inst.ints("stride").unwrap_or_else(|| k.clone());
                let mut attrs = vec![
                    attr_ints("kernel_shape", &k),
                    attr_ints("strides", &stride),
                    attr_ints("pads", &ints("padding")),
                ];
                let t = if inst.op == Op::MaxPool2d {
                    "MaxPool"
                } else {
                    let cip = inst.boolean("count_include_pad").unwrap_or(false);
                    attrs.push(attr_int("count_include_pad", cip as i64));
                    "AveragePool"
                };
                self.node(t, &ins, &out, attrs);
            }
            Op::GlobalAvgPool => self.node("GlobalAveragePool", &ins, &out, vec![]),
            Op::ReduceMean => {
                let keep = inst.boolean("keepdims").unwrap_or(false);
                self.node(
                    "ReduceMean",
                    &ins,
                    &out,
                    vec![
                        attr_ints("axes", &ints("axes")),
                        attr_int("keepdims", keep as i64),
                    ],
                );
            }
            Op::Flatten => {
                let axis = inst.int("axis").unwrap_or(1);
                self.node("Flatten", &ins, &out, vec![attr_int("axis", axis)]);
            }
            Op::Reshape => {
                let shape = ints("shape");
                let t = Tensor::new(vec![shape.len()], Data::I64(shape)).expect("vector");
                let s = self.initializer(&format!("{out}.shape"), &t);
                self.node("Reshape", &[ins[0], &s], &out, vec![]);
            }
            Op::Transpose => {
                self.node(
                    "Transpose",
                    &ins,
                    &out,
                    vec![attr_ints("perm", &ints("perm"))],
                );
            }
            Op::Concat => {
                let axis = inst.int("axis").unwrap_or(0);
                self.node("Concat", &ins, &out, vec![attr_int("axis", axis)]);
            }
            Op::Softmax | Op::LogSoftmax => {
                let axis = inst.int("axis").unwrap_or(-1);
                let t = if inst.op == Op::Softmax {
                    "Softmax"
                } else {
                    "LogSoftmax"
                };
                self.node(t, &ins, &out, vec![attr_int("axis", axis)]);
            }
            // a learned step (LSQ) exports as its trained value, like a frozen observer's
            Op::FakeQuant | Op::FakeQuantLsq => self.fake_quant(id, &inst, &operands, &out)?,
            other => {
                return Err(self.op_err(
                    id,
                    format!(
                        "op {} is not supported by the exporter",
                        other.info().mnemonic
                    ),
                ));
            }
        }
        match act.as_str() {
            "relu" => self.node("Relu", &[&out], &final_out, vec![]),
            "relu6" => {
                let elem = self.g.ty(id).elem.clone();
                let lo = Tensor::new(vec![], Data::from_f64(&elem, &[0.0])).expect("scalar");
                let hi = Tensor::new(vec![], Data::from_f64(&elem, &[6.0])).expect("scalar");
                let lo = self.initializer(&format!("{final_out}.min"), &lo);
                let hi = self.initializer(&format!("{final_out}.max"), &hi);
                self.node("Clip", &[&out, &lo, &hi], &final_out, vec![]);
            }
            _ => {}
        }
        Ok(())
    }

    /// The attributes of a Conv from a `conv2d` / `qconv2d` and its weight `w`.
    pub(crate) fn conv_attrs(&self, inst: &qir::Inst, w: NodeId) -> Vec<AttributeProto> {
        let ints = |n: &str| inst.ints(n).unwrap_or_default();
        let k: Vec<i64> = self.g.ty(w).shape.dims()[2..]
            .iter()
            .map(|d| d.fixed().map_or(-1, |n| n as i64))
            .collect();
        vec![
            attr_ints("kernel_shape", &k),
            attr_ints("strides", &ints("stride")),
            attr_ints("pads", &ints("padding")),
            attr_ints("dilations", &ints("dilation")),
            attr_int("group", inst.int("groups").unwrap_or(1)),
        ]
    }

    /// `fake_quant` as QuantizeLinear → DequantizeLinear (see the module docs).
    fn fake_quant(
        &mut self,
        id: NodeId,
        inst: &qir::Inst,
        operands: &[NodeId],
        out: &str,
    ) -> XResult<()> {
        let qmin = inst.int("qmin").unwrap_or(-128);
        let qmax = inst.int("qmax").unwrap_or(127);
        let scale = self.constant(operands[1])?;
        let zp = self.constant(operands[2])?;
        let x = self.name(operands[0]).to_string();
        let rank = self.g.ty(operands[0]).rank() as i64;
        let q =
            crate::qdq::QdqParams::new(&scale, &zp, qmin, qmax).map_err(|e| self.op_err(id, e))?;
        let axis = if scale.shape.is_empty() {
            None
        } else {
            let a = inst.int("axis").unwrap_or(1);
            Some(if a < 0 { a + rank } else { a })
        };
        let s = self.initializer(&format!("{out}.scale"), &q.scale);
        let z = self.initializer(&format!("{out}.zero_point"), &q.zero_point);
        let attrs = || {
            axis.map(|a| attr_int("axis", a))
                .into_iter()
                .collect::<Vec<_>>()
        };
        let qn = self.fresh(&format!("{out}.q"));
        self.node("QuantizeLinear", &[&x, &s, &z], &qn, attrs());
        if q.full_range {
            self.node("DequantizeLinear", &[&qn, &s, &z], out, attrs());
            return Ok(());
        }
        let dq = self.fresh(&format!("{out}.dq"));
        self.node("DequantizeLinear", &[&qn, &s, &z], &dq, attrs());
        // the clamp bounds broadcast along `axis`
        let bshape: Vec<usize> = match axis {
            None => vec![],
            Some(a) => (0..rank)
                .map(|d| if d == a { q.scale.shape[0] } else { 1 })
                .collect(),
        };
        let lo = Tensor::new(bshape.clone(), Data::F32(q.lo.clone())).expect("bounds");
        let hi = Tensor::new(bshape, Data::F32(q.hi.clone())).expect("bounds");
        let lo = self.initializer(&format!("{out}.qmin"), &lo);
        let hi = self.initializer(&format!("{out}.qmax"), &hi);
        let mx = self.fresh(&format!("{out}.max"));
        self.node("Max", &[&dq, &lo], &mx, vec![]);
        self.node("Min", &[&mx, &hi], out, vec![]);
        Ok(())
    }
}

/// Exports a graph (see the module docs); `weights` holds the tensors of its `external`
/// declarations by name.
pub fn export(g: &Graph, weights: &BTreeMap<String, Tensor>) -> XResult<ModelProto> {
    if g.outputs().is_empty() {
        return Err(ExportError::Graph("the graph has no outputs".into()));
    }
    let order = g
        .topo_order()
        .map_err(|_| ExportError::Graph("the graph has a cycle".into()))?;
    // what the outputs need
    let clamps = crate::clip::find(g);
    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = g.outputs().iter().map(|o| o.value).collect();
    while let Some(id) = stack.pop() {
        if live.insert(id) {
            let node = g.node(id);
            if let Some(c) = clamps.get(&id) {
                stack.push(c.x);
                continue;
            }
            // the parameters of a fake quantization are frozen: their inputs are not exported
            if matches!(node.op(), Some(Op::FakeQuant | Op::FakeQuantLsq)) {
                stack.push(g.operands(id)[0]);
            } else {
                stack.extend(g.operands(id));
            }
        }
    }
    let mut ex = Exporter {
        g,
        weights,
        names: HashMap::new(),
        taken: HashSet::new(),
        out: GraphProto {
            name: Some(g.name.clone()),
            ..Default::default()
        },
        consts: HashMap::new(),
        clamps,
    };
    // anonymous values take the numbers they print with (`%0` is ONNX value `0`)
    for (id, n) in qir::print::value_names(g) {
        ex.taken.insert(n.clone());
        ex.names.insert(id, n);
    }
    for &id in &order {
        if live.contains(&id) {
            ex.op(id)?;
        }
    }
    for o in g.outputs() {
        let value = ex.name(o.value).to_string();
        let name = if o.name == value {
            value
        } else {
            let n = ex.fresh(&o.name);
            ex.node("Identity", &[&value], &n, vec![]);
            n
        };
        let ty = g.ty(o.value);
        let vi = value_info(&name, ty).ok_or_else(|| ExportError::Value {
            node: name.clone(),
            message: format!("the output type {ty} has no ONNX element type"),
        })?;
        ex.out.output.push(vi);
    }
    Ok(ModelProto {
        ir_version: Some(8),
        producer_name: Some("qatc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(EXPORT_OPSET),
        }],
        graph: Some(ex.out),
        ..Default::default()
    })
}

/// The bytes of an `.onnx` file holding `model`.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    use prost::Message;
    model.encode_to_vec()
}

/// [`export`] encoded as the bytes of an `.onnx` file.
pub fn export_bytes(g: &Graph, weights: &BTreeMap<String, Tensor>) -> XResult<Vec<u8>> {
    use prost::Message;
    Ok(export(g, weights)?.encode_to_vec())
}
