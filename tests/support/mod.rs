//! What the tests that run the real agent share: its start, a scratch
//! directory, reading a file that may not exist yet.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kernelseal_testkit::{Reaped, wait_until};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kernelseal-core")
}

pub struct Agent {
    pub _child: Reaped,
    pub log: PathBuf,
    pub socket: PathBuf,
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// An empty directory for one test (`ks-<suite>-<pid>-<name>`).
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ks-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The real agent on `config_text` with its socket, log and config in `d`
/// (`more` adds arguments or environment); returns once it logged that it
/// runs.
pub fn start_agent(d: &Path, config_text: &str, more: impl FnOnce(&mut Command)) -> Agent {
    start_agent_as(Path::new(bin()), d, config_text, more)
}

/// [`start_agent`] with `program agent …`: the core, or the `kernelseal`
/// command that execs it.
pub fn start_agent_as(
    program: &Path,
    d: &Path,
    config_text: &str,
    more: impl FnOnce(&mut Command),
) -> Agent {
    let config = d.join("config.yaml");
    std::fs::write(&config, config_text).unwrap();
    let socket = d.join("agent.sock");
    let log = d.join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(program);
    cmd.args(["agent", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--lease-dir")
        .arg(d.join("leases"))
        .args(["--metrics-addr", "127.0.0.1:0"]);
    more(&mut cmd);
    let child = cmd
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    wait_until(
        20,
        || read(&log).contains("agent running"),
        || format!("agent did not start: {}", read(&log)),
    );
    Agent {
        _child: Reaped(child),
        log,
        socket,
    }
}
