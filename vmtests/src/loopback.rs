//! The guest's loopback interface: the VM's `/init` configures no network,
//! so `lo` starts down, and with it 127.0.0.1 (the kernel assigns the
//! address when `lo` comes up). The tests that serve or reach anything on
//! 127.0.0.1 bring it up first.

use std::process::Command;

use crate::suite::TestResult;

const FLAGS: &str = "/sys/class/net/lo/flags";

/// Brings `lo` up (busybox `ip`) unless it is, then checks that it is.
pub fn loopback_up() -> TestResult {
    if is_up()? {
        return Ok(());
    }
    let out = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .map_err(|e| format!("running `ip link set lo up`: {e}"))?;
    if is_up()? {
        Ok(())
    } else {
        Err(format!(
            "lo is still down after `ip link set lo up` ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// IFF_UP in the interface's flags (sysfs writes them as `0x9`).
fn is_up() -> Result<bool, String> {
    let text = std::fs::read_to_string(FLAGS).map_err(|e| format!("{FLAGS}: {e}"))?;
    let flags = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16)
        .map_err(|e| format!("{FLAGS}: {text:?}: {e}"))?;
    Ok(flags & libc::IFF_UP as u32 != 0)
}
