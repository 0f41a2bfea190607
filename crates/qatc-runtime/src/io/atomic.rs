//! Atomic file writes: the bytes go to a temporary file in the destination's directory,
//! which is flushed to disk (`fsync`) and then renamed over the destination. Readers see
//! either the old file or the complete new one, never a torn write; an interrupted write
//! leaves at most a stray temporary file (named `.NAME.*.tmp`), never a truncated `NAME`,
//! and the next write of `NAME` removes such strays.
//!
//! Links are written through: a symbolic link is followed and its target replaced (the
//! temporary file goes beside the target, so the rename stays within one directory); a
//! file with several hard links is rewritten in place (truncated and written, after the
//! new contents were produced in memory), which keeps every link but is not atomic; so is
//! anything that is not a regular file (`/dev/null`, a FIFO), which a rename would
//! replace.
//! Every new file gets the mode `0666` less the umask; a replaced file keeps its own.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes to `path` atomically through `fill`, which gets a buffered writer on the
/// temporary file. Nothing replaces `path` unless `fill` succeeds.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let target = follow_symlinks(path);
    let path = target.as_path();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(path)
            && ((m.is_file() && m.nlink() > 1) || !(m.is_file() || m.is_dir()))
        {
            // several hard links, or a device or FIFO (`-o /dev/null`): never renamed over
            return rewrite_in_place(path, fill);
        }
    }
    clean_stale_temporaries(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| RuntimeError::File {
            path: path.to_path_buf(),
            message: "not a file name".into(),
        })?;
    let io = |e: std::io::Error| RuntimeError::io(path, &e);
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // A new file gets the usual mode (0666 less the umask), not the private mode of
    // temporary files; a replaced file keeps its own.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_or(0o666, |m| m.permissions().mode());
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let tmp = builder.tempfile_in(dir).map_err(io)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        fill(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Make the rename itself durable; not every platform can open a directory, and the
    // data is already safe, so a failure here is not an error.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The file a chain of symbolic links at `path` ends in (`path` itself if it is not a
/// link). A dangling link resolves to the file it names, which is then created.
fn follow_symlinks(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    // a bound on the chain: a loop is left to the write to report
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&p) {
                Ok(t) if t.is_absolute() => p = t,
                Ok(t) => p = p.parent().map_or(t.clone(), |d| d.join(&t)),
                Err(_) => break,
            },
            _ => break,
        }
    }
    p
}

/// Replaces the contents of `path` in place (see the module docs), for files with several
/// hard links.
fn rewrite_in_place(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let io = |e: std::io::Error| RuntimeError::io(path, &e);
    let mut bytes = Vec::new();
    fill(&mut bytes).map_err(io)?;
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(regular)
        .open(path)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    if regular {
        f.sync_all().map_err(io)?;
    }
    Ok(())
}

/// Removes the temporary files (`.NAME.XXXXXX.tmp`) that an interrupted write of `path`
/// left beside it. Failures are ignored: the files are only clutter.
pub fn clean_stale_temporaries(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        // tempfile's names: the prefix, six random alphanumerics, the suffix
        let stale = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .is_some_and(|mid| mid.len() == 6 && mid.chars().all(|c| c.is_ascii_alphanumeric()));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_usual_mode_and_replaced_files_keep_theirs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600);
        assert_ne!(mode, 0o600, "not the private mode of a temporary file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"y").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn failed_fill_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().ends_with("a.bin: disk full"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("a.bin");
        let err = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(err.contains("no such file or directory"), "{err}");
    }

    #[test]
    fn stale_temporaries_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        std::fs::write(dir.path().join(".a.bin.Xy12ab.tmp"), b"torn").unwrap();
        std::fs::write(dir.path().join(".b.bin.Xy12ab.tmp"), b"other").unwrap();
        write_atomic(&p, b"x").unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".b.bin.Xy12ab.tmp", "a.bin"]);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_and_hard_links_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let target = sub.join("t.bin");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink("sub/t.bin", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let hard = dir.path().join("hard.bin");
        std::fs::hard_link(&target, &hard).unwrap();
        write_atomic(&hard, b"newer").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"newer");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&hard).unwrap().nlink(), 2);
        // a device stays a device
        write_atomic(Path::new("/dev/null"), b"gone").unwrap();
        let null = std::fs::metadata("/dev/null").unwrap();
        assert!(!null.is_file(), "/dev/null was replaced by a file");
    }
}
