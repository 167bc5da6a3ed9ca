use std::fmt;

/// The boxed error type of [`NoResponseBody`](crate::NoResponseBody) and of
/// the services that turn a drop into an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A rule set that [`NoResponseLayerBuilder::build`] refused.
///
/// Every variant names the value that was rejected, so a typo in a
/// configuration file points at itself instead of silently weakening the rules.
///
/// [`NoResponseLayerBuilder::build`]: crate::NoResponseLayerBuilder::build
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildError {
    /// An address or CIDR block in `allow_ip`, `deny_ip` or `trusted_proxy`.
    Cidr {
        /// The builder call that received the value.
        rule: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A User-Agent pattern that does not compile.
    Regex {
        /// The builder call that received the pattern.
        rule: &'static str,
        /// The pattern as given.
        pattern: String,
        /// The compiler's complaint.
        source: regex::Error,
    },
    /// A served name that is not a DNS name pattern.
    ServerName {
        /// The name as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A real-IP header name that is not a valid header name.
    RealIpHeader {
        /// The name as given.
        value: String,
    },
    /// A name for a custom rule or a keyed limit that cannot be used.
    RuleName {
        /// The builder call that received the name: `custom_rule` or
        /// `rate_limit_by`.
        call: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A rule name, in a per-rule setting, that no rule has.
    UnknownRule {
        /// The builder call that received the name.
        rule: &'static str,
        /// The name as given.
        name: String,
        /// The rule that was most likely meant, when one is close: a
        /// builder call's name (`deny_ip`), a variant's (`IpDenied`), or a
        /// typo of a rule's name.
        suggestion: Option<&'static str>,
        /// Every rule name the rule set has.
        known: Vec<&'static str>,
    },
    /// A setting that could never take effect: an action for a rule that is
    /// not configured, or a rule that an earlier one always wins over.
    /// Refused, so that a rule set does not look stricter than it is.
    Unused {
        /// The builder call that received the setting.
        call: &'static str,
        /// The value as given.
        value: String,
        /// Why it could never take effect.
        reason: String,
    },
    /// An action that cannot be taken.
    Action {
        /// The rule it was set for.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rate limit that cannot be enforced.
    RateLimit {
        /// What is wrong with it.
        reason: String,
    },
    /// A shared store's address that cannot be used, such as a malformed
    /// Redis URL. Any password in it is masked.
    StoreUrl {
        /// The address as given, password masked.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A TLS file for a shared store (a CA or a client certificate or key)
    /// that cannot be read or holds nothing usable, or TLS files given for
    /// an address without TLS.
    StoreTls {
        /// The file's path, or which PEM text was given.
        file: String,
        /// Why it was refused.
        reason: String,
    },
    /// A setting of an integration that cannot be used, such as a CrowdSec
    /// LAPI URL that is not `http://`.
    Setting {
        /// The setting, as the builder call names it.
        setting: &'static str,
        /// The value as given (a key is never shown).
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr {
                rule,
                value,
                reason,
            } => write!(f, "{rule}: invalid address or CIDR {value:?}: {reason}"),
            Self::Regex {
                rule,
                pattern,
                source,
            } => write!(f, "{rule}: invalid pattern {pattern:?}: {source}"),
            Self::ServerName { value, reason } => {
                write!(f, "server_name: invalid name {value:?}: {reason}")
            }
            Self::RealIpHeader { value } => {
                write!(f, "real_ip_header: invalid header name {value:?}")
            }
            Self::RateLimit { reason } => write!(f, "rate_limit: {reason}"),
            Self::StoreUrl { url, reason } => write!(f, "store url {url:?}: {reason}"),
            Self::StoreTls { file, reason } => write!(f, "store TLS file {file:?}: {reason}"),
            Self::Setting {
                setting,
                value,
                reason,
            } => write!(f, "{setting} {value:?}: {reason}"),
            Self::RuleName { call, name, reason } => {
                write!(f, "{call}: invalid name {name:?}: {reason}")
            }
            Self::UnknownRule {
                rule,
                name,
                suggestion,
                known,
            } => {
                write!(f, "{rule}: no rule is named {name:?}")?;
                match suggestion {
                    Some(meant) => write!(f, "; did you mean {meant:?}?"),
                    None => write!(f, "; the rules are {}", known.join(", ")),
                }
            }
            Self::Unused {
                call,
                value,
                reason,
            } => write!(f, "{call}: {value:?} would never take effect: {reason}"),
            Self::Action { rule, reason } => {
                write!(f, "rule_action: invalid action for {rule:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Regex { source, .. } => Some(source),
            _ => None,
        }
    }
}
