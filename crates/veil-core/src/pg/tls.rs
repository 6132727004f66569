//! TLS for every PostgreSQL connection, with libpq's `sslmode` semantics, on rustls (ring):
//!
//! | sslmode | encryption | certificate chain | host name |
//! | --- | --- | --- | --- |
//! | `disable` | no | – | – |
//! | `prefer` (default) | if the server offers it | not checked | not checked |
//! | `require` | yes | not checked | not checked |
//! | `verify-ca` | yes | checked against `sslrootcert` | not checked |
//! | `verify-full` | yes | checked against `sslrootcert` | checked |
//!
//! tokio-postgres knows only disable/prefer/require, so the DSN's `sslmode` and `sslrootcert`
//! are read here and the rest of the DSN goes to tokio-postgres' parser. The replication
//! connection (`source::conn`) uses the same rustls configuration after its SSLRequest.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed DSN: tokio-postgres' config plus veil's TLS settings.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

fn mode_from(s: &str) -> Result<SslMode, ConfigError> {
    Ok(match s {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(ConfigError::Invalid(format!(
                "unknown sslmode {other:?} (disable, prefer, require, verify-ca, verify-full)"
            )));
        }
    })
}

/// Splits a key=value DSN into (key, value) pairs, honouring single quotes and backslashes.
fn kv_pairs(dsn: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(ConfigError::Invalid(format!(
                "DSN: expected '=' after {key:?}"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(ConfigError::Invalid(format!(
                            "DSN: unterminated quote in {key}"
                        )));
                    }
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Parses a DSN (key=value or `postgres://` URL), taking out `sslmode` and `sslrootcert`.
pub fn parse_dsn(dsn: &str) -> Result<PgTarget, ConfigError> {
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let rest = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        match dsn.split_once('?') {
            None => dsn.to_owned(),
            Some((base, query)) => {
                let mut keep = Vec::new();
                for p in query.split('&') {
                    match p.split_once('=') {
                        Some(("sslmode", v)) => mode = mode_from(v)?,
                        Some(("sslrootcert", v)) => root_cert = Some(PathBuf::from(v)),
                        _ => keep.push(p),
                    }
                }
                if keep.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", keep.join("&"))
                }
            }
        }
    } else {
        let mut keep = Vec::new();
        for (k, v) in kv_pairs(dsn)? {
            match k.as_str() {
                "sslmode" => mode = mode_from(&v)?,
                "sslrootcert" => root_cert = Some(PathBuf::from(v)),
                _ => keep.push(format!("{k}={}", quote(&v))),
            }
        }
        keep.join(" ")
    };
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| ConfigError::Invalid(format!("invalid DSN: {e}")))?;
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(ConfigError::Invalid(
            "sslmode verify-ca / verify-full needs sslrootcert (the CA certificate file)".into(),
        ));
    }
    Ok(PgTarget {
        config,
        ssl_mode: mode,
        root_cert,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate (sslmode require/prefer: encryption without authentication), but
/// still checks the handshake signatures.
#[derive(Debug)]
struct NoCertCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to the root, the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls client configuration for a target (None for sslmode=disable).
pub fn client_config(target: &PgTarget) -> Result<Option<Arc<ClientConfig>>, ConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match target.ssl_mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(NoCertCheck(provider.clone())),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let path = target
                .root_cert
                .as_ref()
                .ok_or_else(|| ConfigError::Invalid("sslrootcert is required".into()))?;
            let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let mut roots = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    ConfigError::Invalid(format!("sslrootcert {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    ConfigError::Invalid(format!("sslrootcert {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                )));
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| ConfigError::Invalid(format!("TLS verifier: {e}")))?;
            if target.ssl_mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    Ok(Some(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )))
}

/// Opens a normal (non-replication) connection and spawns its connection task.
pub async fn connect(target: &PgTarget) -> Result<tokio_postgres::Client, ConnectError> {
    match client_config(target)? {
        None => {
            let (client, conn) = target.config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended");
                }
            });
            Ok(client)
        }
        Some(cfg) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*cfg).clone());
            let (client, conn) = target.config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended");
                }
            });
            Ok(client)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}", crate::pg::errors::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

impl crate::error::Classify for ConnectError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            ConnectError::Config(_) => crate::error::ErrorClass::Usage,
            ConnectError::Postgres(e) => crate::pg::errors::PgError::new("connect", e).class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_rootcert_are_taken_out() {
        let t = parse_dsn(
            "host=db user=veil password='p w' sslmode=verify-full sslrootcert=/ca.pem dbname=x",
        )
        .unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(
            t.root_cert.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(t.config.get_password(), Some(&b"p w"[..]));
        let u = parse_dsn("postgres://veil@db/x?sslmode=require&application_name=a").unwrap();
        assert_eq!(u.ssl_mode, SslMode::Require);
        assert!(
            parse_dsn("host=db sslmode=verify-ca").is_err(),
            "verify-ca needs a root cert"
        );
        assert!(parse_dsn("host=db sslmode=bogus").is_err());
        assert_eq!(
            parse_dsn("host=db user=u").unwrap().ssl_mode,
            SslMode::Prefer
        );
    }
}
