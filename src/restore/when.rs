//! Recovery target times as people write them: absolute (RFC 3339, PostgreSQL's form, minutes
//! without seconds), relative to now (`2h ago`, `90m ago`, `1d ago`, `now`) and day-relative
//! (`today 09:00`, `yesterday 14:05`), each with an optional zone (`Z`, `UTC`, `+02:00`,
//! `+0530`, `-05`, or an IANA name such as `Europe/Berlin`); UTC when none is given.
//!
//! The parser takes "now" as an argument so relative forms are testable; [`parse_time`] is the
//! clap value parser and uses the clock. Durations are humantime's (`1h 30m`, `2days`).
//! A local time that a zone skips (spring forward) or repeats (fall back) is refused with the
//! candidates spelled out: guessing would restore to the wrong hour.

use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

/// The forms [`parse_time_at`] accepts, quoted in every error.
pub const ACCEPTED_FORMS: &str = "use 2026-11-30T14:05:00Z (RFC 3339), 2026-11-30T14:05Z, `2026-11-30 14:05:00+00` (PostgreSQL), \
     `today 09:00`, `yesterday 14:05`, `2h ago`, `90m ago`, `1d ago` or `now`; a zone may follow a date or clock time \
     (`+02:00`, `Z`, `UTC` or a name such as `Europe/Berlin`), UTC when none is given";

/// Parses a recovery target time relative to the clock: see [`parse_time_at`].
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time_at(text, Utc::now())
}

/// Parses a recovery target time, taking relative forms (`2h ago`, `yesterday 14:05`, `now`)
/// from `now`. "today" and "yesterday" are days in the given zone (UTC when none is given).
///
/// # Errors
/// A message quoting the text and naming the accepted forms; for a local time that the zone
/// skips or repeats, the reason and the UTC candidates.
pub fn parse_time_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let unreadable = |why: &str| format!("cannot read the time {text:?}{why}: {ACCEPTED_FORMS}");
    if text.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(span) = strip_suffix_ci(text, "ago") {
        let span = humantime::parse_duration(span.trim()).map_err(|e| unreadable(&format!(" ({e})")))?;
        let span = Duration::from_std(span).map_err(|_| unreadable(" (too far back)"))?;
        return now.checked_sub_signed(span).ok_or_else(|| unreadable(" (too far back)"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let (local, zone) = split_zone(text);
    let zone = match zone {
        Some(z) => parse_zone(z).ok_or_else(|| unreadable(&format!(" (unknown zone {z:?})")))?,
        None => Zone::Fixed(Utc.fix()),
    };
    let naive = match day_relative(local) {
        Some((days_back, clock)) => {
            let clock = parse_clock(clock).ok_or_else(|| unreadable(""))?;
            let today = zone.today(now);
            today.checked_sub_signed(Duration::days(days_back)).ok_or_else(|| unreadable(""))?.and_time(clock)
        }
        None => parse_naive(local).ok_or_else(|| unreadable(""))?,
    };
    zone.resolve(naive).map_err(|why| format!("cannot use the time {text:?}: {why}"))
}

/// A zone: a fixed offset or an IANA name.
#[derive(Debug, Clone, Copy)]
enum Zone {
    Fixed(FixedOffset),
    Named(Tz),
}

impl Zone {
    fn today(self, now: DateTime<Utc>) -> NaiveDate {
        match self {
            Zone::Fixed(z) => now.with_timezone(&z).date_naive(),
            Zone::Named(z) => now.with_timezone(&z).date_naive(),
        }
    }

    fn resolve(self, naive: NaiveDateTime) -> Result<DateTime<Utc>, String> {
        match self {
            Zone::Fixed(z) => resolve_in(&z, naive, &z.to_string()),
            Zone::Named(z) => resolve_in(&z, naive, z.name()),
        }
    }
}

fn resolve_in<Z: TimeZone>(zone: &Z, naive: NaiveDateTime, name: &str) -> Result<DateTime<Utc>, String> {
    let utc = |t: DateTime<Z>| t.with_timezone(&Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            Err(format!("{naive} happens twice in {name} (clocks go back): write {} or {} instead", utc(a), utc(b)))
        }
        LocalResult::None => {
            Err(format!("{naive} does not exist in {name} (clocks skip it): choose another time or give an offset"))
        }
    }
}

fn strip_suffix_ci<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    (text.is_char_boundary(cut) && text[cut..].eq_ignore_ascii_case(suffix)).then(|| &text[..cut])
}

/// Splits a trailing zone off: a last word after a space (`… Europe/Berlin`, `… +02:00`,
/// `… UTC`), or an offset or `Z` glued to the time (`14:05Z`, `14:05:00+0530`, `14:05-05`).
fn split_zone(text: &str) -> (&str, Option<&str>) {
    if let Some((head, last)) = text.rsplit_once(' ') {
        let last = last.trim();
        let looks_like_zone =
            last.starts_with(['+', '-']) || last.contains('/') || last.chars().all(|c| c.is_ascii_alphabetic());
        if looks_like_zone && !head.trim().is_empty() {
            return (head.trim_end(), Some(last));
        }
    }
    if let Some(head) = text.strip_suffix(['Z', 'z']) {
        return (head, Some("Z"));
    }
    // An offset glued to a clock time: a '+' or '-' after the hours and minutes of the time part.
    let time_start = text.rfind([' ', 'T', 't']).map_or(0, |i| i + 1);
    if let Some(at) = text[time_start..].rfind(['+', '-'])
        && text[time_start..time_start + at].contains(':')
    {
        let at = time_start + at;
        return (&text[..at], Some(&text[at..]));
    }
    (text, None)
}

fn parse_zone(zone: &str) -> Option<Zone> {
    if zone.eq_ignore_ascii_case("z") || zone.eq_ignore_ascii_case("utc") {
        return Some(Zone::Fixed(Utc.fix()));
    }
    if let Some(rest) = zone.strip_prefix(['+', '-']) {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        let valid = digits.chars().all(|c| c.is_ascii_digit())
            && (rest.len() == 2 || rest.len() == 4 || (rest.len() == 5 && &rest[2..3] == ":"));
        if !valid {
            return None;
        }
        let hours: i32 = digits.get(..2)?.parse().ok()?;
        let minutes: i32 = digits.get(2..).filter(|m| !m.is_empty()).map_or(Some(0), |m| m.parse().ok())?;
        if minutes >= 60 {
            return None;
        }
        return FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).map(Zone::Fixed);
    }
    zone.parse::<Tz>().ok().map(Zone::Named)
}

/// `today HH:MM[:SS]` → (0, clock); `yesterday …` → (1, clock).
fn day_relative(text: &str) -> Option<(i64, &str)> {
    let (day, clock) = text.split_once(' ')?;
    let back = if day.eq_ignore_ascii_case("today") {
        0
    } else if day.eq_ignore_ascii_case("yesterday") {
        1
    } else {
        return None;
    };
    Some((back, clock.trim()))
}

fn parse_clock(text: &str) -> Option<NaiveTime> {
    ["%H:%M:%S%.f", "%H:%M"].iter().find_map(|f| NaiveTime::parse_from_str(text, f).ok())
}

/// `2026-11-30 14:05[:00[.ffffff]]`, with `T` or a space between date and time.
fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    let iso = text.replacen(' ', "T", 1);
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"].iter().find_map(|f| NaiveDateTime::parse_from_str(&iso, f).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:30:00Z").unwrap().with_timezone(&Utc)
    }

    fn utc(text: &str) -> String {
        parse_time_at(text, now())
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    #[test]
    fn absolute_forms_parse_to_utc() {
        assert_eq!(utc("2026-11-30T14:05:00Z"), "2026-11-30T14:05:00.000000Z");
        assert_eq!(utc("2026-11-30T14:05Z"), "2026-11-30T14:05:00.000000Z");
        assert_eq!(utc("2026-11-30T14:05"), "2026-11-30T14:05:00.000000Z");
        assert_eq!(utc("2026-12-02 07:59:01.123456+00"), "2026-12-02T07:59:01.123456Z");
        assert_eq!(utc("2026-11-30 14:05:00+0530"), "2026-11-30T08:35:00.000000Z");
        assert_eq!(utc("2026-11-30 14:05:00-05:30"), "2026-11-30T19:35:00.000000Z");
        assert_eq!(utc("2026-11-30 14:05:00"), "2026-11-30T14:05:00.000000Z");
        assert_eq!(utc("2026-11-30 14:05"), "2026-11-30T14:05:00.000000Z");
        assert_eq!(utc(" 2026-11-30 14:05 "), "2026-11-30T14:05:00.000000Z");
    }

    #[test]
    fn zones_after_a_space_or_glued_to_the_time() {
        assert_eq!(utc("2026-11-30 14:05 +02:00"), "2026-11-30T12:05:00.000000Z");
        assert_eq!(utc("2026-11-30 14:05 -05"), "2026-11-30T19:05:00.000000Z");
        assert_eq!(utc("2026-11-30 14:05 UTC"), "2026-11-30T14:05:00.000000Z");
        assert_eq!(utc("2026-11-30 14:05 Z"), "2026-11-30T14:05:00.000000Z");
        assert_eq!(utc("2026-11-30 14:05 Europe/Berlin"), "2026-11-30T13:05:00.000000Z");
        assert_eq!(utc("2026-07-01 14:05 Europe/Berlin"), "2026-07-01T12:05:00.000000Z", "summer time");
        assert_eq!(utc("2026-11-30T14:05+01"), "2026-11-30T13:05:00.000000Z");
    }

    #[test]
    fn relative_forms_count_back_from_now() {
        assert_eq!(utc("now"), "2026-12-02T10:30:00.000000Z");
        assert_eq!(utc("NOW"), "2026-12-02T10:30:00.000000Z");
        assert_eq!(utc("2h ago"), "2026-12-02T08:30:00.000000Z");
        assert_eq!(utc("90m ago"), "2026-12-02T09:00:00.000000Z");
        assert_eq!(utc("1d ago"), "2026-12-01T10:30:00.000000Z");
        assert_eq!(utc("1h 30m ago"), "2026-12-02T09:00:00.000000Z");
        assert_eq!(utc("45s ago"), "2026-12-02T10:29:15.000000Z");
    }

    #[test]
    fn today_and_yesterday_are_days_in_the_given_zone() {
        assert_eq!(utc("today 09:00"), "2026-12-02T09:00:00.000000Z");
        assert_eq!(utc("yesterday 14:05"), "2026-12-01T14:05:00.000000Z");
        assert_eq!(utc("yesterday 14:05:30"), "2026-12-01T14:05:30.000000Z");
        assert_eq!(utc("Yesterday 14:05 Europe/Berlin"), "2026-12-01T13:05:00.000000Z");
        assert_eq!(utc("today 09:00 +02:00"), "2026-12-02T07:00:00.000000Z");
        // 10:30 UTC is already the 3rd on Kiritimati (UTC+14): today is the 3rd there.
        assert_eq!(utc("today 09:00 Pacific/Kiritimati"), "2026-12-02T19:00:00.000000Z");
    }

    #[test]
    fn errors_quote_the_text_and_name_the_accepted_forms() {
        for bad in [
            "yesterday-ish",
            "",
            "2026-11-30 14:05:00+5",
            "tomorrow 10:00",
            "yesterday 25:00",
            "2h",
            "soon ago",
            "2026-13-01 10:00",
            "2026-11-30 14:05 Mars/Olympus",
        ] {
            let e = parse_time_at(bad, now()).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
            assert!(
                e.contains("yesterday 14:05")
                    && e.contains("2h ago")
                    && e.contains("RFC 3339")
                    && e.contains("Europe/Berlin"),
                "{bad:?}: {e}"
            );
        }
        assert!(
            parse_time_at("2026-11-30 14:05 Mars/Olympus", now())
                .unwrap_err()
                .contains("unknown zone \"Mars/Olympus\"")
        );
    }

    #[test]
    fn skipped_and_repeated_local_times_are_refused_with_the_candidates() {
        let skipped = parse_time_at("2026-03-29 02:30 Europe/Berlin", now()).unwrap_err();
        assert!(skipped.contains("does not exist in Europe/Berlin"), "{skipped}");
        let twice = parse_time_at("2026-10-25 02:30 Europe/Berlin", now()).unwrap_err();
        assert!(twice.contains("2026-10-25T00:30:00Z") && twice.contains("2026-10-25T01:30:00Z"), "{twice}");
    }
}
