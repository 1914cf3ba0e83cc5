//! Instants a client sends (a schedule's `at`): RFC 3339 with an explicit offset, in whole
//! seconds. A local time without an offset is ambiguous (whose 10:00?), so it is refused
//! rather than guessed; so is a fraction of a second, which no drop opens on.

use chrono::{DateTime, Utc};

/// Why an instant was refused; each is a 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantError {
    /// Not RFC 3339, or without an offset (`Z` or `+09:00`).
    #[error("must be an RFC 3339 instant with an offset, for example 2026-12-24T10:00:00+09:00")]
    NoOffset,
    /// A fraction of a second.
    #[error("must be in whole seconds")]
    Fraction,
    /// Past the year 9999 in UTC, where RFC 3339 ends.
    #[error("must be before the year 10000 in UTC")]
    TooLate,
}

/// Parses an instant as the API accepts it, in UTC.
///
/// # Errors
/// [`InstantError`] naming what is wrong.
pub fn parse(text: &str) -> Result<DateTime<Utc>, InstantError> {
    let at = DateTime::parse_from_rfc3339(text.trim()).map_err(|_| InstantError::NoOffset)?;
    if at.timestamp_subsec_nanos() != 0 {
        return Err(InstantError::Fraction);
    }
    let at = at.with_timezone(&Utc);
    if chrono::Datelike::year(&at) > 9999 {
        return Err(InstantError::TooLate);
    }
    Ok(at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn an_instant_needs_an_offset_and_whole_seconds() {
        let ten_seoul = Utc.with_ymd_and_hms(2026, 12, 24, 1, 0, 0).unwrap();
        assert_eq!(parse("2026-12-24T10:00:00+09:00"), Ok(ten_seoul));
        assert_eq!(parse("2026-12-24T01:00:00Z"), Ok(ten_seoul));
        assert_eq!(parse("2026-12-24T10:00:00"), Err(InstantError::NoOffset));
        assert_eq!(parse("2026-12-24 10:00"), Err(InstantError::NoOffset));
        assert_eq!(parse("tomorrow"), Err(InstantError::NoOffset));
        // Before 10000 where it was written, not in UTC: it could not be shown again.
        assert_eq!(
            parse("9999-12-31T23:59:59-23:59"),
            Err(InstantError::TooLate)
        );
        assert_eq!(
            parse("2026-12-24T10:00:00.5+09:00"),
            Err(InstantError::Fraction)
        );
        assert_eq!(parse("2026-12-24T10:00:00.000+09:00"), Ok(ten_seoul));
    }
}
