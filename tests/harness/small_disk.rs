//! A small tmpfs for the disk-full tests: mounted for one test (root only; otherwise the
//! test says SKIP, and fails under CI) and unmounted when dropped.

/// A small tmpfs mounted for one test and unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB, or explains why not: a skip outside CI, a failure in CI.
    pub fn mount(test: &str, mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(SmallDisk { dir });
        }
        let why = "it needs to mount a tmpfs (run as root)";
        super::tools::runnable(test, Some(why.into()));
        None
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn free(&self) -> u64 {
        outbox::http::admission::disk_space(self.path()).unwrap().0
    }

    /// Writes a filler file so that about `leave` bytes stay free.
    pub fn fill_leaving(&self, leave: u64) -> std::path::PathBuf {
        let filler = self.path().join("filler");
        let size = self.free().saturating_sub(leave);
        let f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xAAu8; 1 << 20];
        let mut w = std::io::BufWriter::new(f);
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if std::io::Write::write_all(&mut w, &chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = std::io::Write::flush(&mut w);
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// One form post of `padding` bytes on a fresh connection, blocking: the status and the body
/// (what a disk-full test needs, without a runtime).
pub fn post_form(port: u16, id: &str, padding: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let body =
        serde_json::json!({"email": format!("{id}@example.com"), "message": "x".repeat(padding)})
            .to_string();
    let req = format!(
        "POST /api/collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (super::status_of(&out), body)
}
