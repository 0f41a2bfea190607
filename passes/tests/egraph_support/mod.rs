//! Shared helpers of the e-graph tests: parse a small graph, run a rule set on it, show
//! its ops, and check with the reference interpreter that the rewrite kept the values.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use passes::egraph::{self, Limits, Report, Rewrite};
use qir::{Data, Dim, ElemType, Graph, Storage, Tensor};
use qir_interp::{Precision, RunOptions, init_store, run};

/// Parses and verifies `text`, panicking with the rendered diagnostics.
pub fn parse(text: &str) -> Graph {
    qir_reader::parse_and_verify(text)
        .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, "test.qir", text)))
}

/// A rule set run on a graph: the graph before and after, and the report.
pub struct Outcome {
    pub before: Graph,
    pub after: Graph,
    pub report: Report,
}

impl Outcome {
    /// The op lines of the rewritten graph.
    pub fn ops(&self) -> Vec<String> {
        ops(&self.after)
    }
    /// True if `rule` added something during the run.
    pub fn applied(&self, rule: &str) -> bool {
        self.report.applied.get(rule).is_some_and(|&n| n > 0)
    }
    /// Asserts the graph did not change (same text, `Changed::No`).
    pub fn assert_unchanged(&self) {
        assert_eq!(
            qir::print::print(&self.after),
            qir::print::print(&self.before),
            "the graph changed"
        );
        assert_eq!(self.report.changed, passes::Changed::No);
    }
}

/// Runs `rules` on the graph of `text` with the default limits.
pub fn run_rules(text: &str, rules: Vec<Rewrite>) -> Outcome {
    run_rules_with(text, rules, &Limits::default())
}

/// Runs `rules` on the graph of `text` within `limits`; the result must verify.
pub fn run_rules_with(text: &str, rules: Vec<Rewrite>, limits: &Limits) -> Outcome {
    let before = parse(text);
    let mut after = before.clone();
    let report = egraph::rewrite(&mut after, "test", &rules, limits)
        .unwrap_or_else(|e| panic!("rewrite failed: {e}"));
    if let Err(e) = qir::verify::verify(&after) {
        panic!(
            "the rewritten graph does not verify: {e}\n{}",
            qir::print::print(&after)
        );
    }
    assert_eq!(
        report.changed.changed(),
        qir::print::print(&after) != qir::print::print(&before),
        "Changed must say whether the text changed"
    );
    Outcome {
        before,
        after,
        report,
    }
}

/// The op lines of `g`, trimmed, in print order.
pub fn ops(g: &Graph) -> Vec<String> {
    let text = qir::print::print(g);
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('%'))
        .map(str::to_string)
        .collect()
}

/// A small deterministic generator (xorshift64*), enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
}

/// Random inputs for every input of `g` (symbolic dimensions are 3): floats in [-4, 4)
/// with some exact zeros and quantization-grid points, rank-1 integer inputs as labels in
/// [0, 2), i32 accumulators in [-3000, 3000], quantized data over their whole range.
pub fn random_inputs(g: &Graph, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = Rng::new(seed);
    let mut out = HashMap::new();
    for id in g.inputs() {
        let node = g.node(id);
        let shape: Vec<usize> = node
            .ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n as usize,
                Dim::Sym(_) => 3,
            })
            .collect();
        let n: usize = shape.iter().product();
        let data = match &node.ty.elem {
            ElemType::F32 => Data::F32(
                (0..n)
                    .map(|_| match rng.int(0, 9) {
                        0 => 0.0,
                        1 => rng.int(-20, 20) as f32 * 0.25,
                        _ => rng.uniform(-4.0, 4.0) as f32,
                    })
                    .collect(),
            ),
            ElemType::F64 => Data::F64((0..n).map(|_| rng.uniform(-4.0, 4.0)).collect()),
            // rank 1: class labels; otherwise accumulators
            ElemType::I32 if shape.len() == 1 => {
                Data::I32((0..n).map(|_| rng.int(0, 1) as i32).collect())
            }
            ElemType::I32 => Data::I32((0..n).map(|_| rng.int(-3000, 3000) as i32).collect()),
            ElemType::I64 => Data::I64((0..n).map(|_| rng.int(0, 1)).collect()),
            ElemType::I8 => Data::I8((0..n).map(|_| rng.int(-128, 127) as i8).collect()),
            ElemType::U8 => Data::U8((0..n).map(|_| rng.int(0, 255) as u8).collect()),
            ElemType::Bool => Data::Bool((0..n).map(|_| rng.int(0, 1) == 1).collect()),
            ElemType::Quant(q) => {
                let vals = (0..n).map(|_| rng.int(q.qmin, q.qmax));
                match q.storage {
                    Storage::I4 | Storage::I8 => Data::I8(vals.map(|v| v as i8).collect()),
                    Storage::U8 => Data::U8(vals.map(|v| v as u8).collect()),
                    Storage::I16 => Data::I16(vals.map(|v| v as i16).collect()),
                    Storage::I32 => Data::I32(vals.map(|v| v as i32).collect()),
                }
            }
        };
        let name = node.name.clone().unwrap_or_default();
        let t = Tensor::new(shape, data).unwrap_or_else(|| panic!("input %{name}"));
        out.insert(name, t);
    }
    out
}

/// Every output, the loss and every update value of `g` on `inputs`, by name, as f64.
pub fn evaluate(
    g: &Graph,
    seed: u64,
    inputs: &HashMap<String, Tensor>,
) -> BTreeMap<String, Vec<f64>> {
    let mut store = init_store(g, seed).unwrap_or_else(|e| panic!("store: {e}"));
    let opts = RunOptions {
        precision: Precision::F32,
        apply_updates: false,
    };
    let r = run(g, &mut store, inputs, &opts).unwrap_or_else(|e| panic!("run: {e}"));
    let mut values: BTreeMap<String, Vec<f64>> = r
        .outputs
        .iter()
        .map(|(k, t)| (format!("output {k}"), t.data.to_f64()))
        .collect();
    if let Some(l) = r.loss {
        values.insert("loss".into(), vec![l]);
    }
    for u in g.updates() {
        let target = g.node(u.target).name.clone().unwrap_or_default();
        let v = r
            .values
            .get(&u.value)
            .unwrap_or_else(|| panic!("no value for the update of %{target}"));
        values.insert(format!("update {target}"), v.data.to_f64());
    }
    values
}

/// How closely the rewritten graph must reproduce the original's values.
#[derive(Clone, Copy, Debug)]
pub enum Tolerance {
    /// Bit for bit (as f64 bits of the f32/integer values; `-0.0 == 0.0` is not enough).
    Exact,
    /// `|a - b| <= rel * max(|b|, 1)` per element.
    Relative(f64),
}

/// Runs `before` and `after` on the same random inputs and parameters (three seeds) and
/// asserts their outputs, loss and updates agree within `tol`.
pub fn assert_equivalent(before: &Graph, after: &Graph, tol: Tolerance) {
    for seed in [1u64, 2, 3] {
        let inputs = random_inputs(before, seed);
        let a = evaluate(before, seed, &inputs);
        let b = evaluate(after, seed, &inputs);
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "the rewritten graph has different results"
        );
        for (k, va) in &a {
            let vb = &b[k];
            assert_eq!(va.len(), vb.len(), "{k}: sizes differ");
            for (i, (&x, &y)) in va.iter().zip(vb).enumerate() {
                let ok = match tol {
                    Tolerance::Exact => x.to_bits() == y.to_bits(),
                    Tolerance::Relative(r) => (x - y).abs() <= r * x.abs().max(1.0),
                };
                assert!(ok, "{k}[{i}]: before {x}, after {y} (seed {seed}, {tol:?})");
            }
        }
    }
}

/// The rules of `rules` named in `names` (to exercise one rule alone).
pub fn only(rules: Vec<Rewrite>, names: &[&str]) -> Vec<Rewrite> {
    let picked: Vec<Rewrite> = rules
        .into_iter()
        .filter(|r| names.contains(&r.name.as_str()))
        .collect();
    assert_eq!(picked.len(), names.len(), "unknown rule among {names:?}");
    picked
}
