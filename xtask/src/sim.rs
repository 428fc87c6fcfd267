//! `cargo xtask sim`: the seeded simulation of clients and servers under faults
//! (`crates/uploads-sim`, see its crate docs for what it covers).
//!
//! * `cargo xtask sim --seeds N [--from S]` runs the kept regression seeds and N seeds, and
//!   prints `N passed, N failed`; each failure is shrunk and its trace printed.
//! * `cargo xtask sim --seed S` replays one seed and prints its trace (every message, fault
//!   and crash, in order); `--without kinds` and `--without-clients i,j` replay a shrunk run.
//! * `--rules before-issue-21` runs the team backend's rules from before issue 21's fixes.
//! * `--release` builds the simulator optimized (about 3x the seeds a second; the first
//!   build takes a minute): for long hunts.
//!
//! With no arguments it runs [`CI_SEEDS`] seeds, as `cargo xtask ci` does.

use crate::{cargo, workspace_root};

/// The seeds CI runs: about a minute of a debug build on two cores (the build is the one the
/// test suite already made).
pub(crate) const CI_SEEDS: &str = "1500";

/// Runs the simulator with `args` (see the module docs).
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let release = args.iter().any(|arg| arg == "--release");
    let mut passed: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| *arg != "--release")
        .collect();
    if passed.is_empty() {
        passed = vec!["--seeds", CI_SEEDS];
    }
    let mut command = cargo();
    command
        .current_dir(workspace_root())
        .args(["run", "--quiet", "--package", "uploads-sim"]);
    if release {
        command.arg("--release");
    }
    command.arg("--").args(&passed);
    crate::run_command(&mut command)
}
