//! Property: print → parse → print is the identity, and the graph read back verifies.
//!
//! Graphs are built with the `qir` builder API from random chains of ops (linear, conv2d,
//! relu, add, reshape, concat, batch_norm with an EMA update, fake_quant per tensor and per
//! channel, quantize/dequantize with per-tensor, inline per-axis and named per-axis quant
//! types), with random names (plain, dotted, anonymous), random f32 scales (tiny, huge,
//! subnormal, and any bit pattern for constants), random attribute floats and comments.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use qir::{
    Dim, ElemType, Graph, Init, Inst, NodeId, Op, QuantParams, QuantType, Shape, Storage, Type,
};

#[derive(Clone, Debug)]
enum QKind {
    Tensor,
    AxisInline,
    AxisRef { with_zero_points: bool },
}

#[derive(Clone, Debug)]
enum Step {
    Relu,
    Conv {
        out: u64,
        k3: bool,
        pad: bool,
        bias: bool,
    },
    BatchNorm {
        eps: Option<f64>,
        ema_update: bool,
    },
    Flatten,
    Linear {
        out: u64,
        bias: bool,
        act: usize,
    },
    AddRelu {
        act: usize,
    },
    Concat,
    FakeQuant {
        per_channel: bool,
        scale_bits: u32,
        zp: i64,
        range: usize,
    },
    Quant {
        kind: QKind,
        scales: Vec<f32>,
        zp: i64,
        range: usize,
    },
}

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    input: (u64, u64, u64),
    steps: Vec<(Step, usize, Option<String>)>,
    graph_comments: Vec<String>,
    trailing: Vec<String>,
    output_name: &'static str,
    output_comment: Option<String>,
    with_loss: bool,
}

/// Scales a quantized type accepts: positive and finite, from subnormal to f32::MAX.
fn scale() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => 1e-4f32..10.0,
        1 => Just(f32::from_bits(1)),
        1 => Just(f32::MIN_POSITIVE),
        1 => Just(f32::MAX),
        1 => 1e30f32..3e38,
        1 => 1e-38f32..1e-30,
        2 => (1u32..0x7f80_0000).prop_map(f32::from_bits),
    ]
}

fn comment() -> impl Strategy<Value = String> {
    "[ -~]{0,24}".prop_map(|s| s.trim_end().to_string())
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Relu),
        (1u64..5, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(out, k3, pad, bias)| Step::Conv { out, k3, pad, bias }),
        (
            prop_oneof![
                Just(None),
                Just(Some(1e-5)),
                any::<f64>().prop_map(Some),
                (1e-9f64..1e-1).prop_map(Some)
            ],
            any::<bool>()
        )
            .prop_map(|(eps, ema_update)| Step::BatchNorm { eps, ema_update }),
        Just(Step::Flatten),
        (1u64..9, any::<bool>(), 0usize..3).prop_map(|(out, bias, act)| Step::Linear {
            out,
            bias,
            act
        }),
        (0usize..3).prop_map(|act| Step::AddRelu { act }),
        Just(Step::Concat),
        (any::<bool>(), any::<u32>(), -5i64..5, 0..RANGES.len()).prop_map(
            |(per_channel, scale_bits, zp, range)| Step::FakeQuant {
                per_channel,
                scale_bits,
                zp,
                range,
            }
        ),
        (
            prop_oneof![
                Just(QKind::Tensor),
                Just(QKind::AxisInline),
                any::<bool>().prop_map(|with_zero_points| QKind::AxisRef { with_zero_points }),
            ],
            proptest::collection::vec(scale(), 1..40),
            -3i64..4,
            0..RANGES.len()
        )
            .prop_map(|(kind, scales, zp, range)| Step::Quant {
                kind,
                scales,
                zp,
                range
            }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        "[a-z_][a-z0-9_.]{0,8}",
        (1u64..4, 3u64..7, 3u64..7),
        proptest::collection::vec(
            (
                step(),
                0usize..4,
                proptest::option::weighted(0.25, comment()),
            ),
            1..12,
        ),
        proptest::collection::vec(comment(), 0..3),
        proptest::collection::vec(comment(), 0..2),
        prop_oneof![
            Just("y"),
            Just("loss"),
            Just("graph"),
            Just("input"),
            Just("out.1"),
            Just("_o")
        ],
        proptest::option::of(comment()),
        any::<bool>(),
    )
        .prop_map(
            |(
                name,
                input,
                steps,
                graph_comments,
                trailing,
                output_name,
                output_comment,
                with_loss,
            )| {
                Spec {
                    name,
                    input,
                    steps,
                    graph_comments,
                    trailing,
                    output_name,
                    output_comment,
                    with_loss,
                }
            },
        )
}

const ACTS: [&str; 3] = ["none", "relu", "relu6"];
const RANGES: [(Storage, i64, i64); 5] = [
    (Storage::I8, -128, 127),
    (Storage::I8, -127, 127),
    (Storage::U8, 0, 255),
    (Storage::I4, -8, 7),
    (Storage::I4, -7, 7),
];

/// The current value and its shape: `[B, C, H, W]` or `[B, F]`.
#[derive(Clone, Copy)]
enum Cur {
    Image(NodeId, u64, u64, u64),
    Flat(NodeId, u64),
}

fn b() -> Dim {
    Dim::Sym("B".into())
}

fn f32t(dims: &[u64]) -> Type {
    Type::new(ElemType::F32, Shape::fixed(dims))
}

struct Builder {
    g: Graph,
}

impl Builder {
    fn name(style: usize, i: usize, base: &str) -> Option<String> {
        match style {
            0 => None,
            1 => Some(format!("{base}{i}")),
            2 => Some(format!("blk{i}.{base}")),
            _ => Some(format!("_{base}.{i}.x")),
        }
    }

    fn op(&mut self, inst: Inst, operands: &[NodeId], name: Option<String>) -> NodeId {
        self.g
            .add_op(inst, operands, name.as_deref())
            .unwrap_or_else(|e| panic!("generator built an invalid op: {e}"))
    }

    fn op_typed(
        &mut self,
        inst: Inst,
        operands: &[NodeId],
        ty: Type,
        name: Option<String>,
    ) -> NodeId {
        self.g
            .add_op_typed(inst, operands, ty, name.as_deref())
            .unwrap_or_else(|e| panic!("generator built an invalid op: {e}"))
    }

    fn param(&mut self, name: String, ty: Type, init: Init) -> NodeId {
        self.g.add_param(&name, ty, init).expect("fresh name")
    }

    fn konst(&mut self, name: Option<String>, ty: Type, init: Init) -> NodeId {
        match name {
            Some(n) => self.g.add_const(&n, ty, init).expect("fresh name"),
            None => self
                .g
                .add_node(qir::Node {
                    name: None,
                    kind: qir::NodeKind::Const(init),
                    ty,
                    loc: None,
                    comments: Vec::new(),
                })
                .expect("anonymous node"),
        }
    }

    fn channels(c: Cur) -> (NodeId, u64, Vec<Dim>) {
        match c {
            Cur::Image(id, c, h, w) => (id, c, vec![b(), c.into(), h.into(), w.into()]),
            Cur::Flat(id, f) => (id, f, vec![b(), f.into()]),
        }
    }

    fn step(&mut self, cur: Cur, step: &Step, style: usize, i: usize) -> Cur {
        let name = |base: &str| Self::name(style, i, base);
        match (step, cur) {
            (Step::Relu, Cur::Image(x, c, h, w)) => {
                Cur::Image(self.op(Inst::new(Op::Relu), &[x], name("relu")), c, h, w)
            }
            (Step::Relu, Cur::Flat(x, f)) => {
                Cur::Flat(self.op(Inst::new(Op::Relu), &[x], name("relu")), f)
            }
            (Step::Conv { out, k3, pad, bias }, Cur::Image(x, c, h, w)) => {
                let p = u64::from(*pad);
                let k = if *k3 && h + 2 * p >= 3 && w + 2 * p >= 3 {
                    3
                } else {
                    1
                };
                let p = if k == 3 { p } else { 0 };
                let wt = self.param(
                    format!("c{i}.w"),
                    f32t(&[*out, c, k, k]),
                    Init::KaimingUniform,
                );
                let mut ops = vec![x, wt];
                if *bias {
                    ops.push(self.param(format!("c{i}.b"), f32t(&[*out]), Init::Zeros));
                }
                let mut inst = Inst::new(Op::Conv2d);
                if p == 1 {
                    inst.set("padding", vec![1i64, 1, 1, 1].into())
                        .expect("padding");
                }
                let y = self.op(inst, &ops, name("conv"));
                Cur::Image(y, *out, h + 2 * p - k + 1, w + 2 * p - k + 1)
            }
            (Step::BatchNorm { eps, ema_update }, Cur::Image(x, c, h, w)) => {
                let gamma = self.param(format!("bn{i}.gamma"), f32t(&[c]), Init::Ones);
                let beta = self.param(format!("bn{i}.beta"), f32t(&[c]), Init::Zeros);
                let mean = self
                    .g
                    .add_state(&format!("bn{i}.mean"), f32t(&[c]), Init::Zeros)
                    .expect("fresh");
                let var = self
                    .g
                    .add_state(&format!("bn{i}.var"), f32t(&[c]), Init::Ones)
                    .expect("fresh");
                let mut inst = Inst::new(Op::BatchNorm);
                if let Some(e) = eps {
                    inst.set("eps", (*e).into()).expect("eps");
                }
                let y = self.op(inst, &[x, gamma, beta, mean, var], name("bn"));
                if *ema_update {
                    let m = self.op(
                        Inst::new(Op::ReduceMean)
                            .with("axes", vec![0i64, 2, 3])
                            .expect("axes"),
                        &[x],
                        None,
                    );
                    let e = self.op(
                        Inst::new(Op::Ema),
                        &[mean, m],
                        Some(format!("bn{i}.mean.new")),
                    );
                    self.g.add_update(mean, e);
                }
                Cur::Image(y, c, h, w)
            }
            (Step::Flatten, Cur::Image(x, c, h, w)) => {
                let f = c * h * w;
                let inst = Inst::new(Op::Reshape)
                    .with("shape", vec![-1i64, f as i64])
                    .expect("shape");
                Cur::Flat(self.op(inst, &[x], name("flat")), f)
            }
            (Step::Linear { out, bias, act }, Cur::Flat(x, f)) => {
                let wt = self.param(format!("fc{i}.w"), f32t(&[*out, f]), Init::LecunUniform);
                let mut ops = vec![x, wt];
                if *bias {
                    ops.push(self.param(
                        format!("fc{i}.b"),
                        f32t(&[*out]),
                        Init::Uniform(-0.1, 0.1),
                    ));
                }
                let mut inst = Inst::new(Op::Linear);
                inst.set("act", qir::Attr::Enum(ACTS[*act])).expect("act");
                Cur::Flat(self.op(inst, &ops, name("fc")), *out)
            }
            (Step::AddRelu { act }, cur) => {
                let (x, _, _) = Self::channels(cur);
                let r = self.op(Inst::new(Op::Relu), &[x], None);
                let mut inst = Inst::new(Op::Add);
                inst.set("act", qir::Attr::Enum(ACTS[*act])).expect("act");
                let y = self.op(inst, &[x, r], name("add"));
                match cur {
                    Cur::Image(_, c, h, w) => Cur::Image(y, c, h, w),
                    Cur::Flat(_, f) => Cur::Flat(y, f),
                }
            }
            (Step::Concat, cur) => {
                let (x, c, _) = Self::channels(cur);
                if c > 16 {
                    return cur;
                }
                let inst = Inst::new(Op::Concat).with("axis", 1i64).expect("axis");
                let y = self.op(inst, &[x, x], name("cat"));
                match cur {
                    Cur::Image(_, c, h, w) => Cur::Image(y, 2 * c, h, w),
                    Cur::Flat(_, f) => Cur::Flat(y, 2 * f),
                }
            }
            (
                Step::FakeQuant {
                    per_channel,
                    scale_bits,
                    zp,
                    range,
                },
                cur,
            ) => {
                let (x, c, _) = Self::channels(cur);
                let (_, qmin, qmax) = RANGES[*range];
                // any positive finite bit pattern (subnormal, tiny, huge) must print and read
                // back exactly; the verifier refuses constant scales that are not positive
                // and finite, so others are folded onto valid ones (|v|, or 1 for 0/nan/inf)
                let n = if *per_channel { c } else { 1 };
                let dims: Vec<u64> = if *per_channel { vec![c] } else { vec![] };
                let scales: Vec<f64> = (0..n)
                    .map(|k| {
                        let v = f32::from_bits(scale_bits.wrapping_add(k as u32)).abs();
                        f64::from(if v.is_finite() && v > 0.0 { v } else { 1.0 })
                    })
                    .collect();
                let s_name = name("fq.scale").map(|n| format!("{n}.s"));
                let sc = self.konst(s_name, f32t(&dims), Init::Dense(scales));
                let zt = Type::new(ElemType::I32, Shape::fixed(&dims));
                let zps = vec![*zp as f64; n as usize];
                let z = self.konst(Some(format!("fq{i}.zp")), zt, Init::Dense(zps));
                let mut inst = Inst::new(Op::FakeQuant)
                    .with("qmin", qmin)
                    .and_then(|i| i.with("qmax", qmax))
                    .expect("range");
                if *per_channel {
                    inst.set("axis", 1i64.into()).expect("axis");
                }
                let y = self.op(inst, &[x, sc, z], name("fq"));
                match cur {
                    Cur::Image(_, c, h, w) => Cur::Image(y, c, h, w),
                    Cur::Flat(_, f) => Cur::Flat(y, f),
                }
            }
            (
                Step::Quant {
                    kind,
                    scales,
                    zp,
                    range,
                },
                cur,
            ) => {
                let (x, c, dims) = Self::channels(cur);
                let (storage, qmin, qmax) = RANGES[*range];
                let zp = if storage == Storage::U8 { zp + 3 } else { *zp };
                let per_axis: Vec<f32> =
                    (0..c as usize).map(|k| scales[k % scales.len()]).collect();
                let params = match kind {
                    QKind::Tensor => QuantParams::PerTensor {
                        scale: scales[0],
                        zero_point: zp,
                    },
                    QKind::AxisInline => QuantParams::PerAxis {
                        axis: 1,
                        zero_points: (0..c as i64).map(|k| (zp + k).clamp(qmin, qmax)).collect(),
                        scales: per_axis,
                    },
                    QKind::AxisRef { with_zero_points } => {
                        let s_name = format!("q{i}.scales");
                        let vals = per_axis.iter().map(|&v| f64::from(v)).collect();
                        self.konst(Some(s_name.clone()), f32t(&[c]), Init::Dense(vals));
                        let z_name = with_zero_points.then(|| format!("q{i}.zps"));
                        if let Some(zn) = &z_name {
                            let zt = Type::new(ElemType::I32, Shape::fixed(&[c]));
                            self.konst(
                                Some(zn.clone()),
                                zt,
                                Init::Dense(vec![zp as f64; c as usize]),
                            );
                        }
                        QuantParams::PerAxisRef {
                            axis: 1,
                            scales: s_name,
                            zero_points: z_name,
                        }
                    }
                };
                let q = QuantType {
                    storage,
                    qmin,
                    qmax,
                    params,
                };
                let qt = Type::new(ElemType::Quant(Box::new(q)), Shape(dims));
                let quantize = Inst::new(Op::Quantize)
                    .with("rounding", qir::Attr::Enum("half_even"))
                    .expect("rounding");
                let xq = self.op_typed(quantize, &[x], qt, name("q"));
                let y = self.op(Inst::new(Op::Dequantize), &[xq], None);
                match cur {
                    Cur::Image(_, c, h, w) => Cur::Image(y, c, h, w),
                    Cur::Flat(_, f) => Cur::Flat(y, f),
                }
            }
            // steps that do not apply to the current rank leave it unchanged
            (Step::Conv { .. } | Step::BatchNorm { .. } | Step::Flatten, Cur::Flat(..))
            | (Step::Linear { .. }, Cur::Image(..)) => cur,
        }
    }
}

fn build(spec: &Spec) -> Graph {
    let mut bld = Builder {
        g: Graph::new(spec.name.clone()),
    };
    bld.g.comments = spec.graph_comments.clone();
    bld.g.trailing_comments = spec.trailing.clone();
    let (c, h, w) = spec.input;
    let x = bld
        .g
        .add_input("x", Type::f32(&[b(), c.into(), h.into(), w.into()]))
        .expect("input");
    let mut cur = Cur::Image(x, c, h, w);
    for (i, (step, style, comment)) in spec.steps.iter().enumerate() {
        let before = bld.g.node_count();
        cur = bld.step(cur, step, *style, i);
        if let Some(text) = comment
            && bld.g.node_count() > before
        {
            let (id, _, _) = Builder::channels(cur);
            bld.g.node_mut(id).comments.push(text.clone());
        }
    }
    let (y, _, _) = Builder::channels(cur);
    bld.g.add_output(spec.output_name, y);
    if let Some(c) = &spec.output_comment
        && let Some(o) = bld.g.outputs_mut().last_mut()
    {
        o.comments.push(c.clone());
    }
    if spec.with_loss
        && let Cur::Flat(logits, _) = cur
    {
        let label = bld
            .g
            .add_input("label", Type::new(ElemType::I32, Shape(vec![b()])))
            .expect("label");
        let l = bld.op(
            Inst::new(Op::SoftmaxCrossEntropy),
            &[logits, label],
            Some("loss".into()),
        );
        bld.g.set_loss(Some(l));
    }
    bld.g
}

/// At least `n` cases; `PROPTEST_CASES` raises the count for a deeper run.
fn cases(n: u32) -> u32 {
    ProptestConfig::default().cases.max(n)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(384),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn print_parse_print_is_identity(spec in spec()) {
        let g = build(&spec);
        if let Err(e) = qir::verify::verify(&g) {
            return Err(TestCaseError::fail(format!("generated graph does not verify: {e}")));
        }
        let text = qir::print::print(&g);
        let back = match qir_reader::parse_and_verify(&text) {
            Ok(back) => back,
            Err(d) => {
                return Err(TestCaseError::fail(format!(
                    "{}\n{text}",
                    qir_reader::render(&d, "printed.qir", &text)
                )))
            }
        };
        let again = qir::print::print(&back);
        prop_assert_eq!(&again, &text);
        prop_assert_eq!(back.node_count(), g.node_count());
        prop_assert_eq!(&back.comments, &g.comments);
        prop_assert_eq!(&back.trailing_comments, &g.trailing_comments);
    }
}

#[test]
fn scales_read_back_bit_exactly() {
    for bits in [
        1u32,
        0x0080_0000,
        0x7f7f_ffff,
        0x3dcc_cccd,
        0x3f80_0001,
        0x0000_ffff,
    ] {
        let s = f32::from_bits(bits);
        let mut g = Graph::new("s");
        let x = g.add_input("x", Type::f32(&[b(), 2u64.into()])).expect("x");
        let q = QuantType::per_tensor(Storage::I8, -128, 127, s, 0);
        let qt = Type::new(ElemType::Quant(Box::new(q)), Shape(vec![b(), 2u64.into()]));
        let y = g
            .add_op_typed(
                Inst::new(Op::Quantize)
                    .with("rounding", qir::Attr::Enum("half_even"))
                    .expect("rounding"),
                &[x],
                qt,
                Some("y"),
            )
            .expect("quantize");
        g.add_output("y", y);
        let text = qir::print::print(&g);
        let back = qir_reader::parse_and_verify(&text).expect("reads back");
        let id = back.find("y").expect("y");
        let read = match back.ty(id).elem.quant().map(|q| &q.params) {
            Some(QuantParams::PerTensor { scale, .. }) => *scale,
            other => panic!("not a per-tensor quant type: {other:?}"),
        };
        assert_eq!(read.to_bits(), bits, "{text}");
    }
}

/// Symbolic dimensions print as written; the verifier rejects names that would not read
/// back, and keyword-like names read back fine.
#[test]
fn symbolic_dimension_names_read_back_or_are_rejected() {
    let graph = |sym: &str| {
        let mut g = Graph::new("d");
        let x = g
            .add_input("x", Type::f32(&[Dim::Sym(sym.into()), 2u64.into()]))
            .expect("x");
        g.add_output("x", x);
        g
    };
    let bad = qir::verify::verify(&graph("2x")).expect_err("invalid dimension name");
    assert_eq!(bad.to_string(), "%x: '2x' is not a valid dimension name");
    for sym in ["B", "input", "inf", "batch.size"] {
        let g = graph(sym);
        qir::verify::verify(&g).expect("valid");
        let text = qir::print::print(&g);
        let back = qir_reader::parse_and_verify(&text).expect("reads back");
        assert_eq!(qir::print::print(&back), text);
    }
}
