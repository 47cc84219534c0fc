//! `mycel-node sim sybil --quick` through the real binary: exit code 0 and one PASS row per goal.

use std::process::Command;

use mycel_node::sim::sybil::GOALS;

const BIN: &str = env!("CARGO_BIN_EXE_mycel-node");

#[test]
fn quick_sybil_simulation_meets_every_goal() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["sim", "sybil", "--quick", "--seed", "7"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("mycel-node sim sybil — seed 7 (quick)"),
        "{stdout}"
    );
    for goal in GOALS {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(goal))
            .unwrap_or_else(|| panic!("no row for `{goal}`:\n{stdout}"));
        assert!(row.trim_end().ends_with("PASS"), "{row}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
