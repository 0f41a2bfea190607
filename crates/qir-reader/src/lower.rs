//! Lowering: from the syntax tree to a `qir::Graph`, resolving names (values, ops, element
//! and storage types, initializers, attributes) and recording source locations and
//! comments.
//!
//! Invariants: values are defined before they are used; each name is defined once; every
//! error is collected (one bad item does not stop the others), and an item that failed
//! poisons the value it defines so that its users are skipped silently instead of
//! repeating the error. An op without a written type gets the type `qir::shape::infer`
//! gives; a written type is stored as written (the verifier compares). Semantic checks
//! that the verifier makes (quant parameter ranges, initializer sizes, ...) are left to it.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use qir::attr::{AttrKind, AttrSpec};
use qir::{
    Attr, Dim, ElemType, Graph, Init, Inst, Loc, Loss, Node, NodeId, NodeKind, Op, QuantParams,
    QuantType, Shape, Storage, Type,
};

use crate::ast::*;
use crate::diag::{Diagnostic, LineIndex, did_you_mean};
use crate::lexer::Comment;

/// Names that `fill(...)`, `uniform(...)` and `normal(...)` initializers use.
const CALL_INITS: [(&str, &str); 3] = [
    ("fill", "fill(value)"),
    ("uniform", "uniform(low, high)"),
    ("normal", "normal(mean, std)"),
];

/// Other frameworks' names of our initializers, for suggestions.
const INIT_ALIASES: [(&str, &str); 6] = [
    ("glorot_uniform", "xavier_uniform"),
    ("glorot_normal", "xavier_normal"),
    ("he_uniform", "kaiming_uniform"),
    ("he_normal", "kaiming_normal"),
    ("constant", "fill"),
    ("random_uniform", "uniform"),
];

fn loc(span: &Range<usize>) -> Option<Loc> {
    Some(Loc {
        start: u32::try_from(span.start).ok()?,
        end: u32::try_from(span.end).ok()?,
    })
}

/// Purely numeric names (`%0`, `%17`) are anonymous values.
fn node_name(name: &str) -> Option<String> {
    if name.bytes().all(|b| b.is_ascii_digit()) {
        None
    } else {
        Some(name.to_string())
    }
}

/// What resolving a use of a value gave.
enum Use {
    Ok(NodeId),
    /// The value is missing; an error was reported (now or for its definition).
    Failed,
}

struct Lowerer<'s> {
    source: &'s str,
    g: Graph,
    diags: Vec<Diagnostic>,
    /// Every source name defined so far (by a successful item) and its node.
    values: HashMap<&'s str, NodeId>,
    /// Names whose definition was seen, with the span of the first definition.
    seen: HashMap<&'s str, Range<usize>>,
    /// Names whose defining item failed.
    poisoned: HashSet<&'s str>,
    /// The first definition of every name in the file (found before lowering).
    defs: HashMap<&'s str, Range<usize>>,
    /// Span of the first `loss` statement.
    loss_at: Option<Range<usize>>,
    /// "did you mean" hints already computed for undefined names.
    hints: HashMap<&'s str, String>,
    /// Line starts, for the positions that notes mention.
    index: LineIndex<'s>,
}

/// Lowers a parsed file. `comments` are the comments of the source with their spans.
pub(crate) fn lower<'s>(
    source: &'s str,
    file: &File<'s>,
    comments: &[Comment],
) -> Result<Graph, Vec<Diagnostic>> {
    let mut g = Graph::new(file.name.node);
    g.loc = loc(&file.span);

    // Comments go to the first item that ends after them (the item they precede or sit
    // in); those before `graph` belong to the graph, those after the last item trail.
    let mut slots: Vec<Vec<String>> = vec![Vec::new(); file.items.len()];
    for c in comments {
        if c.span.start < file.span.start {
            g.comments.push(c.text.clone());
            continue;
        }
        let i = file
            .items
            .partition_point(|item| item.span.end <= c.span.start);
        match slots.get_mut(i) {
            Some(slot) => slot.push(c.text.clone()),
            None => g.trailing_comments.push(c.text.clone()),
        }
    }

    let mut defs: HashMap<&'s str, Range<usize>> = HashMap::new();
    for item in &file.items {
        if let Some(v) = defined_value(&item.kind) {
            defs.entry(v.node).or_insert_with(|| v.span.clone());
        }
    }

    let mut l = Lowerer {
        source,
        g,
        diags: Vec::new(),
        values: HashMap::new(),
        seen: HashMap::new(),
        poisoned: HashSet::new(),
        defs,
        loss_at: None,
        hints: HashMap::new(),
        index: LineIndex::new(source),
    };
    for (item, comments) in file.items.iter().zip(slots) {
        l.item(item, comments);
    }
    if l.diags.is_empty() {
        Ok(l.g)
    } else {
        Err(l.diags)
    }
}

fn defined_value<'a, 's>(kind: &'a ItemKind<'s>) -> Option<&'a Sp<&'s str>> {
    match kind {
        ItemKind::Input { value, .. } | ItemKind::Decl { value, .. } => Some(value),
        ItemKind::Op { result, .. } => Some(result),
        ItemKind::Output { .. } | ItemKind::Loss { .. } | ItemKind::Update { .. } => None,
    }
}

impl<'s> Lowerer<'s> {
    fn error(&mut self, message: impl Into<String>, span: &Range<usize>) {
        self.diags.push(Diagnostic::new(message, span.clone()));
    }

    fn item(&mut self, item: &Item<'s>, comments: Vec<String>) {
        match &item.kind {
            ItemKind::Input { value, ty } => {
                let ty = self.ty(ty);
                self.define(value, item, ty.map(|ty| (NodeKind::Input, ty)), comments);
            }
            ItemKind::Decl {
                kind,
                value,
                ty,
                init,
            } => {
                let ty = self.ty(ty);
                let init = self.init(init, ty.as_ref().map(|t| &t.elem));
                let node = match (ty, init) {
                    (Some(ty), Some(init)) => {
                        let kind = match kind {
                            DeclKind::Param => NodeKind::Param(init),
                            DeclKind::State => NodeKind::State(init),
                            DeclKind::Const => NodeKind::Const(init),
                        };
                        Some((kind, ty))
                    }
                    _ => None,
                };
                self.define(value, item, node, comments);
            }
            ItemKind::Op {
                result,
                op,
                operands,
                attrs,
                ty,
            } => self.op(item, result, op, operands, attrs, ty.as_ref(), comments),
            ItemKind::Output { name, value } => {
                if let Use::Ok(id) = self.use_value(value, item) {
                    self.g.add_output(name.node, id);
                    if let Some(o) = self.g.outputs_mut().last_mut() {
                        o.loc = loc(&item.span);
                        o.comments = comments;
                    }
                }
            }
            ItemKind::Loss { value } => {
                if let Some(first) = &self.loss_at {
                    let note = format!(
                        "the first loss statement is at {}",
                        self.index.at(first.start)
                    );
                    self.diags.push(
                        Diagnostic::new("the loss is declared twice", item.span.clone())
                            .with_note(note),
                    );
                    return;
                }
                self.loss_at = Some(item.span.clone());
                if let Use::Ok(id) = self.use_value(value, item) {
                    self.g.set_loss_decl(Some(Loss {
                        value: id,
                        loc: loc(&item.span),
                        comments,
                    }));
                }
            }
            ItemKind::Update { target, value } => {
                let t = self.use_value(target, item);
                let v = self.use_value(value, item);
                if let (Use::Ok(t), Use::Ok(v)) = (t, v) {
                    self.g.add_update(t, v);
                    if let Some(u) = self.g.updates_mut().last_mut() {
                        u.loc = loc(&item.span);
                        u.comments = comments;
                    }
                }
            }
        }
    }

    /// Defines `name` as a node (`None` when the item failed: the name is poisoned).
    fn define(
        &mut self,
        name: &Sp<&'s str>,
        item: &Item<'s>,
        node: Option<(NodeKind, Type)>,
        comments: Vec<String>,
    ) -> Option<NodeId> {
        if let Some(first) = self.seen.get(name.node) {
            let note = format!(
                "'%{}' was first defined at {}",
                name.node,
                self.index.at(first.start)
            );
            self.diags.push(
                Diagnostic::new(
                    format!("value '%{}' is defined twice", name.node),
                    name.span.clone(),
                )
                .with_note(note),
            );
            return None;
        }
        self.seen.insert(name.node, name.span.clone());
        let Some((kind, ty)) = node else {
            self.poisoned.insert(name.node);
            return None;
        };
        let added = self.g.add_node(Node {
            name: node_name(name.node),
            kind,
            ty,
            loc: loc(&item.span),
            comments,
        });
        match added {
            Ok(id) => {
                self.values.insert(name.node, id);
                Some(id)
            }
            Err(e) => {
                self.error(e.0, &name.span);
                self.poisoned.insert(name.node);
                None
            }
        }
    }

    fn use_value(&mut self, v: &Sp<&'s str>, item: &Item<'s>) -> Use {
        if let Some(&id) = self.values.get(v.node) {
            return Use::Ok(id);
        }
        if self.poisoned.contains(v.node) {
            return Use::Failed;
        }
        let d = match self.defs.get(v.node) {
            Some(def) if item.span.contains(&def.start) => Diagnostic::new(
                format!("value '%{}' is used in its own definition", v.node),
                v.span.clone(),
            ),
            Some(def) => Diagnostic::new(
                format!("value '%{}' is used before its definition", v.node),
                v.span.clone(),
            )
            .with_note(format!(
                "'%{}' is defined at {}; values must be defined before they are used",
                v.node,
                self.index.at(def.start)
            )),
            None => {
                let defs = &self.defs;
                let hint = self
                    .hints
                    .entry(v.node)
                    .or_insert_with(|| did_you_mean(v.node, defs.keys().copied()))
                    .clone();
                Diagnostic::new(
                    format!("use of undefined value '%{}'{hint}", v.node),
                    v.span.clone(),
                )
            }
        };
        self.diags.push(d);
        Use::Failed
    }

    // ---- ops ------------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn op(
        &mut self,
        item: &Item<'s>,
        result: &Sp<&'s str>,
        op: &Sp<&'s str>,
        operands: &[Sp<&'s str>],
        attrs: &[AttrAst<'s>],
        written: Option<&TypeAst<'s>>,
        comments: Vec<String>,
    ) {
        let resolved = Op::from_mnemonic(op.node);
        if resolved.is_none() {
            let hint = did_you_mean(op.node, Op::ALL.iter().map(|o| o.mnemonic()));
            self.error(format!("unknown op '{}'{hint}", op.node), &op.span);
        }
        let mut ids = Vec::with_capacity(operands.len());
        let mut operands_ok = true;
        for o in operands {
            match self.use_value(o, item) {
                Use::Ok(id) => ids.push(id),
                Use::Failed => operands_ok = false,
            }
        }
        let inst = resolved.and_then(|op| self.inst(op, attrs));
        let ty = written.and_then(|t| self.ty(t));
        let written_ok = written.is_none() || ty.is_some();
        let (Some(inst), true, true) = (inst, operands_ok, written_ok) else {
            self.define(result, item, None, comments);
            return;
        };
        let ty = match ty {
            Some(ty) => Some(ty),
            None if inst.op.result_type_is_written() => {
                self.diags.push(
                    Diagnostic::new(
                        format!(
                            "'{}' needs its result type written (it carries the quantization parameters)",
                            inst.op
                        ),
                        item.span.clone(),
                    )
                    .with_note(format!(
                        "write it after the operands, as in: {}",
                        inst.op.info().example()
                    )),
                );
                None
            }
            None => {
                let tys: Vec<&Type> = ids.iter().map(|&id| self.g.ty(id)).collect();
                match qir::shape::infer(&inst, &tys, None) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.error(format!("%{}: '{}' {e}", result.node, inst.op), &item.span);
                        None
                    }
                }
            }
        };
        let id = self.define(result, item, ty.map(|t| (NodeKind::Op(inst), t)), comments);
        if let Some(id) = id {
            // Declarations were added without edges; an op's operands are its edges.
            self.g.set_operands(id, &ids);
        }
    }

    /// The op with its attributes, or `None` after reporting every bad attribute.
    fn inst(&mut self, op: Op, attrs: &[AttrAst<'s>]) -> Option<Inst> {
        let info = op.info();
        let mut inst = Inst::new(op);
        let mut ok = true;
        let mut written: HashMap<&str, Range<usize>> = HashMap::new();
        for a in attrs {
            let name = a.name.node;
            if let Some(first) = written.get(name) {
                let note = format!("it is first written at {}", self.index.at(first.start));
                self.diags.push(
                    Diagnostic::new(
                        format!("attribute '{name}' is written twice"),
                        a.name.span.clone(),
                    )
                    .with_note(note),
                );
                ok = false;
                continue;
            }
            written.insert(name, a.name.span.clone());
            let Some(spec) = info.attrs.iter().find(|s| s.name == name) else {
                let names: Vec<&str> = info.attrs.iter().map(|s| s.name).collect();
                let d = if names.is_empty() {
                    Diagnostic::new(
                        format!("'{op}' has no attributes, found '{name}'"),
                        a.name.span.clone(),
                    )
                } else {
                    let hint = did_you_mean(name, names.iter().copied());
                    Diagnostic::new(
                        format!("'{op}' has no attribute '{name}'{hint}"),
                        a.name.span.clone(),
                    )
                    .with_note(format!("the attributes of '{op}' are {}", names.join(", ")))
                };
                self.diags.push(d);
                ok = false;
                continue;
            };
            let value = match self.attr_value(spec, &a.value) {
                Some(v) => v,
                None => {
                    ok = false;
                    continue;
                }
            };
            if let Err(e) = inst.set(name, value) {
                self.diags.push(Diagnostic::new(
                    format!("'{op}': {e}"),
                    a.value.span.clone(),
                ));
                ok = false;
            }
        }
        ok.then_some(inst)
    }

    fn attr_value(&mut self, spec: &AttrSpec, v: &Sp<AttrValueAst<'s>>) -> Option<Attr> {
        match &v.node {
            AttrValueAst::Num(n) => match n.node {
                NumKind::Int(i) => match i64::try_from(i) {
                    Ok(i) => Some(Attr::Int(i)),
                    Err(_) if spec.kind == AttrKind::Float => Some(Attr::Float(i as f64)),
                    Err(_) => {
                        self.error(
                            format!("attribute '{}': integer {i} does not fit in i64", spec.name),
                            &n.span,
                        );
                        None
                    }
                },
                _ => self.num_f64(n).map(Attr::Float),
            },
            AttrValueAst::Bool(b) => Some(Attr::Bool(*b)),
            AttrValueAst::Ident(s) => match spec.enum_value(s) {
                Ok(a) => Some(a),
                Err(e) => {
                    let allowed: &[&str] = match spec.kind {
                        AttrKind::Enum(allowed) => allowed,
                        _ => &[],
                    };
                    let hint = did_you_mean(s, allowed.iter().copied());
                    self.error(format!("{e}{hint}"), &v.span);
                    None
                }
            },
            AttrValueAst::List(nums) => {
                // an integer list with an entry beyond i64 is an error for an integer-list
                // attribute, not silently a float list
                if spec.kind == AttrKind::Ints
                    && let Some(big) = nums.iter().find_map(|n| match n.node {
                        NumKind::Int(i) if i64::try_from(i).is_err() => Some((i, n.span.clone())),
                        _ => None,
                    })
                {
                    self.error(
                        format!(
                            "attribute '{}': integer {} does not fit in i64",
                            spec.name, big.0
                        ),
                        &big.1,
                    );
                    return None;
                }
                let ints: Option<Vec<i64>> = nums
                    .iter()
                    .map(|n| match n.node {
                        NumKind::Int(i) => i64::try_from(i).ok(),
                        _ => None,
                    })
                    .collect();
                match ints {
                    Some(v) => Some(Attr::Ints(v)),
                    None => {
                        let floats: Option<Vec<f64>> =
                            nums.iter().map(|n| self.num_f64(n)).collect();
                        floats.map(Attr::Floats)
                    }
                }
            }
        }
    }

    // ---- numbers --------------------------------------------------------------------------

    fn num_f64(&mut self, n: &Num<'s>) -> Option<f64> {
        match n.node {
            NumKind::Int(i) => Some(i as f64),
            NumKind::Float(t) => match t.parse::<f64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error(format!("invalid number '{t}'"), &n.span);
                    None
                }
            },
            NumKind::Inf => Some(f64::INFINITY),
            NumKind::NegInf => Some(f64::NEG_INFINITY),
            NumKind::Nan => Some(f64::NAN),
        }
    }

    /// A number rounded once, directly from its text, to the nearest f32.
    fn num_f32(&mut self, n: &Num<'s>) -> Option<f32> {
        match n.node {
            NumKind::Int(i) => Some(i as f32),
            NumKind::Float(t) => match t.parse::<f32>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error(format!("invalid number '{t}'"), &n.span);
                    None
                }
            },
            NumKind::Inf => Some(f32::INFINITY),
            NumKind::NegInf => Some(f32::NEG_INFINITY),
            NumKind::Nan => Some(f32::NAN),
        }
    }

    fn int_i64(&mut self, n: &Sp<i128>, what: &str) -> Option<i64> {
        match i64::try_from(n.node) {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(format!("{what} {} does not fit in i64", n.node), &n.span);
                None
            }
        }
    }

    /// A value of a tensor with element type `elem`: floats for float types (f32 values
    /// rounded to f32), integers for everything else.
    fn elem_value(&mut self, n: &Num<'s>, elem: Option<&ElemType>) -> Option<f64> {
        match elem {
            Some(ElemType::F32) => self.num_f32(n).map(f64::from),
            Some(ElemType::F64) | None => self.num_f64(n),
            Some(other) => {
                match n.node {
                    NumKind::Int(i) => Some(i as f64),
                    _ => {
                        let text = self.source.get(n.span.clone()).unwrap_or("");
                        self.error(
                        format!("expected an integer for a value of element type {other}, found {text}"),
                        &n.span,
                    );
                        None
                    }
                }
            }
        }
    }

    // ---- types --------------------------------------------------------------------------

    fn ty(&mut self, t: &TypeAst<'s>) -> Option<Type> {
        let elem = match &t.elem {
            ElemAst::Named(name) => match ElemType::from_keyword(name.node) {
                Some(e) => Some(e),
                None => {
                    let names: Vec<&str> = ElemType::SCALARS
                        .iter()
                        .filter_map(|e| e.keyword())
                        .collect();
                    let hint = did_you_mean(name.node, names.iter().copied());
                    self.diags.push(
                        Diagnostic::new(
                            format!("unknown element type '{}'{hint}", name.node),
                            name.span.clone(),
                        )
                        .with_note(format!(
                            "element types are {}, and !quant.uniform<...>",
                            names.join(", ")
                        )),
                    );
                    None
                }
            },
            ElemAst::Quant(q) => self.quant(q).map(|q| ElemType::Quant(Box::new(q))),
        };
        let mut dims = Vec::with_capacity(t.dims.len());
        let mut ok = true;
        for d in &t.dims {
            match &d.node {
                DimAst::Fixed(n) => match u64::try_from(*n) {
                    Ok(n) => dims.push(Dim::Fixed(n)),
                    Err(_) => {
                        self.error(
                            format!("dimension must be non-negative, found {n}"),
                            &d.span,
                        );
                        ok = false;
                    }
                },
                DimAst::Sym(s) => dims.push(Dim::Sym(s.to_string())),
            }
        }
        match (elem, ok) {
            (Some(elem), true) => Some(Type::new(elem, Shape(dims))),
            _ => None,
        }
    }

    fn quant(&mut self, q: &QuantAst<'s>) -> Option<QuantType> {
        let mut ok = true;
        if q.dialect.node != "!quant.uniform" {
            self.error(
                format!(
                    "unknown type '{}' (the only dialect type is '!quant.uniform')",
                    q.dialect.node
                ),
                &q.dialect.span,
            );
            ok = false;
        }
        let storage = Storage::from_name(q.storage.node);
        if storage.is_none() {
            let names: Vec<&str> = Storage::ALL.iter().map(|s| s.name()).collect();
            let hint = did_you_mean(q.storage.node, names.iter().copied());
            self.diags.push(
                Diagnostic::new(
                    format!("unknown storage type '{}'{hint}", q.storage.node),
                    q.storage.span.clone(),
                )
                .with_note(format!("storage types are {}", names.join(", "))),
            );
        }
        if q.expressed.node != "f32" {
            self.error(
                format!(
                    "the expressed type must be f32, found '{}'",
                    q.expressed.node
                ),
                &q.expressed.span,
            );
            ok = false;
        }
        let range = match &q.range {
            Some((lo, hi)) => {
                let lo = self.int_i64(lo, "qmin");
                let hi = self.int_i64(hi, "qmax");
                match (lo, hi) {
                    (Some(lo), Some(hi)) => Some((lo, hi)),
                    _ => {
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        let axis = match &q.axis {
            Some(a) => match usize::try_from(a.node) {
                Ok(a) => Some(a),
                Err(_) => {
                    self.error(
                        format!("quantization axis must be non-negative, found {}", a.node),
                        &a.span,
                    );
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let params = match (&q.params, axis) {
            (QParamsAst::PerTensor(p), None) => self
                .qp(p)
                .map(|(scale, zero_point)| QuantParams::PerTensor { scale, zero_point }),
            (QParamsAst::PerAxis(ps), Some(axis)) => {
                let mut scales = Vec::with_capacity(ps.len());
                let mut zero_points = Vec::with_capacity(ps.len());
                let mut all = true;
                for p in ps {
                    match self.qp(p) {
                        Some((s, z)) => {
                            scales.push(s);
                            zero_points.push(z);
                        }
                        None => all = false,
                    }
                }
                all.then_some(QuantParams::PerAxis {
                    axis,
                    scales,
                    zero_points,
                })
            }
            (
                QParamsAst::Ref {
                    scales,
                    zero_points,
                },
                Some(axis),
            ) => Some(QuantParams::PerAxisRef {
                axis,
                scales: scales.node.to_string(),
                zero_points: zero_points.as_ref().map(|z| z.node.to_string()),
            }),
            (QParamsAst::PerTensor(p), Some(_)) => {
                self.error(
                    "a per-axis quantized type needs one scale per slice, written {s0, s1, ...} or %name",
                    &p.scale.span,
                );
                None
            }
            // an axis was written but is invalid: already reported
            (QParamsAst::PerAxis(_) | QParamsAst::Ref { .. }, None) if q.axis.is_some() => None,
            (QParamsAst::PerAxis(_) | QParamsAst::Ref { .. }, None) => {
                self.error(
                    "per-axis quantization parameters need an axis after the expressed type (f32:AXIS)",
                    &q.expressed.span,
                );
                None
            }
        };
        let (storage, params) = (storage?, params?);
        if !ok {
            return None;
        }
        let (qmin, qmax) = range.unwrap_or_else(|| storage.range());
        Some(QuantType {
            storage,
            qmin,
            qmax,
            params,
        })
    }

    fn qp(&mut self, p: &QpAst<'s>) -> Option<(f32, i64)> {
        let scale = self.num_f32(&p.scale);
        let zp = match &p.zero_point {
            Some(z) => self.int_i64(z, "zero point"),
            None => Some(0),
        };
        Some((scale?, zp?))
    }

    // ---- initializers ---------------------------------------------------------------------

    fn init(&mut self, init: &InitAst<'s>, elem: Option<&ElemType>) -> Option<Init> {
        match init {
            InitAst::Named(name) => {
                if let Some(i) = Init::from_keyword(name.node) {
                    return Some(i);
                }
                if let Some((_, form)) = CALL_INITS.iter().find(|(n, _)| *n == name.node) {
                    self.error(
                        format!("initializer '{}' needs arguments: {form}", name.node),
                        &name.span,
                    );
                    return None;
                }
                self.unknown_init(name);
                None
            }
            InitAst::Call { name, args, span } => {
                let arity = match name.node {
                    "fill" => 1,
                    "uniform" | "normal" => 2,
                    other => {
                        if Init::from_keyword(other).is_some() {
                            self.error(format!("initializer '{other}' takes no arguments"), span);
                        } else {
                            self.unknown_init(name);
                        }
                        return None;
                    }
                };
                if args.len() != arity {
                    let form = CALL_INITS
                        .iter()
                        .find(|(n, _)| *n == name.node)
                        .map_or("", |(_, f)| f);
                    self.error(
                        format!(
                            "initializer '{}' takes {arity} argument{}: {form}, found {}",
                            name.node,
                            if arity == 1 { "" } else { "s" },
                            args.len()
                        ),
                        span,
                    );
                    return None;
                }
                match (name.node, args.as_slice()) {
                    ("fill", [v]) => self.elem_value(v, elem).map(Init::Fill),
                    ("uniform", [a, b]) => {
                        let (a, b) = (self.num_f64(a), self.num_f64(b));
                        Some(Init::Uniform(a?, b?))
                    }
                    ("normal", [a, b]) => {
                        let (a, b) = (self.num_f64(a), self.num_f64(b));
                        Some(Init::Normal(a?, b?))
                    }
                    _ => None,
                }
            }
            InitAst::Dense(nums) => {
                let vals: Vec<Option<f64>> =
                    nums.iter().map(|n| self.elem_value(n, elem)).collect();
                vals.into_iter()
                    .collect::<Option<Vec<f64>>>()
                    .map(Init::Dense)
            }
        }
    }

    fn unknown_init(&mut self, name: &Sp<&'s str>) {
        let mut names: Vec<&str> = Init::KEYWORDS.iter().map(|(k, _)| *k).collect();
        names.extend(CALL_INITS.iter().map(|(n, _)| *n));
        let hint = match INIT_ALIASES.iter().find(|(alias, _)| *alias == name.node) {
            Some((_, ours)) => format!(" (did you mean '{ours}'?)"),
            None => did_you_mean(name.node, names.iter().copied()),
        };
        let forms: Vec<&str> = Init::KEYWORDS
            .iter()
            .map(|(k, _)| *k)
            .chain(CALL_INITS.iter().map(|(_, f)| *f))
            .collect();
        self.diags.push(
            Diagnostic::new(
                format!("unknown initializer '{}'{hint}", name.node),
                name.span.clone(),
            )
            .with_note(format!(
                "initializers are {}, and [v0, v1, ...]",
                forms.join(", ")
            )),
        );
    }
}

/// Lowers one op statement on its own (operands are not resolved): the op, its attributes
/// and its written type. Used to check the op table's examples.
pub(crate) fn lower_op_statement(source: &str, item: &Item<'_>) -> Result<Op, Vec<Diagnostic>> {
    let ItemKind::Op { op, attrs, ty, .. } = &item.kind else {
        return Err(vec![Diagnostic::new(
            "expected an op statement",
            item.span.clone(),
        )]);
    };
    let mut l = Lowerer {
        source,
        g: Graph::new("statement"),
        diags: Vec::new(),
        values: HashMap::new(),
        seen: HashMap::new(),
        poisoned: HashSet::new(),
        defs: HashMap::new(),
        loss_at: None,
        hints: HashMap::new(),
        index: LineIndex::new(source),
    };
    let resolved = Op::from_mnemonic(op.node);
    if resolved.is_none() {
        l.error(format!("unknown op '{}'", op.node), &op.span);
    }
    if let Some(o) = resolved {
        l.inst(o, attrs);
    }
    if let Some(t) = ty {
        l.ty(t);
    }
    match resolved {
        Some(o) if l.diags.is_empty() => Ok(o),
        _ => Err(l.diags),
    }
}
