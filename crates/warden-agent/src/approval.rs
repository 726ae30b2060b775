//! Approvals by policy: every request the worker sends the client gets an answer, and every
//! answer is an audit record.
//!
//! An [`ApprovalPolicy`] is a worker's [`ServerRequestHandler`]. Its decisions (pure functions,
//! tested on their own: [`decide_command`], [`decide_file_change`], [`match_rules`],
//! [`shell_split`], [`script_words`], [`command_words`]):
//!
//! - **Commands** (`item/commandExecution/requestApproval`, v1 `execCommandApproval`): declined
//!   unless the approval mode is `untrusted` or `on-request` and an `[[agent.rule]]` with
//!   `decision = "allow"` matches while no `deny` rule does (the strictest matching rule wins;
//!   no matching rule: declined). A rule matches when the command's words start with its
//!   `prefix`, word for word. The words: a v2 `command` string is split as the shell would
//!   ([`shell_split`]; Codex joins argv with shell quoting); `bash|sh|zsh|dash -c|-lc SCRIPT`
//!   becomes the script's words, split on spaces only, each of `[A-Za-z0-9_./=:@%+,-]` — any
//!   other character (quotes, `;`, `|`, `&`, `$`, redirections, tabs, newlines) means the command
//!   has no words, and no allow rule matches ([`script_words`]). Other argv are their own words.
//!   Requests of another `kind` than `command` (terminal input) and network approvals are
//!   declined.
//! - **File changes** (`item/fileChange/requestApproval`, v1 `applyPatchApproval`): accepted only
//!   in mode `on-request`, when every path (and move destination) is absolute, has no `..`, and
//!   lies inside a writable root (lexically: the sandbox enforces the real boundary). The v2
//!   request names no path: they come from the `fileChange` item's `item/started` (and
//!   `item/fileChange/patchUpdated`) notification, which the policy remembers per thread and item;
//!   a request for an item it has not seen is declined. A `grantRoot` (more writable roots for
//!   the session) is declined.
//! - **Permissions** (`item/permissions/requestApproval`): declined (granted nothing).
//! - **What a gateway cannot serve** (user input, MCP elicitation, ChatGPT token refresh,
//!   attestation, dynamic tool calls, any unknown method): a JSON-RPC error (`-32601`), never
//!   silence. A gateway that maps dynamic tools handles `item/tool/call` itself and passes the
//!   rest here.
//!
//! Mode `never` declines everything: Codex was told never to ask. `untrusted` accepts no file
//! change (the rules speak of commands only).
//!
//! Every decision goes to the [`ApprovalSink`] as an [`ApprovalRecord`]; [`RecorderSink`] makes
//! it an `agent.approval` audit record of the session's [`Recorder`].

use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Map, Value};
use warden_policy::{AgentRule, RuleDecision};
use warden_session::Recorder;

use crate::error::METHOD_NOT_FOUND;
use crate::rpc::{Notification, Reply, ReplyFuture, ServerRequest, ServerRequestHandler};

/// The audit event of an approval decision.
pub const APPROVAL_EVENT: &str = "agent.approval";

/// When Codex asks for approval (`approvalPolicy`): the values Codex 0.169.0's app-server
/// accepts in `thread/start`.
///
/// `on-failure` is not one of them: that binary refuses it (`unknown variant `on-failure`,
/// expected one of `untrusted`, `on-request`, `granular`, `never``), so warden refuses it when
/// the mode is parsed, not when a thread starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalMode {
    /// Codex asks before anything it does not trust: rules decide commands; no file change.
    Untrusted,
    /// The model asks when it wants more than the sandbox gives: rules decide commands; file
    /// changes inside the writable roots are accepted.
    OnRequest,
    /// Codex never asks; whatever asks anyway is declined.
    Never,
}

/// The accepted approval mode names.
pub const APPROVAL_MODE_NAMES: &[&str] = &["untrusted", "on-request", "never"];

impl ApprovalMode {
    /// The wire (and config) name.
    pub fn name(self) -> &'static str {
        match self {
            ApprovalMode::Untrusted => "untrusted",
            ApprovalMode::OnRequest => "on-request",
            ApprovalMode::Never => "never",
        }
    }
}

/// An approval mode name that is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid approval mode {given:?}{}(accepted: untrusted, on-request, never)", if given == "on-failure" { ": Codex 0.169.0's app-server refuses it " } else { " " })]
pub struct ParseApprovalModeError {
    /// The name given.
    pub given: String,
}

impl FromStr for ApprovalMode {
    type Err = ParseApprovalModeError;

    fn from_str(s: &str) -> Result<ApprovalMode, ParseApprovalModeError> {
        match s {
            "untrusted" => Ok(ApprovalMode::Untrusted),
            "on-request" => Ok(ApprovalMode::OnRequest),
            "never" => Ok(ApprovalMode::Never),
            _ => Err(ParseApprovalModeError { given: s.to_owned() }),
        }
    }
}

/// Characters a word of a `bash -lc` script may have.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./=:@%+,-".contains(c)
}

/// Splits a command line as a POSIX shell would split plain words: unquoted words of
/// `[A-Za-z0-9_./=:@%+,-]`, `'...'` (literal), `"..."` (with `\"`, `\\`, `\$`, `` \` `` escapes),
/// `\c` outside quotes, concatenated; separated by spaces and tabs. `None` for anything the
/// shell would treat otherwise: unquoted operators, globs, expansions or other characters,
/// `$` or `` ` `` in double quotes, an unclosed quote.
pub fn shell_split(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    // Bounded: every pass consumes at least one character.
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' => return None,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => w.push(c),
                            '\n' => {}
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => match chars.next()? {
                '\n' => {}
                c => word.get_or_insert_with(String::new).push(c),
            },
            c if is_word_char(c) => word.get_or_insert_with(String::new).push(c),
            _ => return None,
        }
    }
    words.extend(word);
    Some(words)
}

/// The words of a `bash -lc` script: split on spaces only, every word of
/// `[A-Za-z0-9_./=:@%+,-]`; `None` when any other character appears (or the script is empty).
pub fn script_words(script: &str) -> Option<Vec<String>> {
    let words: Vec<String> = script.split(' ').filter(|w| !w.is_empty()).map(str::to_owned).collect();
    (!words.is_empty() && words.iter().all(|w| w.chars().all(is_word_char))).then_some(words)
}

fn is_shell(program: &str) -> bool {
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program);
    matches!(name, "bash" | "sh" | "zsh" | "dash")
}

/// The words rules are matched against, from a command's argv: `SHELL -c|-lc SCRIPT` gives
/// [`script_words`] of the script; any other use of a shell gives `None`; other argv are their
/// own words.
pub fn command_words(argv: &[String]) -> Option<Vec<String>> {
    match argv {
        [] => None,
        [shell, flag, script] if is_shell(shell) && (flag == "-c" || flag == "-lc") => script_words(script),
        [program, ..] if is_shell(program) => None,
        _ => Some(argv.to_vec()),
    }
}

/// Which rule decides a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMatch<'a> {
    /// A deny rule matches (whatever else does).
    Deny(&'a AgentRule),
    /// An allow rule matches and no deny rule does.
    Allow(&'a AgentRule),
    /// No rule matches.
    None,
}

/// The strictest rule whose prefix the words start with: any deny rule, else the first allow
/// rule, in file order.
pub fn match_rules<'a>(rules: &'a [AgentRule], words: &[String]) -> RuleMatch<'a> {
    let matching = || rules.iter().filter(|r| words.starts_with(&r.prefix));
    if let Some(r) = matching().find(|r| r.decision == RuleDecision::Deny) {
        return RuleMatch::Deny(r);
    }
    matching().next().map_or(RuleMatch::None, RuleMatch::Allow)
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Accept (else decline).
    pub accept: bool,
    /// The rule that decided, if one did.
    pub rule: Option<AgentRule>,
    /// Why, one line.
    pub reason: String,
}

impl Verdict {
    fn decline(reason: impl Into<String>) -> Verdict {
        Verdict { accept: false, rule: None, reason: reason.into() }
    }
}

/// The decision on a command with these words (`None`: not a plain word list).
pub fn decide_command(mode: ApprovalMode, rules: &[AgentRule], words: Option<&[String]>) -> Verdict {
    if mode == ApprovalMode::Never {
        return Verdict::decline("approval mode \"never\": the worker was told not to ask, nothing is approved");
    }
    let Some(words) = words else {
        return Verdict::decline(
            "the command is not a plain list of words (shell syntax or characters outside [A-Za-z0-9_./=:@%+,-]): \
             no allow rule can match",
        );
    };
    match match_rules(rules, words) {
        RuleMatch::Deny(r) => Verdict { accept: false, rule: Some(r.clone()), reason: "a deny rule matches".into() },
        RuleMatch::Allow(r) => Verdict { accept: true, rule: Some(r.clone()), reason: "an allow rule matches".into() },
        RuleMatch::None => Verdict::decline("no [[agent.rule]] matches (default: decline)"),
    }
}

/// Whether `path` is absolute, free of `..`, and inside one of `roots` (component-wise).
pub fn path_inside(path: &Path, roots: &[PathBuf]) -> bool {
    path.is_absolute()
        && !path.components().any(|c| c == Component::ParentDir)
        && roots.iter().any(|r| r.is_absolute() && path.starts_with(r))
}

/// The decision on a file change of these paths (`None`: unknown), with the `grantRoot` it asks
/// for, if any.
pub fn decide_file_change(
    mode: ApprovalMode,
    roots: &[PathBuf],
    paths: Option<&[PathBuf]>,
    grant_root: Option<&str>,
) -> Verdict {
    if mode != ApprovalMode::OnRequest {
        return Verdict::decline(format!("approval mode \"{}\" accepts no file change", mode.name()));
    }
    if let Some(root) = grant_root {
        return Verdict::decline(format!(
            "the worker asks to write under {root} for the session; warden does not widen the writable roots"
        ));
    }
    let Some(paths) = paths.filter(|p| !p.is_empty()) else {
        return Verdict::decline("the file change's paths are unknown (no fileChange item was seen for it)");
    };
    match paths.iter().find(|p| !path_inside(p, roots)) {
        Some(p) => Verdict::decline(format!("{} is not inside a writable root", p.display())),
        None => Verdict { accept: true, rule: None, reason: "every path lies inside a writable root".into() },
    }
}

/// One decision, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRecord {
    /// The request's method.
    pub method: String,
    /// Its thread.
    pub thread: Option<String>,
    /// Its turn.
    pub turn: Option<String>,
    /// Its item (or v1 call id).
    pub item: Option<String>,
    /// The command as sent (v2: the string; v1: argv joined by spaces).
    pub command: Option<String>,
    /// The words rules were matched against (`None`: not a plain word list, or not a command).
    pub words: Option<Vec<String>>,
    /// The paths of a file change.
    pub paths: Vec<String>,
    /// `accept`, `decline` or `error` (an error response).
    pub decision: &'static str,
    /// The rule that decided.
    pub rule: Option<AgentRule>,
    /// Why.
    pub reason: String,
}

impl ApprovalRecord {
    fn new(req: &ServerRequest) -> ApprovalRecord {
        let item = ["itemId", "callId"].iter().find_map(|k| req.params.get(*k)).and_then(Value::as_str);
        ApprovalRecord {
            method: req.method.clone(),
            thread: req.thread_id().map(str::to_owned),
            turn: req.turn_id().map(str::to_owned),
            item: item.map(str::to_owned),
            command: None,
            words: None,
            paths: Vec::new(),
            decision: "decline",
            rule: None,
            reason: String::new(),
        }
    }

    /// The audit record's fields.
    pub fn fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// Receives every decision (keep it short: it runs before the answer is sent).
pub trait ApprovalSink: Send + Sync {
    /// One decision.
    fn record(&self, record: &ApprovalRecord);
}

impl<F: Fn(&ApprovalRecord) + Send + Sync> ApprovalSink for F {
    fn record(&self, record: &ApprovalRecord) {
        self(record)
    }
}

/// Decisions as `agent.approval` audit records, within the run's record budget like the other
/// records the sandbox's activity causes (past it: counted in `audit.budget_exhausted`, and
/// the decisions themselves are unchanged).
#[derive(Debug, Clone)]
pub struct RecorderSink(pub Recorder);

impl ApprovalSink for RecorderSink {
    fn record(&self, record: &ApprovalRecord) {
        self.0.record_within_budget(APPROVAL_EVENT, record.fields());
    }
}

/// The most file-change items remembered per policy (the oldest are forgotten first).
const MAX_FILE_ITEMS: usize = 4096;

/// The paths of the `fileChange` items seen, by (thread, item).
#[derive(Default)]
struct FileItems {
    paths: HashMap<(String, String), Vec<PathBuf>>,
    order: VecDeque<(String, String)>,
}

impl FileItems {
    fn insert(&mut self, key: (String, String), paths: Vec<PathBuf>) {
        if self.paths.insert(key.clone(), paths).is_none() {
            self.order.push_back(key);
        }
        // Bounded: each pass removes one entry.
        while self.order.len() > MAX_FILE_ITEMS {
            if let Some(old) = self.order.pop_front() {
                self.paths.remove(&old);
            }
        }
    }

    fn forget_thread(&mut self, thread: &str) {
        self.paths.retain(|(t, _), _| t != thread);
        self.order.retain(|(t, _)| t != thread);
    }
}

/// The paths of a v2 change list (`[{path, kind: {move_path?}}]`); `None` if one is not a string.
fn change_paths(changes: &Value) -> Option<Vec<PathBuf>> {
    let mut out = Vec::new();
    for c in changes.as_array()? {
        out.push(PathBuf::from(c.get("path")?.as_str()?));
        if let Some(to) = c.pointer("/kind/move_path").filter(|v| !v.is_null()) {
            out.push(PathBuf::from(to.as_str()?));
        }
    }
    Some(out)
}

/// The paths of a v1 `fileChanges` map (`{path: {type, move_path?}}`).
fn v1_change_paths(changes: &Value) -> Option<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (path, c) in changes.as_object()? {
        out.push(PathBuf::from(path));
        if let Some(to) = c.get("move_path").filter(|v| !v.is_null()) {
            out.push(PathBuf::from(to.as_str()?));
        }
    }
    Some(out)
}

/// A worker's approval policy (see the module docs).
pub struct ApprovalPolicy {
    mode: ApprovalMode,
    rules: Vec<AgentRule>,
    writable_roots: Vec<PathBuf>,
    sink: Arc<dyn ApprovalSink>,
    items: Mutex<FileItems>,
}

impl std::fmt::Debug for ApprovalPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalPolicy")
            .field("mode", &self.mode)
            .field("rules", &self.rules)
            .field("writable_roots", &self.writable_roots)
            .finish_non_exhaustive()
    }
}

impl ApprovalPolicy {
    /// A policy; decisions go to `sink`.
    pub fn new(
        mode: ApprovalMode,
        rules: Vec<AgentRule>,
        writable_roots: Vec<PathBuf>,
        sink: Arc<dyn ApprovalSink>,
    ) -> ApprovalPolicy {
        ApprovalPolicy { mode, rules, writable_roots, sink, items: Mutex::new(FileItems::default()) }
    }

    /// The approval mode (what `thread/start` should send as `approvalPolicy`).
    pub fn mode(&self) -> ApprovalMode {
        self.mode
    }

    fn items(&self) -> std::sync::MutexGuard<'_, FileItems> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to `req` and its record (not yet sent to the sink).
    pub fn decide(&self, req: &ServerRequest) -> (Reply, ApprovalRecord) {
        let mut rec = ApprovalRecord::new(req);
        let p = &req.params;
        let verdict = match req.method.as_str() {
            "item/commandExecution/requestApproval" | "execCommandApproval" => {
                let v2 = req.method.starts_with("item/");
                let (command, words) = if v2 {
                    let command = p.get("command").and_then(Value::as_str).map(str::to_owned);
                    let words = command.as_deref().and_then(shell_split).and_then(|argv| command_words(&argv));
                    (command, words)
                } else {
                    let argv: Option<Vec<String>> = p
                        .get("command")
                        .and_then(Value::as_array)
                        .and_then(|a| a.iter().map(|w| w.as_str().map(str::to_owned)).collect());
                    (argv.as_ref().map(|a| a.join(" ")), argv.as_deref().and_then(command_words))
                };
                rec.command = command;
                rec.words = words;
                let kind = p.get("kind").and_then(Value::as_str).unwrap_or("command");
                if kind != "command" {
                    Verdict::decline(format!("a {kind:?} request is not a command: only commands are decided by rules"))
                } else if p.get("networkApprovalContext").is_some_and(|v| !v.is_null()) {
                    Verdict::decline("network access is warden's egress policy's to give, not an approval's")
                } else {
                    decide_command(self.mode, &self.rules, rec.words.as_deref())
                }
            }
            "item/fileChange/requestApproval" | "applyPatchApproval" => {
                let paths = if req.method == "applyPatchApproval" {
                    p.get("fileChanges").and_then(v1_change_paths)
                } else {
                    let key = (rec.thread.clone().unwrap_or_default(), rec.item.clone().unwrap_or_default());
                    self.items().paths.get(&key).cloned()
                };
                rec.paths = paths.iter().flatten().map(|p| p.display().to_string()).collect();
                let grant = p.get("grantRoot").and_then(Value::as_str);
                decide_file_change(self.mode, &self.writable_roots, paths.as_deref(), grant)
            }
            "item/permissions/requestApproval" => {
                Verdict::decline("permission requests are declined: the sandbox's policy is fixed for the run")
            }
            other => {
                rec.decision = "error";
                rec.reason = format!("warden cannot serve {other} requests; answered with an error");
                let message = format!("warden does not serve {other} requests (declined by warden's gateway)");
                return (Reply::Error { code: METHOD_NOT_FOUND, message }, rec);
            }
        };
        rec.decision = if verdict.accept { "accept" } else { "decline" };
        rec.rule = verdict.rule;
        rec.reason = verdict.reason;
        let v1 = !req.method.contains('/');
        let decision = match (v1, verdict.accept) {
            (false, true) => json!("accept"),
            (false, false) => json!("decline"),
            (true, true) => json!("approved"),
            (true, false) => json!({ "denied": { "rejection": format!("declined by warden: {}", rec.reason) } }),
        };
        let result = if req.method == "item/permissions/requestApproval" {
            json!({ "permissions": {}, "scope": "turn" })
        } else {
            json!({ "decision": decision })
        };
        (Reply::Result(result), rec)
    }
}

impl ServerRequestHandler for ApprovalPolicy {
    fn handle(&self, request: ServerRequest) -> ReplyFuture<'_> {
        let (reply, record) = self.decide(&request);
        self.sink.record(&record);
        Box::pin(std::future::ready(reply))
    }

    fn notification(&self, n: &Notification) {
        let p = &n.params;
        let thread = || n.thread_id().unwrap_or_default().to_owned();
        match n.method.as_str() {
            "item/started" | "item/fileChange/patchUpdated" => {
                let (id, changes) = match p.get("item") {
                    Some(item) if item.get("type").and_then(Value::as_str) == Some("fileChange") => {
                        (item.get("id"), item.get("changes"))
                    }
                    Some(_) => return,
                    None => (p.get("itemId"), p.get("changes")),
                };
                if let (Some(id), Some(paths)) = (id.and_then(Value::as_str), changes.and_then(change_paths)) {
                    self.items().insert((thread(), id.to_owned()), paths);
                }
            }
            "item/completed" => {
                if let Some(id) = p.pointer("/item/id").and_then(Value::as_str) {
                    let key = (thread(), id.to_owned());
                    let mut items = self.items();
                    if items.paths.remove(&key).is_some() {
                        items.order.retain(|k| *k != key);
                    }
                }
            }
            "turn/completed" => self.items().forget_thread(&thread()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    fn rule(prefix: &[&str], decision: RuleDecision) -> AgentRule {
        AgentRule { prefix: words(prefix), decision, line: None }
    }

    #[test]
    fn shell_split_takes_what_codex_writes_and_nothing_else() {
        // Observed from Codex 0.169.0 for exec_command "git status" and `echo "it's" && ls`.
        assert_eq!(shell_split("/bin/bash -lc 'git status'"), Some(words(&["/bin/bash", "-lc", "git status"])));
        assert_eq!(
            shell_split(r#"/bin/bash -lc "echo \"it's\" && ls""#),
            Some(words(&["/bin/bash", "-lc", "echo \"it's\" && ls"]))
        );
        assert_eq!(shell_split("git  log\t-n 3"), Some(words(&["git", "log", "-n", "3"])));
        assert_eq!(shell_split("a'b'\"c\"\\ d ''"), Some(words(&["abc d", ""])));
        assert_eq!(shell_split(r#""a\\b\$""#), Some(words(&["a\\b$"])));
        for bad in [
            "ls; rm -rf /",
            "ls | sh",
            "echo $HOME",
            "echo `id`",
            "echo \"$HOME\"",
            "echo \"`id`\"",
            "ls > /etc/x",
            "ls *",
            "echo 'open",
            "echo \"open",
            "a && b",
            "(ls)",
            "ls ~",
            "x\ny",
        ] {
            assert_eq!(shell_split(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bash_scripts_split_on_spaces_into_safe_words_only() {
        assert_eq!(script_words("git status"), Some(words(&["git", "status"])));
        assert_eq!(script_words("  git   log --oneline -n 5 "), Some(words(&["git", "log", "--oneline", "-n", "5"])));
        assert_eq!(
            script_words("git commit -m msg,x:y@z%+=/."),
            Some(words(&["git", "commit", "-m", "msg,x:y@z%+=/."]))
        );
        for bad in
            ["git status && rm -rf /", "git\tstatus", "git status\n", "echo 'x'", "ls;", "a|b", "$x", "", "   ", "é"]
        {
            assert_eq!(script_words(bad), None, "{bad:?}");
        }
        let argv = |s: &[&str]| command_words(&words(s));
        assert_eq!(argv(&["/bin/bash", "-lc", "git status"]), Some(words(&["git", "status"])));
        assert_eq!(argv(&["sh", "-c", "git push --force"]), Some(words(&["git", "push", "--force"])));
        assert_eq!(argv(&["/usr/bin/zsh", "-lc", "git status; id"]), None);
        assert_eq!(argv(&["bash", "script.sh"]), None, "a shell running a file has no words");
        assert_eq!(argv(&["bash", "-c", "ls", "extra"]), None);
        assert_eq!(argv(&["git", "commit", "-m", "it's fine"]), Some(words(&["git", "commit", "-m", "it's fine"])));
        assert_eq!(argv(&[]), None);
    }

    #[test]
    fn the_strictest_matching_rule_wins() {
        let rules = [
            rule(&["git"], RuleDecision::Allow),
            rule(&["git", "push"], RuleDecision::Deny),
            rule(&["git", "status"], RuleDecision::Allow),
        ];
        assert_eq!(match_rules(&rules, &words(&["git", "status", "-s"])), RuleMatch::Allow(&rules[0]));
        assert_eq!(match_rules(&rules, &words(&["git", "push", "origin"])), RuleMatch::Deny(&rules[1]));
        assert_eq!(match_rules(&rules, &words(&["gitk"])), RuleMatch::None, "words, not characters");
        assert_eq!(match_rules(&rules, &words(&["/usr/bin/git", "status"])), RuleMatch::None, "exact words");
        // Order does not matter: a deny listed last still wins.
        let rules = [rule(&["rm"], RuleDecision::Allow), rule(&["rm", "-rf"], RuleDecision::Deny)];
        assert_eq!(match_rules(&rules, &words(&["rm", "-rf", "/"])), RuleMatch::Deny(&rules[1]));
        assert_eq!(match_rules(&rules, &words(&["rm", "x"])), RuleMatch::Allow(&rules[0]));
        assert_eq!(match_rules(&[], &words(&["ls"])), RuleMatch::None);
    }

    #[test]
    fn command_decisions_by_mode_and_rules() {
        let rules = [rule(&["git", "status"], RuleDecision::Allow), rule(&["git", "push"], RuleDecision::Deny)];
        let ok = words(&["git", "status"]);
        for mode in [ApprovalMode::Untrusted, ApprovalMode::OnRequest] {
            let v = decide_command(mode, &rules, Some(&ok));
            assert!(v.accept && v.rule.as_ref() == Some(&rules[0]), "{v:?}");
            let v = decide_command(mode, &rules, Some(&words(&["git", "push"])));
            assert!(!v.accept && v.rule.as_ref() == Some(&rules[1]), "{v:?}");
            let v = decide_command(mode, &rules, Some(&words(&["ls"])));
            assert!(!v.accept && v.rule.is_none() && v.reason.contains("default: decline"), "{v:?}");
            let v = decide_command(mode, &rules, None);
            assert!(!v.accept && v.reason.contains("no allow rule can match"), "{v:?}");
        }
        let v = decide_command(ApprovalMode::Never, &rules, Some(&ok));
        assert!(!v.accept && v.reason.contains("never"), "{v:?}");
    }

    #[test]
    fn file_changes_only_on_request_and_inside_the_roots() {
        let roots = [PathBuf::from("/work/repo"), PathBuf::from("/cache")];
        let p = |s: &[&str]| s.iter().map(PathBuf::from).collect::<Vec<_>>();
        let inside = p(&["/work/repo/a.txt", "/cache/x/y"]);
        assert!(decide_file_change(ApprovalMode::OnRequest, &roots, Some(&inside), None).accept);
        for mode in [ApprovalMode::Untrusted, ApprovalMode::Never] {
            assert!(!decide_file_change(mode, &roots, Some(&inside), None).accept);
        }
        for bad in [
            p(&["/work/repo/a", "/etc/passwd"]),
            p(&["/work/repository/x"]),
            p(&["/work/repo/../../etc/x"]),
            p(&["repo/a"]),
            p(&[]),
        ] {
            let v = decide_file_change(ApprovalMode::OnRequest, &roots, Some(&bad), None);
            assert!(!v.accept, "{bad:?}: {v:?}");
        }
        assert!(!decide_file_change(ApprovalMode::OnRequest, &roots, None, None).accept);
        let v = decide_file_change(ApprovalMode::OnRequest, &roots, Some(&inside), Some("/"));
        assert!(!v.accept && v.reason.contains("widen"), "{v:?}");
        assert!(path_inside(Path::new("/work/repo"), &roots), "a root itself is inside");
        assert!(!path_inside(Path::new("/x"), &[]), "no roots, nothing inside");
    }

    #[test]
    fn approval_modes_are_what_the_app_server_accepts() {
        for name in APPROVAL_MODE_NAMES {
            assert_eq!(name.parse::<ApprovalMode>().expect("parses").name(), *name);
        }
        let e = "on-failure".parse::<ApprovalMode>().expect_err("refused");
        assert_eq!(
            e.to_string(),
            "invalid approval mode \"on-failure\": Codex 0.169.0's app-server refuses it (accepted: untrusted, on-request, never)"
        );
        let e = "always".parse::<ApprovalMode>().expect_err("refused");
        assert_eq!(e.to_string(), "invalid approval mode \"always\" (accepted: untrusted, on-request, never)");
    }

    fn request(method: &str, params: Value) -> ServerRequest {
        ServerRequest { id: json!(7), method: method.into(), params }
    }

    #[test]
    fn requests_get_answers_in_their_own_shapes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let policy = ApprovalPolicy::new(
            ApprovalMode::OnRequest,
            vec![rule(&["git", "status"], RuleDecision::Allow)],
            vec![PathBuf::from("/work")],
            Arc::new(move |r: &ApprovalRecord| sink.lock().expect("lock").push(r.clone())),
        );
        let ids = json!({ "threadId": "T", "turnId": "U" });
        let with = |extra: Value| {
            let mut v = ids.clone();
            if let (Some(v), Value::Object(e)) = (v.as_object_mut(), extra) {
                v.extend(e);
            }
            v
        };
        let cmd = request(
            "item/commandExecution/requestApproval",
            with(json!({ "itemId": "c1", "command": "/bin/bash -lc 'git status'" })),
        );
        let (reply, rec) = policy.decide(&cmd);
        assert_eq!(reply, Reply::Result(json!({ "decision": "accept" })));
        assert_eq!(
            (rec.thread.as_deref(), rec.turn.as_deref(), rec.item.as_deref()),
            (Some("T"), Some("U"), Some("c1"))
        );
        assert_eq!(rec.words, Some(words(&["git", "status"])));
        let stdin = request(
            "item/commandExecution/requestApproval",
            with(json!({ "itemId": "c2", "kind": "writeStdin", "command": "git status" })),
        );
        assert_eq!(policy.decide(&stdin).0, Reply::Result(json!({ "decision": "decline" })));
        let net = request(
            "item/commandExecution/requestApproval",
            with(
                json!({ "itemId": "c3", "command": "git status", "networkApprovalContext": { "host": "x", "protocol": "https" } }),
            ),
        );
        assert_eq!(policy.decide(&net).0, Reply::Result(json!({ "decision": "decline" })));
        let v1 =
            request("execCommandApproval", json!({ "conversationId": "T", "callId": "k", "command": ["git", "push"] }));
        let (reply, rec) = policy.decide(&v1);
        assert!(matches!(&reply, Reply::Result(v) if v["decision"]["denied"]["rejection"].is_string()), "{reply:?}");
        assert_eq!((rec.thread.as_deref(), rec.command.as_deref()), (Some("T"), Some("git push")));
        let v1 = request(
            "execCommandApproval",
            json!({ "conversationId": "T", "callId": "k", "command": ["git", "status"] }),
        );
        assert_eq!(policy.decide(&v1).0, Reply::Result(json!({ "decision": "approved" })));

        // A v2 file change: the paths come from the item seen before.
        let file = request("item/fileChange/requestApproval", with(json!({ "itemId": "p1", "grantRoot": null })));
        assert_eq!(policy.decide(&file).0, Reply::Result(json!({ "decision": "decline" })), "unknown item");
        let started = |paths: &[&str]| Notification {
            method: "item/started".into(),
            params: with(json!({ "item": { "type": "fileChange", "id": "p1",
                "changes": paths.iter().map(|p| json!({ "path": p, "kind": { "type": "add" }, "diff": "" })).collect::<Vec<_>>() } })),
        };
        policy.notification(&started(&["/work/a", "/work/b"]));
        let (reply, rec) = policy.decide(&file);
        assert_eq!(reply, Reply::Result(json!({ "decision": "accept" })));
        assert_eq!(rec.paths, ["/work/a", "/work/b"]);
        policy.notification(&Notification {
            method: "item/fileChange/patchUpdated".into(),
            params: with(json!({ "itemId": "p1", "changes": [{ "path": "/work/a", "kind": { "type": "update", "move_path": "/etc/a" }, "diff": "" }] })),
        });
        assert_eq!(policy.decide(&file).0, Reply::Result(json!({ "decision": "decline" })), "moved outside");
        policy.notification(&started(&["/work/a"]));
        policy.notification(&Notification {
            method: "turn/completed".into(),
            params: json!({ "threadId": "T", "turn": { "id": "U", "status": "completed" } }),
        });
        assert_eq!(policy.decide(&file).0, Reply::Result(json!({ "decision": "decline" })), "forgotten with its turn");
        let v1 = request(
            "applyPatchApproval",
            json!({ "conversationId": "T", "callId": "k", "fileChanges": { "/work/x": { "type": "add", "content": "" } } }),
        );
        assert_eq!(policy.decide(&v1).0, Reply::Result(json!({ "decision": "approved" })));

        let perms = request(
            "item/permissions/requestApproval",
            with(json!({ "itemId": "q", "permissions": { "network": { "enabled": true } } })),
        );
        assert_eq!(policy.decide(&perms).0, Reply::Result(json!({ "permissions": {}, "scope": "turn" })));
        for method in [
            "item/tool/requestUserInput",
            "mcpServer/elicitation/request",
            "account/chatgptAuthTokens/refresh",
            "item/tool/call",
            "attestation/generate",
            "x/y",
        ] {
            let (reply, rec) = policy.decide(&request(method, ids.clone()));
            assert!(matches!(reply, Reply::Error { code: METHOD_NOT_FOUND, .. }), "{method}: {reply:?}");
            assert_eq!(rec.decision, "error");
        }
        // The handler path records each decision.
        drop(policy.handle(cmd));
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        let f = seen[0].fields();
        assert_eq!(f["decision"], "accept");
        assert_eq!(f["rule"]["prefix"], json!(["git", "status"]));
        assert_eq!(f["method"], "item/commandExecution/requestApproval");
    }
}
