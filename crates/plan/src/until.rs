//! The `until` filter of `network prune` read as dockerd reads it (moby's
//! `api/types/time.GetTimestamp`): a Go duration back from now (`24h`, `1h30m`, `1.5h`), an
//! RFC 3339 time, a date or date-time without a zone, or a Unix timestamp (`1700000000`,
//! `1700000000.5`). Pure: the caller passes "now"; times are Unix nanoseconds.
//!
//! One difference from dockerd: a time without a zone is read in UTC, not in berthd's local
//! zone (berthd has no notion of one; servers run in UTC).

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::error::PlanError;

/// A Unix time in nanoseconds of an RFC 3339 text (the `Created` of a network).
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp_nanos)
}

/// The instant `value` designates, `now` being the current Unix time in nanoseconds.
pub fn parse_until(value: &str, now: i128) -> Result<i128, PlanError> {
    let bad = || {
        PlanError::Invalid(format!(
            "failed to parse value as time or duration: {value:?} (expected a duration such as \
             24h, an RFC 3339 time or a Unix timestamp)"
        ))
    };
    if value != "0" {
        if let Some(d) = go_duration(value) {
            return Ok(now - d);
        }
    }
    if let Some(t) = timestamp(value) {
        return Ok(t);
    }
    // Like moby: anything with a dash was meant as a time; the rest may be a Unix timestamp.
    if value.contains('-') {
        return Err(bad());
    }
    unix_timestamp(value).ok_or_else(bad)
}

/// A date or date-time: with a zone (`Z`, `+…` or a fourth dash) as RFC 3339, else in UTC.
fn timestamp(value: &str) -> Option<i128> {
    let zoned = value.contains(['z', 'Z', '+']) || value.matches('-').count() == 3;
    if zoned {
        return parse_rfc3339(value);
    }
    let local = if value.contains('.') {
        PrimitiveDateTime::parse(
            value,
            format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
        )
        .ok()
    } else if value.contains('T') {
        match value.matches(':').count() {
            0 => PrimitiveDateTime::parse(
                &format!("{value}:00:00"),
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            )
            .ok(),
            1 => PrimitiveDateTime::parse(
                &format!("{value}:00"),
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            )
            .ok(),
            _ => PrimitiveDateTime::parse(
                value,
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            )
            .ok(),
        }
    } else {
        Date::parse(value, format_description!("[year]-[month]-[day]"))
            .ok()
            .map(Date::midnight)
    };
    local.map(|t| t.assume_utc().unix_timestamp_nanos())
}

/// `SECONDS[.FRACTION]` (moby's `parseTimestamp`; the fraction is scaled to nanoseconds).
fn unix_timestamp(value: &str) -> Option<i128> {
    let (s, frac) = match value.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (value, None),
    };
    let secs: i64 = s.parse().ok()?;
    let nanos = match frac {
        None => 0,
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => return None,
        Some(f) => {
            let digits: String = f.chars().take(9).collect();
            let n: i128 = digits.parse().ok()?;
            n * 10i128.pow(9 - u32::try_from(digits.len()).ok()?)
        }
    };
    Some(i128::from(secs) * 1_000_000_000 + nanos)
}

/// Go's `time.ParseDuration`, in nanoseconds: an optional sign, then one or more
/// `NUMBER[.FRACTION]UNIT` with units `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`.
fn go_duration(value: &str) -> Option<i128> {
    let (neg, mut rest) = match value.as_bytes().first()? {
        b'-' => (true, &value[1..]),
        b'+' => (false, &value[1..]),
        _ => (false, value),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, after) = tail.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = whole.checked_mul(scale)?;
        let mut div = scale;
        for d in frac.bytes().take(18) {
            div /= 10;
            part = part.checked_add(i128::from(d - b'0') * div)?;
            if div == 0 {
                break;
            }
        }
        total = total.checked_add(part)?;
        rest = after;
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;
    /// 2026-01-02T03:04:05Z.
    const NOW: i128 = 1_767_323_045 * S;

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_until("24h", NOW).unwrap(), NOW - 86_400 * S);
        assert_eq!(parse_until("1h30m", NOW).unwrap(), NOW - 5_400 * S);
        assert_eq!(parse_until("1.5h", NOW).unwrap(), NOW - 5_400 * S);
        assert_eq!(parse_until("300ms", NOW).unwrap(), NOW - 300_000_000);
        assert_eq!(parse_until("2µs", NOW).unwrap(), NOW - 2_000);
        assert_eq!(parse_until("-10s", NOW).unwrap(), NOW + 10 * S);
        assert_eq!(parse_until(".5s", NOW).unwrap(), NOW - S / 2);
        assert_eq!(go_duration("0"), Some(0));
        for bad in ["", "h", "10", "10x", "1h-", "1..5h", "."] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_and_timestamps() {
        let t = 1_767_323_045 * S;
        assert_eq!(parse_until("2026-01-02T03:04:05Z", NOW).unwrap(), t);
        assert_eq!(parse_until("2026-01-02T05:04:05+02:00", NOW).unwrap(), t);
        assert_eq!(
            parse_until("2026-01-02T03:04:05.25Z", NOW).unwrap(),
            t + S / 4
        );
        assert_eq!(parse_until("2026-01-02T03:04:05", NOW).unwrap(), t);
        assert_eq!(parse_until("2026-01-02T03:04", NOW).unwrap(), t - 5 * S);
        assert_eq!(parse_until("2026-01-02T03", NOW).unwrap(), t - 245 * S);
        assert_eq!(
            parse_until("2026-01-02", NOW).unwrap(),
            t - (3 * 3600 + 245) * S
        );
        // "0" is the epoch, not a zero duration (moby's special case).
        assert_eq!(parse_until("0", NOW).unwrap(), 0);
        assert_eq!(parse_until("1767323045", NOW).unwrap(), t);
        assert_eq!(parse_until("1767323045.5", NOW).unwrap(), t + S / 2);
        for bad in ["yesterday", "2026-13-01", "12:00", "1.x", "", "--"] {
            let e = parse_until(bad, NOW).unwrap_err();
            assert!(e.to_string().contains("failed to parse"), "{bad:?}: {e}");
        }
        assert_eq!(parse_rfc3339("2026-01-02T03:04:05.000000001Z"), Some(t + 1));
        assert_eq!(parse_rfc3339("t"), None);
    }
}
