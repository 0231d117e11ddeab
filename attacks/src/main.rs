//! `kernelseal-attacks PID`: every vector against one process, one line
//! each (the demo's attacker, run as root in the test VM).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pid] = args.as_slice() else {
        eprintln!("usage: kernelseal-attacks PID");
        return ExitCode::from(2);
    };
    let Ok(pid) = pid.parse::<u32>() else {
        eprintln!("kernelseal-attacks: {pid:?} is not a PID");
        return ExitCode::from(2);
    };
    for v in kernelseal_attacks::ALL {
        println!("  {:<18} {}", v.name(), v.attempt(pid, pid, 0x1000));
    }
    ExitCode::SUCCESS
}
