//! What the commands are told: durations with units, `serve --config FILE` (TOML), and
//! where each setting came from (a flag, the file, the default), so that a refusal
//! names it as the user wrote it.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bayeux::server::OverflowPolicy;
use serde::{Deserialize, Deserializer};

/// A mistake in what the command was told (a flag, the config file): reported in one
/// line, and the command exits with status 2, as for clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A duration given with a unit (`500ms`, `30s`, `2m`, `1h`, `1m30s`: humantime's
/// units) or as a plain number of `UNIT_MS` milliseconds: [`Millis`] for the settings
/// CometD gives in milliseconds, [`Secs`] for those the CLI always took in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur<const UNIT_MS: u64>(pub Duration);

/// A duration whose plain numbers are milliseconds (`30000`, or `30s`).
pub type Millis = Dur<1>;

/// A duration whose plain numbers are seconds (`10`, `1.5`, or `500ms`).
pub type Secs = Dur<1000>;

/// Parses `text` as a duration: a number of `unit_ms` milliseconds (fractions allowed),
/// or humantime's `500ms`, `30s`, `2m`, `1h30m`.
pub fn parse_duration(text: &str, unit_ms: u64) -> Result<Duration, String> {
    let plain = if unit_ms == 1 {
        "milliseconds"
    } else {
        "seconds"
    };
    let t = text.trim();
    if let Ok(n) = t.parse::<f64>() {
        if !(n.is_finite() && n >= 0.0) {
            return Err(format!(
                "invalid duration {text:?}: a number of {plain} must be 0 or more"
            ));
        }
        return Duration::try_from_secs_f64(n * unit_ms as f64 / 1000.0)
            .map_err(|_| format!("invalid duration {text:?}: too long"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {text:?}: {e} (write e.g. 500ms, 30s, 2m, or a number of {plain})"
        )
    })
}

impl<const UNIT_MS: u64> FromStr for Dur<UNIT_MS> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s, UNIT_MS).map(Dur)
    }
}

impl<const UNIT_MS: u64> fmt::Display for Dur<UNIT_MS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", show_duration(self.0))
    }
}

/// `30s`, `5ms`, `0s`: a duration as `--help` and the messages show it.
pub fn show_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_string()
    } else {
        humantime::format_duration(d).to_string()
    }
}

impl<'de, const UNIT_MS: u64> Deserialize<'de> for Dur<UNIT_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<const U: u64>;
        impl<const U: u64> serde::de::Visitor<'_> for Visitor<U> {
            type Value = Dur<U>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let plain = if U == 1 { "milliseconds" } else { "seconds" };
                write!(
                    f,
                    "a duration such as \"30s\" or \"500ms\", or a number of {plain}"
                )
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Dur(Duration::from_millis(v.saturating_mul(U))))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("invalid duration {v}: must be 0 or more")))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                parse_duration(&v.to_string(), U)
                    .map(Dur)
                    .map_err(E::custom)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v, U).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor::<UNIT_MS>)
    }
}

/// The values of `serve --overflow` and of the file's `overflow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// The message is not queued for that session only; the session stays.
    DropNewest,
    /// The oldest queued messages make room for it.
    DropOldest,
    /// The session ends, and its client is told (409, reconnect: handshake).
    CloseSession,
}

impl Overflow {
    /// The setting for `policy` (the library's default shown by `--help`).
    pub fn of(policy: OverflowPolicy) -> Self {
        match policy {
            OverflowPolicy::DropOldest => Overflow::DropOldest,
            OverflowPolicy::CloseSession => Overflow::CloseSession,
            _ => Overflow::DropNewest,
        }
    }

    /// The library's policy.
    pub fn policy(self) -> OverflowPolicy {
        match self {
            Overflow::DropNewest => OverflowPolicy::DropNewest,
            Overflow::DropOldest => OverflowPolicy::DropOldest,
            Overflow::CloseSession => OverflowPolicy::CloseSession,
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.policy().as_str())
    }
}

/// The settings of `bayeux serve --config FILE`: each key is a flag's name
/// (`max-interval`), or CometD's (`maxInterval`) where it has one; durations take units
/// or plain milliseconds (seconds for `stats-every`); relative paths are read from the
/// file's folder. A key that is not here is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    /// `listen`.
    pub listen: Option<SocketAddr>,
    /// `path`.
    pub path: Option<String>,
    /// `timeout`.
    pub timeout: Option<Millis>,
    /// `interval`.
    pub interval: Option<Millis>,
    /// `max-interval`, `maxInterval`.
    #[serde(alias = "maxInterval")]
    pub max_interval: Option<Millis>,
    /// `max-queue`, `maxQueue`.
    #[serde(alias = "maxQueue")]
    pub max_queue: Option<usize>,
    /// `max-queue-bytes`, `maxQueueBytes`.
    #[serde(alias = "maxQueueBytes")]
    pub max_queue_bytes: Option<usize>,
    /// `overflow`.
    pub overflow: Option<Overflow>,
    /// `busy-flush-window`.
    pub busy_flush_window: Option<Millis>,
    /// `busy-threshold`.
    pub busy_threshold: Option<usize>,
    /// `max-message-size`, `maxMessageSize`.
    #[serde(alias = "maxMessageSize")]
    pub max_message_size: Option<usize>,
    /// `max-batch`, `maxBatch`.
    #[serde(alias = "maxBatch")]
    pub max_batch: Option<usize>,
    /// `max-subscriptions`, `maxSubscriptions`.
    #[serde(alias = "maxSubscriptions")]
    pub max_subscriptions: Option<usize>,
    /// `max-sessions`, `maxSessions`.
    #[serde(alias = "maxSessions")]
    pub max_sessions: Option<usize>,
    /// `max-channel-length`, `maxChannelLength`.
    #[serde(alias = "maxChannelLength")]
    pub max_channel_length: Option<usize>,
    /// `max-queued-bytes`.
    pub max_queued_bytes: Option<usize>,
    /// `max-body-bytes`.
    pub max_body_bytes: Option<usize>,
    /// `max-body-bytes-per-address`.
    pub max_body_bytes_per_address: Option<usize>,
    /// `max-sessions-per-address`.
    pub max_sessions_per_address: Option<usize>,
    /// `max-connections`.
    pub max_connections: Option<usize>,
    /// `max-connections-per-address`.
    pub max_connections_per_address: Option<usize>,
    /// `max-pending-websockets-per-address`.
    pub max_pending_websockets_per_address: Option<usize>,
    /// `websocket-handshake-timeout`.
    pub websocket_handshake_timeout: Option<Millis>,
    /// `max-auth-failures-per-address`.
    pub max_auth_failures_per_address: Option<u32>,
    /// `auth-failure-window`.
    pub auth_failure_window: Option<Millis>,
    /// `refusal-log-interval`.
    pub refusal_log_interval: Option<Millis>,
    /// `trusted-proxy`: one address or a list.
    #[serde(
        rename = "trusted-proxy",
        default,
        deserialize_with = "one_or_many_ips"
    )]
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
    /// `auth-workers`.
    pub auth_workers: Option<usize>,
    /// `max-auth-waiting`.
    pub max_auth_waiting: Option<usize>,
    /// `max-auth-failures-per-user`.
    pub max_auth_failures_per_user: Option<u32>,
    /// `channel-grammar`: `strict` or `cometd`.
    pub channel_grammar: Option<bayeux::protocol::ChannelGrammar>,
    /// `header-timeout`.
    pub header_timeout: Option<Millis>,
    /// `body-timeout`.
    pub body_timeout: Option<Millis>,
    /// `bind-browser-cookie`.
    pub bind_browser_cookie: Option<bool>,
    /// `max-sessions-per-browser`, `maxSessionsPerBrowser` (-1: no limit).
    #[serde(alias = "maxSessionsPerBrowser")]
    pub max_sessions_per_browser: Option<i64>,
    /// `http2-max-sessions-per-browser`, `http2MaxSessionsPerBrowser` (-1: no limit).
    #[serde(alias = "http2MaxSessionsPerBrowser")]
    pub http2_max_sessions_per_browser: Option<i64>,
    /// `multi-session-interval`, `multiSessionInterval`.
    #[serde(alias = "multiSessionInterval")]
    pub multi_session_interval: Option<Millis>,
    /// `cors-origin`: one origin or a list.
    #[serde(rename = "cors-origin", default, deserialize_with = "one_or_many")]
    pub cors_origins: Option<Vec<String>>,
    /// `cors-header`: one header name or a list.
    #[serde(
        rename = "cors-header",
        default,
        deserialize_with = "one_or_many_headers"
    )]
    pub cors_allowed_headers: Option<Vec<String>>,
    /// `no-ack`.
    pub no_ack: Option<bool>,
    /// `callback-polling`.
    pub callback_polling: Option<bool>,
    /// `stats-every` (plain numbers are seconds).
    pub stats_every: Option<Secs>,
    /// `users`.
    pub users: Option<PathBuf>,
    /// `trust-ext-user-id`.
    pub trust_ext_user_id: Option<bool>,
    /// `public-url`.
    pub public_url: Option<String>,
    /// `tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `tls-client-ca`.
    pub tls_client_ca: Option<PathBuf>,
    /// `tls-handshake-timeout`.
    pub tls_handshake_timeout: Option<Millis>,
    /// `http2-prior-knowledge`.
    pub http2_prior_knowledge: Option<bool>,
    /// `shutdown-grace`.
    pub shutdown_grace: Option<Millis>,
    /// `metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `no-metrics`.
    pub no_metrics: Option<bool>,
    /// `nats`: the NATS URL (several, comma-separated).
    pub nats: Option<String>,
    /// `nats-creds`.
    pub nats_creds: Option<PathBuf>,
    /// `nats-ca-cert`.
    pub nats_ca_cert: Option<PathBuf>,
    /// `nats-client-cert`.
    pub nats_client_cert: Option<PathBuf>,
    /// `nats-client-key`.
    pub nats_client_key: Option<PathBuf>,
    /// `nats-prefix`.
    pub nats_prefix: Option<String>,
    /// `replay`: one durable channel pattern or a list.
    #[serde(default, deserialize_with = "one_or_many_patterns")]
    pub replay: Option<Vec<String>>,
    /// `replay-retention`.
    pub replay_retention: Option<Millis>,
    /// `replay-max`.
    pub replay_max: Option<usize>,
    /// `replay-max-bytes`.
    pub replay_max_bytes: Option<usize>,
    /// `replay-max-channels`.
    pub replay_max_channels: Option<usize>,
    /// `replay-max-patterns`.
    pub replay_max_patterns: Option<usize>,
}

/// `replay`: a channel pattern or a list of them.
fn one_or_many_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(OneOrMany("a channel pattern or a list of patterns"))
        .map(Some)
}

/// `trusted-proxy`: an IP address or a list of them.
fn one_or_many_ips<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<std::net::IpAddr>>, D::Error> {
    let texts = d.deserialize_any(OneOrMany("an IP address or a list of IP addresses"))?;
    texts
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `cors-header`: a header name or a list of them.
fn one_or_many_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(OneOrMany("a header name or a list of header names"))
        .map(Some)
}

/// `cors-origin`: an origin or a list of them.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(OneOrMany("an origin or a list of origins"))
        .map(Some)
}

/// Reads a string or a list of strings; what it names is in the error.
struct OneOrMany(&'static str);

impl<'de> serde::de::Visitor<'de> for OneOrMany {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: serde::de::Error>(self, one: &str) -> Result<Self::Value, E> {
        Ok(vec![one.to_string()])
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut many = Vec::new();
        while let Some(one) = seq.next_element::<String>()? {
            many.push(one);
        }
        Ok(many)
    }
}

impl FileSettings {
    /// Reads and checks the config file at `path`. A file that cannot be read is an
    /// error (status 1); one that is not valid TOML, or has an unknown key or a bad
    /// value, a [`UsageError`] naming the file, the line and the key.
    pub fn load(path: &Path) -> Result<FileSettings, Box<dyn std::error::Error>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let mut settings =
            Self::parse(&text).map_err(|e| UsageError(format!("{}{e}", path.display())))?;
        // Relative paths in the file are relative to the file's folder.
        let dir = path.parent().unwrap_or(Path::new(""));
        for file in [
            &mut settings.users,
            &mut settings.tls_cert,
            &mut settings.tls_key,
            &mut settings.tls_client_ca,
            &mut settings.nats_creds,
            &mut settings.nats_ca_cert,
            &mut settings.nats_client_cert,
            &mut settings.nats_client_key,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
        Ok(settings)
    }

    /// Parses the text of a config file; the error starts with ` line N: ` (to follow
    /// the file's name) and names the key.
    pub fn parse(text: &str) -> Result<FileSettings, String> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e, None))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            toml_error(text, e.inner(), Some(path))
        })
    }
}

/// One line for a TOML error: where, which key, and what is wrong.
fn toml_error(text: &str, e: &toml::de::Error, path: Option<String>) -> String {
    let line = e
        .span()
        .map(|s| {
            format!(
                " line {}",
                text[..s.start.min(text.len())].matches('\n').count() + 1
            )
        })
        .unwrap_or_default();
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        // The keys serde expected: to suggest the one meant (`max_queue` for `max-queue`).
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let kebab = kebab_case(key);
        let hint = if kebab != key && known.contains(&kebab.as_str()) {
            format!(" (did you mean `{kebab}`?)")
        } else {
            " (the keys are the long flags of `bayeux serve --help`, or CometD's names)".to_string()
        };
        return format!(":{line}: unknown key `{key}`{hint}");
    }
    match path.filter(|p| !p.is_empty() && p != ".") {
        Some(key) => format!(":{line}: {key}: {message}"),
        None => format!(":{line}: {message}"),
    }
}

/// `max-queue` for `max_queue`, `maxQueue` or `MAX_QUEUE`.
fn kebab_case(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.char_indices() {
        if c == '_' {
            out.push('-');
        } else if c.is_uppercase()
            && i > 0
            && !key[..i].ends_with(|p: char| p.is_uppercase() || p == '_')
        {
            out.push('-');
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A flag on the command line.
    Flag,
    /// The config file.
    File,
    /// The default.
    Default,
}

/// Merges flags, the config file and the defaults (in that order of precedence), and
/// remembers where each setting came from.
#[derive(Debug, Default)]
pub struct Picker {
    file: Option<PathBuf>,
    sources: HashMap<&'static str, Source>,
}

impl Picker {
    /// A picker for settings read from the config file at `file`, if any.
    pub fn new(file: Option<&Path>) -> Self {
        Picker {
            file: file.map(Path::to_path_buf),
            sources: HashMap::new(),
        }
    }

    /// The flag's value, else the file's, else `default`.
    pub fn pick<T>(
        &mut self,
        key: &'static str,
        flag: Option<T>,
        file: Option<T>,
        default: T,
    ) -> T {
        self.maybe(key, flag, file).unwrap_or(default)
    }

    /// The flag's value, else the file's, else none.
    pub fn maybe<T>(&mut self, key: &'static str, flag: Option<T>, file: Option<T>) -> Option<T> {
        let (source, value) = match (flag, file) {
            (Some(v), _) => (Source::Flag, Some(v)),
            (None, Some(v)) => (Source::File, Some(v)),
            (None, None) => (Source::Default, None),
        };
        self.sources.insert(key, source);
        value
    }

    /// Where the setting `key` came from.
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).copied().unwrap_or(Source::Default)
    }

    /// The setting as the user wrote it: `--max-batch 0`, or
    /// `max-batch = 0 in bayeux.toml`.
    pub fn show(&self, key: &str, value: impl fmt::Display) -> String {
        match (self.source(key), &self.file) {
            (Source::File, Some(file)) => format!("{key} = {value} in {}", file.display()),
            _ => format!("--{key} {value}"),
        }
    }

    /// A [`UsageError`] for the setting `key`: `--max-batch 0: why`.
    pub fn refuse(&self, key: &str, value: impl fmt::Display, why: &str) -> UsageError {
        UsageError(format!("{}: {why}", self.show(key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_plain_numbers() {
        let ms = |s: &str| s.parse::<Millis>().map(|d| d.0);
        assert_eq!(ms("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(ms("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(ms("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(ms("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(ms("30000"), Ok(Duration::from_secs(30)));
        assert_eq!(ms("0"), Ok(Duration::ZERO));
        assert_eq!(
            "1.5".parse::<Secs>().map(|d| d.0),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            "10".parse::<Secs>().map(|d| d.0),
            Ok(Duration::from_secs(10))
        );
        let e = ms("30 parsecs").unwrap_err();
        assert!(e.starts_with("invalid duration \"30 parsecs\""), "{e}");
        assert!(ms("-1").unwrap_err().contains("0 or more"));
        assert!(ms("1e300").is_err());
        assert_eq!(Millis::from_str("5ms").unwrap().to_string(), "5ms");
        assert_eq!(show_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn a_file_takes_flag_names_and_cometd_names() {
        let s = FileSettings::parse(
            "listen = \"127.0.0.1:0\"\ntimeout = \"2s\"\nmaxInterval = 4000\nmax-queue = 7\n\
             overflow = \"drop-oldest\"\ncors-origin = \"https://a.example\"\nno-ack = true\n\
             stats-every = 2\n",
        )
        .unwrap();
        assert_eq!(s.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(s.timeout, Some(Dur(Duration::from_secs(2))));
        assert_eq!(s.max_interval, Some(Dur(Duration::from_secs(4))));
        assert_eq!(s.max_queue, Some(7));
        assert_eq!(s.overflow, Some(Overflow::DropOldest));
        assert_eq!(s.cors_origins, Some(vec!["https://a.example".to_string()]));
        assert_eq!(s.no_ack, Some(true));
        assert_eq!(s.stats_every, Some(Dur(Duration::from_secs(2))));
        assert_eq!(s.path, None);
    }

    #[test]
    fn a_file_takes_replay_patterns_one_or_many() {
        let s = FileSettings::parse(
            "replay = \"/v2/**\"\nreplay-retention = \"1h\"\nreplay-max = 50\n",
        )
        .unwrap();
        assert_eq!(s.replay, Some(vec!["/v2/**".to_string()]));
        assert_eq!(s.replay_retention, Some(Dur(Duration::from_secs(3600))));
        assert_eq!(s.replay_max, Some(50));
        let s = FileSettings::parse("replay = [\"/a\", \"/b/*\"]\n").unwrap();
        assert_eq!(s.replay, Some(vec!["/a".to_string(), "/b/*".to_string()]));
        let e = FileSettings::parse("replay = 3\n").unwrap_err();
        assert!(e.contains("a channel pattern or a list of patterns"), "{e}");
    }

    #[test]
    fn the_per_browser_keys_take_cometd_names_and_minus_one() {
        let s = FileSettings::parse(
            "maxSessionsPerBrowser = -1\nhttp2-max-sessions-per-browser = 2\n\
             multiSessionInterval = 500\n",
        )
        .unwrap();
        assert_eq!(s.max_sessions_per_browser, Some(-1));
        assert_eq!(s.http2_max_sessions_per_browser, Some(2));
        assert_eq!(
            s.multi_session_interval,
            Some(Dur(Duration::from_millis(500)))
        );
    }

    #[test]
    fn file_errors_name_the_line_and_the_key() {
        let e = FileSettings::parse("path = \"/c\"\nmax_queue = 3\n").unwrap_err();
        assert_eq!(
            e,
            ": line 2: unknown key `max_queue` (did you mean `max-queue`?)"
        );
        let e = FileSettings::parse("maxLazyTimeout = 3\n").unwrap_err();
        assert!(
            e.starts_with(": line 1: unknown key `maxLazyTimeout` (the keys are"),
            "{e}"
        );
        let e = FileSettings::parse("\n\nmax-queue = \"ten\"\n").unwrap_err();
        assert!(
            e.starts_with(": line 3: max-queue: invalid type: string \"ten\""),
            "{e}"
        );
        let e = FileSettings::parse("timeout = \"3 fortnights\"\n").unwrap_err();
        assert!(
            e.starts_with(": line 1: timeout: invalid duration \"3 fortnights\""),
            "{e}"
        );
        let e = FileSettings::parse("overflow = \"drop-all\"\n").unwrap_err();
        assert!(
            e.starts_with(": line 1: overflow: unknown variant `drop-all`"),
            "{e}"
        );
        let e = FileSettings::parse("max-queue = 1\nmaxQueue = 2\n").unwrap_err();
        assert!(e.contains("duplicate"), "{e}");
        let e = FileSettings::parse("timeout = \n").unwrap_err();
        assert!(e.starts_with(": line 1: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn kebab_case_of_other_spellings() {
        assert_eq!(kebab_case("max_queue"), "max-queue");
        assert_eq!(kebab_case("maxQueueBytes"), "max-queue-bytes");
        assert_eq!(kebab_case("MAX_QUEUE"), "max-queue");
    }

    #[test]
    fn the_picker_prefers_flags_then_the_file_and_says_where_from() {
        let mut p = Picker::new(Some(Path::new("b.toml")));
        assert_eq!(p.pick("max-batch", Some(1), Some(2), 3), 1);
        assert_eq!(p.pick("max-queue", None, Some(2), 3), 2);
        assert_eq!(p.pick("timeout", None::<u32>, None, 3), 3);
        assert_eq!(p.show("max-batch", 0), "--max-batch 0");
        assert_eq!(p.show("max-queue", 0), "max-queue = 0 in b.toml");
        assert_eq!(p.source("timeout"), Source::Default);
    }
}
