//! What a sealed value looks like to a reader of this process's memory:
//! `/proc/self/mem` goes through the same `get_user_pages` path as another
//! process's reader, a tracer's `PTRACE_PEEKDATA` and `process_vm_readv`.

use std::os::unix::fs::FileExt;

use kernelseal_secretmem::{Backing, Pool, mapping};

const VALUE: &[u8] = b"sealed-value-nobody-reads";

fn read_at(addr: usize, len: usize) -> std::io::Result<Vec<u8>> {
    let mem = std::fs::File::open("/proc/self/mem")?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, addr as u64)?;
    Ok(buf)
}

#[test]
fn a_value_in_secret_memory_cannot_be_read_through_proc_mem() {
    if !mapping::secret_memory_available() {
        eprintln!("SKIP: memfd_secret is unavailable on this kernel");
        return;
    }
    static POOL: Pool = Pool::new();
    let ordinary = VALUE.to_vec();
    let sealed = POOL.seal(VALUE);
    assert_eq!(sealed.backing(), Some(Backing::SecretMemory));
    assert_eq!(POOL.unreported_backing(), Some(Backing::SecretMemory));
    // The control: the same bytes in ordinary memory are readable.
    assert_eq!(
        read_at(ordinary.as_ptr() as usize, VALUE.len()).unwrap(),
        VALUE
    );
    let err = read_at(sealed.as_slice().as_ptr() as usize, VALUE.len())
        .expect_err("secret memory read through /proc/self/mem");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(sealed.as_slice(), VALUE, "still readable to its owner");
}

#[test]
fn the_fallback_says_what_it_is() {
    static POOL: Pool = Pool::without_secret_memory();
    let sealed = POOL.seal(VALUE);
    let backing = sealed.backing().unwrap();
    assert_ne!(backing, Backing::SecretMemory);
    assert_eq!(POOL.unreported_backing(), Some(backing));
    assert!(backing.describe().contains("memfd_secret unavailable"));
    // Ordinary memory to a reader of this process: what the fallback
    // gives up, and why the agent logs it.
    assert_eq!(
        read_at(sealed.as_slice().as_ptr() as usize, VALUE.len()).unwrap(),
        VALUE
    );
}
