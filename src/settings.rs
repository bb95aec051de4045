//! Every configuration key as a flag and an environment variable.
//!
//! `section.key` in the file is `--section-key VALUE` on the command line and
//! `TERN_SECTION_KEY=VALUE` in the environment (a few keys have shorter names as well, such as
//! `--http-listen`; see `main.rs`). The catalogue of keys and their help comes from
//! deploy/tern.example.toml, which a test keeps equal to the defaults and to the `Config` type,
//! so the three cannot drift apart. Values are text: booleans `true`/`false`, numbers, lists
//! comma-separated, tables (`auth.keys`) as `kid=secret,kid=secret`.
//!
//! A `TERN_*` variable that names no setting is an error, not a silent default: a misspelt
//! `TERN_MEDIA_ALLOW_SRTP_SHA1_8` must not run the relay as if it were unset.

use crate::config::{Config, ConfigError};
use toml::Value;

/// The example configuration: every key, its default and what it does.
pub const EXAMPLE: &str = include_str!("../deploy/tern.example.toml");

/// One configuration key.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// `section.key`.
    pub key: String,
    /// What the example file says about it.
    pub help: String,
}

impl Setting {
    /// `--section-key`, without the dashes.
    pub fn flag(&self) -> String {
        self.key.replace(['.', '_'], "-")
    }

    /// `TERN_SECTION_KEY`.
    pub fn env(&self) -> String {
        format!("TERN_{}", self.key.replace('.', "_").to_ascii_uppercase())
    }
}

/// Every key of the example file, in its order, with the comment above it (a key that shares
/// the comment of the key before it gets that comment too).
pub fn catalogue() -> Vec<Setting> {
    let mut settings: Vec<Setting> = Vec::new();
    let mut section = String::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in EXAMPLE.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            comment.clear();
            continue;
        }
        let assignment = line.strip_prefix("# ").unwrap_or(line);
        let key = assignment
            .split_once(" = ")
            .map(|(key, _)| key)
            .filter(|key| {
                !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        match key {
            Some(key) if !section.is_empty() => {
                let help = if comment.is_empty() {
                    settings.last().map(|s| s.help.clone()).unwrap_or_default()
                } else {
                    comment.join(" ")
                };
                settings.push(Setting {
                    key: format!("{section}.{key}"),
                    help,
                });
                comment.clear();
            }
            _ => {
                if let Some(text) = line.strip_prefix('#') {
                    comment.push(text.trim());
                } else if line.is_empty() {
                    comment.clear();
                }
            }
        }
    }
    settings
}

/// Settings given as `TERN_*` variables, as (key, value). `handled` are the variables the
/// command line reads itself (`TERN_CONFIG`, `TERN_HTTP_LISTEN` ...); any other `TERN_*` must
/// name a setting.
pub fn from_environment(
    vars: impl Iterator<Item = (String, String)>,
    handled: &[&str],
) -> Result<Vec<(String, String)>, ConfigError> {
    let settings = catalogue();
    let mut found = Vec::new();
    for (name, value) in vars {
        if !name.starts_with("TERN_") || handled.contains(&name.as_str()) {
            continue;
        }
        // The project's own test tooling keeps its variables under TERN_TEST_.
        if name.starts_with("TERN_TEST_") {
            continue;
        }
        match settings.iter().find(|s| s.env() == name) {
            Some(setting) => found.push((setting.key.clone(), value)),
            None => {
                let hint = settings
                    .iter()
                    .map(Setting::env)
                    .min_by_key(|env| edit_distance(env, &name))
                    .unwrap_or_default();
                return Err(ConfigError::UnknownVariable { name, hint });
            }
        }
    }
    Ok(found)
}

/// `config` with each (key, text) applied over it, typed as the key's current value is (text
/// for a key that is unset), then checked as a whole file would be.
pub fn apply(config: Config, overrides: &[(String, String)]) -> Result<Config, ConfigError> {
    if overrides.is_empty() {
        return Ok(config);
    }
    let mut tree = Value::try_from(&config).map_err(|e| ConfigError::Parse {
        path: "(defaults)".into(),
        message: e.to_string(),
    })?;
    for (key, text) in overrides {
        let (section, field) = key.split_once('.').ok_or_else(|| unknown(key))?;
        let table = tree
            .get_mut(section)
            .and_then(Value::as_table_mut)
            .ok_or_else(|| unknown(key))?;
        let value = typed(table.get(field), text).map_err(|message| ConfigError::Setting {
            key: key.clone(),
            message,
        })?;
        table.insert(field.to_owned(), value);
    }
    let text = toml::to_string(&tree).map_err(|e| ConfigError::Parse {
        path: "(settings)".into(),
        message: e.to_string(),
    })?;
    Config::from_toml(&text).map_err(|message| ConfigError::Parse {
        path: "(flags and environment)".into(),
        message,
    })
}

fn unknown(key: &str) -> ConfigError {
    ConfigError::Setting {
        key: key.to_owned(),
        message: "no such setting".into(),
    }
}

/// `text` as a value of the type `like` has.
fn typed(like: Option<&Value>, text: &str) -> Result<Value, String> {
    let text = text.trim();
    Ok(match like {
        Some(Value::Boolean(_)) => Value::Boolean(match text {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("{text:?} is not true or false")),
        }),
        Some(Value::Integer(_)) => Value::Integer(
            text.parse()
                .map_err(|_| format!("{text:?} is not a whole number"))?,
        ),
        Some(Value::Float(_)) => Value::Float(
            text.parse()
                .map_err(|_| format!("{text:?} is not a number"))?,
        ),
        Some(Value::Array(items)) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| typed(items.first(), item))
                .collect::<Result<_, _>>()?,
        ),
        Some(Value::Table(_)) => Value::Table(
            text.split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(|entry| {
                    entry
                        .split_once('=')
                        .map(|(k, v)| (k.trim().to_owned(), Value::String(v.trim().to_owned())))
                        .ok_or_else(|| format!("{entry:?} is not name=value"))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => Value::String(text.to_owned()),
    })
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every key `Config` has, with every optional key set.
    fn config_keys() -> BTreeSet<String> {
        let mut config = Config::default();
        config.http.tls_listen = Some("127.0.0.1:8443".parse().unwrap());
        config.http.tls_cert_file = Some("c".into());
        config.http.tls_key_file = Some("k".into());
        config.media.tcp_listen = Some("127.0.0.1:1".parse().unwrap());
        config.metrics.listen = Some("127.0.0.1:2".parse().unwrap());
        let tree = Value::try_from(&config).unwrap();
        let mut keys = BTreeSet::new();
        for (section, table) in tree.as_table().unwrap() {
            for field in table.as_table().unwrap().keys() {
                keys.insert(format!("{section}.{field}"));
            }
        }
        keys
    }

    #[test]
    fn the_example_documents_exactly_the_keys_config_has() {
        let documented: BTreeSet<String> = catalogue().into_iter().map(|s| s.key).collect();
        assert_eq!(documented, config_keys());
        for setting in catalogue() {
            assert!(!setting.help.is_empty(), "{} has no comment", setting.key);
        }
    }

    #[test]
    fn flags_and_variables_are_named_after_the_key() {
        let setting = catalogue()
            .into_iter()
            .find(|s| s.key == "media.allow_srtp_sha1_80")
            .unwrap();
        assert_eq!(setting.flag(), "media-allow-srtp-sha1-80");
        assert_eq!(setting.env(), "TERN_MEDIA_ALLOW_SRTP_SHA1_80");
        assert!(setting.help.contains("SHA1_80"), "{}", setting.help);
    }

    #[test]
    fn values_take_the_type_of_the_key() {
        let overrides = [
            ("media.allow_srtp_sha1_80", "false"),
            ("room.max_participants", "7"),
            ("media.advertised_ips", "192.0.2.1, 2001:db8::1"),
            ("auth.keys", "a=0123456789abcdef0123456789abcdef"),
            ("http.tls_listen", "127.0.0.1:8443"),
            ("log.format", "json"),
            ("metrics.token", "s3cret"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = apply(Config::default(), &overrides).unwrap();
        assert!(!config.media.allow_srtp_sha1_80);
        assert_eq!(config.room.max_participants, 7);
        assert_eq!(config.media.advertised_ips.len(), 2);
        assert!(config.auth.keys.contains_key("a"));
        assert!(config.http.tls_listen.is_some());
        assert_eq!(config.log.format, crate::config::LogFormat::Json);
        assert_eq!(config.metrics.token, "s3cret");
        let err = apply(
            Config::default(),
            &[("room.max_participants".into(), "many".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("room.max_participants") && err.contains("many"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_variable_is_an_error_that_suggests_the_nearest() {
        let vars = [
            ("TERN_MEDIA_ALLOW_SRTP_SHA1_8".to_owned(), "true".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let err = from_environment(vars.into_iter(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TERN_MEDIA_ALLOW_SRTP_SHA1_8"), "{err}");
        assert!(err.contains("TERN_MEDIA_ALLOW_SRTP_SHA1_80"), "{err}");
        let vars = [
            ("TERN_ROOM_MAX_PARTICIPANTS".to_owned(), "3".to_owned()),
            ("TERN_CONFIG".to_owned(), "x".to_owned()),
        ];
        let found = from_environment(vars.into_iter(), &["TERN_CONFIG"]).unwrap();
        assert_eq!(
            found,
            vec![("room.max_participants".to_owned(), "3".to_owned())]
        );
    }
}
