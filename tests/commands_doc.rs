//! Keeps the README's command table true to the binary: every subcommand
//! has a row, and each row lists exactly the long options that
//! `kernelseal <command> --help` prints.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const README: &str = "README.md";

/// (subcommand words, long options) of each `kernelseal …` row.
fn rows() -> Vec<(Vec<String>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(README))
        .expect("README.md");
    let section = text
        .split("\n## Commands\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a ## Commands section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `kernelseal "))
        .map(|rest| {
            let cell = rest.split('`').next().unwrap_or_default();
            let words = cell
                .split_whitespace()
                .take_while(|w| {
                    !w.starts_with('-') && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                })
                .map(str::to_string)
                .collect();
            (words, long_options(cell))
        })
        .collect()
}

fn long_options(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .filter(|w| w != "--help" && w != "--version")
        .collect()
}

fn help(words: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .args(words)
        .arg("--help")
        .output()
        .expect("running kernelseal");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The long options a help text declares (its option lines, not prose).
fn declared(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| long_options(l.split("  ").next().unwrap_or_default()))
        .collect()
}

#[test]
fn every_row_lists_exactly_the_options_of_its_command() {
    let rows = rows();
    assert!(rows.len() >= 10, "too few command rows: {}", rows.len());
    for (words, documented) in rows {
        let actual = declared(&help(&words));
        assert_eq!(
            documented,
            actual,
            "README row `kernelseal {}`: documented options differ from --help",
            words.join(" ")
        );
    }
}

#[test]
fn every_subcommand_has_a_row() {
    let documented: BTreeSet<String> = rows()
        .into_iter()
        .filter_map(|(w, _)| w.first().cloned())
        .collect();
    let top = help(&[]);
    let commands = top
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap_or_default();
    for line in commands.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name != "help" {
            assert!(
                documented.contains(name),
                "`kernelseal {name}` has no row in the README's command table"
            );
        }
    }
}
