//! Where each setting comes from: flags over `ICEFALL_*` environment variables over the
//! `--config` TOML file over the defaults.
//!
//! The file and the environment are turned into flags placed before the command line's own, and
//! clap parses the lot with later occurrences overriding earlier ones; so every source goes
//! through the same parser and the same `validate()`, and an error can still say which source
//! gave the bad value. Keys are the long flag names (`commit-interval = "10s"`; `_` works as `-`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches};

use super::{Cli, Command, ConfigError, RunArgs};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag,
}

/// One setting of `run`: its flag and whether it takes a value.
#[derive(Debug, Clone)]
struct Setting {
    id: String,
    long: String,
    switch: bool,
}

fn settings() -> Vec<Setting> {
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    cmd.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            (long != "config" && long != "kafka-option" && !a.is_hide_set()).then(|| Setting {
                id: a.get_id().to_string(),
                long,
                switch: matches!(a.get_action(), ArgAction::SetTrue),
            })
        })
        .collect()
}

/// The parsed command line, after layering, and where each `run` setting came from.
#[derive(Debug)]
pub struct Layered {
    pub cli: Cli,
    origins: BTreeMap<String, Origin>,
    values: Vec<(String, Option<String>)>,
    /// Kafka client settings (`[kafka]`, `ICEFALL_KAFKA_*`, `--kafka-option`): the effective
    /// value of each key and where it came from.
    kafka: BTreeMap<String, (String, Origin)>,
}

/// A file's `[kafka]` table as `(key, value)` pairs, nested tables joined with dots (so both
/// `"sasl.mechanism" = ..` and `sasl.mechanism = ..` work).
fn kafka_table(
    path: &Path,
    prefix: &str,
    table: &dyn toml_edit::TableLike,
    out: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    for (k, item) in table.iter() {
        let key = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        };
        if let Some(t) = item.as_table_like() {
            kafka_table(path, &key, t, out)?;
            continue;
        }
        use toml_edit::Value as V;
        let text = match item.as_value() {
            Some(V::String(v)) => v.value().clone(),
            Some(V::Integer(v)) => v.value().to_string(),
            Some(V::Boolean(v)) => v.value().to_string(),
            _ => {
                return Err(file_error(
                    path,
                    &format!("kafka.{key}"),
                    "expected a string, a number or a boolean",
                ));
            }
        };
        out.push((key, text));
    }
    Ok(())
}

/// A config file or environment variable that cannot be used; exit code 2 like a bad flag.
fn file_error(path: &Path, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::File {
        path: path.display().to_string(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// `--config FILE` as `(flag, value)` pairs (a switch's value is `true` or `false`), every key
/// and type checked.
type FileSettings = (Vec<(String, String)>, Vec<(String, String)>);

fn file_flags(path: &Path, known: &[Setting]) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error(path, "", format!("cannot read: {e}")))?;
    let doc = toml_edit::DocumentMut::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].lines().count().max(1)
        });
        file_error(
            path,
            "",
            format!("not valid TOML (line {line}): {}", e.message().trim()),
        )
    })?;
    let mut out = Vec::new();
    let mut kafka = Vec::new();
    for (key, item) in doc.as_table().iter() {
        if key == "kafka" {
            let t = item.as_table_like().ok_or_else(|| {
                file_error(path, key, "expected a table of Kafka client settings")
            })?;
            kafka_table(path, "", t, &mut kafka)?;
            continue;
        }
        let name = key.replace('_', "-");
        let Some(s) = known.iter().find(|s| s.long == name) else {
            let mut names: Vec<&str> = known.iter().map(|s| s.long.as_str()).collect();
            names.sort_unstable();
            return Err(file_error(
                path,
                key,
                format!("unknown key; known keys: {}", names.join(", ")),
            ));
        };
        let value = item
            .as_value()
            .ok_or_else(|| file_error(path, key, "expected a value, found a table"))?;
        use toml_edit::Value as V;
        let got = |what: &str| {
            if s.switch {
                file_error(path, key, format!("expected true or false, found {what}"))
            } else {
                file_error(
                    path,
                    key,
                    format!("expected a string or a number, found {what}"),
                )
            }
        };
        let text = match value {
            V::Boolean(b) if s.switch => b.value().to_string(),
            V::Boolean(_) => return Err(got("a boolean")),
            _ if s.switch => return Err(got(value.type_name())),
            V::String(v) => v.value().clone(),
            V::Integer(v) => v.value().to_string(),
            V::Float(_) => return Err(got("a float")),
            V::Array(a) if s.long == "brokers" || s.long == "partitions" => {
                let mut parts = Vec::new();
                for v in a.iter() {
                    match v {
                        V::String(x) => parts.push(x.value().clone()),
                        V::Integer(x) => parts.push(x.value().to_string()),
                        other => {
                            return Err(got(&format!("an array holding {}", other.type_name())));
                        }
                    }
                }
                parts.join(",")
            }
            other => return Err(got(other.type_name())),
        };
        out.push((s.long.clone(), text));
    }
    Ok((out, kafka))
}

/// `ICEFALL_<FLAG>` variables (e.g. `ICEFALL_COMMIT_INTERVAL`) as `(flag, value, variable)`.
fn env_flags(
    known: &[Setting],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String, String)>, ConfigError> {
    let mut out = Vec::new();
    for s in known {
        let var = super::env_name(&s.long);
        let Some(v) = env(&var) else { continue };
        if s.switch {
            match v.trim() {
                "1" | "true" => out.push((s.long.clone(), "true".into(), var)),
                "0" | "false" | "" => out.push((s.long.clone(), "false".into(), var)),
                other => {
                    return Err(ConfigError::Env {
                        var,
                        value: other.to_string(),
                        reason: "expected true or false".into(),
                    });
                }
            }
        } else {
            out.push((s.long.clone(), v, var));
        }
    }
    Ok(out)
}

fn sub_matches(m: &ArgMatches) -> Option<&ArgMatches> {
    let (name, sub) = m.subcommand()?;
    if name == "config" {
        sub.subcommand().map(|(_, s)| s)
    } else {
        Some(sub)
    }
}

/// Parses `argv` with the config file and the environment layered under it.
pub fn parse(
    argv: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Layered, LayerError> {
    // First pass: the command line alone, for the subcommand and --config.
    let first = Cli::command()
        .try_get_matches_from(argv.clone())
        .map_err(LayerError::Clap)?;
    let first_cli = Cli::from_arg_matches(&first).map_err(LayerError::Clap)?;
    let known = settings();
    let (from_file, mut kafka_layers): (Vec<_>, Vec<_>) =
        match first_cli.command.run_args().config.clone() {
            Some(path) => {
                let (flags, kafka) = file_flags(&path, &known)?;
                let origin = Origin::File(path);
                (
                    flags
                        .into_iter()
                        .map(|(k, v)| (k, v, origin.clone()))
                        .collect(),
                    kafka
                        .into_iter()
                        .map(|(k, v)| (k, v, origin.clone()))
                        .collect(),
                )
            }
            None => (Vec::new(), Vec::new()),
        };
    kafka_layers.extend(
        super::kafka::from_env(env)
            .into_iter()
            .map(|(k, v, var)| (k, v, Origin::Env(var))),
    );
    let from_env: Vec<_> = env_flags(&known, env)?
        .into_iter()
        .map(|(k, v, var)| (k, v, Origin::Env(var)))
        .collect();
    let given = sub_matches(&first).expect("a run subcommand has matches");
    let mut origins = BTreeMap::new();
    for s in &known {
        let from_cli = given.value_source(&s.id) == Some(ValueSource::CommandLine);
        origins.insert(
            s.long.clone(),
            if from_cli {
                Origin::Flag
            } else {
                Origin::Default
            },
        );
    }
    // The environment replaces the file key by key (a switch the file turns on, a variable may
    // turn off); the command line wins over both.
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    for (k, v, origin) in from_file.into_iter().chain(from_env) {
        if origins.get(&k) != Some(&Origin::Flag) {
            merged.insert(k.clone(), v);
            origins.insert(k, origin);
        }
    }
    // Kafka settings from the file and the environment go first, so the command line's own
    // --kafka-option values come after them and win (the last value of a key counts).
    let mut layered: Vec<OsString> = Vec::new();
    let mut kafka = BTreeMap::new();
    for (k, v, origin) in kafka_layers {
        layered.push("--kafka-option".into());
        layered.push(format!("{k}={v}").into());
        kafka.insert(k, (v, origin));
    }
    for o in first_cli.command.run_args().kafka_option.iter() {
        if let Some((k, v)) = o.split_once('=') {
            kafka.insert(k.trim().to_string(), (v.to_string(), Origin::Flag));
        }
    }
    for (k, v) in merged {
        let switch = known.iter().any(|s| s.long == k && s.switch);
        if switch && v != "true" {
            continue;
        }
        layered.push(format!("--{k}").into());
        if !switch {
            layered.push(v.into());
        }
    }
    // Insert after the subcommand's name(s): argv[0], then `run` or `config check`.
    let at = if matches!(first_cli.command, Command::Config(_)) {
        3
    } else {
        2
    };
    let mut full = argv;
    let at = at.min(full.len());
    full.splice(at..at, layered);
    let matches = Cli::command()
        .args_override_self(true)
        .try_get_matches_from(full)
        .map_err(LayerError::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(LayerError::Clap)?;
    let sub = sub_matches(&matches).expect("a run subcommand has matches");
    let values = known
        .iter()
        .map(|s| {
            let v = if s.switch {
                Some(sub.get_flag(&s.id).to_string())
            } else {
                sub.get_raw(&s.id)
                    .and_then(|mut v| v.next_back())
                    .map(|v| v.to_string_lossy().into_owned())
            };
            (s.long.clone(), v)
        })
        .collect();
    Ok(Layered {
        cli,
        origins,
        values,
        kafka,
    })
}

/// Why the layered command line could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// clap's own usage error (it prints and exits 2 itself).
    #[error("{0}")]
    Clap(clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Layered {
    /// Where `flag` (e.g. `--topic`) got its value, for error messages.
    pub fn origin(&self, flag: &str) -> Origin {
        let long = flag.trim_start_matches('-');
        self.origins.get(long).cloned().unwrap_or(Origin::Default)
    }

    /// A validation error, saying which source gave the bad value.
    pub fn explain(&self, e: ConfigError) -> ConfigError {
        if let ConfigError::Kafka {
            source_name,
            key,
            reason,
        } = e
        {
            let source_name = match self.kafka.get(&key).map(|(_, o)| o) {
                Some(Origin::File(path)) => format!("{}: [kafka] {key}", path.display()),
                Some(Origin::Env(var)) => var.clone(),
                _ => source_name,
            };
            return ConfigError::Kafka {
                source_name,
                key,
                reason,
            };
        }
        let ConfigError::Invalid {
            flag,
            value,
            reason,
        } = &e
        else {
            return e;
        };
        let key = flag.trim_start_matches('-');
        match self.origin(flag) {
            Origin::File(path) => ConfigError::File {
                path: path.display().to_string(),
                key: key.to_string(),
                reason: format!("{value:?}: {reason}"),
            },
            Origin::Env(var) => ConfigError::Env {
                var,
                value: value.clone(),
                reason: reason.clone(),
            },
            Origin::Default | Origin::Flag => e,
        }
    }

    /// The effective settings as TOML, each with where it came from (`icefall config check`).
    pub fn effective_toml(&self) -> String {
        let mut out = String::from(
            "# effective configuration: flags > ICEFALL_* > --config file > defaults\n",
        );
        for (k, v) in &self.values {
            let origin = match self.origin(k) {
                Origin::Default => "default".to_string(),
                Origin::Flag => "flag".to_string(),
                Origin::Env(var) => var,
                Origin::File(p) => p.display().to_string(),
            };
            let line = match v {
                None => format!("# {k} is not set"),
                Some(b) if b == "true" || b == "false" => format!("{k} = {b}"),
                Some(s) => format!("{k} = {}", toml_string(&crate::secret::url_shown(s))),
            };
            out.push_str(&format!("{line:<48} # {origin}\n"));
        }
        if !self.kafka.is_empty() {
            out.push_str("\n[kafka]\n");
            for (k, (v, origin)) in &self.kafka {
                let origin = match origin {
                    Origin::Default | Origin::Flag => "flag".to_string(),
                    Origin::Env(var) => var.clone(),
                    Origin::File(p) => p.display().to_string(),
                };
                let line = format!(
                    "{} = {}",
                    toml_string(k),
                    toml_string(&super::kafka::shown(k, v))
                );
                out.push_str(&format!("{line:<48} # {origin}\n"));
            }
        }
        out
    }
}

fn toml_string(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => q.push_str(&format!("\\u{:04X}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(
        argv: &[&str],
        file: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<(Layered, tempfile::NamedTempFile), LayerError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, file.unwrap_or("").as_bytes()).unwrap();
        let mut v: Vec<OsString> = argv.iter().map(OsString::from).collect();
        if file.is_some() {
            v.push("--config".into());
            v.push(f.path().into());
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        parse(v, &lookup).map(|l| (l, f))
    }

    fn run_args(l: &Layered) -> &RunArgs {
        l.cli.command.run_args()
    }

    const FILE: &str = r#"
brokers = ["127.0.0.1:9092", "127.0.0.1:9093"]
topic = "from-file"
warehouse = "/tmp/wh"
table = "ns.t"
commit_interval = "20s"
queue-capacity = 1000
stop-at-end = true
"#;

    #[test]
    fn flags_override_env_override_file_override_defaults() {
        let (l, _f) = parse_with(
            &["icefall", "run", "--topic", "from-flag"],
            Some(FILE),
            &[
                ("ICEFALL_COMMIT_INTERVAL", "5s"),
                ("ICEFALL_TOPIC", "from-env"),
            ],
        )
        .unwrap();
        let a = run_args(&l);
        assert_eq!(a.topic.as_deref(), Some("from-flag"));
        assert_eq!(a.commit_interval, "5s");
        assert_eq!(a.queue_capacity, "1000");
        assert_eq!(a.brokers.as_deref(), Some("127.0.0.1:9092,127.0.0.1:9093"));
        assert!(a.stop_at_end);
        assert_eq!(a.zstd_level, "1", "defaults stay");
        assert_eq!(l.origin("--topic"), Origin::Flag);
        assert_eq!(
            l.origin("--commit-interval"),
            Origin::Env("ICEFALL_COMMIT_INTERVAL".into())
        );
        assert!(matches!(l.origin("--queue-capacity"), Origin::File(_)));
        assert_eq!(l.origin("--zstd-level"), Origin::Default);
        let cfg = a.validate().unwrap();
        assert_eq!(cfg.commit_interval, std::time::Duration::from_secs(5));
        let shown = l.effective_toml();
        assert!(shown.contains("topic = \"from-flag\""), "{shown}");
        assert!(shown.contains("ICEFALL_COMMIT_INTERVAL"), "{shown}");
    }

    #[test]
    fn a_variable_turns_off_a_switch_the_file_turned_on() {
        let (l, _f) = parse_with(
            &["icefall", "run"],
            Some(FILE),
            &[("ICEFALL_STOP_AT_END", "false")],
        )
        .unwrap();
        assert!(!run_args(&l).stop_at_end);
        assert_eq!(
            l.origin("--stop-at-end"),
            Origin::Env("ICEFALL_STOP_AT_END".into())
        );
        let (l, _f) = parse_with(&["icefall", "run", "--stop-at-end"], None, &[]).unwrap();
        assert!(run_args(&l).stop_at_end);
    }

    #[test]
    fn kafka_settings_layer_file_under_env_under_flags_and_show_masked() {
        let file = format!(
            "{FILE}[kafka]\nsecurity.protocol = \"sasl_plaintext\"\n\"sasl.mechanism\" = \"PLAIN\"\nsasl.username = \"file-user\"\nsasl.password = \"file-secret\"\n"
        );
        let (l, _f) = parse_with(
            &[
                "icefall",
                "run",
                "--kafka-option",
                "sasl.username=flag-user",
            ],
            Some(&file),
            &[
                ("ICEFALL_KAFKA_SASL_USERNAME", "env-user"),
                ("ICEFALL_KAFKA_SASL_PASSWORD", "env-secret"),
            ],
        )
        .unwrap();
        let cfg = run_args(&l).validate().unwrap();
        let sasl = cfg.kafka_security.sasl.clone().unwrap();
        assert_eq!(sasl.username, "flag-user");
        assert_eq!(sasl.password.as_ref().unwrap().expose(), "env-secret");
        let shown = l.effective_toml();
        assert!(
            shown.contains("\"sasl.username\" = \"flag-user\""),
            "{shown}"
        );
        assert!(shown.contains("ICEFALL_KAFKA_SASL_PASSWORD"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        // A bad value names where it came from.
        let (l, _f) = parse_with(
            &["icefall", "run"],
            Some(&format!("{FILE}[kafka]\nsecurity.protocol = \"tls\"\n")),
            &[],
        )
        .unwrap();
        let e = l.explain(run_args(&l).validate().unwrap_err()).to_string();
        assert!(
            e.contains("[kafka] security.protocol") && e.contains("expected plaintext"),
            "{e}"
        );
        let (l, _f) = parse_with(
            &["icefall", "run"],
            Some(FILE),
            &[("ICEFALL_KAFKA_SASL_MECHANISM", "PLAIN")],
        )
        .unwrap();
        let e = l.explain(run_args(&l).validate().unwrap_err()).to_string();
        assert!(e.starts_with("ICEFALL_KAFKA_SASL_MECHANISM: is set"), "{e}");
    }

    #[test]
    fn bad_files_name_the_key_and_the_expected_form() {
        let err = |file: &str| match parse_with(&["icefall", "run"], Some(file), &[]) {
            Err(LayerError::Config(e)) => e.to_string(),
            other => panic!("expected a config error, got {other:?}"),
        };
        let e = err("topik = \"x\"\n");
        assert!(
            e.contains("key `topik`") && e.contains("unknown key") && e.contains("topic"),
            "{e}"
        );
        let e = err("queue-capacity = [1]\n");
        assert!(
            e.contains("key `queue-capacity`") && e.contains("expected a string or a number"),
            "{e}"
        );
        let e = err("stop-at-end = \"yes\"\n");
        assert!(
            e.contains("key `stop-at-end`") && e.contains("true or false"),
            "{e}"
        );
        let e = err("topic = \n");
        assert!(e.contains("not valid TOML (line 1)"), "{e}");
        let e = err("kafka = 1\n");
        assert!(e.contains("key `kafka`") && e.contains("table"), "{e}");
        // A value of the right TOML type but the wrong form is caught by validate(), then
        // attributed to the file.
        let (l, _f) = parse_with(
            &["icefall", "run"],
            Some(&format!("{FILE}fetch-max-wait = 10\n")),
            &[],
        )
        .unwrap();
        let e = l.explain(run_args(&l).validate().unwrap_err()).to_string();
        assert!(
            e.contains("key `fetch-max-wait`") && e.contains("no unit; write e.g. 10s"),
            "{e}"
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let (l, _f) = parse_with(
            &["icefall", "run"],
            Some(FILE),
            &[("ICEFALL_ZSTD_LEVEL", "99")],
        )
        .unwrap();
        let e = l.explain(run_args(&l).validate().unwrap_err()).to_string();
        assert!(e.starts_with("ICEFALL_ZSTD_LEVEL \"99\""), "{e}");
        match parse_with(
            &["icefall", "run"],
            None,
            &[("ICEFALL_STOP_AT_END", "maybe")],
        ) {
            Err(LayerError::Config(e)) => {
                assert!(e.to_string().contains("ICEFALL_STOP_AT_END"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_topic_is_named() {
        let e = parse_with(
            &["icefall", "config", "check", "--brokers", "h:1"],
            None,
            &[],
        )
        .unwrap();
        let err = run_args(&e.0).validate().unwrap_err().to_string();
        assert!(
            err.contains("--topic") && err.contains("ICEFALL_TOPIC"),
            "{err}"
        );
    }
}
