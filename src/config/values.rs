//! The value types flags parse into: core lists, byte sizes, durations, start positions, table
//! names, warehouse locations and catalog kinds. Each parses from the text a user types and says
//! what it expected when it cannot.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A sorted, duplicate-free list of CPU ids, written like `0-3,8,10-11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreList(Vec<usize>);

impl CoreList {
    pub fn new(mut cores: Vec<usize>) -> Result<Self, String> {
        if cores.is_empty() {
            return Err("the list is empty".into());
        }
        cores.sort_unstable();
        if let Some(w) = cores.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("core {} is listed twice", w[0]));
        }
        Ok(Self(cores))
    }

    pub fn cores(&self) -> &[usize] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> usize {
        self.0[0]
    }

    pub fn contains(&self, core: usize) -> bool {
        self.0.binary_search(&core).is_ok()
    }
}

impl FromStr for CoreList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut cores = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err("empty item; expected a list like 0-3,8,10-11".into());
            }
            let parse = |t: &str| {
                t.trim().parse::<usize>().map_err(|_| {
                    format!("{t:?} is not a core number; expected a list like 0-3,8,10-11")
                })
            };
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if lo > hi {
                        return Err(format!("range {lo}-{hi} runs backwards"));
                    }
                    if hi - lo >= 65_536 {
                        return Err(format!("range {lo}-{hi} is too large"));
                    }
                    cores.extend(lo..=hi);
                }
                None => cores.push(parse(part)?),
            }
        }
        CoreList::new(cores)
    }
}

impl fmt::Display for CoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_cores(&self.0, f)
    }
}

/// Writes sorted cores in the compact range form, `0-3,8`.
pub fn fmt_cores(cores: &[usize], f: &mut impl fmt::Write) -> fmt::Result {
    let mut i = 0;
    while i < cores.len() {
        let start = cores[i];
        while i + 1 < cores.len() && cores[i + 1] == cores[i] + 1 {
            i += 1;
        }
        let end = cores[i];
        let sep = if start == cores[0] { "" } else { "," };
        if start == end {
            write!(f, "{sep}{start}")?;
        } else {
            write!(f, "{sep}{start}-{end}")?;
        }
        i += 1;
    }
    Ok(())
}

/// A byte count written as `1048576`, `512KiB`, `64MiB`, `1GiB` (also `KB`/`MB`/`GB`, powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size; expected e.g. 1048576, 512KiB, 64MiB"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "k" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?}; use B, KiB, MiB, GiB, KB, MB or GB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

/// Parses durations written as `250ms`, `10s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; expected e.g. 250ms, 10s, 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        "" => Err(format!("{s:?} has no unit; write e.g. {n}s or {n}ms")),
        other => Err(format!(
            "unknown duration unit {other:?}; use ms, s, m or h"
        )),
    }
}

/// Where a partition starts when nothing else says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(i64),
}

impl FromStr for StartAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            n => match n.parse::<i64>() {
                Ok(o) if o >= 0 => Ok(Self::Offset(o)),
                _ => Err("expected earliest, latest or a non-negative offset".into()),
            },
        }
    }
}

/// `namespace.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableIdent {
    pub namespace: String,
    pub name: String,
}

impl FromStr for TableIdent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        match s.split_once('.') {
            Some((ns, name)) if valid(ns) && valid(name) => Ok(Self {
                namespace: ns.into(),
                name: name.into(),
            }),
            _ => Err("expected NAMESPACE.NAME with letters, digits, '_' or '-'".into()),
        }
    }
}

impl fmt::Display for TableIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// Where data and metadata files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseLocation {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
    },
    /// `memory://`: this process's memory, gone at exit (benchmarks without a disk).
    Memory,
}

impl WarehouseLocation {
    pub fn parse(p: &std::path::Path) -> Result<Self, String> {
        let s = p.to_string_lossy();
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("expected s3://BUCKET[/PREFIX]".into());
            }
            return Ok(Self::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        if s == "memory://" {
            return Ok(Self::Memory);
        }
        if s.contains("://") {
            return Err("expected a directory, s3://BUCKET[/PREFIX] or memory://".into());
        }
        Ok(Self::Local(p.to_path_buf()))
    }
}

/// Which catalog holds the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogKind {
    /// SQL catalog on SQLite (`?` binds).
    Sqlite(String),
    /// SQL catalog on PostgreSQL (`$n` binds).
    Postgres(String),
    /// REST catalog.
    Rest(String),
}

impl FromStr for CatalogKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("sqlite:") {
            Ok(Self::Sqlite(s.into()))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self::Postgres(s.into()))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Self::Rest(s.into()))
        } else {
            Err("expected sqlite://PATH, postgres://USER:PASS@HOST/DB or http(s)://ENDPOINT".into())
        }
    }
}

/// How record values land in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    Raw,
    Json,
    Avro,
}

impl FromStr for ValueFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            "json" => Ok(Self::Json),
            "avro" => Ok(Self::Avro),
            _ => Err("expected raw, json or avro".into()),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected text or json".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn core_lists_parse_ranges_and_singles() {
        let l: CoreList = "0-3,8,10-11".parse().unwrap();
        assert_eq!(l.cores(), &[0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(l.to_string(), "0-3,8,10-11");
        assert_eq!("5".parse::<CoreList>().unwrap().cores(), &[5]);
    }

    #[test]
    fn core_lists_reject_bad_input() {
        for bad in ["", "a", "1,,2", "3-1", "1-2,2", "-1", "1-"] {
            assert!(
                bad.parse::<CoreList>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let e = "1-2,2".parse::<CoreList>().unwrap_err();
        assert!(e.contains("core 2 is listed twice"), "{e}");
    }

    proptest! {
        #[test]
        fn core_list_display_round_trips(cores in proptest::collection::btree_set(0usize..300, 1..40)) {
            let list = CoreList::new(cores.iter().copied().collect()).unwrap();
            let again: CoreList = list.to_string().parse().unwrap();
            prop_assert_eq!(again, list);
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("1000".parse::<ByteSize>().unwrap(), ByteSize(1000));
        assert_eq!("2MB".parse::<ByteSize>().unwrap(), ByteSize(2_000_000));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
    }

    #[test]
    fn start_and_table() {
        assert_eq!("latest".parse::<StartAt>().unwrap(), StartAt::Latest);
        assert_eq!("42".parse::<StartAt>().unwrap(), StartAt::Offset(42));
        assert!("-1".parse::<StartAt>().is_err());
        let t: TableIdent = "ns.events".parse().unwrap();
        assert_eq!((t.namespace.as_str(), t.name.as_str()), ("ns", "events"));
        assert!("events".parse::<TableIdent>().is_err());
        assert!("a.b.c".parse::<TableIdent>().is_err());
    }
}
