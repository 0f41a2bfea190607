//! File and stream I/O for the commands: `-` means standard input or output, files are
//! written atomically (a temporary file in the same directory, then a rename), and input
//! that is not UTF-8 is reported as a `FILE:LINE:COL: error:` diagnostic.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

/// How a command failed; the process exits with code 1 either way.
#[derive(Debug)]
pub enum Failure {
    /// The errors were already printed (diagnostics, annotated IR, a file list).
    Reported,
    /// A message for `main` to print as `error: ...`.
    Message(String),
}

/// What every command returns.
pub type CmdResult = Result<(), Failure>;

/// Shorthand for a [`Failure::Message`].
pub fn fail<T>(msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Message(msg.into()))
}

/// True if `path` is `-` (standard input or output).
pub fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The name to show for `path` in messages (`<stdin>` for `-`).
pub fn display_name(path: &Path) -> String {
    if is_std(path) {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

/// A source text and the name it is reported under.
pub struct Input {
    pub name: String,
    pub text: String,
}

/// Reads `path` (or standard input for `-`). Text that is not UTF-8 is an error rendered
/// at the first bad byte.
pub fn read_input(path: &Path) -> Result<Input, Failure> {
    let name = display_name(path);
    let mut bytes = Vec::new();
    let read = if is_std(path) {
        io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    if let Err(e) = read {
        return fail(format!("cannot read {name}: {e}"));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Input { name, text }),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let (line, col) = qir_reader::line_col(&prefix, prefix.len());
            write_stderr(&format!(
                "{name}:{line}:{col}: error: the file is not valid UTF-8\n"
            ));
            Err(Failure::Reported)
        }
    }
}

/// Writes `text` to standard output. A closed pipe (`qatc passes | head`) is not an error.
pub fn write_stdout(text: &str) -> CmdResult {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => fail(format!("cannot write to standard output: {e}")),
    }
}

/// Writes `text` to standard error, ignoring failures (there is nowhere else to report
/// them).
pub fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Writes `text` to `path` (standard output for `None` or `-`), atomically for files.
pub fn write_output(path: Option<&Path>, text: &str) -> CmdResult {
    match path {
        None => write_stdout(text),
        Some(p) if is_std(p) => write_stdout(text),
        Some(p) => write_atomic(p, text),
    }
}

/// Replaces the file at `path` by `text` in one step, with the runtime's atomic writer:
/// a temporary file beside the target, renamed over it; symbolic links are followed and
/// hard-linked files rewritten in place, and new files get the umask's mode (as every
/// output of qatc does).
pub fn write_atomic(path: &Path, text: &str) -> CmdResult {
    runtime::io::write_atomic(path, text.as_bytes()).or_else(|e| fail(e.to_string()))
}

/// True if `a` and `b` name the same existing file (after symbolic links; hard links
/// too), or are the same path (two outputs that do not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Checks an output file before the command does any work: it must not be one of the
/// command's `inputs` (`(what, path)`, e.g. `("the model", FILE)`), whatever their kind;
/// it must not be a directory; and its directory must exist and take new files. `-`
/// (standard output) always passes.
pub fn check_output(flag: &str, out: &Path, inputs: &[(&str, &Path)]) -> CmdResult {
    if is_std(out) {
        return Ok(());
    }
    let shown = out.display();
    if let Some((what, p)) = inputs.iter().find(|(_, p)| !is_std(p) && same_file(out, p)) {
        let also = if p == &out {
            String::new()
        } else {
            format!(" ({})", p.display())
        };
        return fail(format!(
            "{flag} {shown} is {what}{also}: qatc does not overwrite its inputs; choose another output file"
        ));
    }
    if out.is_dir() {
        return fail(format!("{flag} {shown} is a directory; give a file name"));
    }
    // the directory the file goes to, after symbolic links
    let target = fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let dir: PathBuf = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return fail(format!(
            "{flag} {shown}: the directory {} does not exist",
            dir.display()
        ));
    }
    // a device or FIFO (`-o /dev/null`) is written in place: no new file is needed
    let special = fs::metadata(out).is_ok_and(|m| !m.is_file());
    if !special && let Err(e) = tempfile::tempfile_in(&dir) {
        return fail(format!(
            "{flag} {shown}: cannot create files in {}: {e}",
            dir.display()
        ));
    }
    Ok(())
}

/// The files of an IDX data directory (`train-*` and `t10k-*`), as inputs for
/// [`check_output`].
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("train-") || n.starts_with("t10k-"))
        })
        .collect()
}
