//! `warden completions` and `warden man`: shell completions and man pages generated from the
//! clap definitions, so they always match the binary. Hidden commands (`__session`, `__true`)
//! are in neither.

use std::io::Write;

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs, ManArgs};
use crate::ui::fail;

pub fn completions(a: &CompletionsArgs) -> i32 {
    use clap_complete::Shell;
    let shell = match a.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    let mut cmd = visible_command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "warden", &mut out);
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        // A closed pipe (`warden man | head`) is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => fail(format!("cannot write to standard output: {e}")),
    }
}

/// The page of `cmd` (named `name`, e.g. "warden-run").
fn render(cmd: clap::Command, name: &str) -> std::io::Result<Vec<u8>> {
    let cmd = cmd.name(name.to_owned());
    let mut out = Vec::new();
    // A fixed date, so that pages built from one commit are identical.
    clap_mangen::Man::new(cmd)
        .date(env!("WARDEN_COMMIT_DATE"))
        .source(format!("warden {}", crate::args::VERSION))
        .manual("warden manual")
        .render(&mut out)?;
    Ok(out)
}

/// The command tree without the hidden commands (clap_complete's bash generator lists those
/// too): the top level rebuilt around the visible subcommands.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut clean = clap::Command::new("warden")
        .version(crate::args::VERSION)
        .propagate_version(true)
        .max_term_width(100)
        .subcommand_required(true)
        .args(full.get_arguments().cloned());
    if let Some(about) = full.get_about() {
        clean = clean.about(about.clone());
    }
    if let Some(long) = full.get_long_about() {
        clean = clean.long_about(long.clone());
    }
    clean.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

pub fn man(a: &ManArgs) -> i32 {
    let mut cli = visible_command();
    cli.build();
    let Some(dir) = &a.out else {
        return match render(cli, "warden") {
            Ok(page) => write_stdout(&page),
            Err(e) => fail(format!("cannot render the man page: {e}")),
        };
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format!("cannot create {}: {e}", dir.display()));
    }
    let mut pages = vec![("warden".to_owned(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        pages.push((format!("warden-{}", sub.get_name()), sub.clone()));
        for subsub in sub.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            pages.push((format!("warden-{}-{}", sub.get_name(), subsub.get_name()), subsub.clone()));
        }
    }
    for (name, cmd) in pages {
        let path = dir.join(format!("{name}.1"));
        let written = render(cmd, &name).and_then(|page| std::fs::write(&path, page));
        if let Err(e) = written {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        // The list is informative: a closed pipe does not stop the writing.
        let _ = writeln!(std::io::stdout(), "{}", path.display());
    }
    0
}
