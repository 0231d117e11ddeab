//! The protected process of the tests: this binary in `victim` mode, driven
//! by one-line commands on stdin so the suite can make it spawn a thread, fork
//! a child, exec, or read its own /proc files at chosen moments.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::attacks::Outcome;

/// Something mapped in the victim (and its forked children) for
/// process_vm_readv to aim at.
static TARGET_BYTES: [u8; 64] = [0x5a; 64];

pub const SECRET_ENV: &str = "KERNELSEAL_TEST_SECRET";
pub const SECRET_VALUE: &str = "vm-test-secret-value";

/// SIGHUPs received: rotation with `onRotate: { signal: SIGHUP }`.
static HUPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn count_hup(_: libc::c_int) {
    HUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// The victim's main loop (runs in the child process).
pub fn run() -> ! {
    let mut out = std::io::stdout();
    let addr = TARGET_BYTES.as_ptr() as usize;
    // SAFETY: the handler only touches an atomic (async-signal-safe).
    unsafe { libc::signal(libc::SIGHUP, count_hup as *const () as libc::sighandler_t) };
    writeln!(out, "ready {} {addr}", std::process::id()).ok();
    out.flush().ok();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match line.trim() {
            "thread" => {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    tx.send(gettid()).ok();
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                });
                format!("tid {}", rx.recv().unwrap_or(0))
            }
            "fork" => {
                // SAFETY: the child only calls pause(), async-signal-safe.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    loop {
                        // SAFETY: pause has no preconditions.
                        unsafe { libc::pause() };
                    }
                }
                format!("child {child}")
            }
            "exec" => {
                let err = exec_sleep();
                format!("exec failed {err}")
            }
            "parkedthread" => park_thread(),
            "threadexec" => {
                // The parked thread execs; this process image is replaced.
                if let Some(go) = PARKED.lock().ok().and_then(|mut g| g.take()) {
                    go.send(()).ok();
                }
                std::thread::sleep(std::time::Duration::from_secs(3600));
                "threadexec failed".to_string()
            }
            "pipe" | "memfd" | "deleted" => crate::leaks_suite::hold_secret_fd(line.trim()),
            "secretmem" => crate::leaks_suite::hold_secret_memory(),
            "crash" => {
                // SAFETY: the default action for SIGSEGV (std installs a
                // handler for its stack guard), then the signal: the
                // process dies here as a faulting one would.
                unsafe {
                    libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                    libc::raise(libc::SIGSEGV);
                }
                "crash survived".to_string()
            }
            cmd if cmd.starts_with("getenv ") => {
                let name = &cmd["getenv ".len()..];
                match std::env::var(name) {
                    Ok(v) => format!("env {}", v.len()),
                    Err(_) => "env none".to_string(),
                }
            }
            cmd if cmd.starts_with("envequals ") => {
                // The value is compared here, so it never leaves the victim.
                let (name, want) = cmd["envequals ".len()..]
                    .split_once(' ')
                    .unwrap_or((&cmd["envequals ".len()..], ""));
                match std::env::var(name) {
                    Ok(v) if v == want => "envequals yes".to_string(),
                    Ok(_) => "envequals no".to_string(),
                    Err(_) => "envequals unset".to_string(),
                }
            }
            cmd if cmd.starts_with("envmatches ") => {
                let (name, file) = cmd["envmatches ".len()..]
                    .split_once(' ')
                    .unwrap_or((&cmd["envmatches ".len()..], ""));
                env_matches_file(name, file)
            }
            cmd if cmd.starts_with("readpath ") => read_reply(&cmd["readpath ".len()..]),
            "hups" => format!("hups {}", HUPS.load(std::sync::atomic::Ordering::Relaxed)),
            "secretsdir" => {
                std::env::var("KERNELSEAL_SECRETS_DIR").unwrap_or_else(|_| "none".into())
            }
            cmd if cmd.starts_with("forkread ") => {
                let path = cmd["forkread ".len()..].to_string();
                // SAFETY: the child only opens, reads and _exits.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    let code = match std::fs::read(&path) {
                        Ok(_) => 0,
                        Err(e) => e.raw_os_error().unwrap_or(255),
                    };
                    // SAFETY: leave the forked child without destructors.
                    unsafe { libc::_exit(code) };
                }
                let mut status = 0;
                // SAFETY: waiting for our child.
                unsafe { libc::waitpid(child, &mut status, 0) };
                match libc::WEXITSTATUS(status) {
                    0 => "child read ok".to_string(),
                    e => format!("child read err {e}"),
                }
            }
            "selfread" => {
                let environ =
                    crate::attacks::Vector::Environ.attempt(std::process::id(), gettid(), 0);
                let own = std::fs::read("/proc/self/environ")
                    .map(|_| ())
                    .map_err(|e| e.raw_os_error().unwrap_or(0));
                match (environ, own) {
                    (Outcome::Allowed, Ok(())) => "self allowed".to_string(),
                    (Outcome::Refused(e), _) | (_, Err(e)) => format!("self refused {e}"),
                }
            }
            other => format!("unknown command {other:?}"),
        };
        writeln!(out, "{reply}").ok();
        out.flush().ok();
    }
    std::process::exit(0)
}

/// Whether environment variable `name` holds what `file` does: the value
/// expected is read here from a file, so that neither it nor the one
/// received crosses the suite's pipe.
fn env_matches_file(name: &str, file: &str) -> String {
    match (std::env::var(name), std::fs::read_to_string(file)) {
        (Err(_), _) => "envmatches unset".to_string(),
        (Ok(_), Err(e)) => format!("envmatches unreadable {}", e.raw_os_error().unwrap_or(0)),
        (Ok(got), Ok(want)) if got == want => "envmatches yes".to_string(),
        (Ok(_), Ok(_)) => "envmatches no".to_string(),
    }
}

/// "read <len>" or "read err <errno>".
pub fn read_reply(path: &str) -> String {
    match std::fs::read(path) {
        Ok(b) => format!("read {}", b.len()),
        Err(e) => format!("read err {}", e.raw_os_error().unwrap_or(0)),
    }
}

/// The sender that makes the parked thread exec.
static PARKED: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>> = std::sync::Mutex::new(None);

/// A thread that waits, then execs /bin/sleep: it exists before a later
/// `kernelseal protect`, and its exec takes over the process (de_thread).
fn park_thread() -> String {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    if let Ok(mut g) = PARKED.lock() {
        *g = Some(go_tx);
    }
    std::thread::spawn(move || {
        tid_tx.send(gettid()).ok();
        if go_rx.recv().is_ok() {
            exec_sleep();
        }
    });
    format!("tid {}", tid_rx.recv().unwrap_or(0))
}

fn exec_sleep() -> String {
    use std::os::unix::process::CommandExt;
    // Replaces this process image (same PID), environment preserved.
    let err = Command::new("/bin/sleep").arg("1000").exec();
    err.to_string()
}

/// The suite's handle on a victim.
pub struct Victim {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    pub addr: usize,
}

impl Victim {
    pub fn spawn() -> Result<Self, String> {
        Self::spawn_exe(std::env::current_exe().map_err(|e| e.to_string())?)
    }

    /// Starts the victim through a symlink named after the exec binding, so
    /// the kernel marks it at exec (no `kernelseal protect`).
    pub fn spawn_bound() -> Result<Self, String> {
        Self::spawn_exe(bound_exe()?)
    }

    /// Starts the victim through a symlink with another exec name.
    pub fn spawn_named(name: &str) -> Result<Self, String> {
        Self::spawn_exe(named_link(name)?)
    }

    /// Starts the victim through `kernelseal exec`: the wrapper asks the
    /// agent, which marks it, then execs the victim in place (same PID).
    pub fn spawn_wrapped() -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(crate::agent::KERNELSEAL);
        cmd.args(["exec", "--timeout", "10s", "--"]).arg(exe);
        Self::spawn_cmd(cmd)
    }

    /// Through `kernelseal exec`, as `/tmp/NAME` (a binding's `binary`).
    pub fn spawn_wrapped_named(name: &str) -> Result<Self, String> {
        let link = named_link(name)?;
        let mut cmd = Command::new(crate::agent::KERNELSEAL);
        cmd.args(["exec", "--timeout", "10s", "--"]).arg(link);
        Self::spawn_cmd(cmd)
    }

    /// Through `kernelseal exec WRAPPER_ARGS -- <this binary>`, `setup`
    /// run in the child just before it execs the wrapper (joining a
    /// cgroup: the wrapper, and the victim it becomes, are then in it).
    pub fn spawn_wrapped_with(
        wrapper_args: &[&str],
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(crate::agent::KERNELSEAL);
        cmd.arg("exec").args(wrapper_args).arg("--").arg(exe);
        // SAFETY: the suite's setup hooks only make syscalls.
        unsafe { cmd.pre_exec(setup) };
        Self::spawn_cmd(cmd)
    }

    /// Without the wrapper, `setup` run in the child just before it execs.
    pub fn spawn_with(
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        // SAFETY: the suite's setup hooks only make syscalls.
        unsafe { cmd.pre_exec(setup) };
        Self::spawn_cmd(cmd)
    }

    /// `command_line` as given (its program first, `victim` among its
    /// arguments), `setup` run in the child just before it execs.
    pub fn spawn_command_line(
        command_line: &[String],
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let (program, args) = command_line.split_first().ok_or("an empty command line")?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: the suite's setup hooks only make syscalls.
        unsafe { cmd.pre_exec(setup) };
        Self::start(cmd)
    }

    fn spawn_exe(exe: std::path::PathBuf) -> Result<Self, String> {
        Self::spawn_cmd(Command::new(exe))
    }

    fn spawn_cmd(mut cmd: Command) -> Result<Self, String> {
        cmd.arg("victim");
        Self::start(cmd)
    }

    /// Starts `cmd`, which runs this binary as `victim`, and reads its
    /// ready line.
    fn start(mut cmd: Command) -> Result<Self, String> {
        let mut child = cmd
            .env(SECRET_ENV, SECRET_VALUE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning the victim: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut v = Victim {
            child,
            stdin,
            stdout,
            pid: 0,
            addr: 0,
        };
        let ready = v.read_line()?;
        let mut it = ready.split_whitespace().skip(1);
        v.pid = it
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(format!("bad ready line {ready:?}"))?;
        v.addr = it
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(format!("bad ready line {ready:?}"))?;
        Ok(v)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("victim closed its stdout".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(format!("reading from victim: {e}")),
        }
    }

    pub fn ask(&mut self, command: &str) -> Result<String, String> {
        self.send(command)?;
        self.read_line()
    }

    /// Sends a command that gets no answer (the victim dies or execs).
    pub fn send(&mut self, command: &str) -> Result<(), String> {
        writeln!(self.stdin, "{command}").map_err(|e| format!("writing to victim: {e}"))?;
        self.stdin.flush().map_err(|e| e.to_string())
    }

    /// Waits for the victim to exit on its own (a fatal signal), polling so
    /// that a victim that survives fails the test instead of hanging it.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Ok(None) => {
                    return Err(format!("victim {} still alive after {timeout:?}", self.pid));
                }
                Err(e) => return Err(format!("waiting for victim {}: {e}", self.pid)),
            }
        }
    }

    /// Number after `prefix` in the reply to `command`.
    pub fn ask_number(&mut self, command: &str, prefix: &str) -> Result<u32, String> {
        let reply = self.ask(command)?;
        reply
            .strip_prefix(prefix)
            .and_then(|s| s.trim().parse().ok())
            .ok_or(format!("{command}: unexpected reply {reply:?}"))
    }

    /// Makes the victim exec /bin/sleep and waits until the new image runs.
    pub fn exec_sleep(&mut self) -> Result<(), String> {
        self.exec_sleep_via("exec")
    }

    /// Sends `command`, after which the victim (or one of its threads)
    /// execs /bin/sleep; waits until it has.
    pub fn exec_sleep_via(&mut self, command: &str) -> Result<(), String> {
        writeln!(self.stdin, "{command}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        for _ in 0..200 {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
            if comm.trim() == "sleep" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Err("victim did not exec /bin/sleep within 5 s".into())
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/tmp/ks-victim`, a symlink to this binary (the exec'd file name is what
/// `selector.binary` matches).
pub fn bound_exe() -> Result<std::path::PathBuf, String> {
    let link = std::path::PathBuf::from(format!("/tmp/{}", crate::agent::EXEC_BINARY));
    if !link.exists() {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(exe, &link)
            .map_err(|e| format!("symlink {}: {e}", link.display()))?;
    }
    Ok(link)
}

/// `/tmp/NAME`, a symlink to this binary.
fn named_link(name: &str) -> Result<std::path::PathBuf, String> {
    let link = std::path::PathBuf::from(format!("/tmp/{name}"));
    if !link.exists() {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(exe, &link)
            .map_err(|e| format!("symlink {}: {e}", link.display()))?;
    }
    Ok(link)
}

/// Kills a forked grandchild (not a Child of ours).
pub fn kill_pid(pid: u32) {
    // SAFETY: signalling a pid we created.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}
