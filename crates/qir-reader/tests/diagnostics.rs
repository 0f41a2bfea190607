//! Every kind of diagnostic the reader produces, with the exact rendered text for a few:
//! lexical errors, each lalrpop error kind that the grammar can reach, name-resolution and
//! lowering errors (collected, not stopping at the first), and verifier errors placed at
//! their statements.

use qir_reader::{Diagnostic, parse, parse_and_verify, render};

/// The diagnostics of `src` (which must fail to read) as (line:col, message) pairs.
fn errors(src: &str) -> Vec<(String, String)> {
    let diags = match parse_and_verify(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(d) => d,
    };
    diags
        .iter()
        .map(|d| {
            let pos = match &d.span {
                Some(s) => {
                    let (l, c) = qir_reader::line_col(src, s.start);
                    format!("{l}:{c}")
                }
                None => "-".to_string(),
            };
            (pos, d.message.clone())
        })
        .collect()
}

fn one(src: &str) -> (String, String) {
    let e = errors(src);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap_or_default()
}

fn rendered(src: &str) -> String {
    match parse_and_verify(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(d) => render(&d, "m.qir", src),
    }
}

/// Wraps statements into a graph with an input `%x: f32[B, 4]`.
fn body(stmts: &str) -> String {
    format!("graph @m {{\n  input %x: f32[B, 4]\n{stmts}}}\n")
}

fn pair(pos: &str, msg: &str) -> (String, String) {
    (pos.to_string(), msg.to_string())
}

// ---- exact rendering ----------------------------------------------------------------------

#[test]
fn renders_unknown_op_with_caret_and_suggestion() {
    let src = "graph @m {\n  input %x: f32[B, 4]\n  %y = relux(%x)\n}\n";
    assert_eq!(
        rendered(src),
        "m.qir:3:8: error: unknown op 'relux' (did you mean 'relu'?)
   ╭─[ m.qir:3:8 ]
   │
 3 │   %y = relux(%x)
   │        ──┬──
   │          ╰──── unknown op 'relux' (did you mean 'relu'?)
───╯
"
    );
}

#[test]
fn renders_unexpected_token_with_expected_list() {
    let src = "graph @m {\n  input %x: f32[B 4]\n}\n";
    assert_eq!(
        rendered(src),
        "m.qir:2:19: error: unexpected '4'
   ╭─[ m.qir:2:19 ]
   │
 2 │   input %x: f32[B 4]
   │                   ┬
   │                   ╰── unexpected '4'
───╯
note: expected one of ']', ','
"
    );
}

#[test]
fn renders_unexpected_end_of_file() {
    let src = "graph @m {\n  input %x: f32[B, 4]\n";
    assert_eq!(
        rendered(src),
        "m.qir:2:22: error: unexpected end of file
   ╭─[ m.qir:2:22 ]
   │
 2 │   input %x: f32[B, 4]
   │                      ┬
   │                      ╰── unexpected end of file
───╯
note: expected one of 'input', 'param', 'state', 'const', 'output', 'loss', 'update', a value (%name), '}'
"
    );
}

#[test]
fn renders_end_of_file_without_final_newline() {
    assert_eq!(
        rendered("graph"),
        "m.qir:1:6: error: unexpected end of file
   ╭─[ m.qir:1:6 ]
   │
 1 │ graph
   │      ┬
   │      ╰── unexpected end of file
───╯
note: expected a graph name (@name)
"
    );
    assert!(rendered("").starts_with("m.qir:1:1: error: unexpected end of file\n"));
}

#[test]
fn renders_verifier_error_at_the_statement() {
    let src =
        body("  param %w: f32[3, 4] = zeros\n  %h = linear(%x, %w) : f32[B, 5]\n  output h = %h\n");
    assert_eq!(
        rendered(&src),
        "m.qir:4:3: error: %h: 'linear' result type is written f32[B, 5] but inferred f32[B, 3]
   ╭─[ m.qir:4:3 ]
   │
 4 │   %h = linear(%x, %w) : f32[B, 5]
   │   ───────────────┬───────────────
   │                  ╰───────────────── %h: 'linear' result type is written f32[B, 5] but inferred f32[B, 3]
───╯
"
    );
}

#[test]
fn renders_notes_and_columns_in_characters() {
    // 'é' is two bytes but one column
    let src = "// é\ngraph @m {\n  input %x: f32[B, 4]\n  input %x: f32[B]\n}\n";
    let text = rendered(src);
    assert!(
        text.starts_with("m.qir:4:9: error: value '%x' is defined twice\n"),
        "{text}"
    );
    assert!(
        text.ends_with("───╯\nnote: '%x' was first defined at 3:9\n"),
        "{text}"
    );
}

#[test]
fn renders_diagnostics_without_a_place() {
    let d = Diagnostic {
        message: "something about the whole graph".into(),
        span: None,
        notes: vec!["a note".into()],
    };
    assert_eq!(
        render(&[d], "m.qir", "graph @m {}\n"),
        "m.qir: error: something about the whole graph\nnote: a note\n"
    );
}

// ---- lexical errors --------------------------------------------------------------------------

#[test]
fn lexical_errors_are_all_reported() {
    let src = body("  %y = relu(%x) ; $\n  %z = relu(%y) {a = 99999999999999999999999}\n");
    assert_eq!(
        errors(&src),
        [
            pair("3:17", "unexpected character ';'"),
            pair("3:19", "unexpected character '$'"),
            pair(
                "4:22",
                "integer literal is out of range (it must fit in 64 bits)"
            ),
        ]
    );
}

#[test]
fn lexical_errors_are_capped() {
    let src = format!("graph @m {{ {} }}", "$".repeat(150));
    let d = parse(&src).unwrap_err();
    assert_eq!(d.len(), 100);
    assert_eq!(
        d[99].notes,
        ["50 more lexical errors follow and are not shown"]
    );
}

#[test]
fn lexical_error_kinds() {
    assert_eq!(
        one("graph @m {\n  input % : f32[]\n}\n"),
        pair("2:9", "expected a value name after '%' (like %x or %0)")
    );
    assert_eq!(
        one("graph @ {}\n"),
        pair("1:7", "expected a graph name after '@' (like @model)")
    );
    assert_eq!(
        one("graph @m {\n  input %x: !<i8:f32, 1.0>[]\n}\n"),
        pair("2:13", "expected a name after '!'")
    );
    assert_eq!(
        one("graph @m {\n  const %x: f32[] = [- 1]\n}\n"),
        pair("2:22", "expected a number or 'inf' after '-'")
    );
    assert_eq!(
        one("graph @m {\n  / comment\n}\n"),
        pair("2:3", "unexpected character '/' (comments start with '//')")
    );
    assert_eq!(
        one("graph @m {\u{0}}\n"),
        pair("1:11", "unexpected character '\\0'")
    );
}

// ---- syntax errors -------------------------------------------------------------------------

#[test]
fn syntax_error_kinds() {
    assert_eq!(one(""), pair("1:1", "unexpected end of file"));
    assert_eq!(one("graph m {}"), pair("1:7", "unexpected 'm'"));
    assert_eq!(
        one("graph @m {}\ngraph @n {}\n"),
        pair("2:1", "unexpected 'graph' after the end of the graph")
    );
    assert_eq!(
        one(&body("  %y = relu(%x,)\n")),
        pair("3:16", "unexpected ')'")
    );
    assert_eq!(
        one(&body("  %y = relu(%x) {axis 1}\n")),
        pair("3:23", "unexpected '1'")
    );
    let long = format!("graph @m {{ {} }}", "x".repeat(100));
    assert_eq!(
        one(&long),
        pair("1:12", &format!("unexpected '{}...'", "x".repeat(40)))
    );
}

#[test]
fn syntax_errors_carry_the_expected_tokens() {
    let d = parse("graph @m {\n  input %x f32[]\n}\n").unwrap_err();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "unexpected 'f32'");
    assert_eq!(d[0].notes, ["expected ':'"]);
    let d = parse("graph").unwrap_err();
    assert_eq!(d[0].notes, ["expected a graph name (@name)"]);
    let d =
        parse("graph @m {\n  %x = relu(%y) : !quant.uniform<i8:f32, 0.1 0>[]\n}\n").unwrap_err();
    assert_eq!(d[0].notes, ["expected one of '>', ':'"]);
}

// ---- lowering errors ----------------------------------------------------------------------

#[test]
fn unknown_names_get_suggestions() {
    assert_eq!(
        one(&body("  %y = relux(%x)\n")),
        pair("3:8", "unknown op 'relux' (did you mean 'relu'?)")
    );
    assert_eq!(
        one("graph @m {\n  input %x: f3[4]\n}\n"),
        pair("2:13", "unknown element type 'f3' (did you mean 'f32'?)")
    );
    assert_eq!(
        one("graph @m {\n  param %w: f32[4] = zero\n}\n"),
        pair("2:22", "unknown initializer 'zero' (did you mean 'zeros'?)")
    );
    assert_eq!(
        one("graph @m {\n  param %w: f32[4] = glorot_uniform\n}\n"),
        pair(
            "2:22",
            "unknown initializer 'glorot_uniform' (did you mean 'xavier_uniform'?)"
        )
    );
    assert_eq!(
        one(&body("  %y = conv2d(%x, %x) {strid = [1, 1]}\n")),
        pair(
            "3:24",
            "'conv2d' has no attribute 'strid' (did you mean 'stride'?)"
        )
    );
    assert_eq!(
        one(&body("  %y = relu(%x) {axis = 1}\n")),
        pair("3:18", "'relu' has no attributes, found 'axis'")
    );
    assert_eq!(
        one(&body("  %y = linear(%x, %x) {act = rleu}\n")),
        pair(
            "3:30",
            "attribute 'act' must be one of none, relu, relu6, found 'rleu' (did you mean 'relu'?)"
        )
    );
    assert_eq!(
        one(&body("  %h1 = relu(%x)\n  %y = relu(%hl)\n")),
        pair("4:13", "use of undefined value '%hl' (did you mean 'h1'?)")
    );
}

#[test]
fn attribute_errors() {
    assert_eq!(
        one(&body("  %y = softmax(%x) {axis = 1.5}\n")),
        pair(
            "3:28",
            "'softmax': attribute 'axis' expects integer, found float"
        )
    );
    assert_eq!(
        one(&body("  %y = softmax(%x) {axis = 1, axis = 0}\n")),
        pair("3:31", "attribute 'axis' is written twice")
    );
    assert_eq!(
        one(&body("  %y = softmax(%x) {axis = 18446744073709551615}\n")),
        pair(
            "3:28",
            "attribute 'axis': integer 18446744073709551615 does not fit in i64"
        )
    );
    assert_eq!(
        one(&body("  %y = reshape(%x) {shape = relu}\n")),
        pair(
            "3:29",
            "attribute 'shape' expects integer list, found identifier 'relu'"
        )
    );
}

#[test]
fn definition_order_errors() {
    assert_eq!(
        one(&body("  %y = relu(%z)\n  %z = relu(%x)\n")),
        pair("3:13", "value '%z' is used before its definition")
    );
    assert_eq!(
        one(&body("  %y = add(%x, %y)\n")),
        pair("3:16", "value '%y' is used in its own definition")
    );
    assert_eq!(
        one(&body("  %y = relu(%x)\n  %y = relu(%x)\n")),
        pair("4:3", "value '%y' is defined twice")
    );
    assert_eq!(
        one(&body("  output y = %q\n")),
        pair("3:14", "use of undefined value '%q'")
    );
    let d = parse(&body("  %y = relu(%z)\n  %z = relu(%x)\n")).unwrap_err();
    assert_eq!(
        d[0].notes,
        ["'%z' is defined at 4:3; values must be defined before they are used"]
    );
}

#[test]
fn types_initializers_and_numbers() {
    assert_eq!(
        one("graph @m {\n  input %x: f32[-1]\n}\n"),
        pair("2:17", "dimension must be non-negative, found -1")
    );
    assert_eq!(
        one("graph @m {\n  const %x: i32[2] = [1, 2.5]\n}\n"),
        pair(
            "2:26",
            "expected an integer for a value of element type i32, found 2.5"
        )
    );
    assert_eq!(
        one("graph @m {\n  const %x: f32[2] = uniform(1.0)\n}\n"),
        pair(
            "2:22",
            "initializer 'uniform' takes 2 arguments: uniform(low, high), found 1"
        )
    );
    assert_eq!(
        one("graph @m {\n  const %x: f32[2] = fill\n}\n"),
        pair("2:22", "initializer 'fill' needs arguments: fill(value)")
    );
    assert_eq!(
        one("graph @m {\n  const %x: f32[2] = zeros(1)\n}\n"),
        pair("2:22", "initializer 'zeros' takes no arguments")
    );
}

#[test]
fn quant_type_errors() {
    let q = |t: &str| one(&format!("graph @m {{\n  input %x: {t}[2]\n}}\n"));
    assert_eq!(
        q("!quant.unifrm<i8:f32, 0.1>"),
        pair(
            "2:13",
            "unknown type '!quant.unifrm' (the only dialect type is '!quant.uniform')"
        )
    );
    assert_eq!(
        q("!quant.uniform<i2:f32, 0.1>"),
        pair("2:28", "unknown storage type 'i2' (did you mean 'i8'?)")
    );
    assert_eq!(
        q("!quant.uniform<i8:f64, 0.1>"),
        pair("2:31", "the expressed type must be f32, found 'f64'")
    );
    assert_eq!(
        q("!quant.uniform<i8:f32:0, 0.1>"),
        pair(
            "2:38",
            "a per-axis quantized type needs one scale per slice, written {s0, s1, ...} or %name"
        )
    );
    assert_eq!(
        q("!quant.uniform<i8:f32, {0.1, 0.2}>"),
        pair(
            "2:31",
            "per-axis quantization parameters need an axis after the expressed type (f32:AXIS)"
        )
    );
    assert_eq!(
        q("!quant.uniform<i8:f32:-1, {0.1}>"),
        pair("2:35", "quantization axis must be non-negative, found -1")
    );
    // semantic checks are the verifier's, at the declaration
    assert_eq!(
        q("!quant.uniform<i8:f32, 0.0>"),
        pair("2:3", "%x: scale must be positive and finite, got 0.0")
    );
}

#[test]
fn op_errors() {
    assert_eq!(
        one(&body("  %y = quantize(%x) {rounding = half_even}\n")),
        pair(
            "3:3",
            "'quantize' needs its result type written (it carries the quantization parameters)"
        )
    );
    assert_eq!(
        one(&body("  %y = relu(%x, %x)\n")),
        pair("3:3", "%y: 'relu' expects 1 operand (x), found 2")
    );
    assert_eq!(
        one(&body("  %y = relu(%x)\n  loss %y\n  loss %y\n")),
        pair("5:3", "the loss is declared twice")
    );
}

#[test]
fn lowering_collects_every_error_and_skips_dependents() {
    let src = body(
        "  %a = relux(%x)\n  %b = relu(%a)\n  %c = relu(%nope)\n  param %w: f33[2] = zeros\n  %d = softmax(%x) {axis = 1.5}\n  output a = %a\n",
    );
    // %b and the output use the failed %a: no repeated error for them
    assert_eq!(
        errors(&src),
        [
            pair("3:8", "unknown op 'relux' (did you mean 'relu'?)"),
            pair("5:13", "use of undefined value '%nope'"),
            pair("6:13", "unknown element type 'f33' (did you mean 'f32'?)"),
            pair(
                "7:28",
                "'softmax': attribute 'axis' expects integer, found float"
            ),
        ]
    );
}

// ---- verifier errors ----------------------------------------------------------------------------

#[test]
fn verifier_errors_point_at_statements() {
    let src = body(
        "  param %w: f32[3, 4] = [1.0]\n  %0 = relu(%x) : f32[B, 5]\n  output y = %0\n  output y = %x\n  loss %0\n  update %x = %0\n",
    );
    assert_eq!(
        errors(&src),
        [
            pair(
                "3:3",
                "%w: 1 values given for f32[3, 4], which has 12 elements"
            ),
            pair(
                "4:3",
                "'relu' result type is written f32[B, 5] but inferred f32[B, 4]"
            ),
            pair("6:3", "output y: is declared twice"),
            pair("7:3", "loss: must be a float scalar, found f32[B, 5]"),
            pair(
                "8:3",
                "update of %x: can only update a param or a state value"
            ),
            pair(
                "8:3",
                "update of %x: new value has type f32[B, 5] but the target is f32[B, 4]"
            ),
        ]
    );
}

#[test]
fn verifier_errors_without_locations_have_no_span() {
    let mut g = qir::Graph::new("m");
    let x = g
        .add_input("x", qir::Type::f32(&[2u64.into()]))
        .expect("input");
    g.set_loss(Some(x));
    let errs = qir::verify::verify(&g).unwrap_err();
    let d = qir_reader::verify_diagnostics(&g, &errs);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].span, None);
    assert_eq!(
        render(&d, "m.qir", ""),
        "m.qir: error: loss: must be a float scalar, found f32[2]\n"
    );
}

// ---- locations and comments ----------------------------------------------------------------

#[test]
fn locations_cover_whole_statements() {
    let src = body("  %y = relu(%x)\n  output y = %y\n  loss %y\n");
    let g = parse(&src).expect("reads");
    let y = g.find("y").expect("y");
    let at = |l: Option<qir::Loc>| {
        let l = l.expect("located");
        &src[l.start as usize..l.end as usize]
    };
    assert_eq!(at(g.node(y).loc), "%y = relu(%x)");
    assert_eq!(
        at(g.node(g.find("x").expect("x")).loc),
        "input %x: f32[B, 4]"
    );
    assert_eq!(at(g.outputs()[0].loc), "output y = %y");
    assert_eq!(at(g.loss_decl().expect("loss").loc), "loss %y");
    assert_eq!(at(g.loc), src.trim_end());
}

#[test]
fn comments_attach_to_the_next_item() {
    let src = "// a\n//  b  \ngraph @m { // c\n  input %x: f32[2] // d\n  // e\n  %0 = relu(%x)\n  // f\n  output y = %0\n  %1 = relu(%0 // g\n  )\n  // h\n} // i\n";
    let g = parse(src).expect("reads");
    assert_eq!(g.comments, [" a", "  b"]);
    assert_eq!(g.node(g.find("x").expect("x")).comments, [" c"]);
    let ops: Vec<_> = g
        .node_ids()
        .into_iter()
        .filter(|&i| g.node(i).op().is_some())
        .collect();
    assert_eq!(g.node(ops[0]).comments, [" d", " e"]);
    assert_eq!(g.outputs()[0].comments, [" f"]);
    assert_eq!(g.node(ops[1]).comments, [" g"]);
    assert_eq!(g.trailing_comments, [" h", " i"]);
    assert_eq!(
        qir::print::print(&g),
        "// a\n//  b\ngraph @m {\n  // c\n  input %x: f32[2]\n\n  // d\n  // e\n  %0 = relu(%x) : f32[2]\n  // g\n  %1 = relu(%0) : f32[2]\n\n  // f\n  output y = %0\n\n  // h\n  // i\n}\n"
    );
}

#[test]
fn lowering_canonicalizes_what_it_reads() {
    let src = "graph @m {\n  input %x: f32[B, 1, 4, 4]\n  param %w: f32[2, 1, 3, 3] = zeros\n  %7 = conv2d(%x, %w) {stride = [1, 1], groups = 1, padding = [1, 1, 1, 1]}\n  %3 = relu(%7)\n  %s = softmax(%x) {axis = -1}\n  output y = %3\n  output s = %s\n}\n";
    let g = parse_and_verify(src).expect("reads");
    assert_eq!(
        qir::print::print(&g),
        "graph @m {\n  input %x: f32[B, 1, 4, 4]\n  param %w: f32[2, 1, 3, 3] = zeros\n\n  %0 = conv2d(%x, %w) {padding = [1, 1, 1, 1]} : f32[B, 2, 4, 4]\n  %1 = relu(%0) : f32[B, 2, 4, 4]\n  %s = softmax(%x) : f32[B, 1, 4, 4]\n\n  output y = %1\n  output s = %s\n}\n"
    );
}

#[test]
fn numbers_are_rounded_once_to_their_width() {
    // 0.1 read directly as f32 (not via f64), attribute floats as f64
    let src = "graph @m {\n  const %c: f32[2] = [0.1, 16777217]\n  const %d: f64[1] = [0.1]\n  input %x: f32[B, 2]\n  %q = quantize(%x) {rounding = half_even} : !quant.uniform<i8:f32, 0.1>[B, 2]\n  %e = ema(%c, %c) {momentum = 0.3}\n  output q = %q\n  output e = %e\n}\n";
    let g = parse_and_verify(src).expect("reads");
    let init = |n: &str| g.node(g.find(n).expect("decl")).init().cloned();
    assert_eq!(
        init("c"),
        Some(qir::Init::Dense(vec![f64::from(0.1f32), 16777216.0]))
    );
    assert_eq!(init("d"), Some(qir::Init::Dense(vec![0.1])));
    let e = g.node(g.find("e").expect("e")).inst().expect("op").clone();
    assert_eq!(e.float("momentum"), Some(0.3));
    let q = g
        .ty(g.find("q").expect("q"))
        .elem
        .quant()
        .expect("quant")
        .clone();
    assert_eq!(
        q.params,
        qir::QuantParams::PerTensor {
            scale: 0.1f32,
            zero_point: 0
        }
    );
}
