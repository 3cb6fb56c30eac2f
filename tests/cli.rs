//! The command line itself: `ledgerq --help`, and `ledgerq completions SHELL`,
//! whose bash, zsh and fish scripts the Debian package ships (`./dev deb`
//! generates them from the binary it packages).

use std::process::{Command, Output};

fn ledgerq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledgerq"))
        .args(args)
        .output()
        .expect("run ledgerq")
}

fn stdout_of(args: &[&str]) -> String {
    let out = ledgerq(args);
    assert!(
        out.status.success(),
        "ledgerq {args:?} exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn help_exits_0_and_lists_every_subcommand() {
    let help = stdout_of(&["--help"]);
    for subcommand in ["serve", "lookupd", "completions"] {
        assert!(
            help.contains(subcommand),
            "--help lacks {subcommand}:\n{help}"
        );
    }
    let version = stdout_of(&["--version"]);
    assert_eq!(
        version.trim(),
        format!("ledgerq {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bash_completions_name_the_subcommands_and_their_flags() {
    let script = stdout_of(&["completions", "bash"]);
    for word in [
        "serve",
        "lookupd",
        "completions",
        "--data-path",
        "--lookupd-tcp-address",
        "--inactive-producer-timeout",
        "complete -F _ledgerq",
    ] {
        assert!(script.contains(word), "bash completions lack {word}");
    }
}

/// Sources the bash script into a real bash and asks it to complete
/// `ledgerq se` and `ledgerq serve --data-p`, as the shell would on TAB.
#[test]
fn bash_completes_a_subcommand_and_a_flag() {
    let script = stdout_of(&["completions", "bash"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledgerq.bash");
    std::fs::write(&path, script).expect("write the script");
    let complete = |words: &[&str]| -> String {
        let line = words.join(" ");
        let program = format!(
            "source {path}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
             COMP_POINT={point}; _ledgerq ledgerq '{cur}' '{prev}'; echo \"${{COMPREPLY[*]}}\"",
            path = path.display(),
            words = words.join(" "),
            cword = words.len() - 1,
            point = line.len(),
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &program])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "bash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .trim()
            .to_owned()
    };
    assert_eq!(complete(&["ledgerq", "se"]), "serve");
    assert_eq!(complete(&["ledgerq", "serve", "--data-p"]), "--data-path");
}

#[test]
fn zsh_and_fish_completions_are_produced() {
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef ledgerq"), "zsh script:\n{zsh}");
    let fish = stdout_of(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c ledgerq") && fish.contains("-a \"serve\""),
        "fish script:\n{fish}"
    );
}

#[test]
fn an_unknown_shell_is_refused() {
    let out = ledgerq(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bash"), "stderr: {stderr}");
}
