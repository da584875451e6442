//! `rbee-keeper completions`: the scripts complete subcommands and flags past the first
//! word, driven through the shells' own completion machinery.

use std::process::Command;

use rbee_test_support::skip_unless;

fn script(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rbee-keeper"))
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn has(shell: &str) -> bool {
    Command::new(shell)
        .arg("-c")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
}

/// What bash's completion function offers for the words (the last one being completed).
fn bash_complete(script_path: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source {path}\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         _rbee__keeper rbee-keeper '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path = script_path.display(),
        words = quoted.join(" "),
        cword = words.len() - 1,
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_nested_subcommands_and_their_flags() {
    skip_unless!(has("bash"), "bash is not installed");
    let dir = rbee_test_support::model::TempDir::new("completions");
    let path = dir.join("rbee-keeper.bash");
    std::fs::write(&path, script("bash")).unwrap();
    let top = bash_complete(&path, &["rbee-keeper", ""]);
    for c in ["run", "models", "workers", "setup"] {
        assert!(top.contains(&c.to_owned()), "{c} not offered: {top:?}");
    }
    let models = bash_complete(&path, &["rbee-keeper", "models", ""]);
    for c in ["list", "download", "rm"] {
        assert!(
            models.contains(&c.to_owned()),
            "{c} not offered: {models:?}"
        );
    }
    let flags = bash_complete(&path, &["rbee-keeper", "setup", "list-nodes", "--"]);
    assert!(flags.contains(&"--json".to_owned()), "{flags:?}");
    let flags = bash_complete(&path, &["rbee-keeper", "run", "--"]);
    assert!(flags.contains(&"--system".to_owned()), "{flags:?}");
}

#[test]
fn fish_completes_nested_subcommands_and_zsh_loads_its_script() {
    skip_unless!(
        has("fish") && has("zsh"),
        "fish or zsh is not installed (scripts/setup installs both)"
    );
    let dir = rbee_test_support::model::TempDir::new("completions");
    let fish = dir.join("rbee-keeper.fish");
    std::fs::write(&fish, script("fish")).unwrap();
    let out = Command::new("fish")
        .arg("-c")
        .arg(format!(
            "source {}; complete -C 'rbee-keeper workers '; complete -C 'rbee-keeper models list --'",
            fish.display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    for c in ["list\t", "shutdown\t", "--json\t"] {
        assert!(offered.contains(c), "{c:?} not offered:\n{offered}");
    }
    let zsh = dir.join("_rbee-keeper");
    std::fs::write(&zsh, script("zsh")).unwrap();
    let out = Command::new("zsh")
        .arg("-fc")
        .arg(format!(
            "autoload -U compinit && compinit -u -D && source {} && (( $+functions[_rbee-keeper__subcmd__models_commands] )) && echo loaded",
            zsh.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "loaded",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
