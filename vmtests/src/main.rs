//! `kernelseal-vmtests`: the privileged suite `cargo xtask vm-test` runs as
//! root inside a VM whose kernel has BPF-LSM enabled. It drives the real
//! `/usr/bin/kernelseal` and attacks real processes, so it refuses to run
//! outside the VM (KERNELSEAL_VM=1).

mod agent;
mod bench;
mod delivery_suite;
mod dumps_suite;
mod dynamic_suite;
mod exec_suite;
mod fanotify;
mod floor;
mod identity_suite;
mod leaks_suite;
mod lock_suite;
mod lock_tools;
mod loopback;
mod pins_suite;
mod pod_identity_suite;
mod secret_files_suite;
mod state_suite;
mod suite;
mod tamper_suite;
mod tracer_suite;
mod victim;
mod webhook_suite;

// The attack matrix lives in its own crate so the demo can build its
// attacker without the suite's dependencies.
use kernelseal_attacks as attacks;

use std::process::ExitCode;
use std::time::Instant;

use suite::{Ctx, TestResult};

type Test = (&'static str, fn(&mut Ctx) -> TestResult);

const TESTS: &[Test] = &[
    (
        "enforce_refuses_all_vectors_on_process",
        suite::enforce_refuses_all_vectors_on_process,
    ),
    (
        "enforce_covers_thread_created_after_mark",
        suite::enforce_covers_thread_created_after_mark,
    ),
    (
        "enforce_covers_child_forked_after_mark",
        suite::enforce_covers_child_forked_after_mark,
    ),
    (
        "children_not_protected_without_inheritance",
        suite::children_not_protected_without_inheritance,
    ),
    ("mark_survives_execve", suite::mark_survives_execve),
    (
        "process_reads_its_own_files",
        suite::process_reads_its_own_files,
    ),
    (
        "allow_self_read_false_refuses_own_files",
        suite::allow_self_read_false_refuses_own_files,
    ),
    ("tools_still_work", suite::tools_still_work),
    (
        "unrelated_process_unaffected",
        suite::unrelated_process_unaffected,
    ),
    ("audit_allows_and_logs", suite::audit_allows_and_logs),
    (
        "each_switch_off_allows_its_kind",
        suite::each_switch_off_allows_its_kind,
    ),
    (
        "refusal_leaves_no_stale_state",
        suite::refusal_leaves_no_stale_state,
    ),
    ("unprotect_round_trip", suite::unprotect_round_trip),
    ("agent_is_protected", suite::agent_is_protected),
    (
        "protect_bad_input_fails_clearly",
        suite::protect_bad_input_fails_clearly,
    ),
    (
        "quick_start_sleep_is_protected_at_exec",
        exec_suite::quick_start_sleep_is_protected_at_exec,
    ),
    (
        "exec_matched_binary_full_matrix",
        exec_suite::exec_matched_binary_full_matrix,
    ),
    ("traced_exec_is_refused", exec_suite::traced_exec_is_refused),
    (
        "wrapper_traced_before_protection_is_refused",
        tracer_suite::wrapper_traced_before_protection_is_refused,
    ),
    ("reload_keeps_marks", exec_suite::reload_keeps_marks),
    (
        "enforcement_outlives_the_agent",
        exec_suite::enforcement_outlives_the_agent,
    ),
    (
        "check_passes_with_bpf_lsm",
        exec_suite::check_passes_with_bpf_lsm,
    ),
    (
        "programs_of_another_build_are_replaced",
        pins_suite::programs_of_another_build_are_replaced,
    ),
    (
        "upgrade_replaces_old_layout_keeping_marks",
        exec_suite::upgrade_replaces_old_layout_keeping_marks,
    ),
    (
        "audit_trail_is_rate_limited",
        exec_suite::audit_trail_is_rate_limited,
    ),
    (
        "exec_wrapper_delivers_and_protects",
        exec_suite::exec_wrapper_delivers_and_protects,
    ),
    (
        "file_delivery_is_guarded",
        exec_suite::file_delivery_is_guarded,
    ),
    (
        "file_delivery_on_exec_without_wrapper",
        exec_suite::file_delivery_on_exec_without_wrapper,
    ),
    (
        "rotation_reaches_running_apps",
        delivery_suite::rotation_reaches_running_apps,
    ),
    (
        "exec_file_delivery_honours_the_whole_selector",
        delivery_suite::exec_file_delivery_honours_the_whole_selector,
    ),
    (
        "pod_identity_required_refuses_without_a_known_pod",
        delivery_suite::pod_identity_required_refuses_without_a_known_pod,
    ),
    (
        "pod_identity_wrapper_reads_vault_as_the_pod_and_root_is_refused",
        pod_identity_suite::wrapper_reads_vault_as_the_pod_and_root_is_refused,
    ),
    (
        "dynamic_credential_is_refused_to_root_and_revoked_at_exit",
        dynamic_suite::dynamic_credential_is_refused_to_root_and_revoked_at_exit,
    ),
    (
        "webhook_patched_command_runs_wrapped_and_root_is_refused",
        webhook_suite::patched_command_runs_wrapped_and_root_is_refused,
    ),
    (
        "metrics_count_real_refusals",
        delivery_suite::metrics_count_real_refusals,
    ),
    (
        "cgroup_paths_are_read_as_the_host_writes_them",
        identity_suite::cgroup_paths_are_read_as_the_host_writes_them,
    ),
    (
        "perf_sampling_of_protected_process_is_refused",
        leaks_suite::perf_sampling_of_protected_process_is_refused,
    ),
    (
        "perf_event_from_before_the_wrapper_is_refused",
        leaks_suite::perf_event_from_before_the_wrapper_is_refused,
    ),
    (
        "unnamed_files_of_protected_process_stay_closed",
        leaks_suite::unnamed_files_of_protected_process_stay_closed,
    ),
    (
        "fanotify_on_proc_gets_no_protected_environ",
        leaks_suite::fanotify_on_proc_gets_no_protected_environ,
    ),
    (
        "thread_exec_keeps_the_mark",
        leaks_suite::thread_exec_keeps_the_mark,
    ),
    (
        "unprotect_clears_every_thread",
        leaks_suite::unprotect_clears_every_thread,
    ),
    (
        "refused_reader_keeps_its_capabilities",
        leaks_suite::refused_reader_keeps_its_capabilities,
    ),
    (
        "core_dumps_of_protected_process_are_refused",
        dumps_suite::core_dumps_of_protected_process_are_refused,
    ),
    (
        "secret_files_keep_their_names",
        secret_files_suite::secret_files_keep_their_names,
    ),
    (
        "fanotify_on_secrets_mount_gets_no_secret",
        secret_files_suite::fanotify_on_secrets_mount_gets_no_secret,
    ),
    (
        "replaced_secrets_dir_gets_no_delivery",
        secret_files_suite::replaced_secrets_dir_gets_no_delivery,
    ),
    (
        "kernelseal_state_is_closed_to_other_tools",
        state_suite::kernelseal_state_is_closed_to_other_tools,
    ),
    (
        "traced_kernelseal_binary_is_not_trusted",
        state_suite::traced_kernelseal_binary_is_not_trusted,
    ),
    (
        "kernelseal_command_is_closed_before_its_mark",
        state_suite::kernelseal_command_is_closed_before_its_mark,
    ),
    (
        "another_build_takes_over_only_through_a_handover",
        state_suite::another_build_takes_over_only_through_a_handover,
    ),
    (
        "tamper_policy_written_outside_kernelseal_is_restored",
        tamper_suite::policy_written_outside_kernelseal_is_restored,
    ),
    (
        "tamper_mark_deleted_outside_kernelseal_is_restored",
        tamper_suite::mark_deleted_outside_kernelseal_is_restored,
    ),
    (
        "tamper_exec_filter_edited_outside_kernelseal_is_restored",
        tamper_suite::exec_filter_edited_outside_kernelseal_is_restored,
    ),
    (
        "tamper_pin_removed_outside_kernelseal_is_pinned_again",
        tamper_suite::pin_removed_outside_kernelseal_is_pinned_again,
    ),
    (
        "tamper_unprotect_through_kernelseal_is_not_reverted",
        tamper_suite::unprotect_through_kernelseal_is_not_reverted,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("victim") {
        victim::run();
    }
    if args.first().map(String::as_str) == Some("core-sink") {
        // Started by the kernel for a `|…` core_pattern, outside the suite.
        return dumps_suite::core_sink(args.get(1).map_or("/dev/null", String::as_str));
    }
    if std::env::var_os("KERNELSEAL_VM").is_none() {
        eprintln!(
            "kernelseal-vmtests attacks processes as root and loads BPF-LSM programs: it runs \
             inside the test VM only (cargo xtask vm-test)"
        );
        return ExitCode::from(2);
    }
    if args.first().map(String::as_str) == Some("lock-tools") {
        // Locks the VM it runs in: never part of the suite.
        return match lock_tools::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("lock-tools failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().map(String::as_str) == Some("bench") {
        return match bench::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("bench failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = args.first().cloned();
    let kernel = std::env::var("KERNELSEAL_VM_KERNEL").unwrap_or_else(|_| "unknown".into());
    println!("kernelseal-vmtests on kernel {kernel}");

    let (mut passed, mut failed) = (0usize, 0usize);
    let agent = match agent::Agent::start(agent::Policy::ENFORCE_ALL) {
        Ok(a) => a,
        Err(e) => {
            println!("test agent_starts ... FAILED: {e}");
            println!("0 passed, {} failed", TESTS.len() + 1);
            return ExitCode::FAILURE;
        }
    };
    println!("test agent_starts ... ok");
    passed += 1;
    let mut ctx = Ctx { agent };
    for (name, test) in TESTS {
        // FILTER is one or more name fragments separated by `,`.
        if filter
            .as_deref()
            .is_some_and(|f| !f.split(',').any(|part| name.contains(part)))
        {
            continue;
        }
        let start = Instant::now();
        match test(&mut ctx) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1}s)", start.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    // Last: the agent stops cleanly, and protect without it is refused.
    let stop = ctx.agent.stop().and_then(|()| {
        let v = victim::Victim::spawn()?;
        let out = agent::kernelseal(&["protect", &v.pid.to_string()])?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("no running agent") {
            return Err(format!(
                "protect with no agent: status {}, stderr {err:?}",
                out.status
            ));
        }
        Ok(())
    });
    match stop {
        Ok(()) => {
            passed += 1;
            println!("test agent_stops_and_protect_needs_it ... ok");
        }
        Err(e) => {
            failed += 1;
            println!("test agent_stops_and_protect_needs_it ... FAILED: {e}");
        }
    }
    // Lock mode lasts until reboot: its suite comes after everything else.
    if filter
        .as_deref()
        .is_none_or(|f| f.split(',').any(|part| part.starts_with("lock")))
    {
        let (p, f) = lock_suite::run();
        passed += p;
        failed += f;
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
