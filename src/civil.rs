//! Calendar dates from day counts, for the UTC timestamps pgboot writes
//! itself (the lean supervisor's log lines, `pgboot new`'s file names)
//! without a date crate.

/// The proleptic Gregorian date `(year, month, day)` of a day count since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`, for days on or after the
/// epoch).
#[must_use]
pub fn from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `YYYYMMDDHHMMSS` in UTC for seconds since the epoch: sqlx's migration version.
#[must_use]
pub fn compact(secs: u64) -> String {
    let (year, month, day) = from_days(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_compact_timestamps() {
        assert_eq!(from_days(0), (1970, 1, 1));
        // 2000-02-29, a leap day.
        assert_eq!(from_days(11_016), (2000, 2, 29));
        assert_eq!(compact(1_796_192_743), "20261202062543");
    }
}
