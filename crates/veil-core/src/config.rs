//! Configuration: one TOML file per process, every key documented in README.md, with
//! environment overrides (`VEIL_SOURCE_DSN`, `VEIL_SINK_DSN`, `VEIL_KAFKA_BROKERS`,
//! `VEIL_KAFKA_TOPIC`, `VEIL_REGISTRY_DIR`, `VEIL_MASTER_KEY`, `VEIL_VAULT_DSN`,
//! `VEIL_AUDIT_KEY`, `VEIL_METRICS_LISTEN`).
//!
//! Secrets (DSN passwords, the master key) live in [`Secret`] / [`Dsn`], whose `Debug` and
//! `Display` never show them.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::error::ConfigError;

/// A libpq-style connection string (`host=… user=… password=…` or `postgres://…`). Its
/// `Debug`/`Display` show it with the password masked.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Dsn(pub String);

impl Dsn {
    /// Parses the DSN, including `sslmode` (up to verify-full) and `sslrootcert`.
    pub fn parse(&self) -> Result<crate::pg::tls::PgTarget, ConfigError> {
        crate::pg::tls::parse_dsn(&self.0)
            .map_err(|e| ConfigError::Invalid(format!("DSN {self}: {e}")))
    }

    /// The DSN with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            // user:pass@host → user:***@host
            if let Some(at) = rest.find('@') {
                let creds = &rest[..at];
                if let Some(colon) = creds.find(':') {
                    return format!("postgres://{}:***{}", &creds[..colon], &rest[at..]);
                }
            }
            return s.clone();
        }
        s.split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***".to_owned()
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({})", self.redacted())
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A secret string; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Production database (the replication connection uses the same DSN).
    pub dsn: Dsn,
    /// Base name of the replication slot; the run epoch is appended (`veil_e3`).
    #[serde(default = "default_slot")]
    pub slot: String,
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Seconds between standby status updates.
    #[serde(default = "default_status_interval")]
    pub status_interval_secs: u64,
    /// Seconds between heartbeat messages written into the WAL (0 = off).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: u64,
    /// Where streamed in-progress transactions spill once past `spool_memory_bytes`.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    #[serde(default = "default_spool_memory")]
    pub spool_memory_bytes: usize,
    /// Seconds a hold keeps the replication connection open before it closes it (0 = at once).
    /// The slot stays and keeps the WAL from the hold point; the stream reads again from its
    /// confirmed LSN when the decision lands. A connected stream that does not read leaves its
    /// walsender blocked, and PostgreSQL 15 then waits on it to invalidate the slot at
    /// `max_slot_wal_keep_size`, stalling checkpoints.
    #[serde(default = "default_hold_release")]
    pub hold_release_secs: u64,
    /// Connections that read the initial snapshot in parallel, each importing the slot's
    /// exported snapshot (besides the one that plans the tables).
    #[serde(default = "default_snapshot_connections")]
    pub snapshot_connections: usize,
    /// A table larger than this many pages (8 KiB each) is read in ranges of this many pages
    /// (by `ctid`), spread over the snapshot connections.
    #[serde(default = "default_snapshot_range_pages")]
    pub snapshot_range_pages: u32,
    /// A decision that opens or changes a table (an approved column, an unblock, a new rule)
    /// starts a backfill of it, so its existing rows reach dev under the new decisions.
    #[serde(default = "default_true")]
    pub backfill_on_decision: bool,
}

fn default_true() -> bool {
    true
}

fn default_snapshot_connections() -> usize {
    2
}
fn default_snapshot_range_pages() -> u32 {
    2048
}

fn default_slot() -> String {
    "veil".into()
}
fn default_publication() -> String {
    "veil_pub".into()
}
fn default_status_interval() -> u64 {
    5
}
fn default_heartbeat() -> u64 {
    10
}
fn default_hold_release() -> u64 {
    10
}
fn default_spool_memory() -> usize {
    16 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Change-event topic (one partition per source database keeps its order).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Replication factor used when veil creates the topic.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Extra librdkafka options, passed through.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The largest message veil sends: `message.max.bytes` from `options` when set, else
    /// 1,000,000 bytes (Apache Kafka's default broker limit is 1,048,588; librdkafka's own is
    /// larger). One rule for every producer: an event larger than this is cut into fragments
    /// (`kafka::producer`), and batches (when events are batched) stay within it.
    pub fn max_message_bytes(&self) -> Result<usize, ConfigError> {
        match self.options.get("message.max.bytes") {
            None => Ok(1_000_000),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= MIN_MESSAGE_BYTES => Ok(n),
                _ => Err(ConfigError::Invalid(format!(
                    "[kafka] options: message.max.bytes = {v:?} must be a number of bytes of at least {MIN_MESSAGE_BYTES}"
                ))),
            },
        }
    }
}

/// The smallest `message.max.bytes` veil accepts (room for an envelope's fields and a piece).
pub const MIN_MESSAGE_BYTES: usize = 4096;

/// What a message holds besides a fragment's data: the envelope's fields, the record's key and
/// framing.
pub const MESSAGE_OVERHEAD: usize = 1024;

fn default_topic() -> String {
    "veil.changes".into()
}
fn default_replication() -> i32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default = "default_registry_dir")]
    pub dir: PathBuf,
}

fn default_registry_dir() -> PathBuf {
    PathBuf::from("schema-registry")
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            dir: default_registry_dir(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// File holding the master key as 64 hex characters. `VEIL_MASTER_KEY` overrides.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    #[serde(skip)]
    pub master_key: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Development database.
    pub dsn: Dsn,
    /// Rows applied per dev transaction at most (whole source transactions are never split
    /// across batches unless one alone is larger).
    #[serde(default = "default_batch")]
    pub batch_max_rows: usize,
    /// Milliseconds a dev transaction stays open at most before it commits at the next
    /// source-transaction boundary: under a steady flow, how long applied rows wait to become
    /// visible in dev.
    #[serde(default = "default_batch_ms")]
    pub batch_max_ms: u64,
}

fn default_batch() -> usize {
    5000
}

fn default_batch_ms() -> u64 {
    25
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Compacted audit topic (created by veil).
    #[serde(default = "default_audit_topic")]
    pub topic: String,
    /// File with the audit key, 64 hex characters (`VEIL_AUDIT_KEY` overrides). Not the
    /// tokenization key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(skip)]
    pub key: Option<Secret>,
    /// The sink's audit key (the sink signs its confirmations with its own key); needed where
    /// `veil audit verify` checks the `sink/…` chains. `VEIL_AUDIT_SINK_KEY` overrides.
    #[serde(default)]
    pub sink_key_file: Option<PathBuf>,
    #[serde(skip)]
    pub sink_key: Option<Secret>,
    /// Where each chain's journal and head live (records are stored here before they are sent).
    pub journal_dir: PathBuf,
    /// The journal's active segment is sealed (renamed `<chain>.<last seq>.sealed`) once it
    /// holds this many bytes; a start reads the active segment only (default 16 MiB).
    #[serde(default = "default_segment_bytes")]
    pub journal_segment_bytes: u64,
    /// Sealed segments kept per chain (the oldest are deleted beyond it; the audit topic and the
    /// archive hold every record). 0 keeps them all. Default 32.
    #[serde(default = "default_keep_segments")]
    pub journal_keep_segments: usize,
    /// Seconds per window summary.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// The archive database (`veil audit archive|verify|query|prove`).
    #[serde(default)]
    pub archive_dsn: Option<Dsn>,
    /// Archive retention in days (default six years).
    #[serde(default = "default_retention")]
    pub retention_days: u32,
}

fn default_audit_topic() -> String {
    "veil.audit".into()
}
fn default_window() -> u64 {
    60
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_keep_segments() -> usize {
    32
}
fn default_retention() -> u32 {
    6 * 366
}

/// The review API (`veil registry serve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Reviewer name → `blake3:<64 hex>` of that reviewer's own bearer token (made by
    /// `veil registry token NAME`). The name recorded with a decision is the one the token maps
    /// to, never one the request states.
    #[serde(default)]
    pub reviewers: std::collections::BTreeMap<String, String>,
    /// More reviewers, in a file of their own with the same `NAME = "blake3:…"` lines (kept
    /// apart from the config, e.g. mounted by a deployment); a name in both is an error.
    #[serde(default)]
    pub reviewers_file: Option<PathBuf>,
    /// PEM certificate chain and private key: the API is served over TLS (rustls). Without them
    /// it listens only on a loopback address, behind a TLS-terminating reverse proxy.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Earlier versions' one shared token; refused with a message (it cannot tell reviewers
    /// apart).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl ApiConfig {
    /// The reviewers' token digests, checked: names are plain (letters, digits, `._@-`, at most
    /// 64), digests are `blake3:` and 64 hex characters, and at least one reviewer is named.
    pub fn reviewer_digests(&self) -> Result<Vec<(String, [u8; 32])>, ConfigError> {
        if self.token_file.is_some() {
            return Err(ConfigError::Invalid(
                "[api] token_file: one shared token cannot tell reviewers apart and is no longer \
                 accepted; give each reviewer a token of their own (`veil registry token NAME`) \
                 and list them under [api.reviewers]"
                    .into(),
            ));
        }
        let mut reviewers = self.reviewers.clone();
        if let Some(path) = &self.reviewers_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let more: std::collections::BTreeMap<String, String> =
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?;
            for (name, digest) in more {
                if reviewers.insert(name.clone(), digest).is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "reviewer {name:?} is in both [api.reviewers] and {}",
                        path.display()
                    )));
                }
            }
        }
        if reviewers.is_empty() {
            return Err(ConfigError::Invalid(
                "[api.reviewers] names no reviewer: add `NAME = \"blake3:…\"` lines made by \
                 `veil registry token NAME` (or name a reviewers_file)"
                    .into(),
            ));
        }
        let mut out = Vec::with_capacity(reviewers.len());
        for (name, digest) in &reviewers {
            if !valid_reviewer_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "[api.reviewers] {name:?}: a reviewer name is 1 to 64 letters, digits, `.`, `_`, `@` or `-`"
                )));
            }
            let bytes = digest
                .strip_prefix("blake3:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "[api.reviewers] {name}: expected \"blake3:\" and 64 hex characters (the digest \
                         `veil registry token {name}` prints), not a token"
                    ))
                })?;
            out.push((name.clone(), bytes));
        }
        Ok(out)
    }
}

/// A reviewer name as the registry records it.
pub fn valid_reviewer_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// The PHI scanner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    /// Share of published rows whose safe text columns are scanned before publishing (0 = off).
    #[serde(default = "default_sample")]
    pub in_flight_sample: f64,
    /// Extra MRN shapes (regular expressions) for the MRN detector.
    #[serde(default)]
    pub mrn_patterns: Vec<String>,
}

fn default_sample() -> f64 {
    0.05
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            in_flight_sample: default_sample(),
            mrn_patterns: Vec::new(),
        }
    }
}

/// The vault: a production-side database no publication covers, holding value → token for
/// vault-held tokens (Safe Harbor ids, text, SSN, e-mail, surrogates) and the reveal log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault database (`VEIL_VAULT_DSN` overrides). Never the dev side.
    pub dsn: Dsn,
    /// Tokens kept in memory by the stream (looked up in the vault when evicted).
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Connections the stream opens to the vault: a large allocation (a snapshot's batch) is
    /// split over all of them.
    #[serde(default = "default_vault_connections")]
    pub connections: usize,
}

fn default_cache_entries() -> usize {
    1_000_000
}

fn default_vault_connections() -> usize {
    2
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for the Prometheus `/metrics` endpoint; absent = no endpoint.
    #[serde(default)]
    pub listen: Option<String>,
}

/// The whole file. `veil stream` needs `source`, `kafka`, `registry` and `keys`; `veil sink`
/// needs `sink` and `kafka` and never reads keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub source: Option<SourceConfig>,
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub sink: Option<SinkConfig>,
    #[serde(default)]
    pub vault: Option<VaultConfig>,
    #[serde(default)]
    pub scanner: ScannerConfig,
    #[serde(default)]
    pub api: Option<ApiConfig>,
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        // Relative paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.registry.dir.is_relative() && !cfg.registry.dir.exists() {
            cfg.registry.dir = base.join(&cfg.registry.dir);
        }
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        cfg.apply_env(|k| std::env::var(k).ok());
        Ok(cfg)
    }

    /// Applies the documented environment overrides.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("VEIL_SOURCE_DSN") {
            match &mut self.source {
                Some(s) => s.dsn = Dsn(v),
                None => {
                    self.source = Some(SourceConfig {
                        dsn: Dsn(v),
                        slot: default_slot(),
                        publication: default_publication(),
                        status_interval_secs: default_status_interval(),
                        heartbeat_interval_secs: default_heartbeat(),
                        spool_dir: None,
                        spool_memory_bytes: default_spool_memory(),
                        hold_release_secs: default_hold_release(),
                        snapshot_connections: default_snapshot_connections(),
                        snapshot_range_pages: default_snapshot_range_pages(),
                        backfill_on_decision: true,
                    })
                }
            }
        }
        if let Some(v) = get("VEIL_SINK_DSN") {
            match &mut self.sink {
                Some(s) => s.dsn = Dsn(v),
                None => {
                    self.sink = Some(SinkConfig {
                        dsn: Dsn(v),
                        batch_max_rows: default_batch(),
                        batch_max_ms: default_batch_ms(),
                    })
                }
            }
        }
        if let Some(v) = get("VEIL_KAFKA_BROKERS") {
            match &mut self.kafka {
                Some(k) => k.brokers = v,
                None => {
                    self.kafka = Some(KafkaConfig {
                        brokers: v,
                        topic: default_topic(),
                        replication_factor: default_replication(),
                        options: BTreeMap::new(),
                    })
                }
            }
        }
        if let (Some(v), Some(k)) = (get("VEIL_KAFKA_TOPIC"), self.kafka.as_mut()) {
            k.topic = v;
        }
        if let Some(v) = get("VEIL_REGISTRY_DIR") {
            self.registry.dir = PathBuf::from(v);
        }
        if let Some(v) = get("VEIL_MASTER_KEY") {
            self.keys.master_key = Some(Secret(v));
        }
        if let Some(v) = get("VEIL_VAULT_DSN") {
            match &mut self.vault {
                Some(s) => s.dsn = Dsn(v),
                None => {
                    self.vault = Some(VaultConfig {
                        dsn: Dsn(v),
                        cache_entries: default_cache_entries(),
                        connections: default_vault_connections(),
                    })
                }
            }
        }
        if let (Some(v), Some(a)) = (get("VEIL_AUDIT_KEY"), self.audit.as_mut()) {
            a.key = Some(Secret(v));
        }
        if let (Some(v), Some(a)) = (get("VEIL_AUDIT_SINK_KEY"), self.audit.as_mut()) {
            a.sink_key = Some(Secret(v));
        }
        if let (Some(v), Some(a)) = (get("VEIL_AUDIT_ARCHIVE_DSN"), self.audit.as_mut()) {
            a.archive_dsn = Some(Dsn(v));
        }
        if let Some(v) = get("VEIL_METRICS_LISTEN") {
            self.metrics.listen = Some(v);
        }
    }

    pub fn source(&self) -> Result<&SourceConfig, ConfigError> {
        let s = self.source.as_ref().ok_or_else(|| {
            ConfigError::Invalid("missing [source] section (or VEIL_SOURCE_DSN)".into())
        })?;
        if !(1..=64).contains(&s.snapshot_connections) {
            return Err(ConfigError::Invalid(format!(
                "source.snapshot_connections = {}: must be 1 to 64",
                s.snapshot_connections
            )));
        }
        if s.snapshot_range_pages == 0 {
            return Err(ConfigError::Invalid(
                "source.snapshot_range_pages = 0: must be at least 1".into(),
            ));
        }
        Ok(s)
    }
    pub fn kafka(&self) -> Result<&KafkaConfig, ConfigError> {
        let k = self.kafka.as_ref().ok_or_else(|| {
            ConfigError::Invalid("missing [kafka] section (or VEIL_KAFKA_BROKERS)".into())
        })?;
        k.max_message_bytes()?;
        Ok(k)
    }
    pub fn vault(&self) -> Result<&VaultConfig, ConfigError> {
        self.vault.as_ref().ok_or_else(|| {
            ConfigError::Invalid(
                "missing [vault] section (or VEIL_VAULT_DSN): the vault lives on the production side only"
                    .into(),
            )
        })
    }
    pub fn sink(&self) -> Result<&SinkConfig, ConfigError> {
        self.sink
            .as_ref()
            .ok_or_else(|| ConfigError::Invalid("missing [sink] section (or VEIL_SINK_DSN)".into()))
    }
}

/// A secret given directly (environment) wins over its file; trimmed; `None` when neither is set.
pub fn secret_or_file(
    secret: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (secret, file) {
        (Some(s), _) => Ok(Some(s.0.trim().to_owned())),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_password_never_printed() {
        let d = Dsn("host=db user=veil password=hunter2 dbname=app".into());
        assert!(!format!("{d:?}").contains("hunter2"));
        assert!(!format!("{d}").contains("hunter2"));
        let u = Dsn("postgres://veil:hunter2@db/app".into());
        assert!(!format!("{u}").contains("hunter2"));
        let s = Secret("00ff".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = Config::parse("[source]\ndsn = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dsn"), "{e}");
        let e = Config::parse("[sink]\ndsn='x'\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "VEIL_KAFKA_BROKERS" => Some("b:1".into()),
            "VEIL_MASTER_KEY" => Some("ab".repeat(32)),
            _ => None,
        });
        assert_eq!(c.kafka().unwrap().brokers, "b:1");
        assert_eq!(c.keys.master_key.as_ref().unwrap().0, "ab".repeat(32));
        assert!(format!("{c:?}").contains("Secret(***)"));
    }
}
