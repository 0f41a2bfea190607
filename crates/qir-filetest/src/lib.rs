//! Run filetests: a `.qir` file whose leading `//` comments give the inputs of one run,
//! the outputs it must produce and how close they must be. One harness runs every file on
//! any executor of the `qir-exec` contract; an executor is correct when it passes them all.
//!
//! ```text
//! // run: relu clamps negatives to zero
//! // tolerance: exact
//! // input x: [-1.5, 0, 2]
//! // expect y: [0, 0, 2]
//! graph @relu {
//!   input %x: f32[3]
//!   %y = relu(%x) : f32[3]
//!   output y = %y
//! }
//! ```
//!
//! - `run:` describes the case (required, once);
//! - `tolerance:` is `exact` (equal values: bit-equal floats except that 0 equals -0, NaN
//!   equals NaN; integers compare as integers) or
//!   `abs=A rel=R` followed by the reason (`|got - expected| <= A + R * |expected|`);
//!   `tolerance NAME:` overrides it for one output;
//! - `input NAME: [v, ...]` gives an input's values, row-major, in its declared type (which
//!   must have fixed dimensions): floats, `nan`, `inf`, `-inf`, or integers for integer and
//!   quantized types (the stored integers);
//! - `expect NAME: [v, ...]` gives a graph output's expected values, row-major.
//!
//! Invariant: every graph input has exactly one `input` line and every `expect` names a
//! graph output; a file that breaks this is an error, not a skipped check.

use std::collections::HashMap;
use std::fmt::Write as _;

use qir::{Data, Graph, Tensor};
use qir_exec::{Executor, init_store};

/// How close an output must be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Equal as IEEE values (every bit of a nonzero float; 0 equals -0, NaN equals NaN),
    /// equal integers.
    Exact,
    /// `|got - expected| <= abs + rel * |expected|`; NaN only matches NaN, infinities must
    /// be equal.
    Close {
        /// Absolute part.
        abs: f64,
        /// Relative part.
        rel: f64,
    },
}

impl Tolerance {
    fn accepts(self, got: f64, want: f64) -> bool {
        if want.is_nan() || got.is_nan() {
            return want.is_nan() && got.is_nan();
        }
        match self {
            Tolerance::Exact => got == want,
            Tolerance::Close { abs, rel } => {
                if want.is_infinite() || got.is_infinite() {
                    return got == want;
                }
                (got - want).abs() <= abs + rel * want.abs()
            }
        }
    }
}

/// One value line: a name, its values and the line it is on (1-based).
#[derive(Clone, Debug, PartialEq)]
pub struct Values {
    /// Input or output name (without `%`).
    pub name: String,
    /// The values, row-major.
    pub values: Vec<f64>,
    /// Line of the directive.
    pub line: usize,
}

/// A parsed run file.
#[derive(Clone, Debug)]
pub struct RunFile {
    /// What the case checks.
    pub description: String,
    /// The default tolerance.
    pub tolerance: Tolerance,
    /// Tolerances of single outputs.
    pub overrides: HashMap<String, Tolerance>,
    /// Input values.
    pub inputs: Vec<Values>,
    /// Expected output values.
    pub expects: Vec<Values>,
    /// The graph, verified.
    pub graph: Graph,
}

fn parse_values(s: &str) -> Result<Vec<f64>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("values must be written [v, ...], found `{s}`"))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|v| {
            let v = v.trim();
            match v {
                "nan" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => v
                    .parse::<f64>()
                    .map_err(|_| format!("`{v}` is not a number")),
            }
        })
        .collect()
}

fn parse_tolerance(s: &str) -> Result<Tolerance, String> {
    let s = s.trim();
    if s == "exact" {
        return Ok(Tolerance::Exact);
    }
    let (mut abs, mut rel) = (None, None);
    for word in s.split_whitespace().take(2) {
        if let Some(v) = word.strip_prefix("abs=") {
            abs = v.parse::<f64>().ok();
        } else if let Some(v) = word.strip_prefix("rel=") {
            rel = v.parse::<f64>().ok();
        }
    }
    match (abs, rel) {
        (Some(abs), Some(rel)) if s.split_whitespace().count() > 2 => {
            Ok(Tolerance::Close { abs, rel })
        }
        (Some(_), Some(_)) => {
            Err("a tolerance other than exact must give its reason after abs=A rel=R".into())
        }
        _ => Err(format!(
            "tolerance must be `exact` or `abs=A rel=R reason`, found `{s}`"
        )),
    }
}

/// Parses a run file's directives and verifies its graph. Errors are `line: message`.
pub fn parse(text: &str) -> Result<RunFile, String> {
    let mut description = None;
    let mut tolerance = None;
    let mut overrides = HashMap::new();
    let mut inputs = Vec::new();
    let mut expects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        let Some(d) = line.trim_start().strip_prefix("//") else {
            continue;
        };
        let d = d.trim();
        let err = |m: String| format!("{ln}: {m}");
        if let Some(r) = d.strip_prefix("run:") {
            description = Some(r.trim().to_string());
        } else if let Some(r) = d.strip_prefix("tolerance:") {
            tolerance = Some(parse_tolerance(r).map_err(err)?);
        } else if let Some(r) = d.strip_prefix("tolerance ") {
            let (name, t) = r
                .split_once(':')
                .ok_or_else(|| err("expected `tolerance NAME: ...`".into()))?;
            overrides.insert(name.trim().to_string(), parse_tolerance(t).map_err(err)?);
        } else if let Some(r) = d
            .strip_prefix("input ")
            .or_else(|| d.strip_prefix("expect "))
        {
            let (name, v) = r
                .split_once(':')
                .ok_or_else(|| err("expected `NAME: [values]`".into()))?;
            let values = Values {
                name: name.trim().trim_start_matches('%').to_string(),
                values: parse_values(v).map_err(err)?,
                line: ln,
            };
            if d.starts_with("input") {
                inputs.push(values);
            } else {
                expects.push(values);
            }
        }
    }
    let description = description.ok_or("no `// run:` line")?;
    let tolerance = tolerance.ok_or("no `// tolerance:` line")?;
    let graph =
        qir_reader::parse_and_verify(text).map_err(|d| qir_reader::render(&d, "run file", text))?;
    if expects.is_empty() {
        return Err("no `// expect` line".into());
    }
    Ok(RunFile {
        description,
        tolerance,
        overrides,
        inputs,
        expects,
        graph,
    })
}

/// The inputs of a run file as tensors of the declared types.
pub fn input_tensors(f: &RunFile) -> Result<HashMap<String, Tensor>, String> {
    let g = &f.graph;
    let mut out = HashMap::new();
    for id in g.inputs() {
        let name = g.node(id).name.clone().unwrap_or_default();
        let ty = g.ty(id);
        let v = f
            .inputs
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| format!("input %{name} has no `// input {name}:` line"))?;
        let dims = ty
            .shape
            .as_fixed()
            .ok_or_else(|| format!("{}: input %{name} must have fixed dimensions", v.line))?;
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let n: usize = dims.iter().product();
        if v.values.len() != n {
            return Err(format!(
                "{}: input %{name} has {n} elements, the line gives {}",
                v.line,
                v.values.len()
            ));
        }
        let t = Tensor::new(dims, Data::from_f64(&ty.elem, &v.values))
            .ok_or_else(|| format!("{}: cannot build input %{name}", v.line))?;
        out.insert(name, t);
    }
    for v in &f.inputs {
        if !out.contains_key(&v.name) {
            return Err(format!("{}: the graph has no input %{}", v.line, v.name));
        }
    }
    Ok(out)
}

/// Runs `f` on `executor` and compares every expected output. The error lists every
/// mismatch as `line: NAME[i]: expected E, got G`.
pub fn run(f: &RunFile, executor: &dyn Executor) -> Result<(), String> {
    let inputs = input_tensors(f)?;
    let mut store = init_store(&f.graph, 0).map_err(|e| e.to_string())?;
    let mut prog = executor
        .prepare(&f.graph, &[])
        .map_err(|e| format!("prepare: {e}"))?;
    let out = prog
        .run(&mut store, &inputs)
        .map_err(|e| format!("run: {e}"))?;
    let mut errs = String::new();
    for e in &f.expects {
        let Some(t) = out.outputs.get(&e.name) else {
            let _ = writeln!(errs, "{}: the graph has no output `{}`", e.line, e.name);
            continue;
        };
        if t.data.len() != e.values.len() {
            let _ = writeln!(
                errs,
                "{}: {} has {} elements, expected {}",
                e.line,
                e.name,
                t.data.len(),
                e.values.len()
            );
            continue;
        }
        let tol = f.overrides.get(&e.name).copied().unwrap_or(f.tolerance);
        let mut shown = 0;
        for (i, &want) in e.values.iter().enumerate() {
            let got = t.data.get_f64(i);
            if !tol.accepts(got, want) {
                if shown < 8 {
                    let _ = writeln!(
                        errs,
                        "{}: {}[{i}]: expected {want:?}, got {got:?}",
                        e.line, e.name
                    );
                }
                shown += 1;
            }
        }
        if shown > 8 {
            let _ = writeln!(errs, "{}: {}: {} mismatches in all", e.line, e.name, shown);
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
