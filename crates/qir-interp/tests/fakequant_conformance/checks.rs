// The checks of the PyTorch fake-quant reference vectors, shared by the interpreter's
// `fakequant_conformance.rs` and the JIT's `jit_fakequant_vectors.rs` (each defines
// `exec_run`, which runs a graph once on its executor, and includes this file).

fn vectors() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/fakequant_vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the PyTorch reference vectors are required: cannot read {}: {e} \
             (the shared data folder must sit beside the repository as ../shared/data)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn section<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    let s = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("section '{key}' is missing"));
    assert!(!s.is_empty(), "section '{key}' is empty");
    s
}

/// f32 values are written as the shortest f64 text that round-trips: parse, then cast.
fn f(v: &Value) -> f32 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as f32
}
fn fs(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(f)
        .collect()
}
fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}
fn name(c: &Value) -> &str {
    c["name"].as_str().unwrap_or("?")
}

/// The quantization settings of one vector.
struct Case {
    shape: Vec<usize>,
    axis: Option<i64>,
    scale: Vec<f32>,
    /// integer zero points for the fixed ops, float ones for LSQ
    zp: Vec<f64>,
    zp_float: bool,
    qmin: i64,
    qmax: i64,
    grad_factor: Option<f32>,
    x: Vec<f32>,
}

impl Case {
    fn read(c: &Value, learnable: bool) -> Case {
        let x = fs(&c["x"]);
        let (shape, axis, scale, zp) = match c.get("shape") {
            Some(s) => (
                s.as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| int(d) as usize)
                    .collect(),
                Some(int(&c["axis"])),
                fs(&c["scale"]),
                c["zero_point"]
                    .as_array()
                    .expect("zero points")
                    .iter()
                    .map(|z| z.as_f64().expect("zero point"))
                    .collect(),
            ),
            None => (
                vec![x.len()],
                None,
                vec![f(&c["scale"])],
                vec![c["zero_point"].as_f64().expect("zero point")],
            ),
        };
        Case {
            shape,
            axis,
            scale,
            zp: if learnable {
                zp.iter().map(|&z| z as f32 as f64).collect()
            } else {
                zp
            },
            zp_float: learnable,
            qmin: int(&c["quant_min"]),
            qmax: int(&c["quant_max"]),
            grad_factor: c.get("grad_factor").map(f),
            x,
        }
    }

    /// A graph computing `op` on this case: operands `(x, scale, zp)` for the forward ops,
    /// `(dy, x, scale, zp)` for the gradients; the result is output `y`.
    fn graph(&self, op: Op) -> Graph {
        let dims: Vec<Dim> = self.shape.iter().map(|&d| Dim::Fixed(d as u64)).collect();
        let pshape = if self.axis.is_some() {
            Shape::fixed(&[self.scale.len() as u64])
        } else {
            Shape::scalar()
        };
        let mut g = Graph::new("fq");
        let backward = op.class() == qir::OpClass::Backward;
        let dy = backward.then(|| g.add_input("dy", Type::f32(&dims)).unwrap());
        let x = g.add_input("x", Type::f32(&dims)).unwrap();
        let s = g
            .add_const(
                "scale",
                Type::new(ElemType::F32, pshape.clone()),
                Init::Dense(self.scale.iter().map(|&v| v as f64).collect()),
            )
            .unwrap();
        let zelem = if self.zp_float {
            ElemType::F32
        } else {
            ElemType::I32
        };
        let z = g
            .add_const("zp", Type::new(zelem, pshape), Init::Dense(self.zp.clone()))
            .unwrap();
        let mut inst = Inst::new(op)
            .with("qmin", self.qmin)
            .unwrap()
            .with("qmax", self.qmax)
            .unwrap();
        if let Some(a) = self.axis {
            inst = inst.with("axis", a).unwrap();
        }
        // PyTorch's learnable backward rounds the zero point as trunc(zp + 0.5); the op
        // reproduces it when asked (its default rounds as the forward does)
        if matches!(
            op,
            Op::FakeQuantLsq
                | Op::FakeQuantLsqGradX
                | Op::FakeQuantLsqGradScale
                | Op::FakeQuantLsqGradZeroPoint
        ) {
            inst = inst
                .with("zero_point_rounding", qir::Attr::Enum("torch"))
                .unwrap();
        }
        if let Some(gf) = self.grad_factor
            && matches!(
                op,
                Op::FakeQuantLsqGradScale | Op::FakeQuantLsqGradZeroPoint
            )
        {
            inst = inst.with("grad_scale", gf as f64).unwrap();
        }
        let operands: Vec<_> = dy.into_iter().chain([x, s, z]).collect();
        let y = g.add_op(inst, &operands, Some("y")).unwrap();
        g.add_output("y", y);
        g
    }

    /// Runs `op` with upstream gradient `dy` (ignored by forward ops).
    fn run(&self, op: Op, dy: &[f32]) -> Vec<f32> {
        let g = self.graph(op);
        let mut store = init_store(&g, 0).unwrap();
        let mut inputs = HashMap::from([(
            "x".to_string(),
            Tensor::f32(self.shape.clone(), self.x.clone()).unwrap(),
        )]);
        if op.class() == qir::OpClass::Backward {
            inputs.insert(
                "dy".into(),
                Tensor::f32(self.shape.clone(), dy.to_vec()).unwrap(),
            );
        }
        let r = exec_run(&g, &mut store, &inputs)
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        r.outputs["y"].as_f32().expect("f32 result").to_vec()
    }

    fn ones(&self) -> Vec<f32> {
        vec![1.0; self.x.len()]
    }
}

/// Bit-exact comparison; returns the number of elements compared.
fn exact(what: &str, case: &str, got: &[f32], want: &[f32], fails: &mut Vec<String>) -> usize {
    if got.len() != want.len() {
        fails.push(format!(
            "{case} {what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
        return 0;
    }
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        if a.to_bits() != b.to_bits() {
            fails.push(format!("{case} {what}[{i}]: got {a:?}, PyTorch {b:?}"));
        }
    }
    got.len()
}

fn report(section: &str, cases: usize, elements: usize, fails: Vec<String>) {
    eprintln!("{section}: {cases} vectors, {elements} values checked");
    assert!(
        fails.is_empty(),
        "{section}: {} mismatches:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn per_tensor_matches_pytorch() {
    let v = vectors();
    let mut fails = Vec::new();
    let mut n = 0;
    let cases = section(&v, "per_tensor");
    for c in cases {
        let case = Case::read(c, false);
        n += exact(
            "y",
            name(c),
            &case.run(Op::FakeQuant, &[]),
            &fs(&c["y"]),
            &mut fails,
        );
        let dx = case.run(Op::FakeQuantGrad, &case.ones());
        n += exact("dx", name(c), &dx, &fs(&c["dx"]), &mut fails);
    }
    report("per_tensor", cases.len(), n, fails);
}

#[test]
fn inverse_scale_discriminators_match_pytorch() {
    let v = vectors();
    let mut fails = Vec::new();
    let mut n = 0;
    let cases = section(&v, "per_tensor_inverse_discriminators");
    for c in cases {
        let case = Case::read(c, false);
        n += exact(
            "y",
            name(c),
            &case.run(Op::FakeQuant, &[]),
            &fs(&c["y"]),
            &mut fails,
        );
        n += exact(
            "dx",
            name(c),
            &case.run(Op::FakeQuantGrad, &case.ones()),
            &fs(&c["dx"]),
            &mut fails,
        );
        // the grid point PyTorch used, through the real `quantize` op (wide i32 storage so
        // the unclamped grid point shows)
        let key = match c["torch_matches"].as_str() {
            Some("mul_inverse") => "q_if_mul_inverse",
            Some("divide") => "q_if_divide",
            other => panic!("{}: unexpected torch_matches {other:?}", name(c)),
        };
        let want: Vec<f32> = fs(&c[key]);
        let got = quantize_grid(&case);
        n += exact("q", name(c), &got, &want, &mut fails);
        // and the discriminators really discriminate
        let other = fs(&c[if key == "q_if_divide" {
            "q_if_mul_inverse"
        } else {
            "q_if_divide"
        }]);
        if got == other {
            fails.push(format!("{}: both candidate grids agree", name(c)));
        }
    }
    report("per_tensor_inverse_discriminators", cases.len(), n, fails);
}

/// `quantize` of the case's x to i32 storage with the case's scale and zero point.
fn quantize_grid(case: &Case) -> Vec<f32> {
    let mut g = Graph::new("q");
    let dims: Vec<Dim> = case.shape.iter().map(|&d| Dim::Fixed(d as u64)).collect();
    let x = g.add_input("x", Type::f32(&dims)).unwrap();
    let qt = QuantType::per_tensor(
        Storage::I32,
        i32::MIN as i64,
        i32::MAX as i64,
        case.scale[0],
        case.zp[0] as i64,
    );
    let ty = Type::new(ElemType::Quant(Box::new(qt)), Shape(dims));
    let q = g
        .add_op_typed(
            Inst::new(Op::Quantize)
                .with("rounding", qir::Attr::Enum("half_even"))
                .unwrap(),
            &[x],
            ty,
            Some("q"),
        )
        .unwrap();
    g.add_output("q", q);
    let mut store = init_store(&g, 0).unwrap();
    let inputs = HashMap::from([(
        "x".to_string(),
        Tensor::f32(case.shape.clone(), case.x.clone()).unwrap(),
    )]);
    let r = exec_run(&g, &mut store, &inputs).unwrap();
    match &r.outputs["q"].data {
        qir::Data::I32(v) => v.iter().map(|&q| q as f32).collect(),
        d => panic!("quantize gave {} data", d.dtype()),
    }
}

#[test]
fn per_channel_matches_pytorch() {
    let v = vectors();
    let mut fails = Vec::new();
    let mut n = 0;
    let cases = section(&v, "per_channel");
    for c in cases {
        let case = Case::read(c, false);
        n += exact(
            "y",
            name(c),
            &case.run(Op::FakeQuant, &[]),
            &fs(&c["y"]),
            &mut fails,
        );
        n += exact(
            "dx",
            name(c),
            &case.run(Op::FakeQuantGrad, &case.ones()),
            &fs(&c["dx"]),
            &mut fails,
        );
    }
    report("per_channel", cases.len(), n, fails);
}

/// The per-element contributions of a summed LSQ gradient: the op run with a one-hot
/// upstream gradient for each element; returns (channel, contribution) per element.
fn per_element(case: &Case, op: Op) -> Vec<(usize, f32)> {
    (0..case.x.len())
        .map(|i| {
            let mut dy = vec![0.0; case.x.len()];
            dy[i] = 1.0;
            let r = case.run(op, &dy);
            assert_eq!(r.len(), case.scale.len(), "{op}: one value per channel");
            // the one non-zero channel holds the contribution (or all are zero)
            let c = r.iter().position(|v| *v != 0.0).unwrap_or(0);
            (c, r[c])
        })
        .collect()
}

/// The exactly rounded f32 sum of f32 values: accumulated as i128 fixed point (every
/// value must be a multiple of 2^-90, which the contributions here are), rounded once.
fn exact_sum(v: &[f32]) -> f32 {
    let scale = 2f64.powi(90);
    let mut acc: i128 = 0;
    for &x in v {
        let s = x as f64 * scale;
        assert!(
            s.fract() == 0.0 && s.abs() < 2f64.powi(120),
            "{x:e} does not fit the fixed point"
        );
        acc += s as i128;
    }
    (acc as f32) * 2f32.powi(-90)
}

/// Checks a summed LSQ gradient: bit-exact against the exactly rounded sum of the
/// per-element contributions, and against PyTorch's value within 1e-6 of the sum of the
/// contributions' magnitudes. (PyTorch reduces in f32 in its own order, so with
/// cancellation its sum is off the exact one by more than 1e-6 of the result itself:
/// -7.0800247 against the exact -7.0800338 in `int8_s0.1_zp0.0_gf1`.)
fn check_sum(
    what: &str,
    case: &str,
    got: f32,
    torch: f32,
    contributions: &[f32],
    fails: &mut Vec<String>,
) {
    let exact = exact_sum(contributions);
    if got.to_bits() != exact.to_bits() {
        fails.push(format!(
            "{case} {what}: got {got:?}, the exact sum of the contributions is {exact:?}"
        ));
    }
    let magnitude: f64 = contributions.iter().map(|c| (*c as f64).abs()).sum();
    let err = (got as f64 - torch as f64).abs();
    if err > 1e-6 * magnitude {
        fails.push(format!(
            "{case} {what}: got {got:?}, PyTorch {torch:?} (error {err:e}, sum of magnitudes {magnitude:e})"
        ));
    }
}

#[test]
fn learnable_per_tensor_matches_pytorch() {
    let v = vectors();
    let mut fails = Vec::new();
    let mut n = 0;
    let cases = section(&v, "learnable_per_tensor");
    for c in cases {
        let case = Case::read(c, true);
        let nm = name(c);
        n += exact(
            "y",
            nm,
            &case.run(Op::FakeQuantLsq, &[]),
            &fs(&c["y"]),
            &mut fails,
        );
        n += exact(
            "dx",
            nm,
            &case.run(Op::FakeQuantLsqGradX, &case.ones()),
            &fs(&c["dx"]),
            &mut fails,
        );
        for (op, per, sum) in [
            (Op::FakeQuantLsqGradScale, "dscale", "batched_dscale_sum"),
            (
                Op::FakeQuantLsqGradZeroPoint,
                "dzero_point",
                "batched_dzero_point_sum",
            ),
        ] {
            let want = fs(&c[per]);
            let elems: Vec<f32> = per_element(&case, op).into_iter().map(|(_, v)| v).collect();
            n += exact(per, nm, &elems, &want, &mut fails);
            let total = case.run(op, &case.ones());
            check_sum(sum, nm, total[0], f(&c[sum]), &want, &mut fails);
            n += 1;
        }
    }
    report("learnable_per_tensor", cases.len(), n, fails);
}

#[test]
fn learnable_per_channel_matches_pytorch() {
    let v = vectors();
    let mut fails = Vec::new();
    let mut n = 0;
    let cases = section(&v, "learnable_per_channel");
    for c in cases {
        let case = Case::read(c, true);
        let nm = name(c);
        n += exact(
            "y",
            nm,
            &case.run(Op::FakeQuantLsq, &[]),
            &fs(&c["y"]),
            &mut fails,
        );
        n += exact(
            "dx",
            nm,
            &case.run(Op::FakeQuantLsqGradX, &case.ones()),
            &fs(&c["dx"]),
            &mut fails,
        );
        for (op, key) in [
            (Op::FakeQuantLsqGradScale, "dscale"),
            (Op::FakeQuantLsqGradZeroPoint, "dzero_point"),
        ] {
            let want = fs(&c[key]);
            let got = case.run(op, &case.ones());
            let elems = per_element(&case, op);
            for (ch, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let contribs: Vec<f32> = elems
                    .iter()
                    .filter(|(k, _)| *k == ch)
                    .map(|(_, v)| *v)
                    .collect();
                check_sum(&format!("{key}[{ch}]"), nm, g, w, &contribs, &mut fails);
                n += 1;
            }
            if got.len() != want.len() {
                fails.push(format!(
                    "{nm} {key}: {} channels, expected {}",
                    got.len(),
                    want.len()
                ));
            }
        }
    }
    report("learnable_per_channel", cases.len(), n, fails);
}

#[test]
fn every_section_is_covered() {
    let v = vectors();
    let known = [
        "meta",
        "per_tensor",
        "per_tensor_inverse_discriminators",
        "per_channel",
        "learnable_per_tensor",
        "learnable_per_channel",
    ];
    let keys: Vec<&String> = v.as_object().expect("a JSON object").keys().collect();
    for k in &keys {
        assert!(
            known.contains(&k.as_str()),
            "section '{k}' is not checked by this test"
        );
    }
    assert_eq!(v["meta"]["formulas_verified_bit_exact"], Value::Bool(true));
}
