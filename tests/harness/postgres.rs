//! A throwaway PostgreSQL cluster for tests: Debian's `initdb` and `postgres`
//! (`/usr/lib/postgresql/<N>/bin`, from the `postgresql` package that `.ci/run` installs) in a
//! temporary directory, on a free port, torn down when dropped. No container, no download.
//!
//! `initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` user
//! (`runuser -u postgres --`) with the data and socket directories owned by it. `postgres` is
//! started as this process's child (not through `pg_ctl`), so a stop or a SIGKILL can be
//! waited on: in a container whose PID 1 does not reap orphans, a postmaster started by
//! `pg_ctl` and then killed stays a zombie, and a restart believes it still runs. Without
//! PostgreSQL the tests say SKIP loudly, and fail under `CI` ([`super::tools::runnable`]).

use super::tools;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
    sock: PathBuf,
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
    /// Processes stopped by [`Postgres::vanish`], killed when dropped.
    frozen: Vec<nix::unistd::Pid>,
}

/// The newest `/usr/lib/postgresql/<N>/bin` with `initdb` in it.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((n, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// `cmd` as the `postgres` user when this process runs as root.
fn as_postgres(program: &Path) -> Command {
    if tools::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A temporary directory owned by the `postgres` user, with the paths of the data directory
/// (not yet created) and the socket directory in it.
fn new_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, sock) = (tmp.path().join("data"), tmp.path().join("sock"));
    std::fs::create_dir(&sock).unwrap();
    chown_to_postgres(tmp.path());
    (tmp, data, sock)
}

fn chown_to_postgres(path: &Path) {
    if tools::is_root() {
        tools::run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path),
        );
    }
}

impl Postgres {
    /// A new cluster, started; `None` (after a loud SKIP) without PostgreSQL.
    pub fn start(test: &str) -> Option<Postgres> {
        let why_not = match bin_dir() {
            None => {
                Some("PostgreSQL is not installed (Debian: apt-get install postgresql)".to_string())
            }
            Some(_) if tools::is_root() && tools::find("runuser").is_none() => {
                Some("runuser is not installed (util-linux)".into())
            }
            Some(_) => None,
        };
        if !tools::runnable(test, why_not) {
            return None;
        }
        let bin = bin_dir().unwrap();
        let (tmp, data, sock) = new_dirs();
        tools::run_ok(
            as_postgres(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .arg("-D")
                .arg(&data),
        );
        let mut pg = Postgres {
            _tmp: tmp,
            data,
            sock,
            port: super::free_port(),
            bin,
            child: None,
            frozen: Vec::new(),
        };
        pg.run();
        Some(pg)
    }

    /// A URL for the superuser over TCP, without TLS.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Starts the postmaster (again) and waits until it accepts connections. Retries for a
    /// while: after a SIGKILL its old backends may hold the shared memory for a moment.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
            let child = as_postgres(&self.bin.join("postgres"))
                .arg("-D")
                .arg(&self.data)
                .args(["-p", &self.port.to_string(), "-k"])
                .arg(&self.sock)
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "max_connections=60", "-c", "shared_buffers=32MB"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            self.child = Some(child);
            if self.wait_ready(deadline) {
                return;
            }
            self.child.take().unwrap().wait().unwrap();
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Whether the postmaster accepts connections before `deadline` (false if it exited).
    fn wait_ready(&mut self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("postgres exited ({status}): {}", self.log());
                return false;
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// The postmaster's process ID, from its pid file.
    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server as `pg_ctl stop -m immediate` does (SIGQUIT to the postmaster: no
    /// checkpoint, crash recovery at the next start) and waits for it.
    pub fn stop_immediate(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGQUIT);
    }

    /// Kills the postmaster with SIGKILL (its backends then exit on their own) and waits.
    pub fn kill_postmaster(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = self.postmaster_pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.wait();
    }
}

/// Replication: a synchronous standby copied from a running primary, its promotion, and a
/// primary whose machine is gone, for failover tests.
impl Postgres {
    /// A hot standby of this server, named `name` (its `cluster_name`, which it reports to
    /// the primary as its `application_name`), copied with `pg_basebackup -R -X stream -c
    /// fast` and started on a port of its own. Not yet synchronous: see
    /// [`Postgres::require_sync_standby`].
    pub fn standby(&self, name: &str) -> Postgres {
        let (tmp, data, sock) = new_dirs();
        tools::run_ok(
            as_postgres(&self.bin.join("pg_basebackup"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast"])
                .arg("-D")
                .arg(&data),
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!("\ncluster_name = '{name}'\n"));
        std::fs::write(&conf, text).unwrap();
        let mut pg = Postgres {
            _tmp: tmp,
            data,
            sock,
            port: super::free_port(),
            bin: self.bin.clone(),
            child: None,
            frozen: Vec::new(),
        };
        pg.run();
        pg
    }

    /// Runs `sql` (one statement) with `psql` as the superuser and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Makes every commit on this primary wait for the standby `name` and waits until
    /// `pg_stat_replication` reports it as `sync`.
    pub fn require_sync_standby(&self, name: &str) {
        self.psql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{name}'"
        ));
        self.psql("SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(30);
        let query =
            format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{name}'");
        while self.psql(&query) != "sync" {
            assert!(
                Instant::now() < deadline,
                "the standby {name} did not become synchronous: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Promotes this standby (`pg_ctl promote -w`) and waits until it accepts writes.
    pub fn promote(&self) {
        tools::run_ok(
            as_postgres(&self.bin.join("pg_ctl"))
                .args(["promote", "-w", "-t", "30", "-D"])
                .arg(&self.data),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql("SELECT pg_is_in_recovery()") != "f" {
            assert!(Instant::now() < deadline, "not promoted: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The machine is gone: the postmaster killed with SIGKILL and the data directory deleted.
    pub fn destroy(&mut self) {
        self.kill_postmaster();
        std::fs::remove_dir_all(&self.data).unwrap();
    }

    /// The machine drops off the network with its connections open: the server frozen
    /// ([`Postgres::freeze`]) and the data directory deleted. The processes are killed when
    /// this is dropped.
    pub fn vanish(&mut self) {
        self.freeze();
        std::fs::remove_dir_all(&self.data).unwrap();
    }

    /// The postmaster and every server process stopped with SIGSTOP: open connections and
    /// new ones get no answer, as from a host that froze or whose network is cut (the kernel
    /// still accepts connections and answers keepalives). [`Postgres::thaw`] resumes them;
    /// otherwise they are killed when this is dropped.
    pub fn freeze(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let postmaster = nix::unistd::Pid::from_raw(self.postmaster_pid().expect("running"));
        kill(postmaster, Signal::SIGSTOP).unwrap();
        self.frozen.push(postmaster);
        // Stopped, the postmaster forks no more: its children now are all there will be.
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`; comm may hold spaces, so split after its ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| {
                rest.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<i32>().ok())
            });
            if ppid == Some(postmaster.as_raw()) {
                let child = nix::unistd::Pid::from_raw(pid);
                let _ = kill(child, Signal::SIGSTOP);
                self.frozen.push(child);
            }
        }
    }

    /// Resumes a server stopped by [`Postgres::freeze`]: what its clients sent meanwhile is
    /// read and answered now, if they are still connected.
    pub fn thaw(&mut self) {
        use nix::sys::signal::{kill, Signal};
        for pid in self.frozen.drain(..) {
            let _ = kill(pid, Signal::SIGCONT);
        }
        // `runuser` stops itself when its child stops: wake it too.
        if let Some(child) = &self.child {
            let _ = kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                Signal::SIGCONT,
            );
        }
    }

    /// One URL naming several servers, for a client that must find the primary among them
    /// (`target_session_attrs=read-write`).
    pub fn primary_url(servers: &[&Postgres]) -> String {
        let hosts: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "postgres://postgres@{}/postgres?sslmode=disable&target_session_attrs=read-write",
            hosts.join(",")
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.frozen.is_empty() {
            for pid in self.frozen.drain(..) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            // `runuser` stops itself when its child stops: wake it so it can reap the server.
            if let Some(mut child) = self.child.take() {
                let runuser = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(runuser, nix::sys::signal::Signal::SIGCONT);
                let _ = child.wait();
            }
        }
        // A fast shutdown: SIGINT.
        self.signal(nix::sys::signal::Signal::SIGINT);
    }
}

/// Debian's PgBouncer in transaction mode in front of a [`Postgres`], as the `postgres`
/// user (it refuses root), on a free port, trusting every client; stopped when dropped.
pub struct PgBouncer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl PgBouncer {
    /// Started and accepting; `None` (after a loud SKIP) without `pgbouncer`.
    pub fn start(test: &str, pg: &Postgres) -> Option<PgBouncer> {
        let bin = tools::need(test, "pgbouncer", "Debian: apt-get install pgbouncer")?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = super::free_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\npostgres = host=127.0.0.1 port={}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {d}/users.txt\npool_mode = transaction\n\
                 pidfile = {d}/pgbouncer.pid\nlogfile = {d}/pgbouncer.log\n",
                pg.port
            ),
        )
        .unwrap();
        chown_to_postgres(dir.path());
        let child = as_postgres(&bin)
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(PgBouncer { dir, port, child })
    }

    /// A URL for the superuser through the pooler, without TLS.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid"));
        if let Some(pid) = pid.ok().and_then(|p| p.trim().parse().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.child.wait();
    }
}
