//! Loading: YAML text into a `serde_json::Value` plus an index from key path to line
//! (saphyr keeps positions), then serde into the raw structs with every unknown key and
//! the key of a type error named, then [`super::validate`].

use std::path::PathBuf;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::raw::{LineIndex, RawConfig};
use super::validate::Validator;
use super::{Config, DEFAULT_CONFIG_PATH, Problem, Problems, Severity};

/// Reads and validates a configuration file. `env` looks up environment variables.
pub fn load_file(
    path: &std::path::Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<Problem>), Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            severity: Severity::Error,
            path: String::new(),
            line: None,
            message: format!("cannot read config file {}: {e}", path.display()),
        }])
    })?;
    parse(&text, env)
}

/// Parses and validates configuration text. On success returns the config and any warnings;
/// otherwise every problem found (errors and warnings).
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<Problem>), Problems> {
    let (value, lines) = yaml_to_json(text).map_err(|p| Problems(vec![p]))?;
    let mut problems = Vec::new();
    let crate::raw::Deserialized { unknown, value } = crate::raw::deserialize::<RawConfig>(value);
    for path in unknown {
        let line = lines.locate(&path);
        problems.push(Problem {
            severity: Severity::Error,
            line,
            message:
                "unknown key (check its spelling and nesting against the configuration reference)"
                    .to_string(),
            path,
        });
    }
    let raw = match value {
        Ok(raw) => raw,
        Err(err) => {
            problems.push(Problem {
                severity: Severity::Error,
                line: lines.locate(&err.path),
                message: err.message,
                path: err.path,
            });
            return Err(Problems(problems));
        }
    };
    let mut v = Validator {
        problems,
        lines: &lines,
    };
    let config = v.config(raw, env);
    let has_error = v.problems.iter().any(|p| p.severity == Severity::Error);
    match config {
        Some(config) if !has_error => Ok((config, v.problems)),
        _ => Err(Problems(v.problems)),
    }
}

fn yaml_to_json(text: &str) -> Result<(serde_json::Value, LineIndex), Problem> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| Problem {
        severity: Severity::Error,
        path: String::new(),
        line: Some(e.marker().line()),
        message: format!("not valid YAML: {}", e.info()),
    })?;
    let Some(doc) = docs.first() else {
        return Err(Problem {
            severity: Severity::Error,
            path: String::new(),
            line: None,
            message: "the configuration file is empty".to_string(),
        });
    };
    if docs.len() > 1 {
        return Err(Problem {
            severity: Severity::Error,
            path: String::new(),
            line: docs.get(1).map(|d| d.span.start.line()),
            message: "the configuration must be a single YAML document".to_string(),
        });
    }
    let mut lines = LineIndex::default();
    let value = node_to_json(doc, String::new(), &mut lines)?;
    if !value.is_object() {
        return Err(Problem {
            severity: Severity::Error,
            path: String::new(),
            line: Some(doc.span.start.line()),
            message: "the configuration must be a YAML mapping of keys".to_string(),
        });
    }
    Ok((value, lines))
}

fn node_to_json(
    node: &MarkedYaml<'_>,
    path: String,
    lines: &mut LineIndex,
) -> Result<serde_json::Value, Problem> {
    use serde_json::Value;
    let bad = |message: &str| Problem {
        severity: Severity::Error,
        line: Some(node.span.start.line()),
        path: path.clone(),
        message: message.to_string(),
    };
    Ok(match &node.data {
        YamlData::Value(scalar) => scalar_to_json(scalar),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                lines.0.insert(item_path.clone(), item.span.start.line());
                out.push(node_to_json(item, item_path, lines)?);
            }
            Value::Array(out)
        }
        YamlData::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(other) => match scalar_to_json(other) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    _ => return Err(bad("mapping keys must be plain strings")),
                };
                let key_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                lines.0.insert(key_path.clone(), k.span.start.line());
                let value = node_to_json(v, key_path, lines)?;
                out.insert(key, value);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => node_to_json(inner, path, lines)?,
        YamlData::Alias(_) => return Err(bad("YAML aliases are not supported; repeat the value")),
        YamlData::BadValue => return Err(bad("value cannot be read as the type its tag names")),
    })
}

fn scalar_to_json(scalar: &Scalar<'_>) -> serde_json::Value {
    use serde_json::Value;
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::from(*i),
        Scalar::FloatingPoint(f) => serde_json::Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

/// Path of the config file: `--config`, else `$CREDPROXY_CONFIG`, else the default.
pub fn config_path(flag: Option<PathBuf>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    flag.or_else(|| env("CREDPROXY_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}
