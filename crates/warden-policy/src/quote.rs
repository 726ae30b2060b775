//! The one helper that writes TOML string values.
//!
//! Guarantees: [`toml_quote`] returns a TOML basic string (with its quotes) that every TOML 1.0
//! parser reads back as the input with NUL characters removed, and that never contains a raw
//! control character, so it cannot break out of the value or the line it is written on.

/// Quotes `s` as a TOML basic string: `\` `"` `\n` `\r` `\t` get short escapes, the other control
/// characters (U+0001..=U+001F and U+007F) become `\uXXXX`, and NUL is dropped.
pub fn toml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\0' => {}
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &str) {
        let quoted = toml_quote(s);
        assert!(!quoted.chars().any(|c| c.is_ascii_control()), "raw control char in {quoted:?}");
        let doc = format!("k = {quoted}\n");
        let table: toml::Table = doc.parse().unwrap_or_else(|e| panic!("{doc:?} does not parse: {e}"));
        let expected: String = s.chars().filter(|&c| c != '\0').collect();
        assert_eq!(table["k"].as_str(), Some(expected.as_str()), "input {s:?}");
    }

    #[test]
    fn known_forms() {
        assert_eq!(toml_quote(""), "\"\"");
        assert_eq!(toml_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_quote("\n\r\t"), "\"\\n\\r\\t\"");
        assert_eq!(toml_quote("a\0b"), "\"ab\"");
        assert_eq!(toml_quote("\u{1}\u{7f}"), "\"\\u0001\\u007F\"");
        assert_eq!(toml_quote("\u{1b}[31m"), "\"\\u001B[31m\"");
    }

    #[test]
    fn every_ascii_char_round_trips() {
        for c in 0u8..=0x7f {
            let c = char::from(c);
            round_trip(&c.to_string());
            round_trip(&format!("a{c}b{c}{c}"));
        }
        let all: String = (0u8..=0x7f).map(char::from).collect();
        round_trip(&all);
    }

    #[test]
    fn unicode_and_injection_attempts_round_trip() {
        for s in [
            "héllo wörld",
            "日本語",
            "emoji 🦀 and \u{200b} zero width",
            "\u{85}\u{2028}\u{2029}\u{feff}",
            "\u{80}\u{9f}",
            "\"\nprofile = \"trusted",
            "x\"\"\"y",
            "'single' \\u0041",
            "trailing\\",
            "C:\\path\\to\\file",
        ] {
            round_trip(s);
        }
    }
}
