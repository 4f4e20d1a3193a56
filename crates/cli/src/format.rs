//! Output helpers shared by the subcommands: docker's tabwriter layout, `--format` handling,
//! filter encoding, URL escaping and a few docker-style renderings.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Result};

use crate::json::Value;
use crate::template::Template;

/// Writes `s` and a newline to stdout; a closed pipe (`berth … | head`) ends the process quietly.
pub fn out(s: &str) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{s}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Writes raw bytes to stdout or stderr (container output), flushing each time.
pub fn write_raw(stderr: bool, bytes: &[u8]) {
    let ok = try_write_raw(stderr, bytes);
    if ok.is_err() && !stderr {
        std::process::exit(0);
    }
}

/// Writes `bytes` to stderr or stdout and flushes; the error is the caller's.
pub fn try_write_raw(stderr: bool, bytes: &[u8]) -> std::io::Result<()> {
    if stderr {
        let mut e = std::io::stderr().lock();
        e.write_all(bytes).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(bytes).and_then(|()| o.flush())
    }
}

/// Lays out tab-separated rows like Go's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)` as docker
/// uses it: each cell followed by a tab is padded to its column's widest cell + 3 (at least 10);
/// the last cell of a row is printed as is.
pub fn tabwrite(rows: &[String]) -> String {
    let split: Vec<Vec<&str>> = rows.iter().map(|r| r.split('\t').collect()).collect();
    let columns = split
        .iter()
        .map(|r| r.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let mut widths = vec![10usize; columns];
    for row in &split {
        for (i, cell) in row.iter().take(row.len().saturating_sub(1)).enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + 3);
        }
    }
    let mut out = String::new();
    for row in &split {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

/// A `--format` as docker reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// The command's table (`table` or no `--format`).
    DefaultTable,
    /// `table TEMPLATE`: a header row, then tabwriter layout.
    Table(Template),
    /// `json`: one JSON object per line.
    Json,
    /// A template per row.
    Raw(Template),
}

impl Format {
    /// Parses a `--format` value (`\t` and `\n` escapes are expanded like docker does).
    pub fn parse(src: Option<&str>) -> Result<Format> {
        let Some(src) = src else {
            return Ok(Format::DefaultTable);
        };
        let trimmed = src.trim();
        if trimmed.is_empty() || trimmed == "table" {
            return Ok(Format::DefaultTable);
        }
        if trimmed == "json" {
            return Ok(Format::Json);
        }
        let unescape = |s: &str| s.replace("\\t", "\t").replace("\\n", "\n");
        if let Some(rest) = trimmed.strip_prefix("table ") {
            return Ok(Format::Table(Template::parse(&unescape(rest.trim()))?));
        }
        Ok(Format::Raw(Template::parse(&unescape(src))?))
    }

    /// Renders `rows` (each a JSON object of strings); `headers` maps field names to column
    /// titles and `default` is the command's table template.
    pub fn render(
        &self,
        rows: &[Value],
        headers: &[(&str, &str)],
        default: &str,
    ) -> Result<String> {
        let header = Value::Object(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect(),
        );
        let table = |t: &Template| {
            let mut lines = vec![t.render(&header)];
            lines.extend(rows.iter().map(|r| t.render(r)));
            tabwrite(&lines)
        };
        Ok(match self {
            Format::DefaultTable => table(&Template::parse(default)?),
            Format::Table(t) => table(t),
            Format::Json => rows.iter().map(|r| sorted(r).to_compact() + "\n").collect(),
            Format::Raw(t) => rows.iter().map(|r| t.render(r) + "\n").collect(),
        })
    }
}

/// `v` with its object keys sorted (Go's `json` of a map).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(members) => {
            let mut members = members.clone();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(members)
        }
        other => other.clone(),
    }
}

/// Builds a row object of string fields for `--format`.
pub fn row(fields: &[(&str, String)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect(),
    )
}

/// Encodes `-f key=value` filters as docker's JSON: `{"driver":{"bridge":true}}`.
pub fn encode_filters(filters: &[String]) -> Result<Option<String>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut map: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for f in filters {
        let Some((key, value)) = f.split_once('=') else {
            bail!("bad format of filter {f:?} (expected name=value)");
        };
        let key = key.trim().to_lowercase();
        if key.is_empty() {
            bail!("bad format of filter {f:?} (expected name=value)");
        }
        map.entry(key).or_default().insert(value.to_string(), true);
    }
    Ok(Some(serde_json::to_string(&map)?))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path with an optional `?filters=` query.
pub fn with_filters(path: &str, filters: &[String]) -> Result<String> {
    Ok(match encode_filters(filters)? {
        Some(json) => format!("{path}?filters={}", url_escape(&json)),
        None => path.to_string(),
    })
}

/// The first 12 characters of an id, unless `no_trunc`.
pub fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    }
}

/// docker's `Ellipsis`: at most `max` characters, the last one `…` when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Natural order (`n2` < `n10`), as docker sorts `network ls`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                let ta = trim_zeros(da);
                let tb = trim_zeros(db);
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().take_while(|c| **c == b'0').count();
    &d[start..]
}

/// An RFC 3339 time as Go's `time.Time.String()` prints it in UTC:
/// `2026-11-27T20:12:02.61Z` → `2026-11-27 20:12:02.61 +0000 UTC`.
pub fn go_time(rfc3339: &str) -> String {
    if rfc3339.is_empty() {
        return "0001-01-01 00:00:00 +0000 UTC".to_string();
    }
    let s = rfc3339.replacen('T', " ", 1);
    if let Some(base) = s.strip_suffix('Z') {
        return format!("{base} +0000 UTC");
    }
    // An explicit offset: `+02:00` → `+0200 +0200`, as Go prints an unnamed zone.
    if s.len() > 6 {
        let (base, off) = s.split_at(s.len() - 6);
        if (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' {
            let compact = off.replace(':', "");
            return format!("{base} {compact} {compact}");
        }
    }
    s
}

/// docker's `HumanDuration` of `secs` seconds.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0 + 0.5) as i64;
    match secs {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_matches_docker_network_ls() {
        let rows: Vec<String> = [
            "NETWORK ID\tNAME\tDRIVER\tSCOPE",
            "c9178719ad51\tbridge\tbridge\tlocal",
            "f79ca311a009\tnone\tnull\tlocal",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            tabwrite(&rows),
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             c9178719ad51   bridge    bridge    local\n\
             f79ca311a009   none      null      local\n"
        );
        let wide = vec!["A\tB".to_string(), "a-very-long-cell\tb".to_string()];
        assert_eq!(
            tabwrite(&wide),
            "A                  B\na-very-long-cell   b\n"
        );
    }

    #[test]
    fn formats() {
        let rows = vec![row(&[("ID", "abc".into()), ("Name", "n1".into())])];
        let headers = [("ID", "NETWORK ID"), ("Name", "NAME")];
        let def = "{{.ID}}\t{{.Name}}";
        let r = |f: Option<&str>| {
            Format::parse(f)
                .expect("format")
                .render(&rows, &headers, def)
                .expect("render")
        };
        assert_eq!(r(None), "NETWORK ID   NAME\nabc          n1\n");
        assert_eq!(r(Some("table")), r(None));
        assert_eq!(
            r(Some("table {{.Name}}\\t{{.ID}}")),
            "NAME      NETWORK ID\nn1        abc\n"
        );
        assert_eq!(r(Some("{{.Name}}:{{.ID}}")), "n1:abc\n");
        assert_eq!(r(Some("json")), "{\"ID\":\"abc\",\"Name\":\"n1\"}\n");
        assert!(Format::parse(Some("{{.Name")).is_err());
    }

    #[test]
    fn filters_encode_like_docker() {
        let f = vec!["driver=bridge".to_string(), "label=team=x".to_string()];
        assert_eq!(
            encode_filters(&f).expect("ok").as_deref(),
            Some(r#"{"driver":{"bridge":true},"label":{"team=x":true}}"#)
        );
        assert_eq!(
            with_filters("/networks", &f).expect("ok"),
            "/networks?filters=%7B%22driver%22%3A%7B%22bridge%22%3Atrue%7D%2C%22label%22%3A%7B%22team%3Dx%22%3Atrue%7D%7D"
        );
        assert_eq!(with_filters("/networks", &[]).expect("ok"), "/networks");
        let two = vec!["name=a".to_string(), "name=b".to_string()];
        assert_eq!(
            encode_filters(&two).expect("ok").as_deref(),
            Some(r#"{"name":{"a":true,"b":true}}"#)
        );
        assert!(encode_filters(&["driver".to_string()]).is_err());
        assert!(encode_filters(&["=x".to_string()]).is_err());
    }

    #[test]
    fn small_renderings() {
        assert_eq!(short_id("5023a32964ca40abf8641b", false), "5023a32964ca");
        assert_eq!(ellipsis("sleep 600", 20), "sleep 600");
        assert_eq!(
            ellipsis("abcdefghijklmnopqrstuvwxyz", 20),
            "abcdefghijklmnopqrs…"
        );
        assert_eq!(
            go_time("2026-11-27T20:13:26.26527981Z"),
            "2026-11-27 20:13:26.26527981 +0000 UTC"
        );
        assert_eq!(
            go_time("2026-11-27T20:13:26+02:00"),
            "2026-11-27 20:13:26 +0200 +0200"
        );
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 86400), "3 days");
        let mut names = vec!["n10", "none", "n2", "bridge", "host", "n1"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, vec!["bridge", "host", "n1", "n2", "n10", "none"]);
    }
}
