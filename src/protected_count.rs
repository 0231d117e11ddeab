//! `kernelseal_protected_processes`: task storage cannot be iterated from
//! user space, so each scrape walks /proc and asks the marks map about each
//! process through a pidfd.

use std::path::Path;

use kernelseal_bpf::Marks;

pub fn count(pin_dir: &Path) -> usize {
    let Ok(marks) = Marks::from_pin(pin_dir) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(marks.state(*pid), Ok(Some(s)) if s.protected))
        .count()
}
