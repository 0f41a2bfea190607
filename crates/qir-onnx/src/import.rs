//! The model-level translation: opset check, names, inputs, initializers, the nodes in
//! order (each by its converter in [`crate::ops`]), the outputs, the optional loss, and
//! the final verification.
//!
//! Invariants: ONNX values are bound once; initializers and `Constant` values stay
//! unmaterialized until an op reads them as data, so constants consumed as attributes
//! (a Reshape's shape, a Clip's bounds) leave no trace in the graph; a materialized float
//! initializer is a `param` (a `state` when it is read as batch-norm running statistics),
//! every other constant a `const`, inline when small; params and state are always
//! `external`, with their tensors in the returned weights; the result verifies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use qir::{Data, Dim, ElemType, Graph, Init, Inst, NodeId, Shape, Tensor, Type};

use crate::attrs::NodeAttrs;
use crate::error::{ImportError, Result};
use crate::names::{Namer, sanitize};
use crate::proto::{GraphProto, ModelProto, NodeProto, TypeProto, ValueInfoProto, type_proto};
use crate::tensor::{self, DataDir};
use crate::{ImportOptions, Imported, MAX_OPSET, MIN_OPSET};

/// Errors inside one node's translation: a message the caller prefixes with the node.
pub(crate) type NResult<T> = std::result::Result<T, String>;

/// A value of the ONNX graph as the importer holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Val {
    /// A node of the qir graph.
    Node(NodeId),
    /// A constant (index into `Importer::consts`), materialized on first use as data.
    Const(usize),
}

/// Where a constant came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Initializer,
    ConstantNode,
}

/// How an op reads an operand: as data (weights become params) or as batch-norm running
/// statistics (which become state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Data,
    RunningStat,
}

pub(crate) struct Constant {
    pub onnx: String,
    pub tensor: Tensor,
    pub origin: Origin,
    pub node: Option<NodeId>,
}

/// What a converter gives for a node's first output.
pub(crate) enum Out {
    /// A new op node (it takes the ONNX output's name).
    New(NodeId),
    /// An existing value (Identity, Dropout, a no-op Clip or Flatten).
    Alias(Val),
}

/// One node being translated.
pub(crate) struct NodeCx<'a> {
    pub node: &'a NodeProto,
    pub op: &'a str,
    pub opset: i64,
}

impl<'a> NodeCx<'a> {
    /// Input `i`, or `None` when absent or empty (an omitted optional input).
    pub fn input(&self, i: usize) -> Option<&'a str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    /// Input `i`, which the op requires.
    pub fn req(&self, i: usize, what: &str) -> NResult<&'a str> {
        self.input(i)
            .ok_or_else(|| format!("the required input {i} ('{what}') is missing"))
    }
    /// Checks the number of inputs given (trailing empty ones count as absent).
    pub fn inputs(&self, min: usize, max: usize) -> NResult<()> {
        let n = self
            .node
            .input
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1);
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(format!("expects {want} inputs, found {n}"));
        }
        Ok(())
    }
    /// The attributes, of which only `accepted` may appear.
    pub fn attrs(&self, accepted: &[&str]) -> NResult<NodeAttrs<'a>> {
        NodeAttrs::new(self.node, accepted)
    }
    /// The name of output 0.
    pub fn out(&self) -> &'a str {
        self.node.output.first().map_or("", String::as_str)
    }
}

pub(crate) struct Importer<'o> {
    pub g: Graph,
    pub names: Namer,
    pub consts: Vec<Constant>,
    pub vals: HashMap<String, Val>,
    pub weights: BTreeMap<String, Tensor>,
    pub notes: Vec<String>,
    pub dir: Option<&'o Path>,
    opts: &'o ImportOptions,
}

fn elem_of(d: &Data) -> ElemType {
    match d {
        Data::F32(_) => ElemType::F32,
        Data::F64(_) => ElemType::F64,
        Data::I8(_) => ElemType::I8,
        Data::U8(_) => ElemType::U8,
        // Not produced by the tensor decoder: qir has no i16 element type.
        Data::I16(_) | Data::I32(_) => ElemType::I32,
        Data::I64(_) => ElemType::I64,
        Data::Bool(_) => ElemType::Bool,
    }
}

/// The qir type of a constant tensor.
pub(crate) fn tensor_type(t: &Tensor) -> Type {
    Type::new(elem_of(&t.data), t.ir_shape())
}

/// One line of text for a comment (no control characters).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The ONNX default-domain opset the model imports.
fn default_opset(m: &ModelProto) -> Result<i64> {
    let versions: Vec<i64> = m
        .opset_import
        .iter()
        .filter(|o| matches!(o.domain.as_deref().unwrap_or(""), "" | "ai.onnx"))
        .map(|o| o.version.unwrap_or(0))
        .collect();
    match versions.as_slice() {
        [] => Err(ImportError::Model(
            "the model imports no opset of the default ONNX domain".into(),
        )),
        [v] if (MIN_OPSET..=MAX_OPSET).contains(v) => Ok(*v),
        [v] => Err(ImportError::Model(format!(
            "opset {v} is not supported (the importer covers opsets {MIN_OPSET} to {MAX_OPSET})"
        ))),
        _ => Err(ImportError::Model(
            "the model imports the default ONNX domain more than once".into(),
        )),
    }
}

/// The version of `domain` the model imports (0 if none).
fn domain_version(m: &ModelProto, domain: &str) -> i64 {
    m.opset_import
        .iter()
        .find(|o| o.domain.as_deref().unwrap_or("") == domain)
        .and_then(|o| o.version)
        .unwrap_or(0)
}

/// How a node is named in messages.
pub(crate) fn describe_node(i: usize, n: &NodeProto) -> String {
    match n.name.as_deref() {
        Some(name) if !name.is_empty() => format!("'{name}'"),
        _ => match n.output.first() {
            Some(o) if !o.is_empty() => format!("#{i} (output '{o}')"),
            _ => format!("#{i}"),
        },
    }
}

/// The qir type of a graph input declaration.
fn input_type(vi: &ValueInfoProto) -> std::result::Result<Type, String> {
    let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(t)),
        ..
    }) = &vi.r#type
    else {
        return Err("is not a tensor (sequences, maps and optionals are not supported)".into());
    };
    let elem = tensor::elem_type(t.elem_type.unwrap_or(0))?;
    let shape = t
        .shape
        .as_ref()
        .ok_or("has no shape (the importer needs the rank and every dimension but the batch)")?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (axis, d) in shape.dim.iter().enumerate() {
        use crate::proto::tensor_shape_proto::dimension::Value;
        match (&d.value, axis) {
            (Some(Value::DimValue(n)), _) if *n >= 0 => dims.push(Dim::Fixed(*n as u64)),
            (Some(Value::DimValue(n)), _) => return Err(format!("has dimension {n}")),
            (_, 0) => dims.push(Dim::Sym("B".into())),
            (Some(Value::DimParam(p)), _) => {
                return Err(format!(
                    "has the symbolic dimension '{p}' at axis {axis}; only the first (batch) dimension may be symbolic"
                ));
            }
            (None, _) => {
                return Err(format!(
                    "has an unknown dimension at axis {axis}; only the first (batch) dimension may be symbolic"
                ));
            }
        }
    }
    Ok(Type::new(elem, Shape(dims)))
}

/// Checks a graph output's declared type (when it has one) against the translated value.
fn check_declared(vi: &ValueInfoProto, ty: &Type) -> std::result::Result<(), String> {
    let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(t)),
        ..
    }) = &vi.r#type
    else {
        return Ok(());
    };
    if let Some(e) = t.elem_type
        && e != 0
        && tensor::elem_type(e).ok().as_ref() != Some(&ty.elem)
    {
        return Err(format!(
            "is declared with ONNX element type {e}, the translation computes {ty}"
        ));
    }
    if let Some(shape) = &t.shape {
        use crate::proto::tensor_shape_proto::dimension::Value;
        let fits = shape.dim.len() == ty.rank()
            && shape
                .dim
                .iter()
                .zip(ty.shape.dims())
                .all(|(d, q)| match (&d.value, q) {
                    (Some(Value::DimValue(n)), Dim::Fixed(m)) => *n >= 0 && *n as u64 == *m,
                    (Some(Value::DimValue(_)), Dim::Sym(_)) => false,
                    _ => true,
                });
        if !fits {
            return Err(format!(
                "is declared with shape {:?}, the translation computes {ty}",
                shape
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Value::DimValue(n)) => n.to_string(),
                        Some(Value::DimParam(p)) => p.clone(),
                        None => "?".into(),
                    })
                    .collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

/// Every ONNX value name of the graph, in model order.
fn all_names(graph: &GraphProto) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    v.extend(graph.input.iter().map(|i| i.name.as_deref().unwrap_or("")));
    v.extend(
        graph
            .initializer
            .iter()
            .map(|t| t.name.as_deref().unwrap_or("")),
    );
    for n in &graph.node {
        v.extend(n.output.iter().map(String::as_str));
    }
    v.retain(|s| !s.is_empty());
    v
}

pub(crate) fn import_model(m: &ModelProto, opts: &ImportOptions) -> Result<Imported> {
    let opset = default_opset(m)?;
    let graph = m
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Model("the model has no graph".into()))?;
    let name = match (&opts.name, graph.name.as_deref()) {
        (Some(n), _) => sanitize(n),
        (None, Some(n)) if !n.is_empty() => sanitize(n),
        _ => "model".to_string(),
    };
    let mut imp = Importer {
        g: Graph::new(name),
        names: Namer::new(all_names(graph)),
        consts: Vec::new(),
        vals: HashMap::new(),
        weights: BTreeMap::new(),
        notes: Vec::new(),
        dir: opts.data_dir.as_deref(),
        opts,
    };
    let producer = [m.producer_name.as_deref(), m.producer_version.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .map(one_line)
        .collect::<Vec<_>>()
        .join(" ");
    imp.g.comments.push(if producer.is_empty() {
        format!(" imported from ONNX (opset {opset})")
    } else {
        format!(" imported from ONNX (opset {opset}, producer {producer})")
    });

    if let Some(s) = graph.sparse_initializer.first() {
        return Err(ImportError::Model(format!(
            "sparse initializer '{}' is not supported",
            s.values
                .as_ref()
                .and_then(|v| v.name.as_deref())
                .unwrap_or("")
        )));
    }
    for t in &graph.initializer {
        let onnx = t.name.as_deref().unwrap_or("");
        if onnx.is_empty() {
            return Err(ImportError::Model("an initializer has no name".into()));
        }
        let tensor = tensor::decode(t, DataDir(imp.dir))
            .map_err(|e| ImportError::Model(format!("initializer '{onnx}': {e}")))?;
        imp.bind_const(onnx, tensor, Origin::Initializer)
            .map_err(ImportError::Model)?;
    }
    for vi in &graph.input {
        let onnx = vi.name.as_deref().unwrap_or("");
        if imp.vals.contains_key(onnx) {
            // An input with an initializer of the same name (IR < 4 lists every weight as
            // an input): the initializer is its value.
            if imp.consts.iter().any(|c| c.onnx == onnx) {
                continue;
            }
            return Err(ImportError::Model(format!(
                "input '{onnx}' is declared twice"
            )));
        }
        let ty = input_type(vi).map_err(|e| ImportError::Model(format!("input '{onnx}' {e}")))?;
        let qname = imp.qname(onnx).map_err(ImportError::Model)?;
        let id = imp
            .g
            .add_input(&qname, ty)
            .map_err(|e| ImportError::Model(e.to_string()))?;
        imp.vals.insert(onnx.to_string(), Val::Node(id));
    }

    // Which values some node or graph output reads: a node's extra outputs (batch-norm
    // statistics, a dropout mask, max-pool indices) are only allowed when nothing does.
    let mut read: HashSet<&str> = HashSet::new();
    for n in &graph.node {
        read.extend(n.input.iter().map(String::as_str));
    }
    read.extend(graph.output.iter().map(|o| o.name.as_deref().unwrap_or("")));

    for (i, node) in graph.node.iter().enumerate() {
        let domain = node.domain.as_deref().unwrap_or("");
        let op_type = node.op_type.as_deref().unwrap_or("");
        let node_err = |message: String| {
            let default = matches!(domain, "" | "ai.onnx");
            ImportError::Node {
                node: describe_node(i, node),
                op_type: if default {
                    op_type.to_string()
                } else {
                    format!("{domain}.{op_type}")
                },
                opset: if default {
                    opset
                } else {
                    domain_version(m, domain)
                },
                message,
            }
        };
        if !matches!(domain, "" | "ai.onnx") {
            return Err(node_err(format!(
                "ops of domain '{domain}' are not supported (only the default ONNX domain is)"
            )));
        }
        let cx = NodeCx {
            node,
            op: op_type,
            opset,
        };
        imp.translate(&cx, &read).map_err(node_err)?;
    }

    let mut out_names: Vec<(String, String)> = Vec::new();
    let mut taken_outputs: HashSet<String> = HashSet::new();
    for vi in &graph.output {
        let onnx = vi.name.as_deref().unwrap_or("");
        let val = imp.vals.get(onnx).copied().ok_or_else(|| {
            ImportError::Model(format!("output '{onnx}' is not computed by any node"))
        })?;
        let id = imp
            .node_of(val, Role::Data)
            .map_err(|e| ImportError::Model(format!("output '{onnx}': {e}")))?;
        check_declared(vi, imp.g.ty(id))
            .map_err(|e| ImportError::Model(format!("output '{onnx}' {e}")))?;
        let base = sanitize(onnx);
        let mut out = base.clone();
        let mut k = 0;
        while !taken_outputs.insert(out.clone()) {
            k += 1;
            out = format!("{base}.{k}");
        }
        imp.g.add_output(&out, id);
        out_names.push((onnx.to_string(), out));
    }
    if graph.output.is_empty() {
        return Err(ImportError::Model("the graph has no outputs".into()));
    }

    if let Some(spec) = &opts.loss {
        crate::loss::add_loss(&mut imp.g, &mut imp.names, spec, &out_names, &mut imp.notes)?;
    }

    qir::verify::verify(&imp.g).map_err(|e| {
        ImportError::Verify(e.to_string().lines().next().unwrap_or_default().to_string())
    })?;
    Ok(Imported {
        graph: imp.g,
        weights: imp.weights,
        notes: imp.notes,
        opset,
    })
}

impl Importer<'_> {
    /// The qir name of an ONNX value name.
    pub fn qname(&self, onnx: &str) -> NResult<String> {
        self.names
            .get(onnx)
            .map(str::to_string)
            .ok_or_else(|| format!("value '{onnx}' has no name"))
    }

    /// Binds a constant to an ONNX name.
    pub fn bind_const(&mut self, onnx: &str, tensor: Tensor, origin: Origin) -> NResult<Val> {
        if self.vals.contains_key(onnx) {
            return Err(format!("value '{onnx}' is defined twice"));
        }
        let v = self.push_const(onnx, tensor, origin);
        self.vals.insert(onnx.to_string(), v);
        Ok(v)
    }

    /// A constant named `onnx`, not yet bound (the node translation binds it).
    pub fn push_const(&mut self, onnx: &str, tensor: Tensor, origin: Origin) -> Val {
        self.consts.push(Constant {
            onnx: onnx.to_string(),
            tensor,
            origin,
            node: None,
        });
        Val::Const(self.consts.len() - 1)
    }

    /// The value of ONNX name `onnx`.
    pub fn val(&self, onnx: &str) -> NResult<Val> {
        self.vals.get(onnx).copied().ok_or_else(|| {
            format!("input '{onnx}' is not defined before the node (the model is not in topological order, or the value is missing)")
        })
    }

    /// The constant tensor behind `onnx`, if it is one.
    pub fn const_of(&self, onnx: &str) -> NResult<Option<&Tensor>> {
        Ok(match self.val(onnx)? {
            Val::Const(i) => Some(&self.consts[i].tensor),
            Val::Node(_) => None,
        })
    }

    /// The type of a value.
    pub fn ty(&self, onnx: &str) -> NResult<Type> {
        Ok(match self.val(onnx)? {
            Val::Node(id) => self.g.ty(id).clone(),
            Val::Const(i) => tensor_type(&self.consts[i].tensor),
        })
    }

    /// The node of ONNX value `onnx`, read in `role` (a constant is materialized).
    pub fn operand(&mut self, onnx: &str, role: Role) -> NResult<NodeId> {
        let v = self.val(onnx)?;
        self.node_of(v, role)
    }

    pub fn node_of(&mut self, v: Val, role: Role) -> NResult<NodeId> {
        let i = match v {
            Val::Node(id) => return Ok(id),
            Val::Const(i) => i,
        };
        if let Some(id) = self.consts[i].node {
            return Ok(id);
        }
        let c = &self.consts[i];
        let name = self.qname(&c.onnx)?;
        let ty = tensor_type(&c.tensor);
        let weight = c.origin == Origin::Initializer && ty.elem.is_float();
        let id = if weight {
            self.weights.insert(name.clone(), c.tensor.clone());
            match role {
                Role::Data => self.g.add_param(&name, ty, Init::External),
                Role::RunningStat => self.g.add_state(&name, ty, Init::External),
            }
        } else {
            let values = c.tensor.data.to_f64();
            let exact = match &c.tensor.data {
                Data::I64(v) => v.iter().all(|x| x.unsigned_abs() <= 1 << 53),
                _ => true,
            };
            if values.len() <= self.opts.inline_limit && exact {
                self.g.add_const(&name, ty, Init::Dense(values))
            } else {
                self.weights.insert(name.clone(), c.tensor.clone());
                self.g.add_const(&name, ty, Init::External)
            }
        }
        .map_err(|e| e.to_string())?;
        self.consts[i].node = Some(id);
        Ok(id)
    }

    /// Adds an op whose type qir infers.
    pub fn emit(&mut self, inst: Inst, operands: &[NodeId]) -> NResult<NodeId> {
        self.g
            .add_op(inst, operands, None)
            .map_err(|e| e.to_string())
    }

    /// An op without attributes.
    pub fn emit_op(&mut self, op: qir::Op, operands: &[NodeId]) -> NResult<NodeId> {
        self.emit(Inst::new(op), operands)
    }

    /// A scalar constant `const %<base>: <elem>[] = [v]` (the name made unique).
    pub fn scalar_const(&mut self, base: &str, elem: &ElemType, v: f64) -> NResult<NodeId> {
        let name = self.names.fresh(base);
        self.g
            .add_const(&name, Type::scalar(elem.clone()), Init::Dense(vec![v]))
            .map_err(|e| e.to_string())
    }

    /// Translates one node and binds its outputs.
    fn translate(&mut self, cx: &NodeCx<'_>, read: &HashSet<&str>) -> NResult<()> {
        for (k, o) in cx.node.output.iter().enumerate().skip(1) {
            if !o.is_empty() && read.contains(o.as_str()) {
                return Err(format!(
                    "output {k} ('{o}') is used, but the importer only translates the first output of {}",
                    cx.op
                ));
            }
        }
        let out = cx.out();
        if out.is_empty() {
            return Err("the node has no output".into());
        }
        if self.vals.contains_key(out) {
            return Err(format!("value '{out}' is defined twice"));
        }
        match self.convert(cx)? {
            Out::New(id) => {
                if self.g.node(id).name.is_none() {
                    let name = self.qname(out)?;
                    self.g.rename(id, Some(name)).map_err(|e| e.to_string())?;
                }
                self.vals.insert(out.to_string(), Val::Node(id));
            }
            Out::Alias(v) => {
                self.vals.insert(out.to_string(), v);
            }
        }
        Ok(())
    }
}
