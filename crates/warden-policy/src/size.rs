//! Parsing of human-readable byte sizes.
//!
//! Guarantees: [`parse_size`] accepts only a whole number with an optional binary suffix, never
//! overflows (it rejects instead), and its error text names the input and the accepted forms.

/// Parses a byte count: `1048576`, `512K`, `64M`, `2G`, `1T`, also `KB`/`KiB`, `MB`/`MiB`,
/// `GB`/`GiB`, `TB`/`TiB` and a trailing `B`, case-insensitively, with optional spaces between
/// the number and the suffix. Every suffix is 1024-based (`1MB` = 1048576).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = |why: &str| {
        format!(
            "invalid size \"{s}\": {why} (accepted: a whole number of bytes with an optional \
             1024-based suffix K, M, G or T, e.g. 1048576, 512K, 64M, 2G, 1GiB)"
        )
    };
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(invalid("no number"));
    }
    let n: u64 = num.parse().map_err(|_| invalid("number too large"))?;
    let shift = match suffix.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(invalid("unknown suffix")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| invalid("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        for (input, want) in [
            ("1048576", 1_048_576u64),
            ("0", 0),
            ("512K", 512 * 1024),
            ("512k", 512 * 1024),
            ("64M", 64 << 20),
            ("2G", 2 << 30),
            ("1GiB", 1 << 30),
            ("1MB", 1 << 20),
            ("1mb", 1 << 20),
            ("3 KiB", 3 << 10),
            ("  7B ", 7),
            ("1T", 1 << 40),
            ("16777215T", 16_777_215u64 << 40),
        ] {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejected_forms_have_clear_errors() {
        for input in ["", "M", "-1", "1.5G", "1X", "1 G B", "0x10", "18446744073709551616", "16777216T", "1GG"] {
            let err = parse_size(input).expect_err(input);
            assert!(err.starts_with(&format!("invalid size \"{input}\"")), "{err}");
            assert!(err.contains("e.g. 1048576, 512K, 64M"), "{err}");
        }
    }
}
