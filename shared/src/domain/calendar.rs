//! UTC calendar dates of epoch-millisecond times: billing months and the days segment history
//! is counted by.

/// `(year, month, day)` (UTC) of an epoch-ms time.
pub fn civil_date(ts_ms: i64) -> (i64, u32, u32) {
    let days = ts_ms.div_euclid(86_400_000);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM` (UTC): the billing month of an event.
pub fn month_of(ts_ms: i64) -> String {
    let (y, m, _) = civil_date(ts_ms);
    format!("{y:04}-{m:02}")
}

/// `YYYY-MM-DD` (UTC): the day a Partner Sync event or a clearing is counted on.
pub fn day_of(ts_ms: i64) -> String {
    let (y, m, d) = civil_date(ts_ms);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM UTC`: a time as the console shows it.
pub fn minute_of(ts_ms: i64) -> String {
    let minutes = ts_ms.div_euclid(60_000).rem_euclid(24 * 60);
    format!(
        "{} {:02}:{:02} UTC",
        day_of(ts_ms),
        minutes / 60,
        minutes % 60
    )
}

/// The `n` days ending with the day of `ts_ms`, oldest first.
pub fn days_ending(ts_ms: i64, n: u32) -> Vec<String> {
    (0..n as i64)
        .rev()
        .map(|back| day_of(ts_ms - back * 86_400_000))
        .collect()
}

/// The `n` months ending with the month of `ts_ms`, oldest first.
pub fn months_ending(ts_ms: i64, n: u32) -> Vec<String> {
    let (y, m, _) = civil_date(ts_ms);
    let index = y * 12 + i64::from(m) - 1;
    (0..n as i64)
        .rev()
        .map(|back| {
            let i = index - back;
            format!("{:04}-{:02}", i.div_euclid(12), i.rem_euclid(12) + 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_known_times() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_796_083_199_999), "2026-11-30");
        assert_eq!(day_of(1_796_083_200_000), "2026-12-01");
        assert_eq!(month_of(1_796_083_200_000), "2026-12");
        assert_eq!(day_of(-1), "1969-12-31");
        assert_eq!(minute_of(1_796_083_199_999), "2026-11-30 23:59 UTC");
        assert_eq!(minute_of(1_796_083_260_000), "2026-12-01 00:01 UTC");
    }

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(1_714_592_744_065), "2024-05");
        assert_eq!(month_of(1_709_251_199_999), "2024-02"); // 2024-02-29T23:59:59.999Z
        assert_eq!(month_of(1_709_251_200_000), "2024-03");
        assert_eq!(month_of(951_782_400_000), "2000-02"); // 2000-02-29
        assert_eq!(month_of(-1), "1969-12");
    }

    #[test]
    fn windows_end_with_the_given_time() {
        let dec_1 = 1_796_083_200_000;
        assert_eq!(
            days_ending(dec_1, 3),
            ["2026-11-29", "2026-11-30", "2026-12-01"]
        );
        assert_eq!(months_ending(dec_1, 3), ["2026-10", "2026-11", "2026-12"]);
        assert_eq!(
            months_ending(dec_1 - 86_400_000 * 334, 2),
            ["2025-12", "2026-01"]
        );
    }
}
