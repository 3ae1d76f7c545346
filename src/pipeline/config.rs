//! `[kafka]` settings: brokers, consumer group, topics with their format,
//! security, start position, queue and batch sizes, the dead-letter topic and
//! extra librdkafka properties. Secrets never sit in the file in clear: the
//! SASL password comes from an environment variable or a file, and is never
//! logged. Environment variables override the file:
//! `SEAMWATCH_KAFKA_BROKERS`, `SEAMWATCH_KAFKA_GROUP`, `SEAMWATCH_KAFKA_TOPICS`
//! (`name[:format],…`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::event::FormatHint;

/// Why Kafka settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("no topics to consume: add [[kafka.topics]] or set SEAMWATCH_KAFKA_TOPICS")]
    NoTopics,
    #[error("kafka.brokers is empty")]
    NoBrokers,
    #[error("kafka.security: {0}")]
    Security(String),
    #[error("cannot read the SASL password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the SASL password variable {0} is not set")]
    PasswordEnv(String),
    #[error("SEAMWATCH_KAFKA_TOPICS: {0}")]
    TopicsEnv(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<TopicConfig>,
    /// Where a new consumer group starts: `earliest` or `latest`.
    pub start: StartPosition,
    /// Records that do not parse go here unchanged, with headers; empty: none.
    pub dead_letter_topic: String,
    /// How often stored offsets are committed (also on revoke and shutdown).
    pub commit_interval: String,
    /// A partition without messages for this long moves its event time on
    /// by the wall-clock time it has been quiet, so absence, session and
    /// silence correlations still fire when a feed stops. `0s` disables.
    pub idle_advance: String,
    /// On assign, how far back (at most) a partition is re-read to rebuild
    /// correlation state: the widest correlation window plus the allowed
    /// lateness, capped here. `0s` disables.
    pub warm_up: String,
    /// Worker threads; 0: one per core.
    pub workers: usize,
    /// Messages queued per worker before the consumer waits (backpressure).
    pub queue: usize,
    /// Most messages a worker handles between two outbox syncs.
    pub batch: usize,
    pub security: SecurityConfig,
    /// Extra librdkafka consumer properties, passed as they are.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "seamwatch".into(),
            topics: Vec::new(),
            start: StartPosition::Earliest,
            dead_letter_topic: "seamwatch-dead-letter".into(),
            commit_interval: "5s".into(),
            idle_advance: "1m".into(),
            warm_up: "2h".into(),
            workers: 0,
            queue: 10_000,
            batch: 2000,
            security: SecurityConfig::default(),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    #[serde(default)]
    pub format: FormatHint,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    #[default]
    Earliest,
    Latest,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub protocol: Protocol,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `GSSAPI`.
    pub sasl_mechanism: String,
    pub username: String,
    /// The variable holding the SASL password.
    pub password_env: String,
    /// Or a file holding it (first line).
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) to trust, PEM.
    pub ca_location: Option<PathBuf>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            protocol: Protocol::Plaintext,
            sasl_mechanism: "PLAIN".into(),
            username: String::new(),
            password_env: "SEAMWATCH_KAFKA_PASSWORD".into(),
            password_file: None,
            ca_location: None,
        }
    }
}

impl KafkaConfig {
    /// Applies `SEAMWATCH_KAFKA_*` overrides from `env`.
    pub fn with_env(
        mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<KafkaConfig, KafkaConfigError> {
        if let Some(brokers) = env("SEAMWATCH_KAFKA_BROKERS") {
            self.brokers = brokers;
        }
        if let Some(group) = env("SEAMWATCH_KAFKA_GROUP") {
            self.group_id = group;
        }
        if let Some(topics) = env("SEAMWATCH_KAFKA_TOPICS") {
            self.topics = topics
                .split(',')
                .filter(|t| !t.trim().is_empty())
                .map(|t| {
                    let (name, format) = match t.split_once(':') {
                        Some((name, format)) => {
                            (name, format.parse().map_err(KafkaConfigError::TopicsEnv)?)
                        }
                        None => (t, FormatHint::Auto),
                    };
                    Ok(TopicConfig {
                        name: name.trim().to_owned(),
                        format,
                    })
                })
                .collect::<Result<_, KafkaConfigError>>()?;
        }
        Ok(self)
    }

    pub fn format_of(&self, topic: &str) -> FormatHint {
        self.topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.format)
            .unwrap_or_default()
    }

    pub fn commit_interval_ms(&self) -> u64 {
        humantime::parse_duration(&self.commit_interval)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(5_000)
    }

    /// `None` when disabled.
    pub fn warm_up_lookback(&self) -> Option<std::time::Duration> {
        humantime::parse_duration(&self.warm_up)
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// `None` when disabled.
    pub fn idle_advance(&self) -> Option<std::time::Duration> {
        humantime::parse_duration(&self.idle_advance)
            .ok()
            .filter(|d| !d.is_zero())
    }

    pub fn workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    /// The librdkafka settings shared by consumer and producer; the password
    /// is read here, from the environment or its file.
    pub fn client_config(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, KafkaConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(KafkaConfigError::NoBrokers);
        }
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        let security = &self.security;
        let protocol = match security.protocol {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if matches!(
            security.protocol,
            Protocol::SaslPlaintext | Protocol::SaslSsl
        ) {
            let mechanism = security.sasl_mechanism.to_ascii_uppercase();
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"].contains(&mechanism.as_str())
            {
                return Err(KafkaConfigError::Security(format!(
                    "unknown sasl_mechanism `{}` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI)",
                    security.sasl_mechanism
                )));
            }
            config.set("sasl.mechanism", &mechanism);
            if mechanism != "GSSAPI" {
                if security.username.is_empty() {
                    return Err(KafkaConfigError::Security("SASL needs a username".into()));
                }
                let password = match &security.password_file {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|source| KafkaConfigError::PasswordFile {
                            path: path.clone(),
                            source,
                        })?
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                    None => env(&security.password_env).ok_or_else(|| {
                        KafkaConfigError::PasswordEnv(security.password_env.clone())
                    })?,
                };
                config.set("sasl.username", &security.username);
                config.set("sasl.password", password);
            }
        }
        if let Some(ca) = &security.ca_location {
            config.set("ssl.ca.location", ca.display().to_string());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_sasl_from_the_environment() {
        let env = |k: &str| match k {
            "SEAMWATCH_KAFKA_BROKERS" => Some("b1:9093".to_owned()),
            "SEAMWATCH_KAFKA_TOPICS" => Some("ct:cloudtrail, az:azure".to_owned()),
            "HUB_SECRET" => Some("Endpoint=sb://x".to_owned()),
            _ => None,
        };
        let mut config = KafkaConfig::default().with_env(env).unwrap();
        assert_eq!(config.brokers, "b1:9093");
        assert_eq!(config.topics.len(), 2);
        assert_eq!(config.format_of("az"), FormatHint::Azure);
        config.security = SecurityConfig {
            protocol: Protocol::SaslSsl,
            username: "$ConnectionString".into(),
            password_env: "HUB_SECRET".into(),
            ..SecurityConfig::default()
        };
        let client = config.client_config(env).unwrap();
        assert_eq!(client.get("sasl.password"), Some("Endpoint=sb://x"));
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        config.security.password_env = "MISSING".into();
        let err = config.client_config(env).unwrap_err().to_string();
        assert!(err.contains("MISSING") && !err.contains("sb://"), "{err}");
    }
}
