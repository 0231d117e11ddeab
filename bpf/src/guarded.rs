//! Delivered secret files the kernel guards: inode → owner id, opened
//! through the agent's pins by the delivery side.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData};

use crate::abi::{RawFileKey, RawFileOwner};
use crate::error::BpfError;
use crate::gate::GUARDED_FILES_MAP;
use crate::pins::PinLayout;

pub struct GuardedFiles {
    map: HashMap<MapData, RawFileKey, RawFileOwner>,
}

fn map_err(op: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |e| BpfError::Map {
        op,
        map: GUARDED_FILES_MAP,
        source: std::io::Error::other(crate::gate::error_chain(&e)),
    }
}

/// The kernel's dev_t encoding (MAJOR << 20 | MINOR) of a user-space st_dev.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = libc::major(st_dev) as u64;
    let minor = libc::minor(st_dev) as u64;
    (major << 20) | minor
}

impl GuardedFiles {
    /// Opens the map the agent pinned under `pin_dir` for a layout version.
    pub fn from_pin(pin_dir: &Path, layout_version: u32) -> Result<Self, BpfError> {
        let path = PinLayout::with_version(pin_dir, layout_version).map(GUARDED_FILES_MAP);
        let data = MapData::from_pin(&path).map_err(|e| BpfError::NotPinned {
            dir: pin_dir.display().to_string(),
            reason: crate::gate::error_chain(&e),
        })?;
        let map = HashMap::try_from(Map::HashMap(data)).map_err(map_err("open"))?;
        Ok(GuardedFiles { map })
    }

    /// Guards a file (by `stat`'s st_dev and st_ino) for an owner id.
    pub fn guard(&mut self, st_dev: u64, ino: u64, owner_id: u32) -> Result<(), BpfError> {
        let key = RawFileKey {
            dev: kernel_dev(st_dev),
            ino,
        };
        self.map
            .insert(key, RawFileOwner { owner_id }, 0)
            .map_err(map_err("update"))
    }

    /// Every guarded file: (kernel dev, inode) → owner id.
    pub fn entries(&self) -> Vec<(RawFileKey, RawFileOwner)> {
        self.map.iter().filter_map(Result::ok).collect()
    }

    /// Kernel devs that hold guarded files.
    pub fn devs(&self) -> std::collections::BTreeSet<u64> {
        self.entries().into_iter().map(|(k, _)| k.dev).collect()
    }

    pub fn unguard(&mut self, st_dev: u64, ino: u64) -> Result<(), BpfError> {
        let key = RawFileKey {
            dev: kernel_dev(st_dev),
            ino,
        };
        match self.map.remove(&key) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other.map_err(map_err("delete")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_the_kernel() {
        // tmpfs on /run is typically 0:26 → kernel 26; 8:1 (sda1) → 8<<20|1.
        assert_eq!(kernel_dev(libc::makedev(0, 26)), 26);
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
    }
}
