//! Timestamp parsing for the three logs: RFC 3339 with 0–9 fractional digits,
//! `Z` or an offset, `T` or a space between date and time (LookupEvents), and
//! zone-less times (some exports), which are taken as UTC.

use chrono::{DateTime, NaiveDateTime, Utc};

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
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

#[cfg(test)]
mod tests {
    use super::*;

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
