//! Where the agent pins its programs' links and maps under bpffs, so that
//! enforcement outlives the agent and a restarted agent re-adopts it.
//!
//! ```text
//! <root>/ks_marks            marks (task storage): shared by every layout
//!                            version, so marks survive an upgrade
//! <root>/v<N>/maps/<map>     the other maps of layout version N
//! <root>/v<N>/links/<prog>   one link per attached program
//! <root>/v<N>/object-<hash>  empty directory: which build's programs the
//!                            links run (adopted only by the same build)
//! ```

use std::path::{Path, PathBuf};

use crate::abi::LAYOUT_VERSION;
use crate::marks::MARKS_MAP;

#[derive(Debug, Clone)]
pub struct PinLayout {
    root: PathBuf,
    /// The layout version this process writes (normally [`LAYOUT_VERSION`]).
    version: u32,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_version(root, LAYOUT_VERSION)
    }

    /// A layout writing another version: upgrade tests stage an "old"
    /// agent's pins with it.
    pub fn with_version(root: impl Into<PathBuf>, version: u32) -> Self {
        PinLayout {
            root: root.into(),
            version,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn marks(&self) -> PathBuf {
        self.root.join(MARKS_MAP)
    }

    pub fn version_dir(&self, version: u32) -> PathBuf {
        self.root.join(format!("v{version}"))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.version_dir(self.version).join("maps").join(name)
    }

    pub fn links_dir(&self, version: u32) -> PathBuf {
        self.version_dir(version).join("links")
    }

    pub fn link(&self, version: u32, program: &str) -> PathBuf {
        self.links_dir(version).join(program)
    }

    /// Where a version's links are moved while their replacement attaches.
    pub fn replaced_links_dir(&self, version: u32) -> PathBuf {
        self.version_dir(version).join("links-replaced")
    }

    /// The marker of the build whose programs a version's links run.
    pub fn object_marker(&self, version: u32, object_hash: u64) -> PathBuf {
        self.version_dir(version)
            .join(format!("object-{object_hash:016x}"))
    }

    /// Removes this version's build markers: no build adopts its links.
    pub fn remove_object_markers(&self) -> std::io::Result<()> {
        if let Ok(entries) = std::fs::read_dir(self.version_dir(self.version)) {
            for e in entries.filter_map(|e| e.ok()) {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("object-"))
                {
                    std::fs::remove_dir(e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Records that this version's links run the programs of the build
    /// `object_hash`, replacing any other build's marker.
    pub fn mark_object(&self, object_hash: u64) -> std::io::Result<()> {
        let keep = self.object_marker(self.version, object_hash);
        if !keep.is_dir() {
            self.remove_object_markers()?;
        }
        match std::fs::create_dir(&keep) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes a directory of links (unpinning them).
    pub fn remove_links(&self, dir: &Path) -> std::io::Result<()> {
        remove_tree(dir)
    }

    /// Layout versions that have a directory under the root.
    pub fn versions(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
            .collect();
        out.sort_unstable();
        out
    }

    /// Program names with a pinned link in a version's links directory.
    pub fn pinned_links(&self, version: u32) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.links_dir(version)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        out.sort();
        out
    }

    /// Removes a version's directory tree (the pins in it).
    pub fn remove_version(&self, version: u32) -> std::io::Result<()> {
        remove_tree(&self.version_dir(version))
    }

    /// Removes everything under the root, and the root.
    pub fn remove_all(&self) -> std::io::Result<()> {
        remove_tree(&self.root)
    }
}

/// bpffs supports unlink and rmdir but not every std helper reliably: walk
/// the tree by hand.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(meta) if !meta.is_dir() => return std::fs::remove_file(path),
        Ok(_) => {}
    }
    for entry in std::fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    std::fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_and_listing() {
        let dir = std::env::temp_dir().join(format!("ks-pins-{}", std::process::id()));
        let l = PinLayout::new(&dir);
        assert_eq!(l.marks(), dir.join("ks_marks"));
        assert_eq!(
            l.map("ks_policy"),
            dir.join(format!("v{LAYOUT_VERSION}/maps/ks_policy"))
        );
        std::fs::create_dir_all(l.links_dir(1)).unwrap();
        let v1 = PinLayout::with_version(&dir, 1);
        v1.mark_object(0xabc).unwrap();
        assert!(v1.object_marker(1, 0xabc).is_dir());
        v1.mark_object(0xdef).unwrap();
        assert!(!v1.object_marker(1, 0xabc).exists());
        assert!(v1.object_marker(1, 0xdef).is_dir());
        std::fs::create_dir_all(l.links_dir(7)).unwrap();
        std::fs::write(l.link(7, "file_open"), b"").unwrap();
        std::fs::create_dir_all(dir.join("not-a-version")).unwrap();
        assert_eq!(l.versions(), vec![1, 7]);
        assert_eq!(l.pinned_links(7), vec!["file_open".to_string()]);
        l.remove_version(7).unwrap();
        assert_eq!(l.versions(), vec![1]);
        l.remove_all().unwrap();
        assert!(!dir.exists());
    }
}
