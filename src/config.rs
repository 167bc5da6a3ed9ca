//! Rule sets from TOML or JSON documents (feature `serde`).
//!
//! Every builder setting has a field of the same name, so a document reads
//! like the code it replaces:
//!
//! ```
//! use tower_no_response::config::RuleConfig;
//!
//! let config = RuleConfig::from_toml(r#"
//!     server_names = ["example.com", "www.example.com"]
//!     deny_user_agents = ["masscan", "zgrab"]
//!     allow_user_agents = ["python-requests"]
//!     drop_empty_user_agent = true
//!     deny_paths = ['/\.env', '^/wp-login\.php']
//!     ip_rules = [{ deny = "198.51.100.0/24" }, { deny = "203.0.113.7" }]
//!     trusted_proxies = ["127.0.0.0/8", "::1"]
//!     real_ip_header = "X-Forwarded-For"
//!     close_mode = "fin"
//!     dry_run_rules = ["path"]
//!     header_timeout_secs = 10
//!     body_timeout_secs = 10
//!
//!     [rate_limit]
//!     per_second = 10
//!     burst = 20
//!
//!     [actions]
//!     rate_limit = 429
//! "#)?;
//! let layer = config.build()?;
//! # Ok::<(), tower_no_response::config::ConfigError>(())
//! ```
//!
//! A document that does not parse, has an unknown field or a value of the
//! wrong type is refused with the path of the field; one whose values are
//! wrong (a bad CIDR, pattern or name) is refused naming the field and the
//! value. [`NoResponseLayer::reload_config`] keeps the old rules when it
//! refuses a document, and keeps what a document cannot hold (custom
//! rules, keyed limits, the shared store) when it takes one.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;

use crate::RateLimit;
use crate::error::BuildError;
use crate::rules::{Action, CloseMode, RealIpHeader};
use crate::{NoResponseLayer, NoResponseLayerBuilder};

/// A rule set as a document. See the [module docs](self) for an example.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RuleConfig {
    /// [`server_names`](NoResponseLayerBuilder::server_names).
    pub server_names: Vec<String>,
    /// [`drop_missing_host`](NoResponseLayerBuilder::drop_missing_host).
    pub drop_missing_host: bool,
    /// [`drop_ip_literal_host`](NoResponseLayerBuilder::drop_ip_literal_host).
    pub drop_ip_literal_host: bool,
    /// [`deny_user_agents`](NoResponseLayerBuilder::deny_user_agents).
    pub deny_user_agents: Vec<String>,
    /// [`allow_user_agents`](NoResponseLayerBuilder::allow_user_agents).
    pub allow_user_agents: Vec<String>,
    /// [`drop_empty_user_agent`](NoResponseLayerBuilder::drop_empty_user_agent).
    pub drop_empty_user_agent: bool,
    /// [`deny_paths`](NoResponseLayerBuilder::deny_paths).
    pub deny_paths: Vec<String>,
    /// [`allow_ip`](NoResponseLayerBuilder::allow_ip) and
    /// [`deny_ip`](NoResponseLayerBuilder::deny_ip) in order:
    /// `[{ allow = "192.0.2.0/24" }, { deny = "all" }]`.
    pub ip_rules: Vec<IpRuleConfig>,
    /// [`trusted_proxies`](NoResponseLayerBuilder::trusted_proxies).
    pub trusted_proxies: Vec<String>,
    /// [`only_from_peers`](NoResponseLayerBuilder::only_from_peers): the only peers
    /// served, besides the trusted proxies.
    pub only_from: Vec<String>,
    /// [`real_ip_header`](NoResponseLayerBuilder::real_ip_header), by name.
    pub real_ip_header: Option<String>,
    /// [`real_ip_recursive`](NoResponseLayerBuilder::real_ip_recursive).
    pub real_ip_recursive: Option<bool>,
    /// [`rate_limit`](NoResponseLayerBuilder::rate_limit).
    pub rate_limit: Option<RateLimitConfig>,
    /// [`close_mode`](NoResponseLayerBuilder::close_mode): `fin`, `reset`
    /// or `silent`.
    pub close_mode: Option<CloseModeConfig>,
    /// [`dry_run`](NoResponseLayerBuilder::dry_run).
    pub dry_run: bool,
    /// [`dry_run_rule`](NoResponseLayerBuilder::dry_run_rule), for each.
    pub dry_run_rules: Vec<String>,
    /// [`rule_action`](NoResponseLayerBuilder::rule_action) by rule name:
    /// `"drop"` or a 4xx status such as `429`.
    pub actions: BTreeMap<String, ActionConfig>,
    /// [`header_timeout`](NoResponseLayerBuilder::header_timeout), in
    /// seconds (`0.5` is half a second).
    pub header_timeout_secs: Option<f64>,
    /// [`keepalive_timeout`](NoResponseLayerBuilder::keepalive_timeout), in
    /// seconds.
    pub keepalive_timeout_secs: Option<f64>,
    /// [`body_timeout`](NoResponseLayerBuilder::body_timeout), in seconds.
    pub body_timeout_secs: Option<f64>,
}

/// One ordered IP rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum IpRuleConfig {
    /// nginx `allow`.
    Allow(String),
    /// nginx `deny`.
    Deny(String),
}

/// A rate limit: exactly one of `per_second` and `per_minute`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// `rate=Nr/s`.
    pub per_second: Option<u32>,
    /// `rate=Nr/m`.
    pub per_minute: Option<u32>,
    /// `burst=N`.
    pub burst: u32,
    /// See [`RateLimit::ipv6_prefix`].
    pub ipv6_prefix: Option<u8>,
    /// See [`RateLimit::max_keys`].
    pub max_keys: Option<usize>,
    /// See [`RateLimit::eviction_interval`], in seconds.
    pub eviction_interval_secs: Option<u64>,
}

/// `fin`, `reset` or `silent`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseModeConfig {
    /// [`CloseMode::Fin`].
    Fin,
    /// [`CloseMode::Reset`].
    Reset,
    /// [`CloseMode::Silent`].
    Silent,
}

/// `"drop"`, or a status to answer with.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ActionConfig {
    /// A 4xx status.
    Status(u16),
    /// `"drop"`.
    Named(String),
}

/// A document refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// It does not parse, or a field is unknown or of the wrong type.
    Parse {
        /// The path of the field, such as `rate_limit.burst`; `.` for the
        /// document itself.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A field's value is wrong.
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong, naming the value.
        source: BuildError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse { field, message } => write!(f, "field `{field}`: {message}"),
            Self::Invalid { field, source } => write!(f, "field `{field}`: {source}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Invalid { source, .. } => Some(source),
            Self::Parse { .. } => None,
        }
    }
}

impl RuleConfig {
    /// Parses a TOML document.
    ///
    /// # Errors
    /// The path of the first field that does not parse.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            field: ".".into(),
            message: e.message().to_owned(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            field: e.path().to_string(),
            message: e.inner().message().to_owned(),
        })
    }

    /// Parses a JSON document.
    ///
    /// # Errors
    /// The path of the first field that does not parse.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError::Parse {
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// The builder this document describes, for adding what a document
    /// cannot hold, such as custom rules.
    ///
    /// # Errors
    /// A field whose value cannot be turned into a builder setting.
    pub fn into_builder(self) -> Result<NoResponseLayerBuilder, ConfigError> {
        let mut b = NoResponseLayer::builder()
            .server_names(self.server_names)
            .drop_missing_host(self.drop_missing_host)
            .drop_ip_literal_host(self.drop_ip_literal_host)
            .deny_user_agents(self.deny_user_agents)
            .allow_user_agents(self.allow_user_agents)
            .drop_empty_user_agent(self.drop_empty_user_agent)
            .deny_paths(self.deny_paths)
            .trusted_proxies(self.trusted_proxies)
            .only_from_peers(self.only_from)
            .dry_run(self.dry_run);
        for rule in self.ip_rules {
            b = match rule {
                IpRuleConfig::Allow(v) => b.allow_ip(v),
                IpRuleConfig::Deny(v) => b.deny_ip(v),
            };
        }
        if let Some(name) = self.real_ip_header {
            let header: RealIpHeader = name.parse().map_err(|source| ConfigError::Invalid {
                field: "real_ip_header",
                source,
            })?;
            b = b.real_ip_header(header);
        }
        if let Some(recursive) = self.real_ip_recursive {
            b = b.real_ip_recursive(recursive);
        }
        if let Some(limit) = self.rate_limit {
            b = b.rate_limit(limit.into_rate_limit()?);
        }
        for (field, secs, set) in [
            (
                "header_timeout_secs",
                self.header_timeout_secs,
                NoResponseLayerBuilder::header_timeout as fn(_, _) -> _,
            ),
            (
                "keepalive_timeout_secs",
                self.keepalive_timeout_secs,
                NoResponseLayerBuilder::keepalive_timeout,
            ),
            (
                "body_timeout_secs",
                self.body_timeout_secs,
                NoResponseLayerBuilder::body_timeout,
            ),
        ] {
            if let Some(secs) = secs {
                let timeout = Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|t| !t.is_zero())
                    .ok_or_else(|| ConfigError::Parse {
                        field: field.to_owned(),
                        message: format!("{secs} is not a positive number of seconds"),
                    })?;
                b = set(b, timeout);
            }
        }
        if let Some(mode) = self.close_mode {
            b = b.close_mode(match mode {
                CloseModeConfig::Fin => CloseMode::Fin,
                CloseModeConfig::Reset => CloseMode::Reset,
                CloseModeConfig::Silent => CloseMode::Silent,
            });
        }
        for rule in self.dry_run_rules {
            b = b.dry_run_rule(rule);
        }
        for (rule, action) in self.actions {
            let action = match action {
                ActionConfig::Named(name) if name == "drop" => Action::Drop,
                ActionConfig::Status(code) => match StatusCode::from_u16(code) {
                    Ok(status) => Action::Respond(status),
                    Err(_) => return Err(invalid_action(&rule, format!("{code} is not a status"))),
                },
                ActionConfig::Named(other) => {
                    return Err(invalid_action(
                        &rule,
                        format!("{other:?} is not `drop` or a status"),
                    ));
                }
            };
            b = b.rule_action(rule, action);
        }
        Ok(b)
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// The first wrong value, naming its field.
    pub fn build(self) -> Result<NoResponseLayer, ConfigError> {
        self.into_builder()?.build().map_err(ConfigError::from)
    }
}

fn invalid_action(rule: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        field: "actions",
        source: BuildError::Action {
            rule: rule.to_owned(),
            reason,
        },
    }
}

impl RateLimitConfig {
    fn into_rate_limit(self) -> Result<RateLimit, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            field: "rate_limit",
            source: BuildError::RateLimit {
                reason: reason.to_owned(),
            },
        };
        let mut limit = match (self.per_second, self.per_minute) {
            (Some(n), None) => RateLimit::per_second(n),
            (None, Some(n)) => RateLimit::per_minute(n),
            _ => return Err(invalid("set exactly one of per_second and per_minute")),
        }
        .burst(self.burst);
        if let Some(len) = self.ipv6_prefix {
            limit = limit.ipv6_prefix(len);
        }
        if let Some(n) = self.max_keys {
            limit = limit.max_keys(n);
        }
        if let Some(secs) = self.eviction_interval_secs {
            limit = limit.eviction_interval(Duration::from_secs(secs));
        }
        Ok(limit)
    }
}

impl From<BuildError> for ConfigError {
    /// Names the document field behind the builder call that refused.
    fn from(source: BuildError) -> Self {
        let field = match &source {
            BuildError::Cidr {
                rule: "trusted_proxy",
                ..
            } => "trusted_proxies",
            BuildError::Cidr {
                rule: "only_from_peer",
                ..
            } => "only_from",
            BuildError::Cidr { .. } => "ip_rules",
            BuildError::Regex {
                rule: "allow_user_agent",
                ..
            } => "allow_user_agents",
            BuildError::Regex {
                rule: "deny_path", ..
            } => "deny_paths",
            BuildError::Regex { .. } => "deny_user_agents",
            BuildError::ServerName { .. } => "server_names",
            BuildError::RealIpHeader { .. } => "real_ip_header",
            BuildError::RateLimit { .. }
            | BuildError::StoreUrl { .. }
            | BuildError::StoreTls { .. } => "rate_limit",
            BuildError::UnknownRule {
                rule: "dry_run_rule",
                ..
            }
            | BuildError::Unused {
                call: "dry_run_rule",
                ..
            } => "dry_run_rules",
            BuildError::Unused {
                call: "allow_ip" | "deny_ip",
                ..
            } => "ip_rules",
            BuildError::UnknownRule { .. }
            | BuildError::Unused { .. }
            | BuildError::Action { .. } => "actions",
            BuildError::RuleName { .. } => "custom_rule",
            // An integration's settings are code, never a document's.
            BuildError::Setting { setting, .. } => setting,
        };
        Self::Invalid { field, source }
    }
}

impl NoResponseLayer {
    /// [`reload`](Self::reload)s from a document. The document's rules
    /// replace the rules in force, and what a document cannot hold is kept
    /// as the code set it: custom rules and keyed limits (which the
    /// document's `actions` and `dry_run_rules` may name), the shared
    /// store (when the document has a rate limit to share), the `ClientIp`
    /// extension switch and the ban list, and each timeout the document
    /// leaves out. A document that is refused leaves everything in force.
    ///
    /// To decide every part yourself, build from the document and add to
    /// it, then [`reload`](Self::reload), which replaces everything:
    ///
    /// ```
    /// use tower_no_response::NoResponseLayer;
    /// use tower_no_response::config::RuleConfig;
    ///
    /// # fn run(layer: &NoResponseLayer) -> Result<(), Box<dyn std::error::Error>> {
    /// let config = RuleConfig::from_toml(r#"server_names = ["example.com"]"#)?;
    /// let builder = config
    ///     .into_builder()?
    ///     .custom_rule("trace_method", |head| head.method == http::Method::TRACE);
    /// layer.reload(builder)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`RuleConfig::build`].
    pub fn reload_config(&self, config: RuleConfig) -> Result<(), ConfigError> {
        self.reload_document(config.into_builder()?)
            .map_err(ConfigError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("deny_ipz = []", "deny_ipz"),
            (
                "rate_limit = { per_second = \"ten\" }",
                "rate_limit.per_second",
            ),
            (
                "ip_rules = [{ allow = \"1.2.3.4\" }, { block = \"x\" }]",
                "ip_rules[1]",
            ),
            ("server_names = 3", "server_names"),
        ];
        for (doc, field) in cases {
            match RuleConfig::from_toml(doc) {
                Err(ConfigError::Parse { field: f, .. }) => assert_eq!(f, field, "{doc}"),
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_values_name_field_and_value() {
        for (doc, field, value) in [
            (
                "ip_rules = [{ deny = \"10.0.0.0/33\" }]",
                "ip_rules",
                "10.0.0.0/33",
            ),
            ("trusted_proxies = [\"nope\"]", "trusted_proxies", "nope"),
            ("only_from = [\"10.0.0.1/33\"]", "only_from", "10.0.0.1/33"),
            ("deny_paths = [\"(\"]", "deny_paths", "("),
            ("server_names = [\"a b\"]", "server_names", "a b"),
            ("dry_run_rules = [\"pathz\"]", "dry_run_rules", "pathz"),
            ("header_timeout_secs = -1.0", "header_timeout_secs", "-1"),
            ("body_timeout_secs = 0.0", "body_timeout_secs", "0"),
            ("actions = { rate_limit = 200 }", "actions", "rate_limit"),
            ("actions = { rate_limit = \"block\" }", "actions", "block"),
            (
                "real_ip_header = \"bad header\"",
                "real_ip_header",
                "bad header",
            ),
        ] {
            let err = RuleConfig::from_toml(doc).unwrap().build().unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("field `{field}`")), "{doc}: {msg}");
            assert!(msg.contains(value), "{doc}: {msg}");
        }
        let err = RuleConfig::from_toml("[rate_limit]\nburst = 3")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }

    #[test]
    fn json_works_too() {
        let config = RuleConfig::from_json(
            r#"{"server_names": ["example.com"], "rate_limit": {"per_minute": 30, "burst": 5},
                "deny_paths": ["/\\.env"], "actions": {"rate_limit": 429, "path": "drop"}}"#,
        )
        .unwrap();
        config.build().unwrap();
        match RuleConfig::from_json(r#"{"rate_limit": {"burst": -1}}"#) {
            Err(ConfigError::Parse { field, .. }) => assert_eq!(field, "rate_limit.burst"),
            other => panic!("{other:?}"),
        }
    }
}
