//! Command-line syntax. Names here are a contract (README, other issues, users' scripts).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use warden_policy::{EnvInherit, GitMode, NetMode, PolicyOptions, Profile};

/// `warden --version`: the version, the git commit and its date (build.rs).
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("WARDEN_GIT_COMMIT"), " ", env!("WARDEN_COMMIT_DATE"), ")");

/// Run AI coding agents, or any command, with least privilege.
///
/// warden confines a command with Linux namespaces, a read-only root, masked secrets,
/// Landlock, seccomp, dropped capabilities and rlimits, and explains every denial.
#[derive(Debug, Parser)]
#[command(name = "warden", version = VERSION, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in the sandbox.
    ///
    /// Exit status: the command's own; 128+N if it died of signal N; 124 on timeout;
    /// 125 if warden itself failed or cannot enforce the policy; 126 if the command is not
    /// executable; 127 if it was not found.
    ///
    /// Examples:
    ///   warden run -- bash                              # offline, read-only, secrets masked
    ///   warden run -p workspace-write -C ~/proj -- make test
    ///   warden run --sandbox workspace-write -- codex --sandbox danger-full-access --ask-for-approval never
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Print the effective policy (what `warden run` would enforce) as a table.
    Explain(ExplainArgs),
    /// Check what this kernel can enforce; exit 1 if the `offline` profile cannot be enforced.
    Doctor(DoctorArgs),
    /// Run the domain-allowlist egress proxy on its own (e.g. in front of a container).
    ///
    /// CONNECT and SOCKS5 tunnels carry only TLS whose SNI names the tunnel's host, or plain HTTP
    /// whose every request names it; anything else is closed (not-tls) unless --allow-raw names
    /// that host and port.
    ///
    /// Examples:
    ///   warden egress --allow-domain pypi.org --allow-domain '*.pythonhosted.org'
    ///   warden egress --listen 127.0.0.1:8080 --socks-listen 127.0.0.1:1080 --config proxy.toml
    ///   warden egress --allow-domain github.com --allow-raw ssh.github.com:443
    #[command(verbatim_doc_comment)]
    Egress(EgressArgs),
    /// A strict credential-injecting proxy: the API key is read from stdin and only ever lives in
    /// this process (locked memory); clients send requests without it.
    ///
    /// Same contract as Codex's codex-responses-api-proxy: only the configured routes (default
    /// POST /v1/responses, no query string) are forwarded, everything else gets 403.
    ///
    /// Examples:
    ///   printenv OPENAI_API_KEY | warden credproxy --port 8787 --server-info /tmp/proxy.json
    ///   warden credproxy --listen unix:/run/user/1000/llm.sock --auth-header x-api-key --auth-scheme none \
    ///       --upstream-url https://api.anthropic.com/v1/messages --route POST:/v1/messages < key.txt
    #[command(verbatim_doc_comment)]
    Credproxy(CredproxyArgs),
    /// An OpenAI-compatible API (chat completions, responses, models) over a pool of Codex
    /// app-server workers, each in warden's sandbox; the model key stays in warden.
    ///
    /// Every setting also comes from its environment variable (codex-completions-api's names:
    /// PORT, PROXY_HOST, PROXY_API_KEY, PROXY_SANDBOX_MODE, PROXY_APPROVAL_POLICY, CODEX_BIN,
    /// CODEX_HOME, CODEX_MODEL, WORKER_MAX_CONCURRENCY, WORKER_*_MS, WORKER_RESTART_MAX,
    /// PROXY_TIMEOUT_MS, PROXY_IDLE_TIMEOUT_MS, PROXY_SSE_KEEPALIVE_MS) or from [serve] in
    /// warden.toml; a flag wins over the environment, which wins over the file. Binds loopback
    /// by default; a non-loopback address needs client keys of at least 32 characters.
    ///
    /// Examples:
    ///   warden serve --no-auth --credential-env OPENAI_API_KEY            # http://127.0.0.1:11435/v1
    ///   warden serve --listen 0.0.0.0:8080 --api-key-file keys.txt --credential-file /run/secrets/openai \
    ///       --model codex=gpt-5.1-codex:medium --workers 4
    ///   warden serve --sandbox workspace-write --workdir ~/proj --approval-policy on-request --no-auth
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Codex in warden's sandbox for one project, with a Codex home of that project's own.
    ///
    /// The project (default: the current directory) is writable, the rest of the host read-only
    /// and the secrets masked; PROJECT/codex and PROJECT/.codex stay read-only. The model key
    /// (--credential-env/--credential-file, else OPENAI_API_KEY) goes through the credential
    /// proxy: Codex holds a dummy. Without a key, a ChatGPT login's auth.json (--auth-file,
    /// CODEX_AUTH_FILE, ~/.codex, ...) is mounted read-only, never copied, and chatgpt.com and
    /// auth.openai.com are allowed. The network is otherwise off but for --allow-domain /
    /// OPENAI_ALLOWED_DOMAINS (through the egress proxy).
    /// The home is $XDG_DATA_HOME/warden/codex/<project>-<hash>: config.toml copied once
    /// (never overwritten), prompts/ copied without overwriting, sessions kept there (or in
    /// --sessions-path), an init.sh run first. Without CODEX_ARGS, the TUI (a terminal is
    /// needed). warden run's policy, network, limit and credential options apply.
    ///
    /// Examples:
    ///   OPENAI_API_KEY=sk-... warden codex                       # the TUI in the current project
    ///   warden codex --project ~/proj -- exec "fix the failing test"
    ///   warden codex --read-only ~/.m2 --init-script ./prepare.sh --allow-domain repo.maven.apache.org
    ///   warden codex --sessions-path ~/codex-sessions --yes -- exec "summarise the repo"
    ///   warden codex --list;  warden codex --forget ~/old-proj
    #[command(verbatim_doc_comment)]
    Codex(CodexArgs),
    /// Verify, checkpoint, show or follow the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    ///
    /// Examples:
    ///   warden completions bash > ~/.local/share/bash-completion/completions/warden
    ///   warden completions zsh > "${fpath[1]}/_warden"
    ///   warden completions fish > ~/.config/fish/completions/warden.fish
    #[command(verbatim_doc_comment)]
    Completions(CompletionsArgs),
    /// Print the man page warden(1), or write it and one page per command into a directory.
    ///
    /// Examples:
    ///   warden man | man -l -
    ///   warden man --out /usr/local/share/man/man1          # warden.1, warden-run.1, ...
    #[command(verbatim_doc_comment)]
    Man(ManArgs),
    /// The child side of warden-session's spawn path (not for people): runs the session a parent
    /// sends over the inherited control socket.
    #[command(name = "__session", hide = true)]
    Session(SessionArgs),
    /// Exits 0 (not for people): `warden doctor`'s probe command, present in any image warden is.
    #[command(name = "__true", hide = true)]
    True,
}

/// `warden completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// `warden man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write warden.1 and a page per command (warden-run.1, ...) into DIR instead
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `warden __session`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The inherited control socket
    #[arg(long, value_name = "FD", default_value_t = 3)]
    pub control_fd: i32,
}

/// `warden audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and both of its ends: exit 0 when intact, else 1
    ///
    /// With no FILE, checks the configured log and its rotated files, oldest first. Exit 1 names
    /// the first bad record and why; 125 means the log, the key or the checkpoint could not be read.
    ///
    /// Head: the log must start at seq 1, or where rotation's log.pruned record says the files it
    /// deleted ended; anything else is "head missing" (the oldest records were deleted, or not all
    /// files were given).
    ///
    /// Tail: records cut off the end leave a shorter chain that is still intact. Only a checkpoint
    /// taken earlier (warden audit head) and kept off this machine shows that:
    ///
    ///   warden audit head > /mnt/elsewhere/audit.checkpoint     # now and then
    ///   warden audit verify --checkpoint /mnt/elsewhere/audit.checkpoint
    #[command(verbatim_doc_comment)]
    Verify {
        /// Log files in chain order (oldest first)
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Also fail (exit 1) unless the log still holds this checkpoint's record unchanged: when
        /// the log ends before its seq (records were cut off), holds another record there, or the
        /// checkpoint's mac does not fit the key (forged). A checkpoint whose record rotation has
        /// since pruned cannot be checked and fails too: take checkpoints more often
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        log: AuditLogArgs,
    },
    /// Print a checkpoint of the newest record, to keep where this machine cannot rewrite it
    ///
    /// Verifies the log first (exit 1 when it does not verify, 125 when it is missing or empty),
    /// then prints one JSON line:
    ///
    ///   {"seq":N,"hash":"<64 hex>","mac":"<64 hex>"}   keyed log: HMAC-SHA256 under its key
    ///   {"seq":N,"hash":"<64 hex>","mac":null}         unkeyed log
    ///
    /// Without the key nobody can make a checkpoint that verifies against a keyed log. Later,
    /// `warden audit verify --checkpoint FILE` proves the log still reaches that record unchanged.
    ///
    /// Example:
    ///   warden audit head | ssh loghost 'cat > warden-audit.checkpoint'
    #[command(verbatim_doc_comment)]
    Head {
        /// The log; its rotated files FILE.N are read too [default: as --audit-log]
        #[arg(value_name = "FILE", conflicts_with = "audit_log")]
        file: Option<PathBuf>,
        #[command(flatten)]
        log: AuditLogArgs,
    },
    /// Print records as a table (or JSON lines), oldest first.
    Show {
        /// Only records newer than this, e.g. 30s, 15m, 2h, 7d
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Only events matching this glob, e.g. 'run.*'
        #[arg(long, value_name = "GLOB")]
        event: Option<String>,
        /// Only records of this session
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Print the records as they are stored (one JSON object per line)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        log: AuditLogArgs,
    },
    /// Print the last records; with -f, keep printing new ones.
    Tail {
        /// Keep following the log (across rotations) until interrupted
        #[arg(short, long)]
        follow: bool,
        /// How many records to print first
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Print the records as they are stored
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        log: AuditLogArgs,
    },
}

/// What `warden run` and `warden codex` share besides the policy: confirmations, the
/// credential, verbosity.
#[derive(Debug, Args)]
pub struct RunSessionArgs {
    /// Answer yes to confirmations (writable paths outside the workdir)
    #[arg(long)]
    pub yes: bool,
    /// Take the model API key from warden's environment variable VAR and serve it to the
    /// command through a credential proxy: the command gets OPENAI_BASE_URL pointing at the
    /// proxy and OPENAI_API_KEY=warden-proxied, never the key (VAR is removed from its environment)
    #[arg(long, value_name = "VAR", conflicts_with = "credential_file", help_heading = "Credentials")]
    pub credential_env: Option<String>,
    /// The same, with the key read from FILE (masked inside the sandbox)
    #[arg(long, value_name = "FILE", help_heading = "Credentials")]
    pub credential_file: Option<PathBuf>,
    /// Where the credential proxy sends requests
    #[arg(long, value_name = "URL", default_value = warden_credproxy::DEFAULT_UPSTREAM, help_heading = "Credentials")]
    pub credential_upstream: String,
    /// Print the layers in force before running
    #[arg(short, long)]
    pub verbose: bool,
}

/// `warden codex`.
#[derive(Debug, Args)]
pub struct CodexArgs {
    /// The project Codex works in (writable) [default: the current directory]
    #[arg(long, value_name = "DIR", conflicts_with = "workdir")]
    pub project: Option<PathBuf>,
    /// The Codex binary [default: CODEX_BIN, else codex on PATH]
    #[arg(long, value_name = "PATH")]
    pub codex_bin: Option<PathBuf>,
    /// The Codex home to use [default: $XDG_DATA_HOME/warden/codex/<project>-<hash>]
    #[arg(long, value_name = "DIR")]
    pub codex_home: Option<PathBuf>,
    /// Where config.toml is copied from when the home has none (a file, or a directory holding
    /// config.toml) [default: CODEX_CONFIG_DIR, else ~/.codex, else ~/.config/codex]
    #[arg(long, value_name = "FILE|DIR")]
    pub codex_source: Option<PathBuf>,
    /// A ChatGPT login's auth.json, mounted read-only at the Codex home and never copied (used
    /// when no key is given) [default: CODEX_AUTH_FILE, else the first auth.json of the
    /// --codex-source directory, CODEX_CONFIG_DIR, ~/.codex, ~/.config/codex, PROJECT/codex,
    /// PROJECT/.codex]
    #[arg(long, value_name = "FILE", help_heading = "Credentials")]
    pub auth_file: Option<PathBuf>,
    /// Keep Codex's sessions in DIR (created if missing; shown as the home's sessions/) instead
    /// of the home; outside the project it is confirmed on a terminal, else needs --yes
    #[arg(long, value_name = "DIR")]
    pub sessions_path: Option<PathBuf>,
    /// An executable copied into the Codex home as init.sh and run before Codex, in the same
    /// sandbox, in the project, with SANDBOX_ENV_DIR set to the home (an existing executable
    /// init.sh there runs without this flag); a failure stops the run with its status
    #[arg(long, value_name = "FILE")]
    pub init_script: Option<PathBuf>,
    /// List the per-project Codex homes and exit
    #[arg(long, conflicts_with_all = ["forget", "codex_args"])]
    pub list: bool,
    /// Remove the Codex home of PROJECT and exit
    #[arg(long, value_name = "PROJECT", conflicts_with = "codex_args")]
    pub forget: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub session: RunSessionArgs,
    /// Codex's own arguments (e.g. exec "...")
    #[arg(last = true, value_name = "CODEX_ARGS")]
    pub codex_args: Vec<String>,
}

/// `warden serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on ADDR:PORT [default: 127.0.0.1:11435; env PROXY_HOST, PORT]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// A model id served in /v1/models, optionally mapped to a Codex model and a default
    /// reasoning effort (none, minimal, low, medium, high, xhigh); repeatable [default: CODEX_MODEL, else "codex" = Codex's default]
    #[arg(long = "model", value_name = "ID[=CODEX_MODEL[:EFFORT]]")]
    pub models: Vec<String>,
    /// Workers serving at once (one more runs as a warm spare) [default: 2]
    #[arg(long, value_name = "N")]
    pub workers: Option<u64>,
    /// Turns one worker serves at once [default: 4; env WORKER_MAX_CONCURRENCY]
    #[arg(long, value_name = "M")]
    pub worker_concurrency: Option<u64>,
    /// The Codex binary [default: codex on PATH; env CODEX_BIN]
    #[arg(long, value_name = "PATH")]
    pub codex_bin: Option<PathBuf>,
    /// Where the workers' model requests go, with the key injected [default: https://api.openai.com/v1/responses]
    #[arg(long, visible_alias = "upstream-url", value_name = "URL")]
    pub credential_upstream: Option<String>,
    /// The model key is in this environment variable of warden's (removed from warden's
    /// environment once read) [default: OPENAI_API_KEY when set]
    #[arg(long, value_name = "VAR", conflicts_with = "credential_file")]
    pub credential_env: Option<String>,
    /// The model key is in this file (hidden from the workers)
    #[arg(long, value_name = "FILE")]
    pub credential_file: Option<PathBuf>,
    /// A ChatGPT login's auth.json instead of a key: mounted read-only into each worker (a
    /// startup warning says the worker can read that token)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["credential_env", "credential_file"])]
    pub codex_auth: Option<PathBuf>,
    /// Client keys, one "name:key" per line (# comments); or env PROXY_API_KEY (named "default")
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Serve without client keys (loopback addresses only; a warning)
    #[arg(long)]
    pub no_auth: bool,
    /// The workers' profile: offline, workspace-write or trusted [default: offline]
    #[arg(short, long, value_name = "PROFILE", conflicts_with = "sandbox", value_parser = ["offline", "workspace-write", "trusted"])]
    pub profile: Option<String>,
    /// The workers' sandbox in Codex's names: read-only, workspace-write, danger-full-access
    /// [default: read-only; env PROXY_SANDBOX_MODE]
    #[arg(long, value_name = "MODE")]
    pub sandbox: Option<String>,
    /// Codex's approval policy: untrusted, on-failure, on-request, never (requests are answered
    /// by [[agent.rule]] in warden.toml, declined otherwise) [default: never; env PROXY_APPROVAL_POLICY]
    #[arg(long, value_name = "POLICY")]
    pub approval_policy: Option<String>,
    /// The project the workers work in (writable with workspace-write)
    #[arg(short = 'C', long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Where the workers' homes are made [default: $XDG_STATE_HOME/warden-serve, else
    /// ~/.local/state/warden-serve, else /var/tmp/warden-serve-UID; never under TMPDIR]
    #[arg(long, value_name = "DIR")]
    pub worker_home: Option<PathBuf>,
    /// A domain the workers may reach through the egress proxy (repeatable)
    #[arg(long, value_name = "DOMAIN")]
    pub allow_domain: Vec<String>,
    /// Let --sandbox danger-full-access select warden's trusted profile (a warning)
    #[arg(long)]
    pub allow_trusted: bool,
    /// An origin browsers may call from (repeatable; CORS is off unless one is given)
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// warden.toml (its [serve], [[agent.rule]] and [audit] tables)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// `warden egress`.
#[derive(Debug, Args)]
pub struct EgressArgs {
    /// HTTP and CONNECT proxy address
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3128")]
    pub listen: String,
    /// Also serve SOCKS5 (CONNECT, for ALL_PROXY=socks5h://...) on this address
    #[arg(long, value_name = "ADDR")]
    pub socks_listen: Option<String>,
    #[command(flatten)]
    pub rules: NetworkArgs,
    /// warden config file ([network] rules and [audit])
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Print every decision on stderr
    #[arg(short, long)]
    pub verbose: bool,
}

/// `warden credproxy`.
#[derive(Debug, Args)]
pub struct CredproxyArgs {
    /// Port on 127.0.0.1 [default: an ephemeral port]
    #[arg(long, conflicts_with = "listen")]
    pub port: Option<u16>,
    /// Listen on ADDR (host:port) or unix:PATH instead
    #[arg(long, value_name = "ADDR|unix:PATH")]
    pub listen: Option<String>,
    /// Once listening, write {"port":..,"pid":..} as one JSON line to FILE
    #[arg(long, value_name = "FILE")]
    pub server_info: Option<PathBuf>,
    /// Let GET /shutdown stop the proxy (exit 0)
    #[arg(long)]
    pub http_shutdown: bool,
    /// Where allowed requests go
    #[arg(long, value_name = "URL", default_value = warden_credproxy::DEFAULT_UPSTREAM)]
    pub upstream_url: String,
    /// Write every forwarded request and response to DIR as JSON (secrets redacted)
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
    /// Allowed METHOD:PATH (repeatable) [default: POST:/v1/responses]
    #[arg(long, value_name = "METHOD:PATH")]
    pub route: Vec<String>,
    /// Header that carries the key (e.g. x-api-key for Anthropic, api-key for Azure)
    #[arg(long, value_name = "NAME", default_value = "authorization")]
    pub auth_header: String,
    /// How the key is written into that header
    #[arg(long, value_name = "SCHEME", default_value = "Bearer", value_parser = ["Bearer", "bearer", "none"])]
    pub auth_scheme: String,
    /// Upstream connect timeout, seconds
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Longest upstream or client silence, seconds
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub idle_timeout: u64,
    /// Request body cap (413 above it)
    #[arg(long, value_name = "BYTES", default_value = "32M", value_parser = warden_policy::parse_size)]
    pub max_body_bytes: u64,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// Which log the audit subcommands read.
#[derive(Debug, Args, Clone)]
pub struct AuditLogArgs {
    /// The log [default: [audit] path of the config, else $XDG_STATE_HOME/warden/audit.jsonl]
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// The HMAC key of a keyed log
    #[arg(long, value_name = "FILE")]
    pub audit_key_file: Option<PathBuf>,
    /// warden config file to read [audit] from
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `30s`, `15m`, `2h`, `7d` (or plain seconds).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?} (examples: 30s, 15m, 2h, 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid duration unit in {s:?} (accepted: s, m, h, d)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

const PROFILES: [&str; 5] = ["offline", "net-read-only", "workspace-write", "workspace-net", "trusted"];

fn profile_parser() -> impl TypedValueParser<Value = Profile> {
    PossibleValuesParser::new(PROFILES).map(|s| s.parse::<Profile>().expect("listed profile names parse"))
}

fn codex_sandbox_parser() -> impl TypedValueParser<Value = Profile> {
    PossibleValuesParser::new(["read-only", "workspace-write", "danger-full-access"])
        .map(|s| Profile::from_codex_sandbox_mode(&s).expect("listed Codex modes map to profiles"))
}

fn net_parser() -> impl TypedValueParser<Value = NetMode> {
    PossibleValuesParser::new(["none", "allowlist", "host"]).map(|s| s.parse::<NetMode>().expect("listed modes parse"))
}

fn git_parser() -> impl TypedValueParser<Value = GitMode> {
    PossibleValuesParser::new(warden_policy::profile::GIT_MODE_NAMES)
        .map(|s| s.parse::<GitMode>().expect("listed git modes parse"))
}

fn inherit_parser() -> impl TypedValueParser<Value = EnvInherit> {
    PossibleValuesParser::new(["all", "core", "none"]).map(|s| s.parse::<EnvInherit>().expect("listed values parse"))
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected K=V, got {s:?}"))?;
    if k.is_empty() || k.contains('\0') || v.contains('\0') {
        return Err(format!("invalid variable name or value in {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_size(s: &str) -> Result<u64, String> {
    warden_policy::parse_size(s)
}

/// Egress rules (for `--net allowlist`, the `*-net` profiles and `warden egress`).
#[derive(Debug, Args, Clone, Default)]
pub struct NetworkArgs {
    /// Allow connections to DOMAIN through the egress proxy (--net allowlist): `example.com` (that
    /// name only), `*.example.com` (subdomains only), `*` (any public host), optionally `:PORT`
    #[arg(long, value_name = "DOMAIN", help_heading = "Network")]
    pub allow_domain: Vec<String>,
    /// Deny DOMAIN even if an allow rule matches (deny wins)
    #[arg(long, value_name = "DOMAIN", help_heading = "Network")]
    pub deny_domain: Vec<String>,
    /// Allow this port besides 80 and 443 for every allowed domain
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), help_heading = "Network")]
    pub allow_port: Vec<u16>,
    /// Allow IP literals in CIDR (by default an IP address as destination is refused)
    #[arg(long, value_name = "CIDR", help_heading = "Network")]
    pub allow_cidr: Vec<String>,
    /// Let allowed names resolve to addresses in CIDR although it is private, loopback or
    /// link-local (the SSRF guard refuses those otherwise); audited
    #[arg(long, value_name = "CIDR", help_heading = "Network")]
    pub allow_private: Vec<String>,
    /// Resolve NAME to IP instead of asking DNS (like curl --resolve), e.g. pypi.local:10.0.0.5
    #[arg(long, value_name = "NAME:IP", help_heading = "Network")]
    pub resolve: Vec<String>,
    /// Allow raw TCP to HOST:PORT: CONNECT and SOCKS5 tunnels to it may carry any protocol,
    /// uninspected (e.g. db.internal:5432; needed for SSH, SMTP, databases, anything server-first).
    /// Other tunnels carry only TLS naming their host or plain HTTP
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_raw_rule, help_heading = "Network")]
    pub allow_raw: Vec<String>,
}

/// `--allow-raw` names a port (the egress proxy checks the rest when it starts).
fn parse_raw_rule(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not HOST:PORT; a raw rule names a host and a port, e.g. db.internal:5432")),
    }
}

impl NetworkArgs {
    pub fn to_rules(&self) -> warden_policy::NetworkRules {
        warden_policy::NetworkRules {
            allow: self
                .allow_domain
                .iter()
                .map(|d| warden_policy::AllowRule { pattern: d.clone(), expires: None, raw: false })
                .chain(self.allow_raw.iter().map(|d| warden_policy::AllowRule {
                    pattern: d.clone(),
                    expires: None,
                    raw: true,
                }))
                .collect(),
            deny: self.deny_domain.clone(),
            allow_ports: self.allow_port.clone(),
            allow_cidr: self.allow_cidr.clone(),
            allow_private: self.allow_private.clone(),
            resolve: self.resolve.clone(),
        }
    }
}

/// Options that decide the policy (shared by `run` and `explain`).
#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// Host paths shown at other paths (`warden codex`: the login file, the sessions path).
    #[arg(skip)]
    pub bind_at: Vec<warden_policy::BindAt>,
    /// Names kept read-only in every writable root besides the default ones (`warden codex`).
    #[arg(skip)]
    pub extra_protected_names: Vec<String>,
    /// Security profile [default: offline]
    #[arg(short = 'p', long, value_parser = profile_parser(), help_heading = "Policy")]
    pub profile: Option<Profile>,
    /// Codex sandbox mode name, mapped to a profile (read-only=offline,
    /// workspace-write=workspace-write, danger-full-access=trusted)
    #[arg(long, value_parser = codex_sandbox_parser(), conflicts_with = "profile", help_heading = "Policy")]
    pub sandbox: Option<Profile>,
    /// Working directory of the command (writable in workspace-* profiles) [default: .]
    #[arg(short = 'C', long, value_name = "DIR", help_heading = "Filesystem")]
    pub workdir: Option<PathBuf>,
    /// Also make PATH writable (asks for confirmation if outside the workdir)
    #[arg(long, value_name = "PATH", help_heading = "Filesystem")]
    pub writable: Vec<PathBuf>,
    /// Keep PATH read-only even inside a writable root
    #[arg(long, value_name = "PATH", help_heading = "Filesystem")]
    pub read_only: Vec<PathBuf>,
    /// Hide PATH (in addition to ~/.ssh, ~/.aws, ... which are always hidden)
    #[arg(long, value_name = "PATH", help_heading = "Filesystem")]
    pub deny_read: Vec<PathBuf>,
    /// Git repositories in writable roots: read-only (every gitdir read-only) or commit (git add,
    /// commit, branch and stash work; config, hooks and info stay read-only) [default: read-only]
    #[arg(long, value_parser = git_parser(), help_heading = "Filesystem")]
    pub git: Option<GitMode>,
    /// Network: none (only a private loopback), allowlist (through warden's proxy) or host
    #[arg(long, value_parser = net_parser(), help_heading = "Network")]
    pub net: Option<NetMode>,
    #[command(flatten)]
    pub rules: NetworkArgs,
    /// Which variables of warden's environment the command starts from [default: all]
    #[arg(long, value_parser = inherit_parser(), help_heading = "Environment")]
    pub env_inherit: Option<EnvInherit>,
    /// Set a variable (kept even if it matches an exclude pattern)
    #[arg(long, value_name = "K=V", value_parser = parse_env_pair, help_heading = "Environment")]
    pub env_set: Vec<(String, String)>,
    /// Drop variables whose name matches GLOB (case-insensitive; *KEY*, *SECRET*, *TOKEN*,
    /// *PASSWORD*, *CREDENTIAL* are always dropped unless the config says otherwise)
    #[arg(long, value_name = "GLOB", help_heading = "Environment")]
    pub env_exclude: Vec<String>,
    /// Keep only variables whose name matches one of these GLOBs
    #[arg(long, value_name = "GLOB", help_heading = "Environment")]
    pub env_include_only: Vec<String>,
    /// Kill the command and all its processes after SECS seconds (exit 124)
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub timeout: Option<u64>,
    /// Address-space limit (RLIMIT_AS), e.g. 2G
    #[arg(long, value_name = "BYTES", value_parser = parse_size, help_heading = "Limits")]
    pub memory: Option<u64>,
    /// CPU time limit (RLIMIT_CPU)
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub cpu_seconds: Option<u64>,
    /// Maximum number of processes inside the sandbox
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_procs: Option<u64>,
    /// Largest file the command may write (RLIMIT_FSIZE), e.g. 100M
    #[arg(long, value_name = "BYTES", value_parser = parse_size, help_heading = "Limits")]
    pub max_file_size: Option<u64>,
    /// What the private /tmp, /var/tmp, /run, $TMPDIR and /dev/shm may hold together, e.g. 512M
    /// [default: the smaller of 25% of the machine's memory and half of --memory]
    #[arg(long, value_name = "BYTES", value_parser = parse_size, help_heading = "Limits")]
    pub tmp_size: Option<u64>,
    /// warden config file [default: $XDG_CONFIG_HOME/warden/config.toml if it exists]
    #[arg(long, value_name = "FILE", help_heading = "Config")]
    pub config: Option<PathBuf>,
    /// Read sandbox_mode, [sandbox_workspace_write] and [shell_environment_policy] from a
    /// Codex config.toml
    #[arg(long, value_name = "FILE", help_heading = "Config")]
    pub codex_config: Option<PathBuf>,
    /// Run even if a layer the profile promises cannot be enforced on this kernel (audited)
    #[arg(long, help_heading = "Policy")]
    pub allow_degraded: bool,
    /// Let the command create nested user namespaces (for an inner sandbox such as Codex's
    /// bubblewrap). Off by default: user namespaces are a large kernel attack surface
    #[arg(long, help_heading = "Policy")]
    pub allow_nested_userns: bool,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// Where `run`, `egress` and `credproxy` write their audit records.
#[derive(Debug, Args, Clone, Default)]
pub struct AuditArgs {
    /// Audit log file, or - for stdout (serve, egress, credproxy: hash-chained JSON lines for log
    /// shippers) [default: $XDG_STATE_HOME/warden/audit.jsonl or ~/.local/state/warden/audit.jsonl]
    #[arg(long, value_name = "PATH|-", help_heading = "Audit")]
    pub audit_log: Option<PathBuf>,
    /// Do not write audit records (auditing is on unless turned off on purpose)
    #[arg(long, conflicts_with = "audit_log", help_heading = "Audit")]
    pub no_audit: bool,
    /// Chain the audit records with HMAC-SHA256 under this key (at least 16 bytes), so that
    /// rewriting the whole log cannot forge a valid chain
    #[arg(long, value_name = "FILE", help_heading = "Audit")]
    pub audit_key_file: Option<PathBuf>,
}

impl AuditArgs {
    /// These flags as policy options (the config's `[audit]` fills the rest).
    pub fn options(&self) -> PolicyOptions {
        PolicyOptions {
            audit_log: self.audit_log.clone(),
            no_audit: self.no_audit,
            audit_key_file: self.audit_key_file.clone(),
            ..Default::default()
        }
    }
}

impl PolicyArgs {
    pub fn to_options(&self) -> PolicyOptions {
        PolicyOptions {
            profile: self.profile,
            codex_sandbox: self.sandbox,
            workdir: self.workdir.clone(),
            writable: self.writable.clone(),
            read_only: self.read_only.clone(),
            deny_read: self.deny_read.clone(),
            net: self.net,
            git: self.git,
            env_inherit: self.env_inherit,
            env_set: self.env_set.clone(),
            env_exclude: self.env_exclude.clone(),
            env_include_only: self.env_include_only.clone(),
            timeout_secs: self.timeout,
            memory_bytes: self.memory,
            cpu_seconds: self.cpu_seconds,
            max_procs: self.max_procs,
            max_file_size: self.max_file_size,
            tmp_size: self.tmp_size,
            config: self.config.clone(),
            codex_config: self.codex_config.clone(),
            allow_degraded: self.allow_degraded,
            audit_log: self.audit.audit_log.clone(),
            no_audit: self.audit.no_audit,
            audit_key_file: self.audit.audit_key_file.clone(),
            credential_file: None,
            network: self.rules.to_rules(),
            bind_at: self.bind_at.clone(),
            extra_protected_names: self.extra_protected_names.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub session: RunSessionArgs,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// A command run first in the same sandbox (`warden codex`'s init hook).
    #[arg(skip)]
    pub init_hook: Option<Vec<String>>,
    /// Writable paths outside the workdir that need no confirmation (`warden codex`'s home).
    #[arg(skip)]
    pub preconfirmed: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// `--credential-env` / `--credential-file` with `--credential-upstream`.
    pub fn credential(&self) -> Option<warden_session::CredentialSpec> {
        let c = &self.session;
        let source = match (&c.credential_env, &c.credential_file) {
            (Some(var), _) => warden_session::CredentialSource::Env { var: var.clone() },
            (None, Some(path)) => warden_session::CredentialSource::File { path: path.clone() },
            (None, None) => return None,
        };
        Some(warden_session::CredentialSpec { source, upstream: c.credential_upstream.clone() })
    }
}
