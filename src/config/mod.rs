//! seamwatch's configuration file (`config/seamwatch.toml`).
//!
//! Two steps, as everywhere in seamwatch: the file is deserialized into raw
//! serde shapes (`deny_unknown_fields`, a default for every key), then
//! validated without IO into the settings the program uses. Flags override the
//! file; the file overrides the defaults. Later stages (Kafka, alerts) add their
//! sections here.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::correlate::CorrelationConfig;
use crate::event::{FormatHint, Limits};
use crate::pipeline::KafkaConfig;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub input: InputConfig,
    pub limits: Limits,
    pub correlation: CorrelationConfig,
    pub kafka: KafkaConfig,
    pub alerts: crate::alert::config::AlertsConfig,
    pub admin: crate::admin::AdminConfig,
}

/// `[input]`: what the sources carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// `auto`, `cloudtrail`, `azure` or `gcp`.
    pub format: FormatHint,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` is only for messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // toml's message names the line and column and quotes the line.
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let limits = &self.limits;
        if limits.max_record_bytes == 0 || limits.max_document_bytes == 0 || limits.max_depth == 0 {
            return Err("limits must be greater than zero".into());
        }
        if limits.max_record_bytes > limits.max_document_bytes {
            return Err(format!(
                "limits.max_record_bytes ({}) exceeds limits.max_document_bytes ({})",
                limits.max_record_bytes, limits.max_document_bytes
            ));
        }
        let correlation = &self.correlation;
        if correlation.max_keys == 0 || correlation.max_events_per_key == 0 {
            return Err(
                "correlation.max_keys and correlation.max_events_per_key must be greater than zero"
                    .into(),
            );
        }
        self.alerts.validate().map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/seamwatch.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let path = Path::new("x.toml");
        let err = Config::from_toml("[input]\nformat = \"aws\"\n[limits]\nmax_depht = 3\n", path)
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("line 4") && message.contains("max_depht"),
            "{message}"
        );
        let err = Config::from_toml("[input]\nformat = \"splunk\"\n", path).unwrap_err();
        assert!(err.to_string().contains("splunk"), "{err}");
        let err = Config::from_toml(
            "[limits]\nmax_record_bytes = 10\nmax_document_bytes = 5\n",
            path,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
        let config = Config::from_toml("[input]\nformat = \"aws\"\n", path).unwrap();
        assert_eq!(config.input.format, FormatHint::CloudTrail);
        let config =
            Config::from_toml("[correlation]\nallowed_lateness = \"90s\"\n", path).unwrap();
        assert_eq!(config.correlation.allowed_lateness_ms, 90_000);
        let err =
            Config::from_toml("[correlation]\nallowed_lateness = \"soon\"\n", path).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn the_kubernetes_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/seamwatch.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.kafka.topics.len(), 3);
        assert!(!config.admin.listen.ip().is_loopback());
        assert_eq!(
            config.admin.token_env.as_deref(),
            Some("SEAMWATCH_ADMIN_TOKEN")
        );
        assert_eq!(config.alerts.sinks.len(), 2);
    }
}
