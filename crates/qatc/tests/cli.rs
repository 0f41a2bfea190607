//! The driver's contract as a user meets it: exit codes (0 ok, 1 user error), where output
//! goes, `-` for standard streams, atomic in-place formatting, and the messages of `opt`.

mod common;

use std::path::Path;

use common::{qatc, qatc_in, testdata};

const GOOD: &str =
    "graph @m {\n  input %x: f32[B, 4]\n\n  %y = relu(%x) : f32[B, 4]\n\n  output y = %y\n}\n";
const UGLY: &str = "graph @m{\n  input %x : f32[B,4]\n  %y=relu(%x):f32[B,4]\n  output y=%y\n}\n";
const DUPLICATES: &str = "graph @m {\n  input %x: f32[B, 4]\n  %a = relu(%x) : f32[B, 4]\n  %b = relu(%x) : f32[B, 4]\n  %s = add(%a, %b) : f32[B, 4]\n  output s = %s\n}\n";

fn tmp_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("writes");
    }
    dir
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("reads")
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("lists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn check_reports_every_bad_file_and_exits_1() {
    let bad = "graph @m {\n  input %x: f32[B, 4]\n  %y = relu(%z) : f32[B, 4]\n}\n";
    let dir = tmp_with(&[("good.qir", GOOD), ("bad.qir", bad), ("worse.qir", "graph")]);
    let run = qatc_in(dir.path(), &["check", "good.qir"], None);
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
    let run = qatc_in(
        dir.path(),
        &["check", "bad.qir", "good.qir", "worse.qir"],
        None,
    );
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr
            .starts_with("bad.qir:3:13: error: use of undefined value '%z'\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("\nworse.qir:1:6: error: unexpected end of file\n"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn check_reads_stdin_and_reports_unreadable_files() {
    let run = qatc_in(
        Path::new("."),
        &["check", "-"],
        Some("graph @m {\n  input %x: f33[4]\n}\n"),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("<stdin>:2:13: error: unknown element type 'f33'"),
        "{}",
        run.stderr
    );
    let run = qatc(&["check", "no/such/file.qir"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("error: cannot read no/such/file.qir: "),
        "{}",
        run.stderr
    );
}

#[test]
fn check_locates_invalid_utf8() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("latin1.qir"),
        b"graph @m {\n  // caf\xe9\n}\n",
    )
    .expect("writes");
    let run = qatc_in(dir.path(), &["check", "latin1.qir"], None);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "latin1.qir:2:9: error: the file is not valid UTF-8\n"
    );
}

#[test]
fn fmt_rewrites_in_place_atomically() {
    let dir = tmp_with(&[("a.qir", UGLY), ("b.qir", GOOD)]);
    let before = std::fs::metadata(dir.path().join("b.qir"))
        .expect("exists")
        .modified()
        .ok();
    let run = qatc_in(dir.path(), &["fmt", "a.qir", "b.qir"], None);
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
    assert_eq!(read(dir.path(), "a.qir"), GOOD);
    assert_eq!(read(dir.path(), "b.qir"), GOOD);
    // an unchanged file is not rewritten; no temporary files are left behind
    let after = std::fs::metadata(dir.path().join("b.qir"))
        .expect("exists")
        .modified()
        .ok();
    assert_eq!(before, after);
    assert_eq!(file_names(dir.path()), ["a.qir", "b.qir"]);
}

#[cfg(unix)]
#[test]
fn fmt_keeps_file_permissions() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tmp_with(&[("a.qir", UGLY)]);
    let path = dir.path().join("a.qir");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let run = qatc_in(dir.path(), &["fmt", "a.qir"], None);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn fmt_check_lists_files_that_would_change() {
    let dir = tmp_with(&[("a.qir", UGLY), ("b.qir", GOOD)]);
    let run = qatc_in(dir.path(), &["fmt", "--check", "a.qir", "b.qir"], None);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "a.qir\n");
    assert_eq!(read(dir.path(), "a.qir"), UGLY, "--check changes nothing");
    let run = qatc_in(dir.path(), &["fmt", "--check", "b.qir"], None);
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
}

#[test]
fn fmt_stdin_to_stdout_and_refuses_broken_files() {
    let run = qatc_in(Path::new("."), &["fmt", "-"], Some(UGLY));
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), GOOD));
    let dir = tmp_with(&[("bad.qir", "graph @m {\n")]);
    let run = qatc_in(dir.path(), &["fmt", "bad.qir"], None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("bad.qir:1:11: error: unexpected end of file"),
        "{}",
        run.stderr
    );
    assert_eq!(
        read(dir.path(), "bad.qir"),
        "graph @m {\n",
        "a broken file is left alone"
    );
}

#[test]
fn opt_runs_passes_and_writes_the_result() {
    let dir = tmp_with(&[("m.qir", DUPLICATES)]);
    let run = qatc_in(
        dir.path(),
        &["opt", "m.qir", "--passes", "canonicalize"],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "graph @m {\n  input %x: f32[B, 4]\n\n  %a = relu(%x) : f32[B, 4]\n  %s = add(%a, %a) : f32[B, 4]\n\n  output s = %s\n}\n"
    );
    assert_eq!(run.stderr, "");
    let run = qatc_in(
        dir.path(),
        &["opt", "-", "--pipeline", "cleanup", "-o", "out.qir"],
        Some(DUPLICATES),
    );
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
    assert!(read(dir.path(), "out.qir").contains("%s = add(%a, %a)"));
}

#[test]
fn opt_notes_an_egraph_pass_stopped_by_a_limit() {
    // simplify on the digits MLP needs more than 10 e-nodes: the run stops on the node
    // limit, says so in a note, and still succeeds with a valid graph.
    let model = testdata()
        .join("models/digits_mlp.qir")
        .display()
        .to_string();
    let run = qatc(&["opt", &model, "--passes", "simplify{node-limit=10}"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "note: pass 'simplify' stopped by the node limit (12 e-nodes); the graph is valid but may miss rewrites (raise node-limit, iter-limit or time-limit-ms)\n"
    );
    qir_reader::parse_and_verify(&run.stdout).expect("the result verifies");
    // Within the default limits the run saturates: no note.
    let run = qatc(&["opt", &model, "--passes", "simplify"]);
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""));
}

#[test]
fn opt_dumps_ir_after_passes_to_stderr() {
    let dir = tmp_with(&[("m.qir", DUPLICATES)]);
    let header = "// -----// IR after canonicalize //----- //\n";
    let run = qatc_in(
        dir.path(),
        &[
            "opt",
            "m.qir",
            "--passes",
            "canonicalize,canonicalize{cse=false}",
            "--print-ir-after-all",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr.matches(header).count(), 2, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!("{header}graph @m {{\n")),
        "{}",
        run.stderr
    );
    let run = qatc_in(
        dir.path(),
        &[
            "opt",
            "m.qir",
            "--passes",
            "canonicalize",
            "--print-ir-after=canonicalize",
        ],
        None,
    );
    assert_eq!(run.stderr.matches(header).count(), 1, "{}", run.stderr);
    // the dump is exactly the final IR here
    assert_eq!(run.stderr, format!("{header}{}\n", run.stdout));
}

#[test]
fn opt_times_passes() {
    let dir = tmp_with(&[("m.qir", DUPLICATES)]);
    let run = qatc_in(
        dir.path(),
        &["opt", "m.qir", "--pipeline", "cleanup", "--time-passes"],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("Pass execution timing report"),
        "{}",
        run.stderr
    );
    let row = run.stderr.lines().find(|l| l.ends_with("%)  canonicalize"));
    assert!(row.is_some(), "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.ends_with("(100.0%)  Total")),
        "{}",
        run.stderr
    );
}

#[test]
fn opt_configuration_errors_list_the_valid_choices() {
    let dir = tmp_with(&[("m.qir", GOOD)]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--passes", "canonicalise"],
            "error: unknown pass 'canonicalise' (valid passes: canonicalize",
        ),
        (
            &["--passes", "canonicalize{fold-limt=3}"],
            "error: pass 'canonicalize' has no option 'fold-limt' (valid options: dce, cse, fold, fold-limit)",
        ),
        (
            &["--passes", "canonicalize,"],
            "error: invalid pipeline: expected a pass name, found the end of the text (column 14)",
        ),
        (
            &["--pipeline", "clean"],
            "error: unknown pipeline 'clean' (valid pipelines: cleanup",
        ),
        (
            &["--passes", "canonicalize", "--print-ir-after", "nope"],
            "error: --print-ir-after: unknown pass 'nope' (valid passes: canonicalize",
        ),
    ];
    for (extra, want) in cases {
        let mut argv = vec!["opt", "m.qir"];
        argv.extend_from_slice(extra);
        let run = qatc_in(dir.path(), &argv, None);
        assert_eq!(run.code, Some(1), "{argv:?}: {}", run.all());
        assert!(run.stderr.starts_with(want), "{argv:?}:\n{}", run.stderr);
        assert_eq!(run.stdout, "");
    }
}

#[test]
fn opt_rejects_an_invalid_input_with_its_diagnostics() {
    let bad = "graph @m {\n  input %x: f32[B, 4]\n  %y = softmax(%x) {axis = 5} : f32[B, 4]\n}\n";
    let dir = tmp_with(&[("bad.qir", bad)]);
    let run = qatc_in(
        dir.path(),
        &["opt", "bad.qir", "--passes", "canonicalize"],
        None,
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("bad.qir:3:3: error: %y: 'softmax' attribute 'axis' = 5"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    for argv in [
        &["frobnicate"][..],
        &["opt", "m.qir"],
        &[
            "opt",
            "m.qir",
            "--passes",
            "canonicalize",
            "--pipeline",
            "cleanup",
        ],
        &["check"],
        &[],
    ] {
        let run = qatc(argv);
        assert_eq!(run.code, Some(1), "{argv:?}: {}", run.all());
        assert!(!run.stderr.is_empty());
    }
    for argv in [&["--help"][..], &["--version"], &["opt", "--help"]] {
        let run = qatc(argv);
        assert_eq!(run.code, Some(0), "{argv:?}: {}", run.all());
        assert!(!run.stdout.is_empty());
    }
}

#[test]
fn passes_lists_passes_options_and_pipelines() {
    let run = qatc(&["passes"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for r in passes::registry::all() {
        assert!(
            run.stdout.contains(&format!("  {}  ", r.info.name))
                || run.stdout.contains(&format!("  {} ", r.info.name))
        );
        assert!(run.stdout.contains(r.info.summary), "{}", run.stdout);
        for o in r.info.options {
            assert!(
                run.stdout.contains(&format!("{}={} ", o.name, o.default)),
                "{}",
                run.stdout
            );
        }
    }
    for p in passes::named_pipelines() {
        assert!(
            run.stdout
                .contains(&format!("  {}  {}", p.name, p.description())),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("\n      canonicalize\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn dot_writes_to_a_file_or_stdout() {
    let dir = tmp_with(&[("m.qir", GOOD)]);
    let run = qatc_in(dir.path(), &["dot", "m.qir"], None);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("digraph \"m\" {\n"),
        "{}",
        run.stdout
    );
    let run = qatc_in(dir.path(), &["dot", "m.qir", "-o", "m.dot"], None);
    assert_eq!((run.code, run.all().as_str()), (Some(0), ""));
    assert!(read(dir.path(), "m.dot").starts_with("digraph \"m\" {\n"));
    let run = qatc_in(
        dir.path(),
        &["dot", "-"],
        Some("graph @m {\n  input %x: f33[4]\n}\n"),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with("<stdin>:2:13: error:"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_models_folder_is_where_the_tests_look() {
    assert!(testdata().join("models").is_dir());
}
