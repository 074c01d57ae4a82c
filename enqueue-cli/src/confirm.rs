//! Asking an admin before a change that touches many things at once.

use std::io::{BufRead, IsTerminal, Write};

/// Prints `lines` and `question` on stderr and reads a yes on a terminal; false without a
/// terminal (scripts pass `--yes`) or without a yes.
pub fn ask(lines: &[String], question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    for line in lines {
        eprintln!("{line}");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
