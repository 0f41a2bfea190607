//! Helpers shared by the grad tests: a seeded random source, f64 retyping of graphs, a
//! small builder for one-op test graphs, the finite-difference gradient check and the
//! test-model loader.
//!
//! The finite-difference check runs everything in f64 with the reference interpreter:
//! the analytic gradient is the `<param>.grad` output of `grad{optimizer=none}`, the
//! numeric one the central difference `(L(p + h) - L(p - h)) / 2h` of the forward graph
//! (in training mode when batch-norm trains), with `h = 1e-6`. They must agree within
//! `|a - n| <= 1e-6 + 1e-5 * max(|a|, |n|)`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use passes::grad::{BnMode, GradOptions, Optimizer, grad, train_mode};
use qir::{Data, Dim, ElemType, Graph, Init, Inst, NodeId, Op, Shape, Tensor, Type};
use qir_interp::{Precision, RunOptions, Store, fill_store, init_store, run};

/// The finite-difference step.
pub const H: f64 = 1e-6;
/// Absolute part of the tolerance.
pub const ABS_TOL: f64 = 1e-6;
/// Relative part of the tolerance.
pub const REL_TOL: f64 = 1e-5;

/// SplitMix64: a tiny seeded generator, so the tests need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Reads and verifies `testdata/models/<name>.qir`.
pub fn model(name: &str) -> Graph {
    let path = repo_root()
        .join("testdata/models")
        .join(format!("{name}.qir"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    qir_reader::parse_and_verify(&text).unwrap_or_else(|d| {
        panic!(
            "{}",
            qir_reader::render(&d, &path.display().to_string(), &text)
        )
    })
}

/// The names of the test models in `testdata/models/`, sorted.
pub fn model_names() -> Vec<String> {
    let dir = repo_root().join("testdata/models");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "qir").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no models in {}", dir.display());
    names
}

/// Retypes every f32 value of `g` to f64 (so that perturbations of 1e-6 are exact enough).
pub fn to_f64(g: &mut Graph) {
    for id in g.node_ids() {
        let node = g.node_mut(id);
        if node.ty.elem == ElemType::F32 {
            node.ty.elem = ElemType::F64;
        }
    }
    qir::verify::verify(g).unwrap_or_else(|e| panic!("f64 copy does not verify: {e}"));
}

pub fn f64_tensor(shape: &[usize], v: Vec<f64>) -> Tensor {
    Tensor::new(shape.to_vec(), Data::F64(v)).expect("shape matches data")
}

pub fn i32_tensor(shape: &[usize], v: Vec<i32>) -> Tensor {
    Tensor::new(shape.to_vec(), Data::I32(v)).expect("shape matches data")
}

/// The concrete shape of `ty` with symbolic dimensions bound by `syms`.
pub fn concrete(ty: &Type, syms: &HashMap<String, u64>) -> Vec<usize> {
    ty.shape
        .bind(&|s| syms.get(s).copied())
        .unwrap_or_else(|| panic!("unbound dimension in {ty}"))
        .into_iter()
        .map(|d| d as usize)
        .collect()
}

/// Builds a small f64 test graph around one op; params get random dense values.
pub struct Case {
    pub g: Graph,
    pub rng: Rng,
    pub inputs: HashMap<String, Tensor>,
    pub syms: HashMap<String, u64>,
}

impl Case {
    pub fn new(name: &str, seed: u64) -> Case {
        Case {
            g: Graph::new(name),
            rng: Rng::new(seed),
            inputs: HashMap::new(),
            syms: HashMap::from([("B".to_string(), 3)]),
        }
    }

    fn ty(dims: &[u64]) -> Type {
        Type::new(ElemType::F64, Shape::fixed(dims))
    }

    /// A param with values uniform in [lo, hi).
    pub fn param(&mut self, name: &str, dims: &[u64], lo: f64, hi: f64) -> NodeId {
        let n = dims.iter().product::<u64>() as usize;
        let v = self.rng.vec(n, lo, hi);
        self.g
            .add_param(name, Case::ty(dims), Init::Dense(v))
            .unwrap()
    }

    /// A param with the given values.
    pub fn param_values(&mut self, name: &str, dims: &[u64], v: Vec<f64>) -> NodeId {
        self.g
            .add_param(name, Case::ty(dims), Init::Dense(v))
            .unwrap()
    }

    /// A const with values uniform in [lo, hi).
    pub fn constant(&mut self, name: &str, dims: &[u64], lo: f64, hi: f64) -> NodeId {
        let n = dims.iter().product::<u64>() as usize;
        let v = self.rng.vec(n, lo, hi);
        self.g
            .add_const(name, Case::ty(dims), Init::Dense(v))
            .unwrap()
    }

    /// A state value with the given values.
    pub fn state(&mut self, name: &str, dims: &[u64], v: Vec<f64>) -> NodeId {
        self.g
            .add_state(name, Case::ty(dims), Init::Dense(v))
            .unwrap()
    }

    /// An f64 input (dims may be symbolic) fed with values uniform in [lo, hi).
    pub fn input(&mut self, name: &str, dims: &[Dim], lo: f64, hi: f64) -> NodeId {
        let ty = Type::new(ElemType::F64, Shape(dims.to_vec()));
        let shape = concrete(&ty, &self.syms);
        let n = shape.iter().product();
        let t = f64_tensor(&shape, self.rng.vec(n, lo, hi));
        self.inputs.insert(name.to_string(), t);
        self.g.add_input(name, ty).unwrap()
    }

    /// An i32 label input `[B]` with values in 0..classes.
    pub fn labels(&mut self, name: &str, classes: usize) -> NodeId {
        let b = self.syms["B"] as usize;
        let v = (0..b).map(|_| self.rng.below(classes) as i32).collect();
        self.inputs.insert(name.to_string(), i32_tensor(&[b], v));
        let ty = Type::new(ElemType::I32, Shape(vec![Dim::from("B")]));
        self.g.add_input(name, ty).unwrap()
    }

    /// Adds an op with attributes.
    pub fn op(&mut self, op: Op, operands: &[NodeId], attrs: &[(&str, qir::Attr)]) -> NodeId {
        let inst = qir::shape::inst_with(op, attrs).unwrap_or_else(|e| panic!("{op}: {e}"));
        self.g
            .add_op(inst, operands, None)
            .unwrap_or_else(|e| panic!("{op}: {e}"))
    }

    /// Finishes with the loss `sum(y * r)` for a random input `r` shaped like `y`, so that
    /// every element of `y` gets a different upstream gradient.
    pub fn finish(mut self, y: NodeId) -> Case {
        let ty = self.g.ty(y).clone();
        let r = self.input("r", &ty.shape.0.clone(), -1.0, 1.0);
        let p = self
            .g
            .add_op(Inst::new(Op::Mul), &[y, r], Some("weighted"))
            .unwrap();
        let loss = if ty.rank() == 0 {
            p
        } else {
            let axes: Vec<i64> = (0..ty.rank() as i64).collect();
            let i = Inst::new(Op::ReduceSum).with("axes", axes).unwrap();
            self.g.add_op(i, &[p], Some("loss")).unwrap()
        };
        self.g.set_loss(Some(loss));
        qir::verify::verify(&self.g).unwrap_or_else(|e| panic!("test graph: {e}"));
        self
    }
}

fn f64_opts() -> RunOptions {
    RunOptions {
        precision: Precision::F64,
        apply_updates: false,
    }
}

/// The analytic gradients of every param of `g`: the outputs of `grad{optimizer=none}`
/// run in f64, by param name. Also returns the training-step graph.
pub fn analytic(
    g: &Graph,
    store: &Store,
    inputs: &HashMap<String, Tensor>,
    bn: BnMode,
) -> (Graph, BTreeMap<String, Vec<f64>>) {
    let opts = GradOptions {
        optimizer: Optimizer::None,
        bn,
        ..GradOptions::default()
    };
    let step = grad(g, &opts).unwrap_or_else(|e| panic!("grad: {e}"));
    // The step's own constants and state (the seed, optimizer state) join the store.
    let mut s = store.clone();
    fill_store(&step, &mut s, 0).unwrap_or_else(|e| panic!("fill_store: {e}"));
    let r = run(&step, &mut s, inputs, &f64_opts())
        .unwrap_or_else(|e| panic!("running the training step: {e}"));
    let mut out = BTreeMap::new();
    for p in g.params() {
        let name = g.node(p).name.clone().unwrap_or_default();
        if let Some(t) = r.outputs.get(&format!("{name}.grad")) {
            assert_eq!(
                t.shape,
                concrete(g.ty(p), &HashMap::new()),
                "gradient of %{name} has the wrong shape"
            );
            out.insert(name, t.data.to_f64());
        }
    }
    (step, out)
}

/// The loss of `fwd` in f64.
pub fn loss(fwd: &Graph, store: &mut Store, inputs: &HashMap<String, Tensor>) -> f64 {
    run(fwd, store, inputs, &f64_opts())
        .unwrap_or_else(|e| panic!("running the forward graph: {e}"))
        .loss
        .expect("the graph has a loss")
}

/// What a finite-difference check compared.
#[derive(Debug, Default)]
pub struct FdReport {
    /// Elements compared.
    pub checked: usize,
    /// Largest |a - n| seen.
    pub max_abs_err: f64,
    /// Largest |a - n| / max(|a|, |n|) seen where max(|a|, |n|) > 1e-3.
    pub max_rel_err: f64,
    /// The params that had a gradient, sorted.
    pub params: Vec<String>,
}

/// Compares analytic and numeric gradients of every param that gets a gradient; checks at
/// most `limit` randomly chosen elements per param (all when `None`). Panics listing the
/// first mismatches.
pub fn fd_check(
    g: &Graph,
    store: &Store,
    inputs: &HashMap<String, Tensor>,
    bn: BnMode,
    limit: Option<usize>,
    rng: &mut Rng,
) -> FdReport {
    let (_, grads) = analytic(g, store, inputs, bn);
    let mut fwd = g.clone();
    if bn == BnMode::Train {
        train_mode(&mut fwd, 0.1).unwrap();
    }
    let mut work = store.clone();
    let mut report = FdReport {
        params: grads.keys().cloned().collect(),
        ..FdReport::default()
    };
    let mut bad = Vec::new();
    for (name, a) in &grads {
        let orig = store
            .get(name)
            .unwrap_or_else(|| panic!("%{name} is not in the store"))
            .clone();
        let base = orig.data.to_f64();
        let mut idx: Vec<usize> = (0..base.len()).collect();
        if let Some(k) = limit
            && k < idx.len()
        {
            rng.shuffle(&mut idx);
            idx.truncate(k);
            idx.sort_unstable();
        }
        for i in idx {
            let mut at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                work.insert(name, f64_tensor(&orig.shape, v));
                loss(&fwd, &mut work, inputs)
            };
            let n = (at(H) - at(-H)) / (2.0 * H);
            let a = a[i];
            let err = (a - n).abs();
            let scale = a.abs().max(n.abs());
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(err);
            if scale > 1e-3 {
                report.max_rel_err = report.max_rel_err.max(err / scale);
            }
            if err > ABS_TOL + REL_TOL * scale {
                bad.push(format!("%{name}[{i}]: analytic {a:e}, numeric {n:e}"));
            }
        }
        work.insert(name, orig);
    }
    assert!(
        bad.is_empty(),
        "{} of {} gradient elements differ from finite differences:\n{}",
        bad.len(),
        report.checked,
        bad.iter().take(12).cloned().collect::<Vec<_>>().join("\n")
    );
    report
}

/// Runs the full check on a one-op case and asserts which params got gradients.
pub fn check_case(case: &Case, expect_params: &[&str]) -> FdReport {
    let store = init_store(&case.g, 7).unwrap_or_else(|e| panic!("init_store: {e}"));
    let mut rng = Rng::new(11);
    let report = fd_check(&case.g, &store, &case.inputs, BnMode::Train, None, &mut rng);
    let mut want: Vec<String> = expect_params.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(report.params, want, "params with gradients");
    assert!(report.checked > 0);
    println!(
        "{}: {} elements, max |a - n| = {:.2e}, max relative = {:.2e}",
        case.g.name, report.checked, report.max_abs_err, report.max_rel_err
    );
    report
}

/// The ops of `g`, in node order.
pub fn ops(g: &Graph) -> Vec<Op> {
    g.node_ids()
        .into_iter()
        .filter_map(|id| g.node(id).op())
        .collect()
}
