//! Robustness of the driver on broken input: every `.qir` under `testdata/` is mutated at
//! random (seeded, so every run tests the same few hundred mutants) and the built binary
//! `check`s each mutant. It must exit 0 (the mutant is still a valid model) or 1 with a
//! `FILE:LINE:COL: error:` line; never crash, exit 2 (internal error) or 101 (panic).

mod common;

use std::path::Path;

use common::{qatc_in, qir_files, rel, testdata};

/// How many mutants to test in all.
const MUTANTS: usize = 320;

/// A small deterministic generator (SplitMix64), so the mutants are the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Tokens and characters that make interesting damage in `.qir` text.
const PIECES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    "%",
    "@",
    "!",
    ":",
    ",",
    "=",
    "-",
    ".",
    "\"",
    "$",
    "\n",
    " ",
    "0",
    "1.5",
    "-1",
    "99999999999999999999999",
    "1e999",
    "nan",
    "inf",
    "B",
    "%x",
    "%0",
    "graph",
    "input",
    "param",
    "state",
    "const",
    "output",
    "loss",
    "update",
    "f32",
    "i8",
    "f32[",
    "!quant.uniform<",
    "!quant.uniform<i8:f32, 0.0>",
    "relu(",
    "conv2d",
    "{axis = 9}",
    "zeros",
    "fill(",
    "//",
    "é",
    "\u{0}",
    "\t",
];

fn char_boundaries(s: &str) -> Vec<usize> {
    s.char_indices().map(|(i, _)| i).chain([s.len()]).collect()
}

/// Applies one random edit to `s`.
fn mutate_once(rng: &mut Rng, s: &str) -> String {
    let bounds = char_boundaries(s);
    let at = |rng: &mut Rng| bounds[rng.below(bounds.len())];
    let lines: Vec<&str> = s.split_inclusive('\n').collect();
    match rng.below(8) {
        // truncate
        0 => s[..at(rng)].to_string(),
        // delete a character
        1 => {
            let i = rng.below(bounds.len().saturating_sub(1));
            match (bounds.get(i), bounds.get(i + 1)) {
                (Some(&a), Some(&b)) => format!("{}{}", &s[..a], &s[b..]),
                _ => s.to_string(),
            }
        }
        // insert a piece
        2 | 3 => {
            let i = at(rng);
            format!("{}{}{}", &s[..i], rng.pick(PIECES), &s[i..])
        }
        // replace a character by a piece
        4 => {
            let i = rng.below(bounds.len().saturating_sub(1));
            match (bounds.get(i), bounds.get(i + 1)) {
                (Some(&a), Some(&b)) => format!("{}{}{}", &s[..a], rng.pick(PIECES), &s[b..]),
                _ => s.to_string(),
            }
        }
        // delete a line
        5 if !lines.is_empty() => {
            let k = rng.below(lines.len());
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != k)
                .map(|(_, l)| *l)
                .collect()
        }
        // duplicate a line
        6 if !lines.is_empty() => {
            let k = rng.below(lines.len());
            let mut out = String::new();
            for (i, l) in lines.iter().enumerate() {
                out.push_str(l);
                if i == k {
                    out.push_str(l);
                }
            }
            out
        }
        // swap two lines
        _ if lines.len() > 1 => {
            let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
            let mut v: Vec<&str> = lines.clone();
            v.swap(a, b);
            v.concat()
        }
        _ => s.to_string(),
    }
}

fn mutants(rng: &mut Rng, src: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let edits = 1 + rng.below(3);
            (0..edits).fold(src.to_string(), |s, _| mutate_once(rng, &s))
        })
        .collect()
}

/// True if `text` has a line `NAME:LINE:COL: error:`.
fn has_located_error(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        let Some(rest) = l.strip_prefix(name).and_then(|r| r.strip_prefix(':')) else {
            return false;
        };
        let mut parts = rest.splitn(3, ':');
        let line = parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let col = parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        line && col && parts.next().is_some_and(|p| p.starts_with(" error: "))
    })
}

#[test]
fn check_survives_mutated_inputs() {
    let files = qir_files(&testdata());
    assert!(
        files.len() > 20,
        "expected the testdata corpus, found {} files",
        files.len()
    );
    let per_file = MUTANTS.div_ceil(files.len()).max(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut rng = Rng(0x5eed_0a7c);
    let (mut valid, mut invalid) = (0usize, 0usize);
    for path in &files {
        let src = std::fs::read_to_string(path).expect("testdata reads");
        for (k, m) in mutants(&mut rng, &src, per_file).into_iter().enumerate() {
            let name = format!(
                "mutant_{}_{k}.qir",
                path.file_stem()
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default()
            );
            std::fs::write(dir.path().join(&name), &m).expect("mutant writes");
            let run = qatc_in(dir.path(), &["check", &name], None);
            let origin = format!("mutant {k} of {}:\n{m}\n---\n{}", rel(path), run.all());
            match run.code {
                Some(0) => valid += 1,
                Some(1) => {
                    invalid += 1;
                    assert!(
                        has_located_error(&run.stderr, &name),
                        "no FILE:LINE:COL error for {origin}"
                    );
                }
                other => panic!("exit {other:?} (must be 0 or 1) for {origin}"),
            }
        }
    }
    let total = valid + invalid;
    assert!(total >= MUTANTS, "only {total} mutants ran");
    // Most random damage breaks a model; if it did not, the mutations test nothing.
    assert!(
        invalid * 2 > total,
        "only {invalid} of {total} mutants were rejected"
    );
}

#[test]
fn check_reads_mutants_from_stdin() {
    let src = std::fs::read_to_string(testdata().join("verify/ok/conv_blocks.qir")).expect("reads");
    let mut rng = Rng(7);
    for m in mutants(&mut rng, &src, 20) {
        let run = qatc_in(Path::new("."), &["check", "-"], Some(&m));
        match run.code {
            Some(0) => {}
            Some(1) => assert!(
                has_located_error(&run.stderr, "<stdin>"),
                "{m}\n---\n{}",
                run.all()
            ),
            other => panic!("exit {other:?} for\n{m}\n---\n{}", run.all()),
        }
    }
}

#[test]
fn located_error_lines_are_recognized() {
    assert!(has_located_error("a.qir:3:14: error: boom\n", "a.qir"));
    assert!(!has_located_error("a.qir: error: boom\n", "a.qir"));
    assert!(!has_located_error("b.qir:3:14: error: boom\n", "a.qir"));
    assert!(!has_located_error("a.qir:3:x: error: boom\n", "a.qir"));
}
