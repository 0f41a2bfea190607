//! Shared helpers of the reader's integration tests: a small built-in corpus that uses
//! every form of the language, and the `.qir` files found under the repository's
//! `testdata/` folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Files that together use every syntactic form the printer can produce.
pub const BUILTIN: &[&str] = &[
    "// a model\n// second line\ngraph @m {\n  input %x: f32[B, 4]\n  input %label: i32[B]\n  param %w: f32[3, 4] = lecun_uniform\n  param %b: f32[3] = zeros\n  state %s: f32[3] = fill(0.5)\n  state %n: i64[] = [0]\n  const %eps: f32[] = [1e-5]\n  const %c: f64[2] = [-2.5e-7, 3e20]\n  const %u: f32[2, 2] = uniform(-1.0, 1.0)\n  const %v: f32[2] = normal(0.0, 0.01)\n\n  // the layer\n  %h = linear(%x, %w, %b) {act = relu} : f32[B, 3]\n  %0 = relu(%h) : f32[B, 3]\n  %1 = softmax(%0) {axis = 1} : f32[B, 3]\n  %loss = softmax_cross_entropy(%1, %label) : f32[]\n  %s1 = reduce_mean(%0) {axes = [0]} : f32[3]\n\n  output y = %1\n  output loss = %loss\n  loss %loss\n  update %s = %s1\n\n  // trailing\n}\n",
    "graph @q {\n  input %x: f32[B, 2, 4, 4]\n  const %w.scales: f32[2] = [0.5, 0.25]\n  const %w.zps: i32[2] = [0, 1]\n\n  %xq = quantize(%x) {rounding = half_even} : !quant.uniform<i8:f32, 0.1:-3>[B, 2, 4, 4]\n  %xd = dequantize(%xq) : f32[B, 2, 4, 4]\n  %a = quantize(%xd) {rounding = half_even} : !quant.uniform<i8<-127:127>:f32:1, {0.5, 0.25:2}>[B, 2, 4, 4]\n  %b = quantize(%xd) {rounding = half_even} : !quant.uniform<u8:f32:1, %w.scales:%w.zps>[B, 2, 4, 4]\n  %c = quantize(%xd) {rounding = half_away_from_zero} : !quant.uniform<i8:f32:1, %w.scales>[B, 2, 4, 4]\n  %d = dequantize(%c) : f32[B, 2, 4, 4]\n\n  output d = %d\n}\n",
    "graph @conv {\n  input %x: f32[B, 1, 8, 8]\n  param %w: f32[4, 1, 3, 3] = kaiming_normal\n  param %g: f32[4] = ones\n  param %be: f32[4] = zeros\n  state %m: f32[4] = zeros\n  state %v: f32[4] = ones\n  state %x.min: f32[] = [inf]\n  state %x.max: f32[] = [-inf]\n  const %x.scale: f32[] = [0.1]\n  const %x.zp: i32[] = [0]\n\n  %fq = fake_quant(%x, %x.scale, %x.zp) {qmin = -128, qmax = 127} : f32[B, 1, 8, 8]\n  %c = conv2d(%fq, %w) {stride = [1, 1], padding = [1, 1, 1, 1], groups = 1} : f32[B, 4, 8, 8]\n  %n = batch_norm(%c, %g, %be, %m, %v) {eps = 0.001} : f32[B, 4, 8, 8]\n  %p = max_pool2d(%n) {kernel = [2, 2]} : f32[B, 4, 4, 4]\n  %r = reshape(%p) {shape = [-1, 64]} : f32[B, 64]\n  %cat = concat(%r, %r) {axis = 1} : f32[B, 128]\n  %mn = observe_min(%x, %x.min) {averaging = 0.01} : f32[]\n  %t = transpose(%cat) {perm = [1, 0]} : f32[128, B]\n\n  output t = %t\n  update %x.min = %mn\n}\n",
];

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "qir") {
            out.push(p);
        }
    }
}

/// Every `.qir` file under `testdata/`, sorted by path.
pub fn testdata_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&repo_root().join("testdata"), &mut out);
    out
}

/// The built-in corpus followed by every `.qir` text under `testdata/`.
pub fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
    for p in testdata_files() {
        if let Ok(t) = std::fs::read_to_string(&p) {
            texts.push(t);
        }
    }
    texts
}
