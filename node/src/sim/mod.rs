//! Seeded simulations behind `mycel-node sim …`: pure and deterministic per seed (no clock, no
//! network, no disk), built on the same cores the node runs — [`crate::scoring`] for routing and
//! `mycel_ledger`'s emission split, sortition, consensus and ledger for credits and safety.
//!
//! A simulation returns a [`GoalTable`]: one row per goal with the measured value, the target and
//! whether it was met. The binary prints it and exits non-zero when a goal is missed.

pub mod sybil;

use std::fmt;

use clap::{Args, Subcommand};

use crate::Result;

/// `mycel-node sim …` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum SimCommand {
    /// Sybil resistance of routing, cheating workers, a stake-poor clique's emission, and
    /// double-spends / unbacked mints under byzantine stake (issue #7 goals).
    Sybil(SimArgs),
}

/// Options shared by the simulations.
#[derive(Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimArgs {
    /// Seed of every random choice; the same seed gives the same table.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Smaller run (seconds instead of minutes), same goals.
    #[arg(long)]
    pub quick: bool,
}

/// Runs a simulation subcommand.
pub fn run(cmd: &SimCommand) -> Result<GoalTable> {
    match cmd {
        SimCommand::Sybil(args) => sybil::run(&sybil::SybilConfig::new(args.seed, args.quick)),
    }
}

/// One goal of a simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct GoalRow {
    /// What is measured (stable text: tests look rows up by it).
    pub goal: &'static str,
    /// The measured value, formatted.
    pub measured: String,
    /// The target, formatted.
    pub target: String,
    /// Whether the target was met.
    pub pass: bool,
}

/// The result of a simulation: a title, goal rows and free-form notes (context figures).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoalTable {
    /// First line of the output.
    pub title: String,
    /// One row per goal.
    pub rows: Vec<GoalRow>,
    /// Lines printed after the table.
    pub notes: Vec<String>,
}

impl GoalTable {
    /// True when every goal passed.
    pub fn all_pass(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }

    /// Number of missed goals.
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| !r.pass).count()
    }

    /// The row of `goal`.
    pub fn row(&self, goal: &str) -> Option<&GoalRow> {
        self.rows.iter().find(|r| r.goal == goal)
    }
}

impl fmt::Display for GoalTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w_goal = self
            .rows
            .iter()
            .map(|r| r.goal.chars().count())
            .chain([4])
            .max()
            .unwrap_or(4);
        let w_meas = self
            .rows
            .iter()
            .map(|r| r.measured.chars().count())
            .chain([8])
            .max()
            .unwrap_or(8);
        let w_target = self
            .rows
            .iter()
            .map(|r| r.target.chars().count())
            .chain([6])
            .max()
            .unwrap_or(6);
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "{:<w_goal$}  {:>w_meas$}  {:<w_target$}  result",
            "goal", "measured", "target"
        )?;
        writeln!(
            f,
            "{}  {}  {}  ------",
            "-".repeat(w_goal),
            "-".repeat(w_meas),
            "-".repeat(w_target)
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<w_goal$}  {:>w_meas$}  {:<w_target$}  {}",
                r.goal,
                r.measured,
                r.target,
                if r.pass { "PASS" } else { "FAIL" }
            )?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            for n in &self.notes {
                writeln!(f, "{n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_reports_failures() {
        let t = GoalTable {
            title: "t".into(),
            rows: vec![
                GoalRow {
                    goal: "a long goal name",
                    measured: "1".into(),
                    target: "≥ 1".into(),
                    pass: true,
                },
                GoalRow {
                    goal: "b",
                    measured: "12345".into(),
                    target: "≤ 1".into(),
                    pass: false,
                },
            ],
            notes: vec!["note".into()],
        };
        let text = t.to_string();
        assert!(!t.all_pass());
        assert_eq!(t.failed(), 1);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[3].starts_with("a long goal name") && lines[3].ends_with("PASS"));
        assert!(lines[4].starts_with("b ") && lines[4].ends_with("FAIL"));
        // Columns line up: "result" and both verdicts start at the same character.
        let col = |l: &str| l.chars().count() - 4;
        assert_eq!(col(lines[3]), col(lines[4]));
        assert!(text.ends_with("note\n"));
    }
}
