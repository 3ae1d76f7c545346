//! Where findings go before their offsets may be committed. The pipeline
//! appends a batch of findings and then calls `sync`; only when `sync`
//! returns are the batch's offsets stored. [`JsonlOutbox`] is the durable
//! file behind that interface (one JSON finding per line, fsync on sync);
//! [`crate::alert::store::Outbox`] is the alert outbox behind it (dedup,
//! suppression, routes, delivery queues).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::detect::Finding;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::alert::store::StoreError),
}

/// A durable destination for findings. Shared by every worker.
pub trait FindingSink: Send + Sync {
    /// Adds findings (not yet durable).
    fn append(&self, findings: &[Finding]) -> Result<(), OutboxError>;
    /// Makes everything appended so far durable.
    fn sync(&self) -> Result<(), OutboxError>;
}

/// JSON Lines file, appended to and fsynced.
pub struct JsonlOutbox {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl JsonlOutbox {
    pub fn open(path: &Path) -> Result<JsonlOutbox, OutboxError> {
        let io = |source| OutboxError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(JsonlOutbox {
            path: path.to_owned(),
            file: Mutex::new(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    fn io(&self, source: std::io::Error) -> OutboxError {
        OutboxError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl FindingSink for JsonlOutbox {
    fn append(&self, findings: &[Finding]) -> Result<(), OutboxError> {
        if findings.is_empty() {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        for finding in findings {
            serde_json::to_writer(&mut *file, finding).map_err(|e| self.io(e.into()))?;
            file.write_all(b"\n").map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), OutboxError> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.flush().map_err(|e| self.io(e))?;
        file.get_ref().sync_data().map_err(|e| self.io(e))
    }
}

impl FindingSink for crate::alert::store::Outbox {
    fn append(&self, findings: &[Finding]) -> Result<(), OutboxError> {
        crate::alert::store::Outbox::append(self, findings);
        Ok(())
    }

    fn sync(&self) -> Result<(), OutboxError> {
        Ok(crate::alert::store::Outbox::sync(self)?)
    }
}

/// Fans a batch out to several sinks (the outbox and a live printer).
pub struct Tee(pub Vec<std::sync::Arc<dyn FindingSink>>);

impl FindingSink for Tee {
    fn append(&self, findings: &[Finding]) -> Result<(), OutboxError> {
        self.0.iter().try_for_each(|s| s.append(findings))
    }
    fn sync(&self) -> Result<(), OutboxError> {
        self.0.iter().try_for_each(|s| s.sync())
    }
}
