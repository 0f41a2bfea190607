//! The kernels against the reference interpreter itself: the interpreter's integer kernels
//! are private, so each case builds a tiny integer graph with `qir::Graph`
//! (`qlinear` or `qconv2d` followed by `requantize`, or the raw i32 accumulators), runs it
//! with `qir_interp::run`, and compares the outputs bit for bit with the kernels on every
//! available path.

mod common;

use std::collections::HashMap;

use common::*;
use qir::{
    Attr, Data, ElemType, Graph, Init, Inst, Op, QuantParams, QuantType, Shape, Storage, Tensor,
    Type,
};
use qir_interp::{RunOptions, init_store, run};
use qir_kernels::*;

fn qtype(signed: bool, scale: f32, zp: i64, dims: &[u64]) -> Type {
    let (st, lo, hi) = if signed {
        (Storage::I8, -128, 127)
    } else {
        (Storage::U8, 0, 255)
    };
    Type::new(
        ElemType::Quant(Box::new(QuantType::per_tensor(st, lo, hi, scale, zp))),
        Shape::fixed(dims),
    )
}

/// Weights with per-output-channel zero points (and scales 0.01 that play no role here).
fn wtype(zw: &[i64], dims: &[u64]) -> Type {
    Type::new(
        ElemType::Quant(Box::new(QuantType {
            storage: Storage::I8,
            qmin: -128,
            qmax: 127,
            params: QuantParams::PerAxis {
                axis: 0,
                scales: vec![0.01; zw.len()],
                zero_points: zw.to_vec(),
            },
        })),
        Shape::fixed(dims),
    )
}

/// The requantize act attribute and the scale the kernels need for its clamp.
struct Post {
    act: &'static str,
    scale: f32,
    rounding: Rounding,
    ty: OutType,
    zp: i32,
    mult: Vec<i64>,
    shift: Vec<i64>,
}

impl Post {
    fn random(rng: &mut Rng, channels: usize, k: usize) -> Post {
        let rq = RandRequant::random(rng, channels, k);
        let act = ["none", "relu", "relu6"][(rng.next() % 3) as usize];
        // a third of the cases rescale by a power of two (2^-(1 + s)), where ties are common
        let (mult, shift) = if rng.next().is_multiple_of(3) {
            let s = rng.range(0, 8);
            (vec![1i64 << 30; rq.mult.len()], vec![s; rq.mult.len()])
        } else {
            (rq.mult, rq.shift)
        };
        Post {
            act,
            scale: 0.01 + (rng.next() % 200) as f32 / 1000.0,
            rounding: rq.rounding,
            ty: rq.ty,
            zp: rq.zp,
            mult,
            shift,
        }
    }
    fn requant(&self) -> Requant {
        let (qmin, qmax) = self.ty.range();
        let act = match self.act {
            "relu" => Activation::Relu,
            "relu6" => Activation::Relu6,
            _ => Activation::None,
        };
        let clamp = Clamp::for_activation(act, qmin, qmax, self.zp, self.scale);
        Requant::new(self.rounding, &self.mult, &self.shift, self.zp, clamp).unwrap()
    }
    fn inst(&self, axis: i64) -> Inst {
        let mut i = Inst::new(Op::Requantize)
            .with("multiplier", self.mult.clone())
            .unwrap()
            .with("shift", self.shift.clone())
            .unwrap()
            .with("rounding", Attr::Enum(self.rounding.name()))
            .unwrap()
            .with("act", Attr::Enum(self.act))
            .unwrap();
        if self.mult.len() > 1 {
            i = i.with("axis", axis).unwrap();
        }
        i
    }
}

fn act_tensor(a: &Acts, shape: &[usize]) -> Tensor {
    let data = match a {
        Acts::U8(v) => Data::U8(v.clone()),
        Acts::I8(v) => Data::I8(v.clone()),
    };
    Tensor::new(shape.to_vec(), data).unwrap()
}

fn values(t: &Tensor) -> Vec<i32> {
    match &t.data {
        Data::I8(v) => v.iter().map(|&x| x as i32).collect(),
        Data::U8(v) => v.iter().map(|&x| x as i32).collect(),
        Data::I32(v) => v.clone(),
        d => panic!("unexpected output data {d:?}"),
    }
}

fn zw_vec(zw: &Option<Vec<i32>>, channels: usize) -> Vec<i64> {
    match zw {
        None => vec![0; channels],
        Some(v) if v.len() == 1 => vec![v[0] as i64; channels],
        Some(v) => v.iter().map(|&z| z as i64).collect(),
    }
}

/// Runs `g` on input `x` and returns the output `y`.
fn interp(g: &Graph, x: Tensor) -> Vec<i32> {
    qir::verify::verify(g).unwrap();
    let mut store = init_store(g, 0).unwrap();
    let inputs = HashMap::from([("x".to_string(), x)]);
    let r = run(g, &mut store, &inputs, &RunOptions::default()).unwrap();
    values(&r.outputs["y"])
}

#[test]
fn qlinear_matches_the_interpreter() {
    let mut rng = Rng::new(11);
    for case_i in 0..24 {
        let (n, k, m) = (rng.usize(1, 40), rng.usize(1, 200), rng.usize(1, 40));
        let case = LinearCase::random(&mut rng, n, k, m);
        let signed = matches!(case.a, Acts::I8(_));
        let zw = zw_vec(&case.zw, m);
        let post = (case_i % 4 != 0).then(|| Post::random(&mut rng, m, k));

        let mut g = Graph::new("ql");
        let x = g
            .add_input(
                "x",
                qtype(signed, 0.05, case.za as i64, &[n as u64, k as u64]),
            )
            .unwrap();
        let w = g
            .add_const(
                "w",
                wtype(&zw, &[m as u64, k as u64]),
                Init::Dense(case.w.iter().map(|&v| v as f64).collect()),
            )
            .unwrap();
        let mut args = vec![x, w];
        if let Some(b) = &case.bias {
            let b = g
                .add_const(
                    "b",
                    Type::new(ElemType::I32, Shape::fixed(&[m as u64])),
                    Init::Dense(b.iter().map(|&v| v as f64).collect()),
                )
                .unwrap();
            args.push(b);
        }
        let acc = g
            .add_op(Inst::new(Op::Qlinear), &args, Some("acc"))
            .unwrap();
        let y = match &post {
            Some(p) => {
                let ty = qtype(
                    p.ty == OutType::I8,
                    p.scale,
                    p.zp as i64,
                    &[n as u64, m as u64],
                );
                g.add_op_typed(p.inst(1), &[acc], ty, Some("yq")).unwrap()
            }
            None => acc,
        };
        g.add_output("y", y);
        let want = interp(&g, act_tensor(&case.a, &[n, k]));

        let packed = PackedB::new(&case.w, m, k, case.zw.as_deref()).unwrap();
        let rq = post.as_ref().map(Post::requant);
        let mut ops = Vec::new();
        if let Some(b) = &case.bias {
            ops.push(FusedOp::AddPerChannel(b));
        }
        if let Some(q) = &rq {
            ops.push(FusedOp::Requantize(q));
        }
        for path in Path::available().into_iter().chain([Path::AmxEmulated]) {
            let mut out = Out::new(post.as_ref().map(|p| p.ty), n * m);
            qgemm(path, case.a.view(), n, case.za, &packed, &ops, out.output()).unwrap();
            assert_eq!(out.values(), want, "{} n={n} k={k} m={m}", path.name());
        }
    }
}

#[test]
fn qconv2d_matches_the_interpreter() {
    let mut rng = Rng::new(12);
    for case_i in 0..24 {
        let g0 = ConvCase::random_geom(&mut rng, case_i % 3 == 2);
        let case = ConvCase::random(&mut rng, g0);
        let gm = &case.g;
        let signed = matches!(case.x, Acts::I8(_));
        let zw = zw_vec(&case.zw, gm.o);
        let post = (case_i % 4 != 0).then(|| Post::random(&mut rng, gm.o, gm.k()));
        let dims = |v: &[usize]| v.iter().map(|&d| d as u64).collect::<Vec<_>>();

        let mut g = Graph::new("qc");
        let x = g
            .add_input(
                "x",
                qtype(
                    signed,
                    0.05,
                    case.zx as i64,
                    &dims(&[gm.n, gm.c, gm.h, gm.w]),
                ),
            )
            .unwrap();
        let w = g
            .add_const(
                "w",
                wtype(&zw, &dims(&[gm.o, gm.cg(), gm.kh, gm.kw])),
                Init::Dense(case.w.iter().map(|&v| v as f64).collect()),
            )
            .unwrap();
        let mut args = vec![x, w];
        if let Some(b) = &case.bias {
            let b = g
                .add_const(
                    "b",
                    Type::new(ElemType::I32, Shape::fixed(&[gm.o as u64])),
                    Init::Dense(b.iter().map(|&v| v as f64).collect()),
                )
                .unwrap();
            args.push(b);
        }
        let conv = Inst::new(Op::Qconv2d)
            .with(
                "stride",
                gm.stride.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            )
            .unwrap()
            .with(
                "padding",
                gm.pad.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            )
            .unwrap()
            .with(
                "dilation",
                gm.dil.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            )
            .unwrap()
            .with("groups", gm.groups as i64)
            .unwrap();
        let acc = g.add_op(conv, &args, Some("acc")).unwrap();
        let y = match &post {
            Some(p) => {
                let ty = qtype(
                    p.ty == OutType::I8,
                    p.scale,
                    p.zp as i64,
                    &dims(&[gm.n, gm.o, gm.oh, gm.ow]),
                );
                g.add_op_typed(p.inst(1), &[acc], ty, Some("yq")).unwrap()
            }
            None => acc,
        };
        g.add_output("y", y);
        let want = interp(&g, act_tensor(&case.x, &[gm.n, gm.c, gm.h, gm.w]));

        let packed = case.pack();
        let rq = post.as_ref().map(Post::requant);
        let mut ops = Vec::new();
        if let Some(b) = &case.bias {
            ops.push(FusedOp::AddPerChannel(b));
        }
        if let Some(q) = &rq {
            ops.push(FusedOp::Requantize(q));
        }
        for path in Path::available().into_iter().chain([Path::AmxEmulated]) {
            let mut out = Out::new(post.as_ref().map(|p| p.ty), gm.y_len());
            qconv2d(
                path,
                case.x.view(),
                case.zx,
                gm,
                &packed,
                &ops,
                out.output(),
            )
            .unwrap();
            assert_eq!(out.values(), want, "{} {gm:?}", path.name());
        }
    }
}
