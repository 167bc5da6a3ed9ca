//! What happens when a rule matches: drop (444), respond with a status, or
//! nothing but an event, in dry-run.

use std::fmt;

use http::StatusCode;

use super::DropReason;
use crate::error::BuildError;

/// What a rule does to a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Action {
    /// Close the connection without a byte: nginx's `444`. The default.
    #[default]
    Drop,
    /// Answer with this status (4xx) and an empty body, keeping the
    /// connection. For legitimate clients who deserve to know: `400` for
    /// malformed requests, `403`, or `429` for the rate limit, which then
    /// carries `Retry-After` from the limiter's own wait time.
    Respond(StatusCode),
}

impl Action {
    /// The name used in the event's `action` field and in counters.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Respond(_) => "respond",
        }
    }

    /// The status logged for this action: `444` for a drop.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::Drop => 444,
            Self::Respond(status) => status.as_u16(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Drop => f.write_str("drop"),
            Self::Respond(status) => write!(f, "respond {}", status.as_u16()),
        }
    }
}

/// One rule's settings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RulePolicy {
    pub(crate) dry_run: bool,
    pub(crate) action: Action,
}

/// Policies by rule slot: built-in rules first, in [`DropReason::BUILTIN`]
/// order, then custom rules in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct Policies {
    pub(crate) names: Vec<&'static str>,
    pub(crate) policies: Vec<RulePolicy>,
}

impl Policies {
    pub(crate) fn new(custom: impl Iterator<Item = &'static str>) -> Self {
        let names: Vec<&'static str> = DropReason::BUILTIN
            .iter()
            .map(|r| r.as_str())
            .chain(custom)
            .collect();
        let policies = vec![RulePolicy::default(); names.len()];
        Self { names, policies }
    }

    /// Puts every rule in dry-run.
    pub(crate) fn dry_run_all(&mut self) {
        self.policies.iter_mut().for_each(|p| p.dry_run = true);
    }

    /// Puts the rule named `name` in dry-run, as `setting` asked.
    pub(crate) fn dry_run(&mut self, setting: &'static str, name: &str) -> Result<(), BuildError> {
        let slot = self.slot_of_name(setting, name)?;
        self.policies[slot].dry_run = true;
        Ok(())
    }

    /// Sets what the rule named `name` does, once the action is checked.
    pub(crate) fn set_action(&mut self, name: &str, action: Action) -> Result<(), BuildError> {
        let slot = self.slot_of_name("rule_action", name)?;
        validate(name, action)?;
        self.policies[slot].action = action;
        Ok(())
    }

    fn slot_of_name(&self, rule: &'static str, name: &str) -> Result<usize, BuildError> {
        if let Some(slot) = self.names.iter().position(|n| *n == name) {
            return Ok(slot);
        }
        if let Some(reason) = DropReason::builtin(name) {
            return Err(BuildError::Unused {
                call: rule,
                value: name.to_owned(),
                reason: format!(
                    "{reason} is decided by the connection side, before any rule runs, \
                     and has no per-rule settings"
                ),
            });
        }
        Err(BuildError::UnknownRule {
            rule,
            name: name.to_owned(),
            suggestion: super::reason::suggest(name, &self.names),
            known: self.names.clone(),
        })
    }

    /// Custom names are few, so a scan is cheaper than any map; it only
    /// runs when a rule matched.
    pub(crate) fn slot(&self, reason: DropReason) -> usize {
        match reason.builtin_index() {
            Some(i) => i,
            None => self
                .names
                .iter()
                .position(|n| *n == reason.as_str())
                .expect("every custom reason comes from a registered rule"),
        }
    }

    /// The rule in `slot`.
    pub(crate) fn reason(&self, slot: usize) -> DropReason {
        DropReason::BUILTIN
            .get(slot)
            .copied()
            .unwrap_or_else(|| DropReason::Custom(self.names[slot]))
    }

    /// The slot of a rule the rule set has; `None` for the connection-level
    /// reasons, which have no settings and no counters.
    pub(crate) fn slot_of(&self, reason: DropReason) -> Option<usize> {
        match reason {
            DropReason::AcceptDenied
            | DropReason::HeaderTimeout
            | DropReason::BodyTimeout
            | DropReason::Banned
            | DropReason::ConnectionLimit
            | DropReason::TlsSniMissing
            | DropReason::TlsSniIpLiteral
            | DropReason::TlsSniUnknown
            | DropReason::TlsFingerprint
            | DropReason::TlsClientHelloInvalid => None,
            _ => Some(self.slot(reason)),
        }
    }

    pub(crate) fn get(&self, reason: DropReason) -> RulePolicy {
        self.policies[self.slot(reason)]
    }
}

/// Checks a configured response status.
pub(crate) fn validate(rule: &str, action: Action) -> Result<(), BuildError> {
    match action {
        Action::Respond(status) if !status.is_client_error() => Err(BuildError::Action {
            rule: rule.to_owned(),
            reason: format!("{} is not a 4xx status", status.as_u16()),
        }),
        _ => Ok(()),
    }
}

/// How a dropped connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CloseMode {
    /// Half-close with a FIN, as nginx's `return 444`. curl reports
    /// `(52) Empty reply from server`.
    #[default]
    Fin,
    /// Reset with an RST (`SO_LINGER` of zero). curl reports
    /// `(56) Connection reset by peer`. Frees the server's socket at once,
    /// with no TIME_WAIT.
    Reset,
    /// Vanish without telling the client at all, like HAProxy's
    /// `silent-drop`: the client is left waiting on a connection that no
    /// longer exists, which ties up scanners instead of the server.
    ///
    /// With `CAP_NET_ADMIN` on Linux the socket is put in `TCP_REPAIR` mode
    /// before it closes, so the kernel sends nothing at all. Without it, the
    /// hop limit is set to 1 and the connection reset: the RST dies at the
    /// first router, so clients beyond it see nothing, but a client on the
    /// same host or link still sees the reset. [`silent_close_available`]
    /// tells which one this process gets.
    ///
    /// [`silent_close_available`]: crate::connection::silent_close_available
    Silent,
}

impl CloseMode {
    /// The name used in the 444 event's `close` field: `fin` or `reset`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Reset => "reset",
            Self::Silent => "silent",
        }
    }
}

impl fmt::Display for CloseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
