//! Throwaway infrastructure for the demo and the tests: PostgreSQL 15 clusters (`initdb` from
//! /usr/lib/postgresql/15/bin, `wal_level=logical`, random port, temp dir) and a local
//! Kafka-protocol broker (tansu with in-memory storage). Everything is torn down on drop.
//!
//! When running as root (CI), clusters run as the `postgres` OS user, since `initdb` refuses
//! root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("io error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Timeout(String),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> TestkitError + '_ {
    move |source| TestkitError::Io {
        what: what.to_owned(),
        source,
    }
}

/// Directory holding the PostgreSQL 15 server binaries.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("VEIL_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
    l.local_addr().expect("local addr").port()
}

fn is_root() -> bool {
    // SAFETY-free check: `id -u` avoids a libc dependency.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let uid = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let gid = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    Some((
        String::from_utf8_lossy(&uid.stdout).trim().parse().ok()?,
        String::from_utf8_lossy(&gid.stdout).trim().parse().ok()?,
    ))
}

/// Builds a command that runs as the `postgres` OS user when we are root.
fn pg_command(bin: &str) -> Command {
    let path = pg_bin_dir().join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), TestkitError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(io(what))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// How clients authenticate to a throwaway cluster over TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Trust,
    Md5,
    Scram,
}

/// Options for a throwaway cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub auth: Auth,
    /// Serve TLS with a throwaway CA (`PgCluster::ca_cert`); the server certificate names
    /// `localhost` only.
    pub tls: bool,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            auth: Auth::Trust,
            tls: false,
            settings: Vec::new(),
        }
    }
}

/// The password of the `veil` superuser in every throwaway cluster.
pub const TEST_PASSWORD: &str = "veil-test-pw";

/// A running throwaway PostgreSQL 15 cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    stopped: bool,
}

impl PgCluster {
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(ClusterOptions::default())
    }

    pub fn start_with(opts: ClusterOptions) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("veil-pg-")
            .tempdir()
            .map_err(io("creating a temp dir"))?;
        if is_root()
            && let Some((uid, gid)) = postgres_ids()
        {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(io("chown of the cluster dir"))?;
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, TEST_PASSWORD).map_err(io("writing the password file"))?;
        if is_root()
            && let Some((uid, gid)) = postgres_ids()
        {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(io("chown of the password file"))?;
        }
        let host_auth = match opts.auth {
            Auth::Trust => "trust",
            Auth::Md5 => "md5",
            Auth::Scram => "scram-sha-256",
        };
        let mut initdb = pg_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "veil", "-E", "UTF8", "--no-locale", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--auth-local=trust")
            .arg(format!("--auth-host={host_auth}"));
        run(initdb, "initdb")?;
        let port = free_port();
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_replication_slots = 20\nmax_wal_senders = 20\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 64MB\n\
             password_encryption = '{}'\nlog_min_messages = warning\nmax_connections = 100\n",
            dir.path().display(),
            if opts.auth == Auth::Md5 {
                "md5"
            } else {
                "scram-sha-256"
            }
        );
        for (k, v) in &opts.settings {
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        if opts.tls {
            make_certs(dir.path())?;
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing =
            std::fs::read_to_string(&conf_path).map_err(io("reading postgresql.conf"))?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).map_err(io("writing postgresql.conf"))?;
        if opts.auth == Auth::Md5 {
            // The password was stored by initdb with SCRAM; md5 auth needs an md5 hash.
            // Re-set it after start (below).
        }
        let mut cluster = PgCluster {
            dir,
            port,
            stopped: true,
        };
        let mut ctl = pg_command("pg_ctl");
        ctl.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        run(ctl, "pg_ctl start")?;
        cluster.stopped = false;
        if opts.auth == Auth::Md5 {
            cluster.psql(
                "postgres",
                &format!("ALTER USER veil PASSWORD '{TEST_PASSWORD}'"),
            )?;
        }
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The throwaway CA certificate of a cluster started with `tls`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A libpq-style DSN for database `db` over TCP.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=veil password={TEST_PASSWORD} dbname={db}",
            self.port
        )
    }

    /// Runs SQL through psql over the Unix socket (for setup steps in tests and the demo).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        let out = Command::new(pg_bin_dir().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "veil", "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(io("running psql"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TestkitError::Command {
                what: "psql".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Creates a database.
    pub fn create_db(&self, db: &str) -> Result<(), TestkitError> {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""))?;
        Ok(())
    }

    /// Server log (for diagnosing a failed test).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `pg_ctl <action> -m fast` (stop or restart) and waits; `start` starts a stopped cluster
    /// again. For fault tests.
    pub fn ctl(&mut self, action: &str) -> Result<(), TestkitError> {
        let mut ctl = pg_command("pg_ctl");
        ctl.arg("-D").arg(self.dir.path().join("data"));
        if action != "stop" {
            ctl.arg("-l").arg(self.dir.path().join("server.log"));
        }
        if action != "start" {
            ctl.args(["-m", "fast"]);
        }
        ctl.args(["-w", "-t", "60", action]);
        run(ctl, "pg_ctl")?;
        self.stopped = action == "stop";
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let mut ctl = pg_command("pg_ctl");
        ctl.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = run(ctl, "pg_ctl stop");
        self.stopped = true;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway CA and a server certificate for `localhost` (openssl CLI), readable by the
/// cluster's OS user.
/// A throwaway CA (`ca.crt`) and a server certificate for `localhost` (`server.crt`, `server.key`)
/// in `dir`, made with the openssl command.
pub fn make_certs(dir: &Path) -> Result<(), TestkitError> {
    let ossl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.current_dir(dir).args(args);
        run(c, "openssl")
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=veil test CA",
    ])?;
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(io("writing ext.cnf"))?;
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod server.key"))?;
    if is_root()
        && let Some((uid, gid)) = postgres_ids()
    {
        for f in ["server.key", "server.crt"] {
            std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid))
                .map_err(io("chown of a certificate"))?;
        }
    }
    Ok(())
}

/// Path of the broker binary: `$VEIL_BROKER_BIN`, else `tansu` on PATH or in ~/.cargo/bin.
pub fn broker_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VEIL_BROKER_BIN") {
        return Some(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let c = d.join("tansu");
            if c.is_file() {
                return Some(c);
            }
        }
    }
    let home = std::env::var_os("HOME")?;
    let c = PathBuf::from(home).join(".cargo/bin/tansu");
    c.is_file().then_some(c)
}

/// A running local Kafka-protocol broker (tansu, in-memory storage).
pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Result<Self, TestkitError> {
        let bin = broker_binary().ok_or_else(|| TestkitError::Command {
            what: "starting the broker".into(),
            detail: "tansu not found: run `cargo install tansu --locked --features dynostore` \
                     (or set VEIL_BROKER_BIN)"
                .into(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("veil-broker-")
            .tempdir()
            .map_err(io("creating a temp dir"))?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("broker.log"))
            .map_err(io("creating the broker log"))?;
        let log2 = log
            .try_clone()
            .map_err(io("cloning the broker log handle"))?;
        let child = Command::new(bin)
            .arg("broker")
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io("spawning tansu"))?;
        let mut broker = Broker {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(TestkitError::Command {
                    what: "starting tansu".into(),
                    detail: format!("exited with {status}: {}", broker.log()),
                });
            }
            if Instant::now() > deadline {
                return Err(TestkitError::Timeout(
                    "tansu did not listen within 30 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id (fault tests stop and continue it with SIGSTOP/SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("broker.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
