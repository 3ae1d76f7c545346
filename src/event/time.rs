//! Timestamp parsing for the three logs: RFC 3339 with 0–9 fractional digits,
//! `Z` or an offset, `T` or a space between date and time (LookupEvents), and
//! zone-less times (some exports), which are taken as UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Some(t) = whole_seconds_utc(text) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// `2024-07-31T13:06:24Z`, the shape of every CloudTrail `eventTime`, read
/// without the general parser (a tenth of its cost). Anything else, and any
/// date or time the calendar refuses (a leap second included), is left to it.
fn whole_seconds_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)?
        .and_hms_opt(number(11..13)?, number(14..16)?, number(17..19)?)
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short path reads what the general parser reads, and refuses
    /// what it cannot vouch for.
    #[test]
    fn whole_seconds_are_read_as_the_general_parser_reads_them() {
        let mut read = 0;
        for text in [
            "2024-07-31T13:06:24Z",
            "1999-12-31T23:59:59Z",
            "2024-02-29T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let general = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(whole_seconds_utc(text), Some(general), "{text}");
            read += 1;
        }
        assert_eq!(read, 5);
        for text in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-07-31T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "2024-07-31T13:06:2aZ",
            "2024-07-31 13:06:24Z",
            "2024-07-31T13:06:24+00:00",
            "+024-07-31T13:06:24Z",
        ] {
            assert_eq!(whole_seconds_utc(text), None, "{text}");
        }
        // A leap second is still read, by the general parser.
        assert!(parse_time("2016-12-31T23:59:60Z").is_some());
    }

    #[test]
    fn parses_the_shapes_logs_use() {
        let cases = [
            ("2024-07-31T13:06:24Z", "2024-07-31T13:06:24+00:00"),
            (
                "2025-04-15T10:16:32.9873441Z",
                "2025-04-15T10:16:32.987344100+00:00",
            ),
            (
                "2019-08-01T11:50:44.900727394Z",
                "2019-08-01T11:50:44.900727394+00:00",
            ),
            ("2022-02-08 09:23:37+11:00", "2022-02-07T22:23:37+00:00"),
            (
                "2017-05-13T22:35:24.3113389+00:00",
                "2017-05-13T22:35:24.311338900+00:00",
            ),
            ("2024-01-01T00:00:00", "2024-01-01T00:00:00+00:00"),
        ];
        for (input, expected) in cases {
            let got = parse_time(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(got.to_rfc3339(), expected, "{input}");
        }
        for bad in ["", "yesterday", "2024-13-01T00:00:00Z", "2024-07-31"] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }
}
