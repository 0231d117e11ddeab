//! The wrapper's heap against a `/proc/PID/mem` descriptor opened before
//! the secret arrives: readable for ordinary memory (the control), refused
//! for the secret arena.

use std::alloc::Layout;
use std::os::unix::fs::FileExt;

use kernelseal_exec::secret_heap::{Arena, Backing};

const SECRET: &[u8; 24] = b"pre-opened-fd-cannot-see";

#[test]
fn a_descriptor_opened_before_cannot_read_the_arena() {
    if !kernelseal_exec::secret_heap::secret_memory_available() {
        eprintln!("SKIP: memfd_secret is unavailable on this kernel");
        return;
    }
    // Ordinary heap memory with the same bytes, made before the fork so the
    // child does not allocate (malloc after fork in a threaded test binary
    // may deadlock).
    let ordinary: Vec<u8> = SECRET.to_vec();
    let mut fds = [0; 2];
    // SAFETY: a pipe for the child's two addresses.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child makes syscalls and uses the arena, which never
    // allocates, then pauses until killed.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        let arena = Arena::new();
        let addr = match arena.backing() {
            Some(Backing::SecretMemory) => {
                let p = arena.alloc(Layout::new::<[u8; 24]>());
                // SAFETY: p is a fresh 24-byte range of the arena.
                unsafe { std::ptr::copy_nonoverlapping(SECRET.as_ptr(), p, SECRET.len()) };
                p as usize
            }
            _ => 0,
        };
        let msg = [addr, ordinary.as_ptr() as usize];
        // SAFETY: writing our two words, then waiting to be killed.
        unsafe {
            libc::write(fds[1], msg.as_ptr().cast(), std::mem::size_of_val(&msg));
            loop {
                libc::pause();
            }
        }
    }
    // Opened now; the child writes its secret afterwards (it may already
    // have: the read below is what matters, and it happens later).
    let mem = std::fs::File::open(format!("/proc/{child}/mem")).expect("open /proc/CHILD/mem");
    let mut msg = [0usize; 2];
    // SAFETY: reading two words from the pipe.
    let n = unsafe { libc::read(fds[0], msg.as_mut_ptr().cast(), std::mem::size_of_val(&msg)) };
    // The child is killed whatever the checks find.
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(n as usize, std::mem::size_of_val(&msg));
        let [secret_addr, ordinary_addr] = msg;
        assert_ne!(
            secret_addr, 0,
            "memfd_secret works here but the arena did not use it"
        );
        let mut buf = [0u8; 24];
        mem.read_exact_at(&mut buf, ordinary_addr as u64)
            .expect("control: ordinary memory is readable through the descriptor");
        assert_eq!(&buf, SECRET);
        let mut buf = [0u8; 24];
        let err = mem
            .read_exact_at(&mut buf, secret_addr as u64)
            .expect_err("the secret arena was readable through /proc/PID/mem");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        assert_ne!(&buf, SECRET);
    });
    // SAFETY: ending and reaping our child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
}
