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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
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
