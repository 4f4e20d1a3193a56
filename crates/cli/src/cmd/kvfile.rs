//! Docker's `--env-file` and `--label-file` format (docker/cli `opts/file.go`): one `KEY=VALUE`
//! a line, the value taken as is (no quotes, no expansion); blank lines and lines starting with
//! `#` skipped; a bare `KEY` in an env file takes its value from our environment (and is left
//! out when it is unset there), in a label file it is a label with an empty value.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A bare key's value from somewhere (`None`: unset).
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The entries of `text` (from `file`, named in errors) as `KEY=VALUE` or bare `KEY` strings.
/// `lookup` gives a bare key's value (`None`: leave the key out); without it bare keys are kept.
pub fn parse(file: &Path, text: &str, lookup: Option<Lookup<'_>>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() {
            bail!(
                "{}:{}: no variable name on line {raw:?}",
                file.display(),
                n + 1
            );
        }
        if key.contains(char::is_whitespace) {
            bail!(
                "{}:{}: variable {key:?} contains whitespaces",
                file.display(),
                n + 1
            );
        }
        match (value, lookup) {
            (Some(v), _) => out.push(format!("{key}={v}")),
            (None, Some(look)) => {
                if let Some(v) = look(key) {
                    out.push(format!("{key}={v}"));
                }
            }
            (None, None) => out.push(key.to_string()),
        }
    }
    Ok(out)
}

/// Reads and parses `--env-file` files in order: bare keys from our environment.
pub fn env_files(files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let lookup = |k: &str| std::env::var(k).ok();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the env file {}", f.display()))?;
        out.extend(parse(f, &text, Some(&lookup))?);
    }
    Ok(out)
}

/// `--label-file` files, then `--label` flags (which win), as a map (`KEY` alone: empty).
pub fn labels(files: &[std::path::PathBuf], flags: &[String]) -> Result<BTreeMap<String, String>> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the label file {}", f.display()))?;
        all.extend(parse(f, &text, None)?);
    }
    all.extend(flags.iter().cloned());
    Ok(all
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_as_docker() {
        let text = "# a comment\n\n  A=1 two  \nB=x=y\nHOMELESS\nSET\n";
        let look = |k: &str| (k == "SET").then(|| "from-env".to_string());
        let got = parse(Path::new("f"), text, Some(&look)).expect("parses");
        assert_eq!(got, vec!["A=1 two  ", "B=x=y", "SET=from-env"]);
        // Label files keep bare keys.
        let got = parse(Path::new("f"), "K\nL=v\n", None).expect("parses");
        assert_eq!(got, vec!["K", "L=v"]);
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let e = parse(Path::new("f"), "ok=1\nBAD KEY=v\n", None).expect_err("whitespace");
        assert!(e.to_string().contains("f:2"), "{e}");
        assert!(parse(Path::new("f"), "=v\n", None).is_err());
    }
}
