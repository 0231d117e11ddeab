//! The lease records under the agent's state directory: one file per
//! process holding leases, naming the process (PID and start time, so a
//! reused PID is never taken for it) and its leases' ids. No value is
//! written, only what renewing or revoking takes. A restarted agent reads
//! them back to carry on with processes that are still alive and to revoke
//! the leases of those that died meanwhile.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kernelseal_providers::HeldLease;
use serde::{Deserialize, Serialize};

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub pid: u32,
    /// Field 22 of /proc/PID/stat when the leases were handed over.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` then: start times count from boot.
    #[serde(default)]
    pub boot_id: String,
    pub binding: String,
    pub leases: Vec<HeldLease>,
}

/// Why the record directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("lease records in {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lease record {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The directory of lease records.
#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    /// Opens (creating, 0700) the directory.
    pub fn open(dir: &Path) -> Result<RecordDir, RecordError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| {
                // An existing directory may have been made by someone else,
                // wider: records decide what is renewed and revoked.
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            })
            .map_err(|source| RecordError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(RecordDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes a new record whole (a temporary file renamed into place): a
    /// crash leaves no record or all of it, never half of one. A process
    /// that asks again (an exec chain through the wrapper) gets a record
    /// per delivery, hence the random part of the name.
    pub fn write(&self, record: &LeaseRecord) -> Result<PathBuf, RecordError> {
        let path = self.dir.join(format!(
            "{}-{}-{:016x}.json",
            record.pid,
            record.start_time,
            super::random_u64()
        ));
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(record).expect("a lease record serializes");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&text)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => Ok(path),
            Err(source) => Err(RecordError::Write { path, source }),
        }
    }

    /// Forgets a record: its leases are revoked.
    pub fn remove(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("[LEASE] cannot remove {}: {e}", path.display());
        }
    }

    /// Every record in the directory. One that cannot be read is named in
    /// the log and left where it is for an operator: its lease ids are
    /// unknown, so nothing could be revoked for it anyway.
    pub fn read_all(&self) -> Result<Vec<(PathBuf, LeaseRecord)>, RecordError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| RecordError::Dir {
            dir: self.dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let read = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            match read {
                Ok(r) => records.push((path, r)),
                Err(e) => tracing::warn!(
                    "[LEASE] lease record {} is unreadable and left alone: {e}",
                    path.display()
                ),
            }
        }
        records.sort_by_key(|(_, r): &(PathBuf, LeaseRecord)| (r.pid, r.start_time));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernelseal_providers::Lease;
    use std::time::Duration;

    fn record(pid: u32) -> LeaseRecord {
        LeaseRecord {
            pid,
            start_time: 42,
            boot_id: "b".into(),
            binding: "db".into(),
            leases: vec![HeldLease {
                provider: "vault".into(),
                reference: "vaultRef database/creds/app#password (dynamic)".into(),
                lease: Lease {
                    id: "database/creds/app/abc".into(),
                    duration: Duration::from_secs(60),
                    renewable: true,
                },
            }],
        }
    }

    #[test]
    fn records_are_written_read_back_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::open(&tmp.path().join("leases")).unwrap();
        let seven = dir.write(&record(7)).unwrap();
        let three = dir.write(&record(3)).unwrap();
        // A second delivery to the same process has a record of its own.
        let three_again = dir.write(&record(3)).unwrap();
        assert_ne!(three, three_again);
        std::fs::write(dir.path().join("9-1-0.json"), b"{not json").unwrap();
        let records = |dir: &RecordDir| -> Vec<LeaseRecord> {
            dir.read_all()
                .unwrap()
                .into_iter()
                .map(|(_, r)| r)
                .collect()
        };
        assert_eq!(records(&dir), vec![record(3), record(3), record(7)]);
        dir.remove(&three);
        dir.remove(&three);
        dir.remove(&three_again);
        assert_eq!(records(&dir), vec![record(7)]);
        // The unreadable one stays for an operator to look at.
        assert!(dir.path().join("9-1-0.json").exists());
        let mode = std::fs::metadata(&seven)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(mode, 0o600);
    }
}
