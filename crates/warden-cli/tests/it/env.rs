//! Environment scrubbing: secrets in warden's environment never reach the command.

use crate::Scratch;

const SECRETS: &[(&str, &str)] = &[
    ("OPENAI_API_KEY", "sk-test-openai"),
    ("MY_SECRET", "x-my-secret"),
    ("GITHUB_TOKEN", "y-github-token"),
    ("DB_PASSWORD", "z-db-password"),
    ("AWS_CREDENTIAL", "w-aws-credential"),
];

fn run_env(extra: &[&str], vars: &[(&str, &str)]) -> warden_testkit::Output {
    let s = Scratch::temp();
    let mut w = crate::warden().current_dir(&s.ws);
    for (k, v) in vars {
        w = w.env(k, v);
    }
    w.args(["run", "-C"]).args([&s.ws]).args(extra).args(["--", "/usr/bin/env"]).run()
}

#[test]
fn secret_variables_are_scrubbed() {
    let mut vars = SECRETS.to_vec();
    vars.push(("HARMLESS_VAR", "visible-value"));
    let out = run_env(&[], &vars);
    out.success().stdout_has("HARMLESS_VAR=visible-value");
    for (k, v) in SECRETS {
        out.stdout_lacks(k).stdout_lacks(v);
    }
}

#[test]
fn secret_variables_are_scrubbed_for_lowercase_names_too() {
    let out = run_env(&[], &[("my_api_key", "lower-secret"), ("Session_Token", "mixed-secret")]);
    out.success().stdout_lacks("lower-secret").stdout_lacks("mixed-secret");
}

#[test]
fn secrets_do_not_leak_through_a_child_shell_environment() {
    let s = Scratch::temp();
    let out = crate::warden()
        .env("OPENAI_API_KEY", "sk-test-openai")
        .current_dir(&s.ws)
        .args(["run", "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", "cat /proc/self/environ /proc/1/environ 2>/dev/null | tr '\\0' '\\n'; exit 0"])
        .run();
    out.success().stdout_lacks("sk-test-openai");
}

#[test]
fn env_set_is_visible_and_wins_over_excludes() {
    let out = run_env(&["--env-set", "FOO=bar", "--env-set", "MY_TOKEN=explicitly-passed"], &[]);
    out.success().stdout_has("FOO=bar\n").stdout_has("MY_TOKEN=explicitly-passed\n");
}

#[test]
fn env_exclude_drops_matching_variables() {
    let out = run_env(&["--env-exclude", "INTERNAL_*"], &[("INTERNAL_URL", "http://intranet"), ("KEEP_ME", "1")]);
    out.success().stdout_lacks("INTERNAL_URL").stdout_has("KEEP_ME=1");
}

#[test]
fn env_inherit_core_keeps_path_and_home_only() {
    let out = run_env(&["--env-inherit", "core"], &[("RANDOM_VAR", "1"), ("HOME", "/nonexistent-home")]);
    out.success().stdout_has("PATH=").stdout_has("HOME=/nonexistent-home").stdout_lacks("RANDOM_VAR");
}

#[test]
fn env_inherit_none_passes_nothing() {
    let out = run_env(&["--env-inherit", "none"], &[("RANDOM_VAR", "1")]);
    out.success().stdout_lacks("RANDOM_VAR").stdout_lacks("HOME=");
}

#[test]
fn env_include_only_keeps_only_the_listed_names() {
    let out = run_env(&["--env-include-only", "PATH"], &[("RANDOM_VAR", "1"), ("PATH", "/usr/bin:/bin")]);
    out.success();
    let names: Vec<&str> = out.stdout.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    if names != ["PATH"] {
        out.fail(&format!("expected only PATH, got {names:?}"));
    }
}
