//! A CrowdSec bouncer (feature `crowdsec`): the decisions of a CrowdSec
//! Local API (LAPI), applied by the layer as nginx applies its 444.
//!
//! ```no_run
//! use tower_no_response::NoResponseLayer;
//! use tower_no_response::crowdsec::Bouncer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The key is what `cscli bouncers add my-app -o raw` prints.
//! let bouncer = Bouncer::builder("http://127.0.0.1:8080/", "4b1e...").start()?;
//! let layer = NoResponseLayer::builder()
//!     .server_name("example.com")
//!     .trusted_proxy("10.0.0.0/8")
//!     .crowdsec(&bouncer)
//!     .build()?;
//! # drop(layer);
//! # Ok(())
//! # }
//! ```
//!
//! **How it pulls.** In stream mode, CrowdSec's default for bouncers: one
//! `GET /v1/decisions/stream?startup=true` with the key in `X-Api-Key`,
//! then what changed every [`pull_every`](BouncerBuilder::pull_every)
//! (10 s by default), for decisions of scope `Ip` and `Range`. A decision
//! applies within one pull of being added, lasts as long as its duration
//! says, and lifts at the next pull once deleted. Filters on scenarios and
//! origins go to the LAPI as its own query parameters.
//!
//! **What it does.** For each request, the layer looks up the judged
//! client: the real client behind trusted proxies, as every client rule.
//! An edge (a trusted proxy, an `only_from_peer` peer) is never dropped by
//! a decision, at accept or on its own requests, since it stands for every
//! client behind it. As in CrowdSec, an IPv6 decision covers IPv6 clients
//! only: no range, not even `::/0`, covers an IPv4 client.
//!
//! | decision | rule | what happens |
//! |---|---|---|
//! | `ban` | `crowdsec` | dropped with a 444; a client that connects directly is refused at accept, before a byte is read, and with the [kernel filter](crate::server::kernel_filter) on, before its handshake |
//! | any other type (`captcha`, `throttle`) | `crowdsec_other` | [`other_types`](BouncerBuilder::other_types): a `403` answer by default |
//!
//! Both are rules like any other: `dry_run_rule("crowdsec")` watches what a
//! LAPI would drop before enforcing it, `rule_action` changes what they do,
//! and the counters and the 444 event name them, with the decision's
//! scenario in the event's `detail` field.
//! A trusted proxy or `only_from_peer` edge is never refused at accept,
//! whatever the decisions: it carries other clients.
//!
//! **Memory and cost.** Addresses sit in a hash map and ranges in sorted,
//! disjoint intervals (overlaps keep the strongest decision: a ban, then
//! the longest), rebuilt as one immutable table after each pull that
//! changed something; a lookup is one hash probe and one binary search,
//! without a lock or an allocation.
//!
//! **When the LAPI fails.** A pull that fails (unreachable, slow, an answer
//! other than `200`, a malformed answer) changes nothing: the decisions in
//! force stay, each until it runs out. The bouncer retries with a doubling
//! wait up to 60 s, logs the first failure at `warn` and the recovery at
//! `info`, and asks for every decision again once the LAPI answers. A
//! malformed answer is refused whole, never half applied: it is read as it
//! arrives, each decision kept in a compact form (about 100 bytes held per
//! decision in force), so its text is never held whole. Before the first
//! pull has answered, [`BeforeFirstPull`] says whether everyone is served
//! (the default) or every request is dropped.
//!
//! **HTTPS.** With the `crowdsec-tls` feature the URL may be `https://`:
//! the LAPI's certificate is checked against
//! [`ca_file`](BouncerBuilder::ca_file) or the system's roots, and
//! [`client_cert_files`](BouncerBuilder::client_cert_files) identifies the
//! bouncer by a certificate instead of a key (the LAPI's
//! `client_verification` and `bouncers_allowed_ou`). Every file is read and
//! checked when the bouncer starts.
//!
//! **Reporting back.** With a machine's credentials
//! ([`report_bans_as`](BouncerBuilder::report_bans_as)),
//! [`Bouncer::report_bans`] sends each ban the crate's own ban list makes
//! to the LAPI as an alert with a decision, so a firewall bouncer or
//! another replica on the same LAPI refuses the client too; its docs say
//! exactly what is sent.

mod bouncer;
mod decisions;
mod lapi;
mod report;
#[cfg(feature = "crowdsec-tls")]
mod tls;

pub use bouncer::{BeforeFirstPull, Bouncer, BouncerBuilder};

use std::sync::Arc;

use crate::NoResponseLayerBuilder;
use crate::rules::custom::{CustomRule, PeerRule};
use decisions::Remedy;

impl NoResponseLayerBuilder {
    /// Applies a CrowdSec bouncer's decisions to the judged client (the
    /// real client behind trusted proxies): a `ban` drops with rule
    /// `crowdsec`, another type acts as rule `crowdsec_other`; see
    /// [`crowdsec`](crate::crowdsec).
    pub fn crowdsec(self, bouncer: &Bouncer) -> Self {
        let bans = bouncer.clone();
        let peers = bouncer.clone();
        let others = bouncer.clone();
        self.add_custom_rule(
            "crowdsec",
            CustomRule {
                name: "crowdsec",
                predicate: Arc::new(move |head| matched(&bans, head.client_ip, Remedy::Ban)),
                peer: Some(Arc::new(Peers(peers))),
                action: None,
                spares_edges: true,
            },
        )
        .add_custom_rule(
            "crowdsec",
            CustomRule {
                name: "crowdsec_other",
                predicate: Arc::new(move |head| matched(&others, head.client_ip, Remedy::Other)),
                peer: None,
                action: Some(bouncer.other_types),
                spares_edges: true,
            },
        )
    }
}

/// The `crowdsec` rule for bare peers: at accept, and in the kernel filter.
#[derive(Debug)]
struct Peers(Bouncer);

impl PeerRule for Peers {
    fn refuses(&self, peer: std::net::IpAddr) -> bool {
        matched(&self.0, Some(peer), Remedy::Ban)
    }

    fn generation(&self) -> u64 {
        self.0.generation()
    }

    fn nets(&self, limit: usize) -> Vec<(ipnet::IpNet, std::time::Instant)> {
        self.0.ban_nets(limit)
    }
}

/// Whether a decision of this remedy is in force on `client`, logging its
/// scenario when one is.
fn matched(bouncer: &Bouncer, client: Option<std::net::IpAddr>, remedy: Remedy) -> bool {
    let Some(ip) = client else {
        return false;
    };
    match bouncer.lookup(ip, remedy) {
        Some(found) => {
            let rule = if remedy == Remedy::Ban {
                "crowdsec"
            } else {
                "crowdsec_other"
            };
            crate::rules::custom::note_detail(rule, found.scenario);
            true
        }
        None => false,
    }
}
