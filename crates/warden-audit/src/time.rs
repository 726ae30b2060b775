//! RFC 3339 UTC timestamps with milliseconds, from `SystemTime`, without a date library.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`: shift the year to start in March so the leap day is last,
/// then split into 400-year eras of 146,097 days.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the Unix epoch (negative before it).
fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            // Round towards negative infinity so that 1969-12-31T23:59:59.9995 is .999, not .000.
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
            if d.subsec_nanos() % 1_000_000 == 0 {
                -ms
            } else {
                -ms - 1
            }
        }
    }
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` for `t` to `buf`.
pub(crate) fn write_ts(buf: &mut Vec<u8>, t: SystemTime) {
    let ms = unix_millis(t);
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z", sod / 3600, sod / 60 % 60, sod % 60);
}

/// `t` as RFC 3339 UTC with milliseconds (the `ts` of a record).
pub fn format_ts(t: SystemTime) -> String {
    let mut v = Vec::with_capacity(24);
    write_ts(&mut v, t);
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> String {
        format_ts(UNIX_EPOCH + Duration::from_millis(ms))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(at(999), "1970-01-01T00:00:00.999Z");
        // `date -u -d @1795309141 +%FT%T` = 2026-11-22T00:59:01
        assert_eq!(at(1_795_309_141_123), "2026-11-22T00:59:01.123Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z"); // leap day of a 400-year leap year
        assert_eq!(at(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(at(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
        assert_eq!(at(4_107_456_000_000), "2100-02-28T00:00:00.000Z");
        assert_eq!(at(4_107_542_400_000), "2100-03-01T00:00:00.000Z"); // 2100 is not a leap year: no 02-29
        assert_eq!(at(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(at(1_735_689_600_000), "2025-01-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn formats_before_the_epoch() {
        assert_eq!(format_ts(UNIX_EPOCH - Duration::from_millis(1)), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ts(UNIX_EPOCH - Duration::from_micros(500)), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ts(UNIX_EPOCH - Duration::from_secs(86_400 * 365)), "1969-01-01T00:00:00.000Z");
    }

    #[test]
    fn civil_matches_a_day_by_day_walk() {
        // Walk day by day from 1970 to 2401 with the leap rules spelled out, comparing every date.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..160_000i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert!(y > 2400);
    }
}
