//! Property tests of redaction: no generated secret survives; ordinary text is untouched.

use std::borrow::Cow;

use proptest::prelude::*;
use proptest::sample::select;
use warden_audit::redact::{redact_str, redact_value};

fn chars_of(alphabet: &'static str, len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    proptest::collection::vec(select(chars), len).prop_map(String::from_iter)
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Arbitrary printable text (ASCII printable plus some non-ASCII).
fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![8 => proptest::char::range(' ', '~'), 1 => select(vec!['é', '中', '🦀', '\t'])];
    proptest::collection::vec(ch, 0..40).prop_map(String::from_iter)
}

/// (secret as it appears, the part that must not survive).
fn secrets() -> impl Strategy<Value = (String, String)> {
    let same = |s: String| (s.clone(), s);
    prop_oneof![
        // OpenAI-style: at least one digit guaranteed, as real keys have.
        (select(vec!["sk-", "sk-proj-"]), chars_of(ALNUM, 19..60), 0u8..10)
            .prop_map(|(p, body, d)| format!("{p}{body}{d}"))
            .prop_map(same),
        (select(vec!["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]), chars_of(ALNUM, 36..37))
            .prop_map(|(p, b)| format!("{p}{b}"))
            .prop_map(same),
        chars_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_", 22..83)
            .prop_map(|b| format!("github_pat_{b}"))
            .prop_map(same),
        (select(vec!['a', 'b', 'p', 'r', 's']), chars_of("0123456789", 10..13), chars_of(ALNUM, 24..25))
            .prop_map(|(c, n, b)| format!("xox{c}-{n}-{n}-{b}"))
            .prop_map(same),
        (select(vec!["AKIA", "ASIA"]), chars_of(UPPER_DIGITS, 16..17))
            .prop_map(|(p, b)| format!("{p}{b}"))
            .prop_map(same),
        (
            select(vec!["Bearer ", "bearer  ", "BEARER\t"]),
            chars_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=-", 16..60)
        )
            .prop_map(|(w, t)| (format!("{w}{t}"), t)),
        (
            select(vec!["Authorization: ", "authorization=", "AUTHORIZATION:"]),
            chars_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= ", 16..60)
        )
            .prop_map(|(h, v)| {
                let v = format!("x{v}x");
                (format!("{h}{v}"), v)
            }),
        (
            select(vec!["RSA ", "EC ", "OPENSSH ", ""]),
            proptest::collection::vec(
                chars_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", 16..64),
                1..5
            )
        )
            .prop_map(|(kind, lines)| {
                let body = lines.join("\n");
                (format!("-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"), body)
            }),
        (
            select(vec![
                "password",
                "passwd",
                "pwd",
                "token",
                "secret",
                "api_key",
                "apikey",
                "access_token",
                "PASSWORD"
            ]),
            chars_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%._~-", 12..40)
        )
            .prop_map(|(k, v)| (format!("{k}={v}"), v)),
        (
            select(vec!["https", "http", "postgres", "redis+tls"]),
            chars_of("abcdefghijklmnopqrstuvwxyz", 3..10),
            chars_of(ALNUM, 12..30)
        )
            .prop_map(|(scheme, user, pass)| (
                format!("{scheme}://{user}:{pass}@db.example:5432/x"),
                format!("{user}:{pass}")
            )),
        (
            select(vec!["/home/", "/Users/", "C:\\Users\\", "c:\\users\\"]),
            chars_of("abcdefghijklmnopqrstuvwxyz", 12..20)
        )
            .prop_map(|(p, u)| (format!("{p}{u}"), u)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_secret_survives(pre in text(), (secret, needle) in secrets(), post in text()) {
        let s = format!("{pre}{secret}{post}");
        let out = redact_str(&s);
        prop_assert!(!out.contains(needle.as_str()), "{needle:?} survived in {out:?}");
        // Also as a nested value and as a key.
        let mut v = serde_json::json!({ s.clone(): [{"k": s.clone()}] });
        redact_value(&mut v);
        let text = v.to_string();
        let escaped = serde_json::to_string(&needle).unwrap_or_default();
        prop_assert!(!text.contains(escaped.trim_matches('"')), "{needle:?} survived in {text}");
    }

    #[test]
    fn ordinary_text_is_untouched(words in proptest::collection::vec(
        prop_oneof![
            chars_of("abcdefghijklmnopqrstuvwxyz", 1..6),
            chars_of("0123456789", 1..8),
            chars_of(" .,;!?()[]{}#%*+<>|~^$`'\"", 1..3),
        ],
        0..30,
    )) {
        let s = words.join(" ");
        prop_assert!(matches!(redact_str(&s), Cow::Borrowed(b) if b == s), "{s:?} was changed");
    }
}
