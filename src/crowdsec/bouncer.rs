//! The bouncer: its settings, the task that pulls the decision stream, and
//! the table the layer's rules read.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::StatusCode;
use tokio::sync::Notify;

use super::decisions::{Decision, Epoch, Found, Remedy, Table};
use super::lapi::{self, Endpoint, PullError, Server};
use super::report::{self, Machine};
use crate::ban::BanList;
use crate::error::BuildError;
use crate::rules::Action;

/// What the rules do before the first pull has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BeforeFirstPull {
    /// Serve everyone as if there were no decisions: the LAPI being down
    /// at start-up never becomes an outage. The default.
    #[default]
    Serve,
    /// Drop every request with rule `crowdsec` until the first pull has
    /// answered: nobody the LAPI would ban is served, and nobody at all
    /// while it cannot be reached.
    Drop,
}

/// A CrowdSec bouncer's settings; [`start`](Self::start) begins pulling.
#[derive(Clone)]
#[must_use]
pub struct BouncerBuilder {
    url: String,
    api_key: String,
    pull_every: Duration,
    timeout: Duration,
    scenarios_containing: Vec<String>,
    scenarios_not_containing: Vec<String>,
    origins: Vec<String>,
    other_types: Action,
    before_first_pull: BeforeFirstPull,
    machine: Option<Machine>,
    #[cfg(feature = "crowdsec-tls")]
    tls: super::tls::TlsFiles,
}

impl fmt::Debug for BouncerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BouncerBuilder")
            .field("url", &self.url)
            .field("api_key", &"***")
            .field("pull_every", &self.pull_every)
            .field("timeout", &self.timeout)
            .field("scenarios_containing", &self.scenarios_containing)
            .field("scenarios_not_containing", &self.scenarios_not_containing)
            .field("origins", &self.origins)
            .field("other_types", &self.other_types)
            .field("before_first_pull", &self.before_first_pull)
            .field("machine", &self.machine)
            .finish_non_exhaustive()
    }
}

impl BouncerBuilder {
    /// How often to ask for what changed; 10 s by default, CrowdSec's own
    /// default for bouncers. A decision added on the LAPI applies within
    /// this long.
    pub fn pull_every(mut self, every: Duration) -> Self {
        self.pull_every = every.max(Duration::from_millis(10));
        self
    }

    /// How long one pull may take; 5 s by default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Takes only decisions whose scenario contains one of `parts`
    /// (the LAPI's `scenarios_containing`).
    pub fn scenarios_containing<I, S>(mut self, parts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scenarios_containing
            .extend(parts.into_iter().map(Into::into));
        self
    }

    /// Leaves out decisions whose scenario contains one of `parts`
    /// (the LAPI's `scenarios_not_containing`).
    pub fn scenarios_not_containing<I, S>(mut self, parts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scenarios_not_containing
            .extend(parts.into_iter().map(Into::into));
        self
    }

    /// Takes only decisions from these origins, such as `crowdsec`,
    /// `cscli` or `CAPI` (the LAPI's `origins`).
    pub fn origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.origins.extend(origins.into_iter().map(Into::into));
        self
    }

    /// What a decision of another type than `ban` (`captcha`, `throttle`)
    /// does, as rule `crowdsec_other`: a `403` answer by default, which a
    /// person can see and report, where a drop would be silent.
    pub fn other_types(mut self, action: Action) -> Self {
        self.other_types = action;
        self
    }

    /// What the rules do before the first pull has answered; see
    /// [`BeforeFirstPull`].
    pub fn before_first_pull(mut self, policy: BeforeFirstPull) -> Self {
        self.before_first_pull = policy;
        self
    }

    /// Trusts the CA in this PEM file for an `https://` LAPI, in place of
    /// the system's roots (feature `crowdsec-tls`): a LAPI's certificate is
    /// usually made by its own CA.
    #[cfg(feature = "crowdsec-tls")]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca = Some(path.into());
        self
    }

    /// Identifies the bouncer to an `https://` LAPI with this client
    /// certificate and key (PEM files; feature `crowdsec-tls`) instead of
    /// an API key: the LAPI accepts a certificate signed by its CA whose
    /// organizational unit is one of its `bouncers_allowed_ou`
    /// (`bouncer-ou` by default). The key may then be empty.
    #[cfg(feature = "crowdsec-tls")]
    pub fn client_cert_files(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// Lets [`Bouncer::report_bans`] report bans as this machine: the
    /// login and password `cscli machines add NAME --auto -f FILE` writes
    /// to `FILE`. A bouncer's key cannot write decisions; a machine can.
    pub fn report_bans_as(
        mut self,
        machine_id: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.machine = Some(Machine {
            id: machine_id.into(),
            password: password.into(),
        });
        self
    }

    /// Checks the settings and starts pulling in a task of the current
    /// Tokio runtime; the task ends when the last clone of the bouncer is
    /// dropped.
    ///
    /// # Errors
    /// [`BuildError::Setting`] when the URL is not an `http://` URL with a
    /// host, when the key is empty, or when an answer status for other
    /// types is not a client error.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(self) -> Result<Bouncer, BuildError> {
        let endpoint = self.endpoint()?;
        crate::rules::policy::validate("crowdsec_other", self.other_types)?;
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(Table::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            pulled: AtomicBool::new(false),
            has_other: AtomicBool::new(false),
            first_pull: Notify::new(),
            before_first_pull: self.before_first_pull,
        });
        let task = Puller {
            shared: Arc::downgrade(&shared),
            endpoint,
            pull_every: self.pull_every,
            timeout: self.timeout,
        };
        let reporting = self.machine.map(|machine| Reporting {
            server: task.endpoint.server.clone(),
            base: task.endpoint.base.clone(),
            machine,
            timeout: self.timeout,
        });
        tokio::spawn(task.run());
        Ok(Bouncer {
            shared,
            other_types: self.other_types,
            reporting,
        })
    }

    fn endpoint(&self) -> Result<Endpoint, BuildError> {
        let bad = |reason: String| BuildError::Setting {
            setting: "crowdsec url",
            value: self.url.clone(),
            reason,
        };
        let uri: http::Uri = self.url.parse().map_err(|e| bad(format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("expected an http:// or https:// URL".into())),
        };
        let host = uri.host().ok_or_else(|| bad("no host".into()))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        #[cfg(feature = "crowdsec-tls")]
        let server = Server {
            authority,
            tls: if https {
                Some(super::tls::Tls::new(&self.tls, host)?)
            } else {
                if let Some(path) = self.tls.ca.as_ref().or(self
                    .tls
                    .client
                    .as_ref()
                    .map(|(c, _)| c))
                {
                    return Err(BuildError::Setting {
                        setting: "crowdsec TLS file",
                        value: path.display().to_string(),
                        reason: format!("TLS files need an https:// URL, not {}", self.url),
                    });
                }
                None
            },
        };
        #[cfg(not(feature = "crowdsec-tls"))]
        let server = if https {
            return Err(bad("https:// needs the crowdsec-tls feature".into()));
        } else {
            Server { authority }
        };
        #[cfg(feature = "crowdsec-tls")]
        let identified = self.tls.client.is_some();
        #[cfg(not(feature = "crowdsec-tls"))]
        let identified = false;
        let api_key = if self.api_key.trim().is_empty() {
            if !identified {
                return Err(BuildError::Setting {
                    setting: "crowdsec api key",
                    value: String::new(),
                    reason: "empty: `cscli bouncers add NAME` prints one".into(),
                });
            }
            None
        } else {
            Some(self.api_key.clone())
        };
        let base = uri.path().trim_end_matches('/');
        let mut path = format!("{base}/v1/decisions/stream?scopes=ip,range");
        for (name, values) in [
            ("scenarios_containing", &self.scenarios_containing),
            ("scenarios_not_containing", &self.scenarios_not_containing),
            ("origins", &self.origins),
        ] {
            if !values.is_empty() {
                let joined = values.join(",");
                if !joined
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/,".contains(&b))
                {
                    return Err(BuildError::Setting {
                        setting: name,
                        value: joined,
                        reason: "only letters, digits and - _ . : / are allowed".into(),
                    });
                }
                path.push_str(&format!("&{name}={joined}"));
            }
        }
        Ok(Endpoint {
            server,
            base: base.to_owned(),
            path,
            api_key,
        })
    }
}

/// A running CrowdSec bouncer: the decisions its task pulls from the Local
/// API, for [`NoResponseLayerBuilder::crowdsec`](crate::NoResponseLayerBuilder::crowdsec).
/// Cheap to clone; clones share the decisions.
#[derive(Clone)]
pub struct Bouncer {
    shared: Arc<Shared>,
    pub(crate) other_types: Action,
    reporting: Option<Reporting>,
}

/// Where and as whom bans are reported.
#[derive(Debug, Clone)]
struct Reporting {
    server: Server,
    base: String,
    machine: Machine,
    timeout: Duration,
}

impl fmt::Debug for Bouncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bouncer")
            .field("decisions", &self.decisions())
            .field("pulled", &self.has_pulled())
            .finish_non_exhaustive()
    }
}

struct Shared {
    table: ArcSwap<Table>,
    /// Bumped at each table swapped in, for the kernel filter.
    generation: std::sync::atomic::AtomicU64,
    pulled: AtomicBool,
    /// Whether the table holds a decision of another type than `ban`: most
    /// hold bans only, and then the `crowdsec_other` rule costs one load
    /// of this flag instead of taking a guard on the table.
    has_other: AtomicBool,
    first_pull: Notify,
    before_first_pull: BeforeFirstPull,
}

impl Shared {
    fn store(&self, table: Table) {
        // Raised before a table that needs it goes in, lowered after one
        // that does not: a lookup never skips a table holding other types.
        let has_other = table.has_other();
        if has_other {
            self.has_other.store(true, Ordering::Release);
        }
        self.table.store(Arc::new(table));
        if !has_other {
            self.has_other.store(false, Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Bouncer {
    /// Changes whenever the decisions in force do.
    pub(crate) fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// The bans as networks, the longest lasting first, at most `limit`.
    pub(crate) fn ban_nets(&self, limit: usize) -> Vec<(ipnet::IpNet, Instant)> {
        self.shared.table.load().kernel_nets(limit, Instant::now())
    }

    /// A bouncer for the LAPI at `url` (`http://127.0.0.1:8080/`) with the
    /// key `cscli bouncers add NAME` printed.
    pub fn builder(url: impl Into<String>, api_key: impl Into<String>) -> BouncerBuilder {
        BouncerBuilder {
            url: url.into(),
            api_key: api_key.into(),
            pull_every: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            scenarios_containing: Vec::new(),
            scenarios_not_containing: Vec::new(),
            origins: Vec::new(),
            other_types: Action::Respond(StatusCode::FORBIDDEN),
            before_first_pull: BeforeFirstPull::Serve,
            machine: None,
            #[cfg(feature = "crowdsec-tls")]
            tls: super::tls::TlsFiles::default(),
        }
    }

    /// Reports each ban `bans` makes from now on to the LAPI, as an alert
    /// with one `ban` decision, so that every bouncer of the LAPI refuses
    /// the client too. Sent, for a ban of client `192.0.2.7` for 600 s:
    /// an alert with scenario `tower-no-response/ban` and source
    /// `Ip:192.0.2.7`, and a decision `{type: ban, scope: Ip, value:
    /// 192.0.2.7, duration: 600s, origin: tower-no-response}`. An IPv6
    /// client is reported as the network the ban list bans (scope `Range`,
    /// `2001:db8:1:2::/64`), and a ban without end as one year. Unbans are
    /// not sent: the LAPI's delete would take every decision on the address,
    /// other sources' too, so a reported decision runs out at its duration.
    /// Bans that come from other replicas are not reported again. A ban
    /// that cannot be sent is logged and still enforced here.
    ///
    /// # Errors
    /// [`BuildError::Setting`] when the bouncer has no machine
    /// ([`BouncerBuilder::report_bans_as`]) or `bans` already reports.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn report_bans(&self, bans: &BanList) -> Result<(), BuildError> {
        let refused = |reason: &str| BuildError::Setting {
            setting: "report_bans",
            value: String::new(),
            reason: reason.into(),
        };
        let reporting = self
            .reporting
            .clone()
            .ok_or_else(|| refused("no machine to report as: set report_bans_as"))?;
        // Bounded: a flood of bans must not grow memory; one that cannot be
        // queued is still enforced here.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let hooked = bans.report_to(Box::new(move |change| {
            if tx.try_send(change).is_err() {
                tracing::warn!(
                    target: "tower_no_response::crowdsec",
                    ?change,
                    "ban not reported: the queue to the crowdsec LAPI is full"
                );
            }
        }));
        if !hooked {
            return Err(refused("this ban list already reports to a LAPI"));
        }
        tokio::spawn(report::run(
            reporting.server,
            reporting.base,
            reporting.machine,
            bans.ipv6_prefix(),
            reporting.timeout,
            rx,
        ));
        Ok(())
    }

    /// How many decisions on addresses and ranges were in force at the
    /// last pull that changed them (one that ran out since is no longer
    /// applied, and leaves this count at the next pull).
    #[must_use]
    pub fn decisions(&self) -> usize {
        self.shared.table.load().len()
    }

    /// Whether a pull has answered yet.
    #[must_use]
    pub fn has_pulled(&self) -> bool {
        self.shared.pulled.load(Ordering::Acquire)
    }

    /// Waits until the first pull has answered, for an app that would
    /// rather not serve before it knows the decisions.
    pub async fn first_pull(&self) {
        loop {
            let notified = self.shared.first_pull.notified();
            if self.has_pulled() {
                return;
            }
            notified.await;
        }
    }

    /// The strongest decision in force on `ip`, when it is of `remedy`.
    pub(crate) fn lookup(&self, ip: IpAddr, remedy: Remedy) -> Option<Found> {
        if !self.has_pulled() && self.shared.before_first_pull == BeforeFirstPull::Drop {
            return (remedy == Remedy::Ban).then(|| Found {
                remedy: Remedy::Ban,
                scenario: Arc::from("no decisions yet: the first pull has not answered"),
            });
        }
        if remedy == Remedy::Other && !self.shared.has_other.load(Ordering::Acquire) {
            return None;
        }
        self.shared
            .table
            .load()
            .lookup(ip, Instant::now)
            .filter(|found| found.remedy == remedy)
    }
}

/// The task that keeps the table current.
struct Puller {
    shared: Weak<Shared>,
    endpoint: Endpoint,
    pull_every: Duration,
    timeout: Duration,
}

/// The scenarios' names the decisions held index, each once.
#[derive(Debug, Default)]
struct Names {
    list: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

impl From<Vec<Arc<str>>> for Names {
    fn from(list: Vec<Arc<str>>) -> Self {
        let index = list.iter().cloned().zip(0..).collect();
        Self { list, index }
    }
}

impl Names {
    fn intern(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&index) = self.index.get(name) {
            return index;
        }
        let index = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(Arc::clone(name));
        self.index.insert(Arc::clone(name), index);
        index
    }
}

/// Applies a pull's changes to `known`: what it deleted goes, and what it
/// brought replaces any decision of the same id.
fn merge(known: &mut Vec<(u64, Decision)>, delta: &mut lapi::Delta, names: &mut Names) {
    let mut gone: Vec<u64> = std::mem::take(&mut delta.deleted);
    gone.extend(delta.new.iter().map(|(id, _)| *id));
    gone.sort_unstable();
    known.retain(|(id, _)| gone.binary_search(id).is_err());
    let remap: Vec<u32> = delta.names.iter().map(|n| names.intern(n)).collect();
    known.extend(delta.new.drain(..).map(|(id, mut d)| {
        d.scenario = remap.get(d.scenario as usize).copied().unwrap_or(0);
        (id, d)
    }));
    known.sort_unstable_by_key(|(id, _)| *id);
    known.dedup_by_key(|(id, _)| *id);
}

/// The longest wait between tries while the LAPI fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Puller {
    async fn run(self) {
        // Every decision the LAPI said is in force, sorted by id: the one
        // copy besides the table, 40 bytes each.
        let mut known: Vec<(u64, Decision)> = Vec::new();
        let mut names = Names::default();
        let epoch = Epoch::new(Instant::now());
        // After a failure the stream may have moved on without us: the
        // next pull asks for everything again.
        let mut startup = true;
        let mut failures: u32 = 0;
        // When the first decision in the table runs out.
        let mut next_expiry: Option<Instant> = None;
        loop {
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            // A pull that panics (an answer this code did not foresee)
            // must not end the puller, which would leave the decisions in
            // force for good, or, before the first pull with
            // `BeforeFirstPull::Drop`, drop every client for good: it is a
            // failure like any other, and the next pull asks for all.
            let step = CatchUnwind(Box::pin(async {
                match lapi::pull(&self.endpoint, startup, self.timeout, epoch).await {
                    Ok(mut delta) => {
                        let changed_any = !delta.new.is_empty() || !delta.deleted.is_empty();
                        if startup {
                            // The answer's own names, as its decisions index them.
                            names = Names::from(std::mem::take(&mut delta.names));
                            known = std::mem::take(&mut delta.new);
                            known.sort_unstable_by_key(|(id, _)| *id);
                            known.dedup_by_key(|(id, _)| *id);
                        } else {
                            merge(&mut known, &mut delta, &mut names);
                        }
                        let now = Instant::now();
                        // Lookups skip a decision that ran out, so the table
                        // is rebuilt only when the decisions changed, or at
                        // the first pull after one ran out.
                        let changed =
                            startup || changed_any || next_expiry.is_some_and(|at| at <= now);
                        if changed {
                            let in_force = epoch.now(now);
                            known.retain(|(_, d)| d.until > in_force);
                            known.shrink_to_fit();
                            let decisions = known.iter().map(|(_, d)| d);
                            let table = Table::build(decisions, names.list.clone(), epoch, now);
                            next_expiry = table.next_expiry();
                            shared.store(table);
                        }
                        if failures > 0 || startup {
                            tracing::info!(
                                target: "tower_no_response::crowdsec",
                                decisions = known.len(),
                                skipped = delta.skipped,
                                "crowdsec decisions pulled{}",
                                if failures > 0 { "; the LAPI answers again" } else { "" },
                            );
                        }
                        if !shared.pulled.swap(true, Ordering::AcqRel) {
                            shared.first_pull.notify_waiters();
                        }
                        startup = false;
                        failures = 0;
                    }
                    Err(error) => {
                        if failures == 0 {
                            tracing::warn!(
                                target: "tower_no_response::crowdsec",
                                lapi = ?self.endpoint.server,
                                %error,
                                kept = shared.table.load().len(),
                                "crowdsec LAPI {error}; keeping the decisions in force and retrying"
                            );
                        }
                        if matches!(error, PullError::Malformed(_)) || failures == 0 {
                            startup = true;
                        }
                        failures = failures.saturating_add(1);
                    }
                }
            }))
            .await;
            if step.is_err() {
                tracing::error!(
                    target: "tower_no_response::crowdsec",
                    lapi = ?self.endpoint.server,
                    kept = shared.table.load().len(),
                    "crowdsec pull panicked; keeping the decisions in force and pulling everything again"
                );
                startup = true;
                failures = failures.saturating_add(1);
            }
            drop(shared);
            let wait = if failures == 0 {
                self.pull_every
            } else {
                let doubled = self
                    .pull_every
                    .saturating_mul(1 << failures.min(6).saturating_sub(1));
                doubled.min(MAX_BACKOFF.max(self.pull_every))
            };
            let until = Instant::now() + wait;
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

/// A future whose panic is its output, so that one pull cannot end the
/// puller.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CatchUnwind;

    #[tokio::test]
    async fn a_panic_is_an_outcome_not_the_end() {
        let caught = CatchUnwind(Box::pin(async { panic!("an answer no one foresaw") })).await;
        assert!(caught.is_err());
        assert_eq!(CatchUnwind(Box::pin(async { 7 })).await, Ok(7));
    }
}
