//! Redaction of home directories and secrets, applied to every string before it is written.
//!
//! Guarantees: each shape listed below is replaced wherever it occurs in a string, also inside
//! words and across lines (PEM blocks); text that contains none of the trigger shapes is returned
//! borrowed and unchanged. Redaction errs towards removing too much: a word such as
//! `disk-Cache2-for-the-build-dir` matches the `sk-` shape and is cut. It is pattern-based: a secret
//! of a shape not listed here (a bare random password) passes through.
//!
//! Shapes: `/home/USER`, `/Users/USER`, `C:\Users\USER` (any drive letter, any case) → `[USER]`;
//! `sk-…` and `sk-proj-…` (20+ characters after `sk-`, at least one digit or capital), `ghp_`,
//! `gho_`, `ghu_`, `ghs_`, `ghr_` (20+), `github_pat_` (20+), `xoxa-`/`xoxb-`/`xoxp-`/`xoxr-`/`xoxs-`
//! (6+), `AKIA`/`ASIA` + 16 capitals or digits, PEM private-key blocks (to the END line, or to the end
//! of the string when it is cut off) → `[REDACTED]`; `Bearer TOKEN` → `Bearer [REDACTED]`; the value
//! after `Authorization:` or `authorization=` (to the end of the line or a quote) →
//! `[REDACTED]`; the values of `password=`, `passwd=`, `pwd=`, `token=`, `secret=`, `api_key=`,
//! `apikey=`, `access_token=` (to `&`, whitespace or a quote; also as suffixes, e.g.
//! `client_secret=`) → `[REDACTED]`; URL userinfo `scheme://user:pass@` → `scheme://[REDACTED]@`.
//! Words such as `Authorization`, `Bearer` and `password=` match in any ASCII case.
//!
//! Cost: each rule has a literal trigger it cannot match without; its regex is compiled only when
//! a string first contains that trigger, so most records compile none or one of them.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};
use serde_json::{Map, Value};

/// What replaces a match.
#[derive(Clone, Copy)]
enum Replace {
    /// The whole match becomes `[REDACTED]`.
    Whole,
    /// Capture group 1 is kept, the rest becomes `[REDACTED]`.
    KeepPrefix,
    /// Like `KeepPrefix`, with a space between (for `Bearer`).
    KeepWord,
    /// Capture group 1 is kept, the rest becomes `[USER]`.
    User,
    /// URL userinfo: capture group 1 (the scheme) is kept, then `[REDACTED]@`.
    UserInfo,
    /// `sk-` keys: redact only if the part after `sk-` has a digit or a capital letter.
    SkKey,
}

/// In application order: the PEM block and header values first, since they swallow tokens.
/// Case-insensitive parts are ASCII-only (`(?i-u:…)`), which the literal triggers below rely on.
const RULES: [(&str, Replace); 10] = [
    (r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)", Replace::Whole),
    (r#"(?i-u:(authorization["']?[ \t]*[:=][ \t]*["']?))[^\r\n"']+"#, Replace::KeepPrefix),
    (r"(?i-u:(bearer))[ \t]+[A-Za-z0-9._~+/=-]+", Replace::KeepWord),
    (r"sk-[A-Za-z0-9_-]{20,}", Replace::SkKey),
    (r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}", Replace::Whole),
    (r"xox[abprs]-[A-Za-z0-9-]{6,}", Replace::Whole),
    (r"(?:AKIA|ASIA)[A-Z0-9]{16,}", Replace::Whole),
    (r#"(?i-u:((?:password|passwd|pwd|access_token|token|secret|api_key|apikey)=))[^&\s"']+"#, Replace::KeepPrefix),
    (r#"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@"']*:[^/\s"']*@"#, Replace::UserInfo),
    (r#"(/home/|/Users/|[A-Za-z]:\\(?i-u:users)\\)[^/\\\s"':;,\[]+"#, Replace::User),
];

/// Which rules can match `s`, as a bit mask (bit `i` for `RULES[i]`): for each rule a literal
/// that every one of its matches contains, found in one pass over the bytes. A string without
/// any trigger costs that pass and no regex is ever compiled for it (compiling all ten took
/// 2.5 ms, most of a `warden run`'s audit cost).
fn triggers(s: &str) -> u16 {
    let b = s.as_bytes();
    let at = |i: usize, lit: &[u8]| b.get(i..i + lit.len()).is_some_and(|w| w == lit);
    let at_ci = |i: usize, lit: &[u8]| b.get(i..i + lit.len()).is_some_and(|w| w.eq_ignore_ascii_case(lit));
    let (mut mask, mut scheme, mut userinfo_at) = (0u16, false, false);
    for (i, &byte) in b.iter().enumerate() {
        match byte {
            b'-' if at(i, b"-----BEGIN ") => mask |= 1 << 0,
            b'a' | b'A' => {
                if at_ci(i, b"authorization") {
                    mask |= 1 << 1;
                }
                if at(i, b"AKIA") || at(i, b"ASIA") {
                    mask |= 1 << 6;
                }
                if at_ci(i, b"api_key=") || at_ci(i, b"apikey=") {
                    mask |= 1 << 7;
                }
            }
            b'b' | b'B' if at_ci(i, b"bearer") => mask |= 1 << 2,
            b's' | b'S' => {
                if at(i, b"sk-") {
                    mask |= 1 << 3;
                }
                if at_ci(i, b"secret=") {
                    mask |= 1 << 7;
                }
            }
            b'g' if at(i, b"gh") || at(i, b"github_pat_") => mask |= 1 << 4,
            b'x' if at(i, b"xox") => mask |= 1 << 5,
            b'p' | b'P' if at_ci(i, b"password=") || at_ci(i, b"passwd=") || at_ci(i, b"pwd=") => mask |= 1 << 7,
            b't' | b'T' if at_ci(i, b"token=") => mask |= 1 << 7,
            b':' => {
                scheme |= at(i, b"://");
                if at_ci(i, b":\\users\\") {
                    mask |= 1 << 9;
                }
            }
            b'@' => userinfo_at = true,
            b'/' if at(i, b"/home/") || at(i, b"/Users/") => mask |= 1 << 9,
            _ => {}
        }
    }
    if scheme && userinfo_at {
        mask |= 1 << 8;
    }
    mask
}

/// Each rule's regex, compiled the first time a string triggers it.
static COMPILED: [OnceLock<Regex>; RULES.len()] = [const { OnceLock::new() }; RULES.len()];

#[allow(clippy::expect_used)] // The patterns are constants; `redacts_every_shape` compiles them all.
fn rule(i: usize) -> &'static Regex {
    COMPILED[i].get_or_init(|| Regex::new(RULES[i].0).expect("redaction pattern compiles"))
}

fn replace(kind: Replace, caps: &Captures<'_>) -> String {
    let all = &caps[0];
    let g1 = caps.get(1).map_or("", |m| m.as_str());
    match kind {
        Replace::Whole => "[REDACTED]".to_owned(),
        Replace::KeepPrefix => format!("{g1}[REDACTED]"),
        Replace::KeepWord => format!("{g1} [REDACTED]"),
        Replace::User => format!("{g1}[USER]"),
        Replace::UserInfo => format!("{g1}[REDACTED]@"),
        Replace::SkKey => {
            if all[3..].bytes().any(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
                "[REDACTED]".to_owned()
            } else {
                all.to_owned()
            }
        }
    }
}

/// Redacts one string. Borrowed when nothing was replaced.
pub fn redact_str(s: &str) -> Cow<'_, str> {
    let mut mask = triggers(s);
    if mask == 0 {
        return Cow::Borrowed(s);
    }
    let mut out = s.to_owned();
    // Apply the rules that may occur, in order; then look again, in case a replacement joined
    // text into a new match. Replacements are fixed points, so this ends after one or two rounds.
    for _ in 0..4 {
        let mut changed = false;
        for (i, (_, kind)) in RULES.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            if let Cow::Owned(new) = rule(i).replace_all(&out, |caps: &Captures<'_>| replace(*kind, caps)) {
                if new != out {
                    out = new;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
        mask = triggers(&out);
    }
    if out == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(out)
    }
}

/// Redacts every string in `v`: values, object keys, nested arrays and objects. When redaction
/// makes two keys of one object equal, the later one (in key order) gets a `_2`, `_3`, ... suffix
/// so that nothing is lost.
pub fn redact_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(new) = redact_str(s) {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut item) in old {
                redact_value(&mut item);
                let k = match redact_str(&k) {
                    Cow::Borrowed(_) => k,
                    Cow::Owned(new) => new,
                };
                let k = unique_key(map, k);
                map.insert(k, item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `base`, or `base_2`, `base_3`, ... whichever is not yet a key of `map`.
pub(crate) fn unique_key(map: &Map<String, Value>, base: String) -> String {
    if !map.contains_key(&base) {
        return base;
    }
    (2u64..).map(|n| format!("{base}_{n}")).find(|k| !map.contains_key(k)).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact_str(s).into_owned()
    }

    #[test]
    fn redacts_every_shape() {
        let cases = [
            ("/home/alice/x", "/home/[USER]/x"),
            ("cd /home/alice", "cd /home/[USER]"),
            ("/Users/bob/Library/x", "/Users/[USER]/Library/x"),
            (r"C:\Users\carol\AppData", r"C:\Users\[USER]\AppData"),
            (r"c:\users\carol\x", r"c:\users\[USER]\x"),
            ("key=sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD end", "key=[REDACTED] end"),
            ("sk-proj-Abc_def-ghi0123456789xyzXYZ", "[REDACTED]"),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "[REDACTED]"),
            ("gho_0123456789abcdefghijABCDEFGHIJ012345 x", "[REDACTED] x"),
            (
                "ghu_0123456789abcdefghijK ghs_0123456789abcdefghijK ghr_0123456789abcdefghijK",
                "[REDACTED] [REDACTED] [REDACTED]",
            ),
            ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "[REDACTED]"),
            ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "[REDACTED]"),
            ("xoxp-1-2-3-abcdef", "[REDACTED]"),
            ("AKIAIOSFODNN7EXAMPLE", "[REDACTED]"),
            ("id=ASIAABCDEFGHIJKLMNOP;", "id=[REDACTED];"),
            ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Bearer [REDACTED]"),
            ("curl -H 'Authorization: Basic dXNlcjpwYXNz' x", "curl -H 'Authorization: [REDACTED]' x"),
            ("authorization=abc def\nnext", "authorization=[REDACTED]\nnext"),
            (r#"{"Authorization": "token abc"}"#, r#"{"Authorization": "[REDACTED]"}"#),
            ("a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\nb", "a\n[REDACTED]\nb"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn", "[REDACTED]"),
            ("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----", "[REDACTED]"),
            ("https://x/?password=hunter2&user=a", "https://x/?password=[REDACTED]&user=a"),
            ("passwd=p pwd=q token=t secret=s", "passwd=[REDACTED] pwd=[REDACTED] token=[REDACTED] secret=[REDACTED]"),
            (
                "api_key=1&apikey=2&access_token=3&client_secret=4",
                "api_key=[REDACTED]&apikey=[REDACTED]&access_token=[REDACTED]&client_secret=[REDACTED]",
            ),
            ("PASSWORD=Hunter2", "PASSWORD=[REDACTED]"),
            ("git clone https://user:pa55@github.com/o/r", "git clone https://[REDACTED]@github.com/o/r"),
            ("postgres://admin:s3cr@t@db:5432/x", "postgres://[REDACTED]@db:5432/x"),
        ];
        for (input, want) in cases {
            assert_eq!(r(input), want, "input {input:?}");
            // Idempotent: redacting again changes nothing.
            assert!(matches!(redact_str(want), Cow::Borrowed(_)), "not a fixed point: {want:?} -> {:?}", r(want));
        }
    }

    /// Every rule's trigger is necessary for a match: strings built from pieces of every shape,
    /// in every case mix, never match a rule whose trigger is absent.
    #[test]
    fn triggers_never_hide_a_match() {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "-----BEGIN ",
            "RSA ",
            "PRIVATE KEY-----",
            "-----END ",
            "authorization",
            "AuThOrIzAtIoN",
            ": ",
            "=",
            "\"",
            "'",
            "bearer ",
            "BEARER\t",
            "sk-",
            "proj-",
            "gh",
            "p_",
            "github_pat_",
            "xox",
            "b-",
            "AKIA",
            "ASIA",
            "password",
            "PassWD",
            "pwd",
            "token",
            "SECRET",
            "api_key",
            "apikey",
            "://",
            "https",
            "user:",
            "@",
            "/home/",
            "/Users/",
            "C:\\",
            "USERS",
            "\\",
            "alice",
            "0123456789ABCDEFGHIJ",
            "abcdefghij",
            " ",
            "\n",
            "&",
            "é",
            "ſ",
            "\u{212a}",
        ]);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 4000,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&prop::collection::vec(piece, 0..12), |parts| {
                let s = parts.concat();
                for i in 0..RULES.len() {
                    prop_assert!(
                        !rule(i).is_match(&s) || triggers(&s) & (1 << i) != 0,
                        "rule {i} matches {s:?} untriggered"
                    );
                }
                Ok(())
            })
            .expect("triggers are necessary conditions");
    }

    #[test]
    fn leaves_near_misses_alone() {
        for s in [
            "disk-cache-directory-for-the-build",
            "sk-short",
            "ssh://git@github.com/o/r",
            "https://example.com:8080/path",
            "/home",
            "AKIA lowercase",
            "tokens are counted",
            "the password is long",
            "ghp_short",
            "",
        ] {
            assert!(matches!(redact_str(s), Cow::Borrowed(_)), "{s:?} -> {:?}", r(s));
        }
    }

    #[test]
    fn redacts_keys_and_nested_values() {
        let mut v = serde_json::json!({
            "/home/alice/k": {"inner": ["/home/bob/y", {"Bearer abcdefgh": "token=zz"}]},
            "n": 1,
        });
        redact_value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "/home/[USER]/k": {"inner": ["/home/[USER]/y", {"Bearer [REDACTED]": "token=[REDACTED]"}]},
                "n": 1,
            })
        );
    }

    #[test]
    fn colliding_keys_are_kept_apart() {
        let mut v = serde_json::json!({"/home/alice": 1, "/home/bob": 2});
        redact_value(&mut v);
        assert_eq!(v, serde_json::json!({"/home/[USER]": 1, "/home/[USER]_2": 2}));
    }
}
