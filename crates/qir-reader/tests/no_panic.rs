//! No input makes the reader panic: random bytes, random ASCII, and random mutations (byte
//! flips, deletions, truncations, splices, line swaps) of the built-in corpus and of every
//! `.qir` file under `testdata/`. Each result is either a graph, whose canonical text reads
//! back to itself, or diagnostics that all render with a `FILE:LINE:COL: error:` line.

mod common;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Runs the whole reader on `text` and checks the contract of its result.
fn check(text: &str) -> Result<(), TestCaseError> {
    match qir_reader::parse_and_verify(text) {
        Ok(g) => {
            let printed = qir::print::print(&g);
            let again = qir_reader::parse_and_verify(&printed).map_err(|d| {
                TestCaseError::fail(format!(
                    "canonical text of an accepted input does not read back:\n{}\n{printed}",
                    qir_reader::render(&d, "printed.qir", &printed)
                ))
            })?;
            prop_assert_eq!(qir::print::print(&again), printed);
        }
        Err(diags) => {
            prop_assert!(!diags.is_empty(), "an error without diagnostics");
            // the snippet lines are indented and notes start with "note:", so the lines
            // that start with the file name are exactly the diagnostics' first lines
            let rendered = qir_reader::render(&diags, "m.qir", text);
            let firsts: Vec<&str> = rendered
                .lines()
                .filter(|l| l.starts_with("m.qir"))
                .collect();
            prop_assert_eq!(firsts.len(), diags.len(), "{}", rendered);
            for first in firsts {
                let rest = first.strip_prefix("m.qir:").unwrap_or("");
                let mut parts = rest.splitn(3, ':');
                let line = parts.next().unwrap_or("");
                let col = parts.next().unwrap_or("");
                let tail = parts.next().unwrap_or("");
                prop_assert!(
                    !line.is_empty()
                        && line.bytes().all(|b| b.is_ascii_digit())
                        && !col.is_empty()
                        && col.bytes().all(|b| b.is_ascii_digit())
                        && tail.starts_with(" error: "),
                    "first line is not FILE:LINE:COL: error: ...: {first:?}"
                );
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the byte at a position with another.
    Flip(usize, u8),
    /// Delete a range.
    Delete(usize, usize),
    /// Keep a prefix.
    Truncate(usize),
    /// Insert a slice of corpus file `src` at a position.
    Splice {
        at: usize,
        src: usize,
        from: usize,
        len: usize,
    },
    /// Swap two lines.
    SwapLines(usize, usize),
    /// Duplicate a line.
    DupLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>();
    prop_oneof![
        3 => (pos, any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        2 => (pos, 1usize..40).prop_map(|(p, n)| Mutation::Delete(p, n)),
        1 => pos.prop_map(Mutation::Truncate),
        2 => (pos, any::<usize>(), pos, 1usize..60)
            .prop_map(|(at, src, from, len)| Mutation::Splice { at, src, from, len }),
        1 => (pos, pos).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => pos.prop_map(Mutation::DupLine),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation, corpus: &[String]) {
    let n = bytes.len();
    match *m {
        Mutation::Flip(p, b) if n > 0 => bytes[p % n] = b,
        Mutation::Delete(p, len) if n > 0 => {
            let start = p % n;
            let end = (start + len).min(n);
            bytes.drain(start..end);
        }
        Mutation::Truncate(p) => bytes.truncate(p % (n + 1)),
        Mutation::Splice { at, src, from, len } => {
            let s = corpus[src % corpus.len()].as_bytes();
            if !s.is_empty() {
                let from = from % s.len();
                let end = (from + len).min(s.len());
                let at = at % (n + 1);
                bytes.splice(at..at, s[from..end].iter().copied());
            }
        }
        Mutation::SwapLines(a, b) | Mutation::DupLine(a @ b) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let mut lines: Vec<&str> = text.split('\n').collect();
            let k = lines.len();
            let (a, b) = (a % k, b % k);
            if matches!(m, Mutation::DupLine(_)) {
                let l = lines[a];
                lines.insert(a, l);
            } else {
                lines.swap(a, b);
            }
            *bytes = lines.join("\n").into_bytes();
        }
        Mutation::Flip(..) | Mutation::Delete(..) => {}
    }
}

/// Tokens and fragments of the language, for random token sequences.
const WORDS: &[&str] = &[
    "graph",
    "@g",
    "{",
    "}",
    "input",
    "param",
    "state",
    "const",
    "output",
    "loss",
    "update",
    "%x",
    "%0",
    "%y",
    "=",
    ":",
    ",",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    "f32",
    "i8",
    "B",
    "4",
    "-1",
    "0.5",
    "relu",
    "linear",
    "zeros",
    "!quant.uniform",
    "\n",
    "// c\n",
    "inf",
    "nan",
    "-inf",
    "true",
    "concat",
    "axis",
];

/// At least `n` cases; `PROPTEST_CASES` raises the count for a deeper run.
fn cases(n: u32) -> u32 {
    ProptestConfig::default().cases.max(n)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(512),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn random_ascii_does_not_panic(text in "[ -~\n\t]{0,400}") {
        check(&text)?;
    }

    #[test]
    fn random_token_soup_does_not_panic(
        words in proptest::collection::vec(proptest::sample::select(WORDS), 0..80)
    ) {
        check(&words.join(" "))?;
    }

    #[test]
    fn mutated_corpus_does_not_panic(
        file in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let corpus = common::corpus();
        let mut bytes = corpus[file % corpus.len()].clone().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m, &corpus);
        }
        check(&String::from_utf8_lossy(&bytes))?;
    }
}

/// Text of one random operand type: a random element type (quantized ones included) and
/// shape with extreme, zero and symbolic dimensions.
fn operand_type() -> impl Strategy<Value = String> {
    let dim = prop_oneof![
        4 => (1u64..5).prop_map(|d| d.to_string()),
        1 => Just("0".to_string()),
        1 => Just("B".to_string()),
        1 => Just(u64::MAX.to_string()),
        1 => Just((1u64 << 32).to_string()),
    ];
    let elem = prop_oneof![
        6 => Just("f32"),
        1 => Just("f64"),
        2 => Just("i32"),
        1 => Just("i8"),
        1 => Just("u8"),
        1 => Just("i64"),
        1 => Just("bool"),
        2 => Just("!quant.uniform<i8:f32, 0.5:1>"),
        1 => Just("!quant.uniform<u8<0:15>:f32:1, {0.5, 0.25:3}>"),
        1 => Just("!quant.uniform<i8:f32:0, %s>"),
        1 => Just("!quant.uniform<i32:f32, 1e-30>"),
    ];
    (elem, proptest::collection::vec(dim, 0..5))
        .prop_map(|(e, dims)| format!("{e}[{}]", dims.join(", ")))
}

/// A random value for an attribute of the given kind, or of another kind.
fn attr_value(kind: qir::AttrKind) -> BoxedStrategy<String> {
    let int = prop_oneof![
        4 => (-3i64..5).prop_map(|i| i.to_string()),
        1 => Just(i64::MIN.to_string()),
        1 => Just(i64::MAX.to_string()),
        1 => Just((1i64 << 32).to_string()),
    ];
    match kind {
        qir::AttrKind::Int => int.boxed(),
        qir::AttrKind::Float => prop_oneof![
            Just("0.5".to_string()),
            Just("-1.0".to_string()),
            Just("0.0".to_string()),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("1e300".to_string()),
        ]
        .boxed(),
        qir::AttrKind::Bool => {
            prop_oneof![Just("true".to_string()), Just("false".to_string())].boxed()
        }
        qir::AttrKind::Ints | qir::AttrKind::Floats => proptest::collection::vec(int, 0..6)
            .prop_map(|v| format!("[{}]", v.join(", ")))
            .boxed(),
        qir::AttrKind::Enum(names) => proptest::sample::select(names.to_vec())
            .prop_map(str::to_string)
            .boxed(),
    }
}

/// One op of the table applied to random operands with random attributes, with and
/// without a written result type: shape inference and the verifier must answer, not panic.
fn op_statement() -> impl Strategy<Value = String> {
    proptest::sample::select(qir::Op::ALL.to_vec()).prop_flat_map(|op| {
        let info = op.info();
        let (min, max) = info.arity();
        let n = min..=max.unwrap_or(min + 3).min(min + 3);
        let attrs: Vec<BoxedStrategy<Option<String>>> = info
            .attrs
            .iter()
            .map(|a| {
                let name = a.name;
                proptest::option::weighted(0.7, attr_value(a.kind))
                    .prop_map(move |v| v.map(|v| format!("{name} = {v}")))
                    .boxed()
            })
            .collect();
        (
            proptest::collection::vec(operand_type(), n),
            attrs,
            proptest::option::of(operand_type()),
        )
            .prop_map(move |(operands, attrs, written)| {
                let mut text = String::from("graph @m {\n  const %s: f32[2] = [0.5, 0.25]\n");
                for (i, t) in operands.iter().enumerate() {
                    text.push_str(&format!("  input %a{i}: {t}\n"));
                }
                let names: Vec<String> = (0..operands.len()).map(|i| format!("%a{i}")).collect();
                let attrs: Vec<String> = attrs.into_iter().flatten().collect();
                text.push_str(&format!("  %y = {}({})", op.mnemonic(), names.join(", ")));
                if !attrs.is_empty() {
                    text.push_str(&format!(" {{{}}}", attrs.join(", ")));
                }
                if let Some(t) = written {
                    text.push_str(&format!(" : {t}"));
                }
                text.push_str("\n  output y = %y\n}\n");
                text
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(2048),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_op_statements_do_not_panic(text in op_statement()) {
        check(&text)?;
    }
}

#[test]
fn builtin_corpus_verifies() {
    for (i, text) in common::BUILTIN.iter().enumerate() {
        match qir_reader::parse_and_verify(text) {
            Ok(_) => {}
            Err(d) => panic!(
                "built-in file {i}:\n{}",
                qir_reader::render(&d, "builtin.qir", text)
            ),
        }
    }
}

#[test]
fn every_testdata_file_reads_without_panic() {
    for p in common::testdata_files() {
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if let Err(e) = check(&text) {
            panic!("{}: {e}", p.display());
        }
    }
}

/// Sizes near the integer limits, found by hand and by the fuzzer: each gives an error or a
/// graph, never an arithmetic overflow.
#[test]
fn extreme_sizes_give_errors_not_panics() {
    let big = u64::MAX;
    let imax = i64::MAX;
    let cases = [
        (
            format!("  input %x: f32[{big}]\n  %y = concat(%x, %x) {{axis = 0}}\n"),
            Some("%y: 'concat' the concatenated dimension 0 is too large"),
        ),
        (
            format!("  input %x: f32[2, {big}]\n  %y = reshape(%x) {{shape = [-1]}}\n"),
            Some("%y: 'reshape' the input has too many elements"),
        ),
        (
            format!(
                "  input %x: f32[1, 1, {big}, {big}]\n  %y = avg_pool2d_grad(%x) {{kernel = [2, 2], input_size = [{big}, 1]}}\n"
            ),
            Some("attribute 'input_size': integer 18446744073709551615 does not fit in i64"),
        ),
        (
            format!(
                "  input %x: f32[1, 1, {big}, {big}]\n  %y = max_pool2d(%x) {{kernel = [{imax}, {imax}], stride = [{imax}, 1]}}\n"
            ),
            None,
        ),
        (
            format!(
                "  input %x: f32[1, {big}, 1, 1]\n  param %w: f32[{big}, 1, 1, 1] = zeros\n  %y = conv2d(%x, %w) {{groups = {imax}, dilation = [{imax}, {imax}], padding = [{imax}, {imax}, {imax}, {imax}]}}\n"
            ),
            None,
        ),
        (
            format!(
                "  input %x: f32[4]\n  %y = softmax(%x) {{axis = {}}}\n",
                i64::MIN
            ),
            None,
        ),
        (format!("  const %c: f32[{big}, 2] = [1.0]\n"), None),
    ];
    for (stmts, expected) in cases {
        let text = format!("graph @m {{\n{stmts}}}\n");
        if let Err(e) = check(&text) {
            panic!("{e}");
        }
        if let Some(msg) = expected {
            let d = qir_reader::parse_and_verify(&text).expect_err("an error");
            assert_eq!(d[0].message, msg, "{text}");
        }
    }
}
