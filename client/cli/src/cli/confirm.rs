//! Asking before a destructive command (`topic delete`, `group delete`).
//!
//! | stdin | `--yes` | what happens |
//! | --- | --- | --- |
//! | a terminal | absent | the question goes to stderr; only `y` or `yes` (any case) proceeds, anything else (or end of input) stops the command with exit code 1 and nothing deleted |
//! | a terminal | given | no question |
//! | not a terminal (a script, a pipe, CI) | either | no question: scripts keep working as they always have |
//!
//! So a person at a terminal is asked, and a script is never stuck waiting
//! for an answer nobody will type.

use std::io::{BufRead, IsTerminal, Write};

use super::Failure;

/// Whether to go on: `true` at once with `yes` or when stdin is not a
/// terminal; else the answer to `question` (printed to stderr with
/// ` [y/N] `). A refusal is a failure naming `what_stays`.
pub(crate) fn confirm(question: &str, yes: bool, what_stays: &str) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if yes || !stdin.is_terminal() {
        return Ok(());
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if accepts(&answer) {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "not confirmed: {what_stays} (answer y to proceed, or pass --yes)"
        ))
    }
}

/// `y` or `yes`, in any case, around spaces.
fn accepts(answer: &str) -> bool {
    let answer = answer.trim().to_ascii_lowercase();
    answer == "y" || answer == "yes"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_proceeds() {
        for yes in ["y\n", "Y", " yes \n", "YES\r\n"] {
            assert!(accepts(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "no", "yep", "sure"] {
            assert!(!accepts(no), "{no:?}");
        }
    }
}
