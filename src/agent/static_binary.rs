//! Whether this binary is statically linked: lock mode runs KernelSeal's
//! processes only on their own binary's code, so a binary that needs a
//! dynamic loader cannot run at all on a locked node.

use std::io::{self, Read};

const PT_INTERP: u32 = 3;

/// Whether the ELF file at `path` asks for an interpreter (PT_INTERP), as a
/// dynamically linked program does. 64-bit little-endian ELF only.
pub fn needs_interpreter(path: &std::path::Path) -> io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let mut head = [0u8; 64];
    file.read_exact(&mut head)?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a 64-bit little-endian ELF file",
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as u64;
    let phoff = u64::from_le_bytes(head[32..40].try_into().expect("8 bytes"));
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    std::io::Seek::seek(&mut file, io::SeekFrom::Start(phoff))?;
    file.read_exact(&mut table)?;
    Ok(table
        .chunks_exact(phentsize.max(4) as usize)
        .any(|ph| u32::from_le_bytes(ph[..4].try_into().expect("4 bytes")) == PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_and_a_static_program_are_told_apart() {
        // The test binary itself is dynamically linked (the default).
        let me = std::env::current_exe().unwrap();
        assert!(needs_interpreter(&me).unwrap());
        let dir = std::env::temp_dir().join(format!("ks-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A minimal static ELF: a header and one PT_LOAD program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        let path = dir.join("static");
        std::fs::write(&path, &elf).unwrap();
        assert!(!needs_interpreter(&path).unwrap());
        elf[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        std::fs::write(&path, &elf).unwrap();
        assert!(needs_interpreter(&path).unwrap());
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        assert!(needs_interpreter(&path).is_err());
    }
}
