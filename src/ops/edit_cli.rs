//! `outbox edit TRACE_ID`: fetch the payload, let the operator change it in $EDITOR (or take
//! it from `--payload FILE`), and store it with an audit line.

use crate::ops::command::EditArgs;
use crate::ops::inspect::RecordView;
use crate::ops::proto::Request;
use crate::ops::run::{call, print_json};
use anyhow::{bail, Context};
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

pub fn run(a: EditArgs) -> anyhow::Result<ExitCode> {
    let dir = a.target.dir()?;
    let text = match &a.payload {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?,
        None => {
            let get = Request::Get {
                trace_id: a.trace_id.clone(),
            };
            let (_, current): (_, RecordView) = call(&dir, get, "reading")?;
            let before = serde_json::to_string_pretty(&current.payload)?;
            let after = edit_in_editor(&a.trace_id, &before)?;
            if after.trim() == before.trim() {
                eprintln!("payload unchanged; nothing edited");
                return Ok(ExitCode::SUCCESS);
            }
            after
        }
    };
    let payload: Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => bail!("the payload must be a JSON object"),
        Err(e) => bail!("the payload is not valid JSON ({e}); nothing edited"),
    };
    let req = Request::Edit {
        trace_id: a.trace_id.clone(),
        payload,
        note: a.note.clone(),
    };
    let (_, r): (_, RecordView) = call(&dir, req, "editing")?;
    if a.json {
        print_json(&r);
    } else {
        println!(
            "edited {} (payload sha256 {}); replay it with `outbox replay {}`",
            r.trace_id, r.payload_sha256, r.trace_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to a private temporary file, runs `$VISUAL`/`$EDITOR` (default `vi`) on it
/// through the shell (so an editor with arguments works), and reads it back.
fn edit_in_editor(trace_id: &str, text: &str) -> anyhow::Result<String> {
    let set = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    let editor = set("VISUAL")
        .or_else(|| set("EDITOR"))
        .unwrap_or_else(|| "vi".into());
    let safe: String = trace_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = std::env::temp_dir().join(format!("outbox-edit-{}-{safe}.json", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    drop(f);
    let result = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status();
    let out = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(s) if s.success() => Ok(out?),
        Ok(s) => bail!("the editor ({editor}) exited with {s}; nothing edited"),
        Err(e) => {
            bail!("cannot run the editor {editor:?} ({e}); set EDITOR or pass --payload FILE")
        }
    }
}
