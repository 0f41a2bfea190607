//! The generated op reference of the language manual (`docs/qir.md`): one entry per op of
//! `qir::Op::ALL`, built only from the op table (mnemonic, class, operands, attributes with
//! kinds and defaults, doc summary, shape rule, example).
//!
//! Invariant: `docs/qir.md` holds exactly [`op_reference`] between [`BEGIN_MARKER`] and
//! [`END_MARKER`]; a test checks it and rewrites it when `QATC_BLESS=1` is set.

use std::fmt::Write as _;

use qir::Op;
use qir::attr::AttrDefault;
use qir::float::fmt_f64;

/// The line that opens the generated section of `docs/qir.md`.
pub const BEGIN_MARKER: &str =
    "<!-- BEGIN GENERATED OP REFERENCE (regenerate: QATC_BLESS=1 cargo test -p qir-reader) -->";
/// The line that closes the generated section of `docs/qir.md`.
pub const END_MARKER: &str = "<!-- END GENERATED OP REFERENCE -->";

/// How an attribute's default reads in the reference.
pub fn describe_default(d: AttrDefault) -> String {
    match d {
        AttrDefault::Required => "required".into(),
        AttrDefault::Optional => "absent".into(),
        AttrDefault::Int(v) => format!("`{v}`"),
        AttrDefault::Float(v) => format!("`{}`", fmt_f64(v)),
        AttrDefault::Bool(v) => format!("`{v}`"),
        AttrDefault::Ints(v) => {
            let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            format!("`[{}]`", items.join(", "))
        }
        AttrDefault::Enum(v) => format!("`{v}`"),
    }
}

/// The description of an op: its doc lines before the `shape:` line, joined.
pub fn description(op: Op) -> String {
    let lines: Vec<&str> = op
        .info()
        .doc
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("shape:") && !l.starts_with("example:"))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

/// The first sentence of an op's description (the whole doc summary may span lines).
pub fn summary(op: Op) -> String {
    let d = description(op);
    match d.find(". ") {
        Some(i) => d[..=i].to_string(),
        None => d,
    }
}

/// The markdown op reference (without the markers).
pub fn op_reference() -> String {
    let mut s = String::new();
    s.push_str("| op | class | operands | summary |\n|---|---|---|---|\n");
    for &op in Op::ALL {
        let info = op.info();
        let _ = writeln!(
            s,
            "| [`{m}`](#op-{m}) | {} | `{}` | {} |",
            info.class.name(),
            info.operands,
            summary(op).replace('|', "\\|"),
            m = info.mnemonic,
        );
    }
    let mut class = None;
    for &op in Op::ALL {
        let info = op.info();
        if class != Some(info.class) {
            class = Some(info.class);
            let _ = write!(s, "\n### {} ops\n", info.class.name());
        }
        let _ = write!(
            s,
            "\n<a id=\"op-{m}\"></a>\n#### `{m}`\n\n{}\n\n",
            description(op),
            m = info.mnemonic
        );
        let _ = writeln!(s, "- class: {}", info.class.name());
        let _ = writeln!(s, "- operands: `{}`", info.operands);
        if info.attrs.is_empty() {
            s.push_str("- attributes: none\n");
        } else {
            s.push_str("- attributes:\n");
            for a in info.attrs {
                let _ = writeln!(
                    s,
                    "  - `{}`: {}, default {}",
                    a.name,
                    a.kind.describe(),
                    describe_default(a.default)
                );
            }
        }
        let _ = writeln!(s, "- shape: `{}`", info.shape_rule());
        if op.result_type_is_written() {
            s.push_str(
                "- the result type must be written (it carries the quantization parameters)\n",
            );
        }
        let _ = write!(s, "\n```qir\n{}\n```\n", info.example());
    }
    s
}

/// `doc` with its generated section replaced by the current [`op_reference`], or `None`
/// when a marker is missing.
pub fn update_doc(doc: &str) -> Option<String> {
    let (head, rest) = doc.split_once(BEGIN_MARKER)?;
    let (_, tail) = rest.split_once(END_MARKER)?;
    Some(format!(
        "{head}{BEGIN_MARKER}\n{}{END_MARKER}{tail}",
        op_reference()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn doc_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/qir.md")
    }

    #[test]
    fn docs_op_reference_is_up_to_date() {
        let path = doc_path();
        let doc = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let updated = update_doc(&doc).unwrap_or_else(|| {
            panic!(
                "{} lacks the markers {BEGIN_MARKER:?} / {END_MARKER:?}",
                path.display()
            )
        });
        if updated == doc {
            return;
        }
        if std::env::var("QATC_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, updated)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        } else {
            panic!(
                "the op reference in docs/qir.md is out of date with the op table; \
                 regenerate it with `QATC_BLESS=1 cargo test -p qir-reader docs_op_reference`"
            );
        }
    }

    #[test]
    fn every_op_example_parses_as_an_op_statement() {
        for &op in Op::ALL {
            let example = op.info().example();
            match crate::parse_op_statement(example) {
                Ok(parsed) => assert_eq!(parsed, op, "example of '{op}' uses another op"),
                Err(diags) => panic!(
                    "example of '{op}' does not parse:\n{}",
                    crate::render(&diags, "example", example)
                ),
            }
        }
    }

    /// Every ```qir block of the manual reads: whole files must verify and be canonical,
    /// other blocks are op statements, one per line.
    #[test]
    fn docs_examples_read() {
        let path = doc_path();
        let doc = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut blocks = 0;
        for block in doc.split("```qir\n").skip(1) {
            let Some((code, _)) = block.split_once("```") else {
                panic!("unterminated ```qir block in docs/qir.md");
            };
            blocks += 1;
            if code.starts_with("//") || code.starts_with("graph") {
                match crate::parse_and_verify(code) {
                    Ok(g) => assert_eq!(qir::print::print(&g), code, "example is not canonical"),
                    Err(d) => panic!("{}", crate::render(&d, "docs/qir.md example", code)),
                }
            } else {
                for line in code.lines() {
                    if let Err(d) = crate::parse_op_statement(line) {
                        panic!("{}", crate::render(&d, "docs/qir.md example", line));
                    }
                }
            }
        }
        assert!(
            blocks > Op::ALL.len(),
            "only {blocks} qir blocks in docs/qir.md"
        );
    }

    #[test]
    fn reference_lists_every_op_and_attribute() {
        let r = op_reference();
        for &op in Op::ALL {
            let info = op.info();
            assert!(r.contains(&format!("#### `{}`", info.mnemonic)));
            assert!(r.contains(info.example()));
            for a in info.attrs {
                assert!(r.contains(&format!("`{}`: {}", a.name, a.kind.describe())));
            }
        }
        assert!(r.contains("  - `padding`: integer list, default `[0, 0, 0, 0]`\n"));
        assert!(r.contains("  - `eps`: float, default `1e-5`\n"));
    }
}
