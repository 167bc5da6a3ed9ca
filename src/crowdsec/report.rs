//! Reporting the crate's own bans to the Local API as alerts with a
//! decision, with a machine's credentials, so that every bouncer of the
//! same LAPI (a firewall, another replica) refuses those clients too.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use http::{Method, Request, StatusCode};
use hyper::body::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::lapi::{OneShot, PullError, Server, send};
use crate::ban::BanChange;

/// The scenario and origin the crate's alerts and decisions carry.
pub(crate) const SCENARIO: &str = "tower-no-response/ban";
pub(crate) const ORIGIN: &str = "tower-no-response";

/// The longest decision reported: a ban "forever" becomes a year.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// A machine's login, as `cscli machines add` writes it.
#[derive(Clone)]
pub(crate) struct Machine {
    pub(crate) id: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("id", &self.id)
            .field("password", &"***")
            .finish()
    }
}

/// Sends each ban that arrives on `bans` until the ban list is gone.
pub(crate) async fn run(
    server: Server,
    base: String,
    machine: Machine,
    ipv6_prefix: u8,
    timeout: Duration,
    mut bans: mpsc::Receiver<BanChange>,
) {
    let mut token: Option<String> = None;
    let mut failing = false;
    while let Some(change) = bans.recv().await {
        // Unbans are not reported: the LAPI's delete takes away every
        // decision on an address, other sources' too. A reported decision
        // runs out at its duration.
        let BanChange::Ban(ip, ban_for) = change else {
            continue;
        };
        let alert = alert(ip, ban_for, ipv6_prefix, SystemTime::now());
        let mut outcome = Err(PullError::Unreachable("not sent".into()));
        // A token that ran out is refused with 401: log in again, once.
        for _ in 0..2 {
            if token.is_none() {
                match tokio::time::timeout(timeout, login(&server, &base, &machine)).await {
                    Ok(Ok(fresh)) => token = Some(fresh),
                    Ok(Err(e)) => {
                        outcome = Err(e);
                        break;
                    }
                    Err(_) => {
                        outcome = Err(PullError::Unreachable(format!(
                            "no answer within {timeout:?}"
                        )));
                        break;
                    }
                }
            }
            let bearer = token.as_deref().unwrap_or_default();
            let posted = tokio::time::timeout(timeout, post(&server, &base, bearer, &alert)).await;
            outcome = match posted {
                Ok(Ok(StatusCode::UNAUTHORIZED)) => {
                    token = None;
                    continue;
                }
                Ok(Ok(status)) if status.is_success() => Ok(()),
                Ok(Ok(status)) => Err(PullError::Status(status)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(PullError::Unreachable(format!(
                    "no answer within {timeout:?}"
                ))),
            };
            break;
        }
        match outcome {
            Ok(()) => {
                if failing {
                    tracing::info!(
                        target: "tower_no_response::crowdsec",
                        "bans are reported to the crowdsec LAPI again"
                    );
                }
                failing = false;
                tracing::debug!(
                    target: "tower_no_response::crowdsec",
                    client_ip = %ip,
                    "ban reported to the crowdsec LAPI"
                );
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        target: "tower_no_response::crowdsec",
                        client_ip = %ip,
                        %error,
                        "ban not reported: the crowdsec LAPI {error}; it is still enforced here"
                    );
                }
                failing = true;
            }
        }
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(server: &Server, base: &str, machine: &Machine) -> Result<String, PullError> {
    let body = serde_json::json!({ "machine_id": machine.id, "password": machine.password });
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/v1/watchers/login"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(OneShot(Some(Bytes::from(body.to_string()))))
        .map_err(|e| PullError::Malformed(e.to_string()))?;
    let (status, body) = send(server, request).await?;
    if status != StatusCode::OK {
        return Err(PullError::Status(status));
    }
    let login: Login =
        serde_json::from_slice(&body).map_err(|e| PullError::Malformed(e.to_string()))?;
    Ok(login.token)
}

async fn post(
    server: &Server,
    base: &str,
    token: &str,
    alert: &serde_json::Value,
) -> Result<StatusCode, PullError> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/v1/alerts"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(OneShot(Some(Bytes::from(
            serde_json::Value::Array(vec![alert.clone()]).to_string(),
        ))))
        .map_err(|e| PullError::Malformed(e.to_string()))?;
    Ok(send(server, request).await?.0)
}

/// The alert for one ban: its source and one `ban` decision on the banned
/// address, or on its network for IPv6 (the ban list bans the network).
pub(crate) fn alert(
    ip: IpAddr,
    ban_for: Duration,
    ipv6_prefix: u8,
    now: SystemTime,
) -> serde_json::Value {
    let (scope, value) = match ip {
        IpAddr::V6(v6) if ipv6_prefix < 128 => (
            "Range",
            ipnet::Ipv6Net::new(v6, ipv6_prefix)
                .map_or_else(|_| v6.to_string(), |net| net.trunc().to_string()),
        ),
        ip => ("Ip", ip.to_string()),
    };
    let seconds = ban_for.min(LONGEST).as_secs().max(1);
    let at = rfc3339(now);
    serde_json::json!({
        "scenario": SCENARIO,
        "scenario_hash": "",
        "scenario_version": "",
        "message": format!("{value} banned by tower-no-response for {seconds}s"),
        "events_count": 1,
        "start_at": at,
        "stop_at": at,
        "capacity": 0,
        "leakspeed": "0",
        "simulated": false,
        "events": [],
        "source": { "scope": scope, "value": value, "ip": if scope == "Ip" { value.as_str() } else { "" } },
        "decisions": [{
            "duration": format!("{seconds}s"),
            "origin": ORIGIN,
            "scenario": SCENARIO,
            "scope": scope,
            "type": "ban",
            "value": value,
        }],
    })
}

/// `2026-12-06T05:36:42Z`, from the Unix epoch, without a date library.
fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_the_lapi_reads_them() {
        let at = |secs| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_535_402), "2026-12-06T05:36:42Z");
    }

    #[test]
    fn an_ipv6_ban_is_reported_as_its_network() {
        let a = alert(
            "2001:db8:1:2::7".parse().unwrap(),
            Duration::MAX,
            64,
            SystemTime::now(),
        );
        assert_eq!(a["decisions"][0]["scope"], "Range");
        assert_eq!(a["decisions"][0]["value"], "2001:db8:1:2::/64");
        assert_eq!(a["decisions"][0]["duration"], "31536000s");
        let b = alert(
            "192.0.2.7".parse().unwrap(),
            Duration::from_secs(600),
            64,
            SystemTime::now(),
        );
        assert_eq!(b["source"]["ip"], "192.0.2.7");
        assert_eq!(b["decisions"][0]["duration"], "600s");
    }
}
