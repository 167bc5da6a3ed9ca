//! The gate: reads a connection's ClientHello, judges it, and either
//! drops the connection before a byte is written or hands the same bytes
//! on to the TLS library.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::client_hello::{ClientHello, MAX_CLIENT_HELLO};
use super::fingerprint::FingerprintRules;
use crate::NoResponseLayer;
use crate::audit::{Close, DropEvent, Handling, HelloView};
use crate::connection::{AbortableStream, refuse};
use crate::error::BuildError;
use crate::rules::{CloseMode, DropReason};

/// How long a client has to send its ClientHello when the layer sets no
/// header timeout.
const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How a ClientHello refused by the server-name rules is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SniRefusal {
    /// Close with the layer's close mode, writing nothing: no ServerHello,
    /// no certificate, no alert. The default.
    #[default]
    Silent,
    /// Write one fatal `unrecognized_name` alert, then close with a FIN: the
    /// answer of nginx's `ssl_reject_handshake on`, which tells the client a
    /// TLS server is there but still shows no certificate.
    UnrecognizedNameAlert,
}

/// What the gate does with the rules' verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Enforce,
    DryRun,
}

/// Judges each TLS connection's ClientHello before the handshake: the
/// server name (SNI) by the layer's Host rules, the client's [`Ja4`]
/// fingerprint by deny and allow patterns, and the peer by the layer's
/// accept-time refusals (`only_from_peer`, bans, CrowdSec decisions). A
/// refused client gets zero bytes. Made by [`NoResponseLayer::tls_gate`];
/// cheap to clone. See the [module docs](crate::tls).
///
/// [`Ja4`]: super::Ja4
#[derive(Clone)]
pub struct TlsGate {
    layer: NoResponseLayer,
    fingerprints: FingerprintRules,
    sni_refusal: SniRefusal,
    mode: Mode,
    timeout: Option<Duration>,
}

impl fmt::Debug for TlsGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsGate")
            .field("fingerprints", &self.fingerprints)
            .field("sni_refusal", &self.sni_refusal)
            .field("dry_run", &(self.mode == Mode::DryRun))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TlsGate`]; from [`NoResponseLayer::tls_gate`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct TlsGateBuilder {
    layer: NoResponseLayer,
    deny: Vec<String>,
    allow: Vec<String>,
    sni_refusal: SniRefusal,
    dry_run: bool,
    timeout: Option<Duration>,
}

impl NoResponseLayer {
    /// A TLS gate with this layer's Host rules, peer refusals, close mode
    /// and audit outputs (feature `rustls`). The crate's serve loop uses
    /// one by default once it serves TLS; build one to add fingerprint
    /// rules, or to use the gate with tokio-rustls or axum-server.
    pub fn tls_gate(&self) -> TlsGateBuilder {
        TlsGateBuilder {
            layer: self.clone(),
            deny: Vec::new(),
            allow: Vec::new(),
            sni_refusal: SniRefusal::default(),
            dry_run: false,
            timeout: None,
        }
    }
}

impl TlsGateBuilder {
    /// Drops clients whose JA4 fingerprint matches one of `patterns`, with
    /// rule name `tls_fingerprint`. A pattern is a whole fingerprint, such
    /// as `t13d1516h2_8daaf6152771_e5627efa2ab1`, or one with `*` for any
    /// of its three parts (`t13d1516h2_*_*`).
    pub fn deny_tls_fingerprint<I>(mut self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.deny.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Exceptions to [`deny_tls_fingerprint`](Self::deny_tls_fingerprint):
    /// a client matching one of `patterns` is never dropped by it.
    pub fn allow_tls_fingerprint<I>(mut self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.allow.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// How a ClientHello refused by the server-name rules is answered;
    /// [`SniRefusal::Silent`] by default. Other refusals are always silent.
    pub fn sni_refusal(mut self, refusal: SniRefusal) -> Self {
        self.sni_refusal = refusal;
        self
    }

    /// Logs each refusal as `would_drop` and lets the client on, to see
    /// what new rules would refuse before they do.
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// How long a client has to send its whole ClientHello; the layer's
    /// header timeout by default, or 10 s when it sets none. A client that
    /// sent part of one by then is dropped as `header_timeout`; one that
    /// sent nothing is closed in order and not logged, as a browser's
    /// unused preconnection is.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// The gate.
    ///
    /// # Errors
    /// The first malformed fingerprint pattern, by value.
    pub fn build(self) -> Result<TlsGate, BuildError> {
        Ok(TlsGate {
            fingerprints: FingerprintRules::new(&self.deny, &self.allow)?,
            layer: self.layer,
            sni_refusal: self.sni_refusal,
            mode: if self.dry_run {
                Mode::DryRun
            } else {
                Mode::Enforce
            },
            timeout: self.timeout,
        })
    }
}

/// A connection the gate let through: the TCP stream, to hand to the TLS
/// library, which reads the ClientHello the gate read first; and the
/// ClientHello, to put in each request.
#[derive(Debug)]
pub struct Admitted {
    stream: AbortableStream,
    client_hello: ClientHello,
}

impl Admitted {
    /// The client's ClientHello.
    #[must_use]
    pub fn client_hello(&self) -> &ClientHello {
        &self.client_hello
    }

    /// The stream and the ClientHello. The stream replays the ClientHello
    /// to whoever reads it first, then reads the socket; the layer can
    /// abort it.
    #[must_use]
    pub fn into_parts(self) -> (AbortableStream, ClientHello) {
        (self.stream, self.client_hello)
    }
}

impl TlsGate {
    /// A gate with no fingerprint rules, for the serve loop's default.
    pub(crate) fn of(layer: &NoResponseLayer) -> Self {
        Self {
            layer: layer.clone(),
            fingerprints: FingerprintRules::default(),
            sni_refusal: SniRefusal::default(),
            mode: Mode::Enforce,
            timeout: None,
        }
    }

    /// Reads the ClientHello of a connection from `peer` and judges it.
    /// `None` when the connection was refused (closed, counted and logged)
    /// or the client went away; the TLS handshake is then never begun.
    pub async fn admit(&self, stream: TcpStream, peer: SocketAddr) -> Option<Admitted> {
        self.admit_from(stream, peer, false).await
    }

    /// [`admit`](Self::admit), for a connection from `peer` or, if
    /// `behind_balancer`, from the client a balancer's PROXY protocol
    /// header named, whose balancer `only_from_peer` judged.
    pub(crate) async fn admit_from(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        behind_balancer: bool,
    ) -> Option<Admitted> {
        if let Some((reason, mode)) = self.layer.refusal_at_accept(peer.ip(), behind_balancer) {
            refuse(stream, peer, mode, reason);
            return None;
        }
        let limit = self
            .timeout
            .or(self.layer.shared.current.load().header_timeout)
            .unwrap_or(DEFAULT_HELLO_TIMEOUT);
        let mut read = Vec::with_capacity(2048);
        let hello = match crate::alarm::within(limit, read_client_hello(&stream, &mut read)).await {
            Some(Progress::Hello(hello)) => hello,
            Some(Progress::Invalid) => {
                self.refuse(stream, peer, DropReason::TlsClientHelloInvalid, None);
                return None;
            }
            Some(Progress::Gone) => return None,
            None if read.is_empty() => {
                // Not one byte: closed in order, and no drop, as for a
                // plaintext connection no request began on.
                tracing::debug!(
                    target: "tower_no_response",
                    peer_addr = %peer,
                    "connection closed: no ClientHello within the timeout"
                );
                return None;
            }
            None => {
                let mode = self.layer.close_mode();
                refuse(stream, peer, mode, DropReason::HeaderTimeout);
                return None;
            }
        };
        // Checked again now: a ban may have come while the hello did.
        if let Some((reason, _)) = self.layer.refusal_at_accept(peer.ip(), behind_balancer) {
            self.refuse(stream, peer, reason, Some(&hello));
            return None;
        }
        if let Some(reason) = self.judge(&hello, peer) {
            if self.mode == Mode::Enforce {
                self.refuse(stream, peer, reason, Some(&hello));
                return None;
            }
            self.emit(reason, Handling::WouldDrop, peer, Some(&hello));
        }
        Some(Admitted {
            stream: AbortableStream::with_prefix(stream, read),
            client_hello: hello,
        })
    }

    /// The rule that refuses this ClientHello, if one does. Edges (trusted
    /// proxies, `only_from_peer` peers) are never judged here: a load
    /// balancer that re-encrypts often sends no server name, and its
    /// fingerprint is its own, not its clients'; the Host and other rules
    /// judge each request it carries.
    fn judge(&self, hello: &ClientHello, peer: SocketAddr) -> Option<DropReason> {
        let current = self.layer.shared.current.load();
        if current.rules.is_edge(peer.ip()) {
            return None;
        }
        if let Err(reason) = current.rules.host.check_server_name(hello.server_name()) {
            return Some(reason);
        }
        (!self.fingerprints.is_empty() && self.fingerprints.denies(&hello.ja4()))
            .then_some(DropReason::TlsFingerprint)
    }

    /// Closes a refused connection, logs it and, for the gate's own rules,
    /// strikes the client.
    fn refuse(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        reason: DropReason,
        hello: Option<&ClientHello>,
    ) {
        let current = self.layer.shared.current.load();
        let mode = current.close_mode;
        let alert = self.sni_refusal == SniRefusal::UnrecognizedNameAlert
            && matches!(
                reason,
                DropReason::TlsSniMissing | DropReason::TlsSniIpLiteral | DropReason::TlsSniUnknown
            );
        if alert {
            self.emit(
                reason,
                Handling::Drop(Close::Mode(CloseMode::Fin)),
                peer,
                hello,
            );
            tokio::spawn(send_alert(stream));
        } else {
            self.emit(reason, Handling::Drop(Close::Mode(mode)), peer, hello);
            AbortableStream::new(stream).handle().abort(mode);
        }
        let ip = peer.ip().to_canonical();
        if let Some(bans) = &current.ban_list
            && DropReason::TLS.contains(&reason)
            && reason.strikes()
            && !current.rules.is_edge(ip)
        {
            bans.strike(ip);
        }
    }

    fn emit(
        &self,
        reason: DropReason,
        handling: Handling,
        peer: SocketAddr,
        hello: Option<&ClientHello>,
    ) {
        let ja4 = hello.map(ClientHello::ja4);
        DropEvent {
            rule: reason,
            handling,
            client_ip: Some(peer.ip().to_canonical()),
            peer_addr: Some(peer),
            request: None,
            hello: Some(HelloView {
                server_name: hello.and_then(ClientHello::server_name),
                ja4: ja4.as_ref().map(super::Ja4::as_str),
            }),
        }
        .emit();
    }
}

/// `unrecognized_name` (112), fatal, in a TLS 1.2-versioned record as
/// nginx's OpenSSL writes it before a version is agreed.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 112];

async fn send_alert(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(&UNRECOGNIZED_NAME_ALERT).await?;
        stream.shutdown().await
    })
    .await;
}

/// What reading a ClientHello came to.
enum Progress {
    /// Whole and parsed; every byte read is in the buffer, for the TLS
    /// library.
    Hello(ClientHello),
    Invalid,
    /// The client closed or the socket failed before a whole ClientHello.
    Gone,
}

/// The most TLS records a ClientHello may be split into. TLS sets no
/// bound; clients send one, or a few when the hello is large. The bound
/// keeps a client that sends its hello a byte per record from making the
/// gate parse the buffer once per byte.
const MAX_RECORDS: usize = 64;

/// Reads into `buf` until it holds a whole ClientHello, or bytes that
/// cannot begin one. The buffer is parsed again only when a new record
/// header or a whole record has arrived, so a hello sent a byte at a time
/// costs one parse per record, not one per byte.
async fn read_client_hello(stream: &TcpStream, buf: &mut Vec<u8>) -> Progress {
    // Where the next record begins, and whether its header was parsed.
    let mut next = 0;
    let mut header_parsed = false;
    let mut records = 0;
    loop {
        if stream.readable().await.is_err() {
            return Progress::Gone;
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().max(2048));
        }
        match stream.try_read_buf(buf) {
            Ok(0) => return Progress::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Progress::Gone,
        }
        let mut news = false;
        while let Some(header) = buf.get(next..next + 5) {
            if !header_parsed {
                header_parsed = true;
                news = true;
            }
            let end = next + 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
            if buf.len() < end {
                break;
            }
            next = end;
            header_parsed = false;
            news = true;
            records += 1;
        }
        if records > MAX_RECORDS {
            return Progress::Invalid;
        }
        if !news {
            continue;
        }
        match ClientHello::parse(buf) {
            Ok(Some(hello)) => return Progress::Hello(hello),
            // The parser refuses a record or message longer than TLS
            // allows, so the buffer is bounded; this is a second bound.
            Ok(None) if buf.len() <= MAX_CLIENT_HELLO + 1024 => {}
            Ok(None) | Err(_) => return Progress::Invalid,
        }
    }
}
