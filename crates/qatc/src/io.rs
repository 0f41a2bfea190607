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

/// Replaces the file at `path` by `text` in one step: the text goes to a temporary file in
/// the same directory, which is then renamed over `path`, so readers never see a partial
/// file. An existing file keeps its permissions.
pub fn write_atomic(path: &Path, text: &str) -> CmdResult {
    let name = path.display();
    let dir: PathBuf = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let write = || -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".qatc-")
            .suffix(".tmp")
            .tempfile_in(&dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        if let Ok(meta) = fs::metadata(path) {
            tmp.as_file().set_permissions(meta.permissions())?;
        }
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().or_else(|e| fail(format!("cannot write {name}: {e}")))
}
