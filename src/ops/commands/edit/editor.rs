//! The operator's side of `outbox edit`: the payload in $EDITOR until it is a JSON object.
//!
//! As with `git commit` and `kubectl edit`, an edit that is not a JSON object is not lost:
//! the editor opens again on the operator's text, with the error in `#` lines at the top
//! (lines starting with `#` are never JSON, so they are dropped before parsing). Saving it
//! unchanged, or empty, gives up.

use anyhow::{bail, Context};
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A JSON object, or why the text is not one.
pub fn parse(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the payload must be a JSON object ({...})".into()),
        Err(e) => Err(format!("the payload is not valid JSON ({e})")),
    }
}

/// The text without its `#` lines.
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

const HELP: &str = "# Lines starting with # are ignored. Save to store the payload;\n\
                    # leave it unchanged or empty it to cancel.\n";

/// Opens the editor until it leaves a JSON object (`Some`), or the operator gives up: an
/// emptied file, or the first text saved unchanged, is `None`; invalid text saved unchanged
/// is an error (exit 2).
pub fn edit_until_valid(
    trace_id: &str,
    before: &str,
) -> anyhow::Result<Option<Map<String, Value>>> {
    let file = TempFile::create(trace_id)?;
    let mut shown = before.to_owned();
    let mut header = format!("# outbox edit {trace_id}: the payload, a JSON object.\n{HELP}");
    let mut last_error: Option<String> = None;
    loop {
        file.write(&format!("{header}{shown}\n"))?;
        let edited = without_comments(&run_editor(&file.0)?);
        let unchanged = edited.trim() == shown.trim();
        if edited.trim().is_empty() {
            eprintln!("empty payload; nothing edited");
            return Ok(None);
        }
        if unchanged {
            return match last_error {
                None => {
                    eprintln!("payload unchanged; nothing edited");
                    Ok(None)
                }
                Some(e) => bail!("{e}; saved unchanged, so the edit is given up: nothing edited"),
            };
        }
        match parse(&edited) {
            Ok(p) => return Ok(Some(p)),
            Err(e) => {
                header = format!("# ERROR: {e}\n{HELP}");
                last_error = Some(e);
                shown = edited;
            }
        }
    }
}

/// A private temporary file, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn create(trace_id: &str) -> anyhow::Result<TempFile> {
        let safe: String = trace_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path =
            std::env::temp_dir().join(format!("outbox-edit-{}-{safe}.json", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempFile(path))
    }

    fn write(&self, text: &str) -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&self.0)
            .with_context(|| format!("cannot write {}", self.0.display()))?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `$VISUAL`/`$EDITOR` (default `vi`) on `path` through the shell (so an editor with
/// arguments works) and reads the file back.
fn run_editor(path: &Path) -> anyhow::Result<String> {
    let set = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    let editor = set("VISUAL")
        .or_else(|| set("EDITOR"))
        .unwrap_or_else(|| "vi".into());
    let result = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status();
    match result {
        Ok(s) if s.success() => Ok(std::fs::read_to_string(path)?),
        Ok(s) => bail!("the editor ({editor}) exited with {s}; nothing edited"),
        Err(e) => {
            bail!("cannot run the editor {editor:?} ({e}); set EDITOR or pass --payload FILE")
        }
    }
}
