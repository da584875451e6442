//! `rbee-keeper completions SHELL`: clap_complete's scripts, with its bash script repaired.
//!
//! clap_complete (4.5) names the bash functions of a hyphenated binary inconsistently: the
//! loop that walks the words sets `cmd="rbee__keeper__subcmd__models"`, the switch that
//! completes matches `rbee__subcmd__keeper__subcmd__models)` (clap-rs/clap#6421), so no
//! word after the first completes. The names are made to agree again here.

use clap_complete::Shell;

/// The completion script for `shell`.
pub fn script(shell: Shell, cmd: &mut clap::Command) -> Vec<u8> {
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, cmd, &name, &mut out);
    if shell == Shell::Bash {
        let munged = name.replace('-', "__");
        let wrong = name.replace('-', "__subcmd__");
        let text = String::from_utf8_lossy(&out).replace(&wrong, &munged);
        return text.into_bytes();
    }
    out
}
