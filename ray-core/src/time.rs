//! RFC 3339 timestamps without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a time as RFC 3339 in UTC with millisecond precision, e.g.
/// `2025-01-01T12:00:00.000Z`. Times before 1970 are clamped to the epoch.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format_unix_millis(since.as_millis() as i64)
}

/// The current time, formatted by [`rfc3339_millis`].
pub fn now_rfc3339() -> String {
    rfc3339_millis(SystemTime::now())
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC.
pub fn format_unix_millis(millis: i64) -> String {
    let mut out = String::with_capacity(24);
    push_unix_millis(&mut out, millis);
    out
}

/// Appends the current time as RFC 3339 UTC with milliseconds (what [`now_rfc3339`] returns)
/// to `out`, without allocating.
pub fn push_now_rfc3339(out: &mut String) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    push_unix_millis(out, since.as_millis() as i64);
}

/// Appends milliseconds since the Unix epoch as RFC 3339 UTC to `out` (digits written
/// directly: this runs for every response and every log line).
pub fn push_unix_millis(out: &mut String, millis: i64) {
    let millis = millis.max(0);
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let secs_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Years past 9999 (not reachable from a clock) keep every digit.
    if !(0..=9999).contains(&year) {
        out.push_str(&format!("{year:04}"));
    } else {
        let mut digits = [0u8; 4];
        put_digits(&mut digits, year);
        push_ascii(out, &digits);
    }
    // The rest has a fixed width: written into one buffer, then appended at once.
    let mut rest = *b"-00-00T00:00:00.000Z";
    put_digits(&mut rest[1..3], i64::from(month));
    put_digits(&mut rest[4..6], i64::from(day));
    put_digits(&mut rest[7..9], secs_of_day / 3600);
    put_digits(&mut rest[10..12], (secs_of_day % 3600) / 60);
    put_digits(&mut rest[13..15], secs_of_day % 60);
    put_digits(&mut rest[16..19], ms);
    push_ascii(out, &rest);
}

/// Writes the last `slot.len()` decimal digits of `value` (0 or more), zero-padded.
fn put_digits(slot: &mut [u8], mut value: i64) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Appends ASCII bytes (digits and separators) to `out`.
fn push_ascii(out: &mut String, bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        out.push_str(text);
    }
}

/// Parses an RFC 3339 UTC timestamp of the form [`rfc3339_millis`] writes
/// (`2025-01-01T12:00:00.000Z`; the fraction may have 0 to 9 digits) into milliseconds since
/// the Unix epoch. Anything else, offsets other than `Z` included, is `None`.
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !text.is_ascii() {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &text[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| bytes[i] != c) {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let rest = &text[19..];
    let (fraction, zone) = match rest.strip_prefix('.') {
        Some(after) => {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            (&after[..digits], &after[digits..])
        }
        None => ("", rest),
    };
    if zone != "Z" {
        return None;
    }
    let millis = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
    let days = days_from_civil(year, month as u32, day as u32)?;
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000) + millis)
}

/// Howard Hinnant's `days_from_civil`: (year, month, day) to days since 1970-01-01, `None` for
/// a day the month does not have.
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day == 0 || day > month_days[month as usize - 1] {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_millis(1_735_732_800_000),
            "2025-01-01T12:00:00.000Z"
        );
        assert_eq!(
            format_unix_millis(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_unix_millis(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn writes_the_digits_as_the_formatter_would() {
        // The reference: the formatter this replaced, over instants from 1970 to 9999.
        let reference = |millis: i64| {
            let secs = millis.div_euclid(1000);
            let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
            let of_day = secs.rem_euclid(86_400);
            format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
                of_day / 3600,
                (of_day % 3600) / 60,
                of_day % 60,
                millis.rem_euclid(1000)
            )
        };
        let mut millis = 0i64;
        while millis < 253_402_300_799_999 {
            assert_eq!(format_unix_millis(millis), reference(millis), "{millis}");
            millis += 987_654_321_987;
        }
        let mut line = String::from("ts=");
        push_now_rfc3339(&mut line);
        assert_eq!(parse_rfc3339_millis(&line[3..]).map(|m| m > 0), Some(true));
    }

    #[test]
    fn parses_what_it_formats() {
        for millis in [
            0,
            1_735_732_800_000,
            951_782_400_123,
            4_102_444_799_999,
            86_399_999,
        ] {
            assert_eq!(
                parse_rfc3339_millis(&format_unix_millis(millis)),
                Some(millis)
            );
        }
        assert_eq!(
            parse_rfc3339_millis("2025-01-01T12:00:00Z"),
            Some(1_735_732_800_000)
        );
        assert_eq!(
            parse_rfc3339_millis("2025-01-01T12:00:00.5Z"),
            Some(1_735_732_800_500)
        );
        for bad in [
            "",
            "2025-01-01",
            "2025-01-01T12:00:00.000+01:00",
            "2025-02-30T00:00:00.000Z",
            "2025-13-01T00:00:00.000Z",
            "2025-01-01T24:00:00.000Z",
            "2025-01-01T12:00:00.Z",
            "2025-01-01 12:00:00.000Z",
            "２０25-01-01T12:00:00.000Z",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }
}
