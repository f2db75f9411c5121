//! One writer per run folder: a `dit-train` process holds an advisory lock on the folder's
//! [`LOCK_FILE`] for as long as it writes there, so a second one started on the same folder
//! (a second `--resume`, or a fresh run aimed at it) stops at once with an error naming the
//! process in the way. The kernel releases the lock when its process ends, however it ends,
//! so a killed run never leaves the folder locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use dit_model::run::LOCK_FILE;

/// The lock on a run folder, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Locks `run_dir` (which must exist) for this process, and writes the process's id into
    /// the lock file for whoever finds it locked.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "{} is in use by {}: one dit-train at a time writes a run folder (wait for it, or stop it)",
                    run_dir.display(),
                    describe(holder.trim())
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// The process with id `pid` (as the lock file holds it), with its command line where the
/// system shows it.
fn describe(pid: &str) -> String {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return "another process".into();
    }
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .split('\0')
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    if command.is_empty() {
        format!("process {pid}")
    } else {
        format!("process {pid} ({command})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        // flock(2) locks belong to the open file: a second open in this process conflicts.
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("is in use by process") && err.contains(&pid) && !err.contains('\n'),
            "{err}"
        );
        drop(held);
        let again = RunLock::acquire(dir.path());
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn holders_are_described_from_what_the_file_says() {
        assert_eq!(describe(""), "another process");
        assert_eq!(describe("12ab"), "another process");
        assert_eq!(describe("4294967295"), "process 4294967295");
        let me = describe(&std::process::id().to_string());
        assert!(
            me.starts_with(&format!("process {} (", std::process::id())),
            "{me}"
        );
    }
}
