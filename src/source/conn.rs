//! The replication connection, built on `postgres-protocol` (upstream tokio-postgres has no
//! replication support): startup with `replication=database`, trust / cleartext / md5 /
//! SCRAM-SHA-256 authentication, simple queries (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT…),
//! and the CopyBoth sub-protocol of START_REPLICATION.
//!
//! postgres-protocol's backend parser does not know CopyBothResponse (tag `W`), so this module
//! frames backend messages itself and hands every other tag to that parser.

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("connection to the source failed: {0}")]
    Io(String),
    #[error("the source closed the connection")]
    Closed,
    #[error("source server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("TLS with the source failed: {0}")]
    Tls(String),
    #[error("source configuration: {0}")]
    Config(String),
}

impl crate::error::Classify for SourceError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            SourceError::Io(_) | SourceError::Closed => ErrorClass::Transient,
            SourceError::Server { code, .. } => crate::pg::errors::sqlstate_class(code),
            SourceError::Protocol(_) | SourceError::Auth(_) | SourceError::Tls(_) => {
                ErrorClass::Definite
            }
            SourceError::Config(_) => ErrorClass::Usage,
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One backend message, framed.
pub enum Backend {
    CopyBoth,
    Other(backend::Message),
}

/// A connection in replication mode (`replication=database`).
pub struct ReplicationConn {
    io: Pin<Box<dyn Io>>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    md5_user: String,
}

fn io_err(e: std::io::Error) -> SourceError {
    SourceError::Io(e.to_string())
}

fn encode_err(e: std::io::Error) -> SourceError {
    SourceError::Protocol(format!("encoding a frontend message: {e}"))
}

/// Turns an ErrorResponse into an error carrying SQLSTATE and message. The DETAIL field, which
/// can quote row values, is deliberately dropped.
fn server_error(body: backend::ErrorResponseBody) -> SourceError {
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    SourceError::Server { code, message }
}

impl ReplicationConn {
    /// Connects (with TLS as `sslmode` asks) and authenticates.
    pub async fn connect(target: &crate::pg::tls::PgTarget) -> Result<Self, SourceError> {
        let config = &target.config;
        let host = config
            .get_hosts()
            .first()
            .cloned()
            .unwrap_or(Host::Tcp("localhost".into()));
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let tls = crate::pg::tls::client_config(target)
            .map_err(|e| SourceError::Config(e.to_string()))?;
        let io: Pin<Box<dyn Io>> = match host {
            Host::Tcp(h) => {
                let mut s = tokio::net::TcpStream::connect((h.as_str(), port))
                    .await
                    .map_err(io_err)?;
                s.set_nodelay(true).map_err(io_err)?;
                match tls {
                    None => Box::pin(s),
                    Some(cfg) => {
                        let mut req = BytesMut::new();
                        frontend::ssl_request(&mut req);
                        s.write_all(&req).await.map_err(io_err)?;
                        let mut answer = [0u8; 1];
                        s.read_exact(&mut answer).await.map_err(io_err)?;
                        match answer[0] {
                            b'S' => {
                                let name = rustls::pki_types::ServerName::try_from(h.clone())
                                    .map_err(|e| {
                                        SourceError::Config(format!("TLS server name {h:?}: {e}"))
                                    })?;
                                let stream = tokio_rustls::TlsConnector::from(cfg)
                                    .connect(name, s)
                                    .await
                                    .map_err(|e| SourceError::Tls(e.to_string()))?;
                                Box::pin(stream)
                            }
                            b'N' if target.ssl_mode == crate::pg::tls::SslMode::Prefer => {
                                Box::pin(s)
                            }
                            _ => {
                                return Err(SourceError::Tls(format!(
                                    "the server refused TLS, which sslmode={:?} requires",
                                    target.ssl_mode
                                )));
                            }
                        }
                    }
                }
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::pin(
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(io_err)?,
                )
            }
        };
        let mut conn = ReplicationConn {
            io,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            md5_user: String::new(),
        };
        let user = config
            .get_user()
            .ok_or_else(|| SourceError::Config("the source DSN names no user".into()))?
            .to_owned();
        conn.md5_user = user.clone();
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let mut params = vec![
            ("user", user.as_str()),
            ("database", dbname.as_str()),
            ("replication", "database"),
            ("client_encoding", "UTF8"),
            ("application_name", "veil_stream"),
        ];
        // pgoutput writes values with the walsender's settings: the same as the snapshot's and
        // the sink's.
        params.extend_from_slice(crate::pg::VALUE_FORMAT);
        frontend::startup_message(params.iter().copied(), &mut conn.wbuf).map_err(encode_err)?;
        conn.flush().await?;
        conn.authenticate(config.get_password()).await?;
        // Wait for ReadyForQuery.
        loop {
            match conn.recv().await? {
                Backend::Other(backend::Message::ReadyForQuery(_)) => break,
                Backend::Other(backend::Message::ErrorResponse(b)) => return Err(server_error(b)),
                _ => {}
            }
        }
        Ok(conn)
    }

    async fn authenticate(&mut self, password: Option<&[u8]>) -> Result<(), SourceError> {
        let need_password = || {
            password.ok_or_else(|| {
                SourceError::Auth("the server asks for a password and the DSN has none".into())
            })
        };
        loop {
            match self.recv().await? {
                Backend::Other(backend::Message::AuthenticationOk) => return Ok(()),
                Backend::Other(backend::Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(need_password()?, &mut self.wbuf)
                        .map_err(encode_err)?;
                    self.flush().await?;
                }
                Backend::Other(backend::Message::AuthenticationMd5Password(body)) => {
                    return self.md5(need_password()?, body.salt()).await;
                }
                Backend::Other(backend::Message::AuthenticationSasl(body)) => {
                    let mut mechs = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechs
                        .next()
                        .map_err(|e| SourceError::Protocol(e.to_string()))?
                    {
                        has_scram |= m == "SCRAM-SHA-256";
                    }
                    if !has_scram {
                        return Err(SourceError::Auth("server offers no SCRAM-SHA-256".into()));
                    }
                    let mut scram =
                        ScramSha256::new(need_password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        "SCRAM-SHA-256",
                        scram.message(),
                        &mut self.wbuf,
                    )
                    .map_err(encode_err)?;
                    self.flush().await?;
                    match self.recv().await? {
                        Backend::Other(backend::Message::AuthenticationSaslContinue(b)) => {
                            scram
                                .update(b.data())
                                .map_err(|e| SourceError::Auth(e.to_string()))?;
                        }
                        Backend::Other(backend::Message::ErrorResponse(b)) => {
                            return Err(server_error(b));
                        }
                        _ => {
                            return Err(SourceError::Protocol(
                                "unexpected message during SCRAM".into(),
                            ));
                        }
                    }
                    frontend::sasl_response(scram.message(), &mut self.wbuf).map_err(encode_err)?;
                    self.flush().await?;
                    match self.recv().await? {
                        Backend::Other(backend::Message::AuthenticationSaslFinal(b)) => {
                            scram
                                .finish(b.data())
                                .map_err(|e| SourceError::Auth(e.to_string()))?;
                        }
                        Backend::Other(backend::Message::ErrorResponse(b)) => {
                            return Err(server_error(b));
                        }
                        _ => {
                            return Err(SourceError::Protocol(
                                "unexpected message during SCRAM".into(),
                            ));
                        }
                    }
                }
                Backend::Other(backend::Message::ErrorResponse(b)) => return Err(server_error(b)),
                _ => {
                    return Err(SourceError::Auth(
                        "unsupported authentication method".into(),
                    ));
                }
            }
        }
    }

    async fn md5(&mut self, password: &[u8], salt: [u8; 4]) -> Result<(), SourceError> {
        // The user name is part of the md5 hash; it was sent in the startup message.
        let user = self.md5_user.clone();
        let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), password, salt);
        frontend::password_message(hash.as_bytes(), &mut self.wbuf).map_err(encode_err)?;
        self.flush().await?;
        match self.recv().await? {
            Backend::Other(backend::Message::AuthenticationOk) => Ok(()),
            Backend::Other(backend::Message::ErrorResponse(b)) => Err(server_error(b)),
            _ => Err(SourceError::Protocol(
                "unexpected message after md5 password".into(),
            )),
        }
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        self.io.write_all(&self.wbuf).await.map_err(io_err)?;
        self.wbuf.clear();
        self.io.flush().await.map_err(io_err)
    }

    /// Reads one backend message. Cancel-safe: bytes read stay in the buffer.
    pub async fn recv(&mut self) -> Result<Backend, SourceError> {
        loop {
            if self.rbuf.len() >= 5 {
                let tag = self.rbuf[0];
                let len = u32::from_be_bytes(self.rbuf[1..5].try_into().expect("4 bytes")) as usize;
                if len < 4 {
                    return Err(SourceError::Protocol(format!(
                        "backend message length {len} < 4"
                    )));
                }
                if self.rbuf.len() > len {
                    if tag == b'W' {
                        self.rbuf.advance(len + 1);
                        return Ok(Backend::CopyBoth);
                    }
                    match backend::Message::parse(&mut self.rbuf) {
                        Ok(Some(m)) => return Ok(Backend::Other(m)),
                        Ok(None) => {}
                        Err(e) => {
                            return Err(SourceError::Protocol(format!(
                                "parsing backend message: {e}"
                            )));
                        }
                    }
                } else {
                    self.rbuf.reserve(len + 1 - self.rbuf.len());
                }
            }
            let n = self.io.read_buf(&mut self.rbuf).await.map_err(io_err)?;
            if n == 0 {
                return Err(SourceError::Closed);
            }
        }
    }

    /// Runs a simple query; returns the text rows of its (last) result set.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        frontend::query(sql, &mut self.wbuf).map_err(encode_err)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.recv().await? {
                Backend::Other(backend::Message::DataRow(body)) => {
                    let mut row = Vec::new();
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    while let Some(r) = ranges
                        .next()
                        .map_err(|e| SourceError::Protocol(e.to_string()))?
                    {
                        row.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Backend::Other(backend::Message::ErrorResponse(b)) => error = Some(server_error(b)),
                Backend::Other(backend::Message::ReadyForQuery(_)) => break,
                Backend::CopyBoth => {
                    return Err(SourceError::Protocol(
                        "unexpected CopyBoth in simple query".into(),
                    ));
                }
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Sends START_REPLICATION and waits for the CopyBothResponse.
    pub async fn start_replication(&mut self, sql: &str) -> Result<(), SourceError> {
        frontend::query(sql, &mut self.wbuf).map_err(encode_err)?;
        self.flush().await?;
        loop {
            match self.recv().await? {
                Backend::CopyBoth => return Ok(()),
                Backend::Other(backend::Message::ErrorResponse(b)) => return Err(server_error(b)),
                Backend::Other(backend::Message::ReadyForQuery(_)) => {
                    return Err(SourceError::Protocol(
                        "START_REPLICATION ended without streaming".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// Next CopyData payload of the replication stream. Cancel-safe.
    pub async fn recv_copy(&mut self) -> Result<Bytes, SourceError> {
        loop {
            match self.recv().await? {
                Backend::Other(backend::Message::CopyData(body)) => return Ok(body.into_bytes()),
                Backend::Other(backend::Message::ErrorResponse(b)) => return Err(server_error(b)),
                Backend::Other(backend::Message::CopyDone) => return Err(SourceError::Closed),
                Backend::Other(_) | Backend::CopyBoth => {}
            }
        }
    }

    /// Sends one CopyData message (e.g. a standby status update).
    pub async fn send_copy(&mut self, payload: &[u8]) -> Result<(), SourceError> {
        frontend::CopyData::new(payload)
            .map_err(encode_err)?
            .write(&mut self.wbuf);
        self.flush().await
    }

    /// Ends the session politely.
    pub async fn terminate(&mut self) {
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
    }

    /// Ends the session and closes our side of the socket, so the server's process ends even
    /// while it is blocked writing to us (it reads the Terminate, or meets the closed socket).
    /// Bounded: a server that does not take the bytes does not keep us.
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            self.terminate().await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }
}
