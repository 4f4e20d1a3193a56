//! A small subset of Go's text/template, enough for docker-style `--format`/`-f`:
//! literal text, `{{.A.B}}`, `{{.}}`, `{{json .A}}`, `{{join .A ", "}}`, `{{upper .A}}`,
//! `{{lower .A}}`, `{{range .A}}…{{end}}` and the `{{-`/`-}}` trim markers.
//!
//! Strings print raw, numbers and booleans as themselves, `null` as `<nil>`, a missing key as
//! `<no value>` (like Go for maps), arrays and objects as compact JSON.

use anyhow::{anyhow, bail, Result};

use crate::json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Expr),
    Range(Expr, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Func {
    Print,
    Json,
    Upper,
    Lower,
    Join(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Expr {
    func: Func,
    /// Field path from `.`; empty for `.` itself.
    path: Vec<String>,
}

enum Token {
    Text(String),
    Action(String),
}

impl Template {
    /// Parses `src`; errors name what is wrong.
    pub fn parse(src: &str) -> Result<Template> {
        let tokens = lex(src)?;
        let mut iter = tokens.into_iter();
        let (nodes, ended) = parse_nodes(&mut iter)?;
        if ended {
            bail!("template parsing error: unexpected {{{{end}}}}");
        }
        Ok(Template { nodes })
    }

    /// Renders the template with `dot` as `.`.
    pub fn render(&self, dot: &Value) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, dot, &mut out);
        out
    }
}

fn lex(src: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    while !rest.is_empty() {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = text.to_string();
        if trim_next_text {
            text = text.trim_start().to_string();
        }
        let Some(after) = after else {
            if !text.is_empty() {
                tokens.push(Token::Text(text));
            }
            break;
        };
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("template parsing error: unclosed action (missing }}}})"))?;
        let mut inner = &after[..end];
        if let Some(stripped) = inner.strip_prefix("- ") {
            text = text.trim_end().to_string();
            inner = stripped;
        }
        trim_next_text = false;
        if let Some(stripped) = inner.strip_suffix(" -") {
            trim_next_text = true;
            inner = stripped;
        }
        if !text.is_empty() {
            tokens.push(Token::Text(text));
        }
        tokens.push(Token::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
    }
    Ok(tokens)
}

/// Parses until the end of input or an `{{end}}` (second value: whether `{{end}}` was seen).
fn parse_nodes(iter: &mut impl Iterator<Item = Token>) -> Result<(Vec<Node>, bool)> {
    let mut nodes = Vec::new();
    while let Some(token) = iter.next() {
        match token {
            Token::Text(t) => nodes.push(Node::Text(t)),
            Token::Action(a) => {
                let words = split_words(&a)?;
                match words.first().map(String::as_str) {
                    Some("end") if words.len() == 1 => return Ok((nodes, true)),
                    Some("range") => {
                        let expr = parse_expr(&words[1..], &a)?;
                        let (body, ended) = parse_nodes(iter)?;
                        if !ended {
                            bail!(
                                "template parsing error: {{{{{a}}}}} has no matching {{{{end}}}}"
                            );
                        }
                        nodes.push(Node::Range(expr, body));
                    }
                    _ => nodes.push(Node::Action(parse_expr(&words, &a)?)),
                }
            }
        }
    }
    Ok((nodes, false))
}

fn split_words(action: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some(other) => word.push(other),
                        None => break,
                    },
                    other => word.push(other),
                }
            }
            if !closed {
                bail!("template parsing error: unterminated string in {{{{{action}}}}}");
            }
            // Keep a marker so a quoted word is never mistaken for a field.
            words.push(format!("\"{word}"));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    Ok(words)
}

fn parse_path(word: &str, action: &str) -> Result<Vec<String>> {
    if word == "." {
        return Ok(Vec::new());
    }
    let Some(rest) = word.strip_prefix('.') else {
        bail!(
            "template parsing error: {{{{{action}}}}}: expected a field like .Name, got {word:?}"
        );
    };
    let path: Vec<String> = rest.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        bail!("template parsing error: {{{{{action}}}}}: bad field {word:?}");
    }
    Ok(path)
}

fn parse_expr(words: &[String], action: &str) -> Result<Expr> {
    let unsupported = || {
        anyhow!(
            "template parsing error: {{{{{action}}}}} is not supported (berth supports .Field, \
             json, join, upper, lower, range … end)"
        )
    };
    match words {
        [field] => Ok(Expr {
            func: Func::Print,
            path: parse_path(field, action)?,
        }),
        [func, field] => {
            let func = match func.as_str() {
                "json" => Func::Json,
                "upper" => Func::Upper,
                "lower" => Func::Lower,
                _ => return Err(unsupported()),
            };
            Ok(Expr {
                func,
                path: parse_path(field, action)?,
            })
        }
        [func, field, sep] if func == "join" && sep.starts_with('"') => Ok(Expr {
            func: Func::Join(sep[1..].to_string()),
            path: parse_path(field, action)?,
        }),
        _ => Err(unsupported()),
    }
}

fn lookup<'a>(dot: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(dot, |v, key| v.get(key))
}

/// Go-ish printing of a value.
pub fn display(v: Option<&Value>) -> String {
    match v {
        None => "<no value>".to_string(),
        Some(Value::Null) => "<nil>".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_compact(),
    }
}

fn eval(expr: &Expr, dot: &Value) -> String {
    let v = lookup(dot, &expr.path);
    match &expr.func {
        Func::Print => display(v),
        Func::Json => v.map_or_else(|| "null".to_string(), Value::to_compact),
        Func::Upper => display(v).to_uppercase(),
        Func::Lower => display(v).to_lowercase(),
        Func::Join(sep) => match v {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| display(Some(i)))
                .collect::<Vec<_>>()
                .join(sep),
            other => display(other),
        },
    }
}

fn render_nodes(nodes: &[Node], dot: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(expr) => out.push_str(&eval(expr, dot)),
            Node::Range(expr, body) => match lookup(dot, &expr.path) {
                Some(Value::Array(items)) => {
                    for item in items {
                        render_nodes(body, item, out);
                    }
                }
                Some(Value::Object(members)) => {
                    for (_, item) in members {
                        render_nodes(body, item, out);
                    }
                }
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Value {
        serde_json::from_str(
            r#"{"Name":"n2","Id":"5023a3","IPAM":{"Driver":"default","Options":null,
            "Config":[{"Subnet":"10.233.0.0/24","Gateway":"10.233.0.1"},{"Subnet":"fd00::/64"}]},
            "Internal":false,"Labels":{"team":"x"},"Aliases":["web","www"],"Prefix":24,
            "NetworkSettings":{"Networks":{"web":{"IPAddress":"10.0.0.2","Aliases":null}}}}"#,
        )
        .expect("json")
    }

    fn render(src: &str) -> String {
        Template::parse(src).expect("parses").render(&net())
    }

    #[test]
    fn fields_and_text() {
        assert_eq!(render("{{.Name}}"), "n2");
        assert_eq!(render("id={{ .Id }} name={{.Name}}!"), "id=5023a3 name=n2!");
        assert_eq!(render("{{.Internal}} {{.Prefix}}"), "false 24");
        assert_eq!(render("{{.IPAM.Driver}}"), "default");
        assert_eq!(render("{{.IPAM.Options}}"), "<nil>");
        assert_eq!(
            render("{{.Nope}}|{{.IPAM.Nope.Deeper}}"),
            "<no value>|<no value>"
        );
        assert_eq!(
            render("{{.NetworkSettings.Networks.web.IPAddress}}"),
            "10.0.0.2"
        );
        assert_eq!(render("no actions"), "no actions");
    }

    #[test]
    fn json_and_non_scalars() {
        assert_eq!(render("{{json .Labels}}"), r#"{"team":"x"}"#);
        assert_eq!(render("{{.Labels}}"), r#"{"team":"x"}"#);
        assert_eq!(render("{{json .Name}}"), r#""n2""#);
        assert_eq!(render("{{json .Nope}}"), "null");
        assert_eq!(
            render("{{json .NetworkSettings.Networks}}"),
            r#"{"web":{"IPAddress":"10.0.0.2","Aliases":null}}"#
        );
        assert_eq!(render("{{json .IPAM.Config}}").chars().next(), Some('['));
    }

    #[test]
    fn range_join_case_and_trim() {
        assert_eq!(
            render("{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{.Id}}"),
            "10.233.0.0/24 10.233.0.1fd00::/64 <no value> 5023a3"
        );
        assert_eq!(render("{{range .Labels}}{{.}};{{end}}"), "x;");
        assert_eq!(render("{{range .Nope}}x{{end}}"), "");
        assert_eq!(render(r#"{{join .Aliases ", "}}"#), "web, www");
        assert_eq!(render("{{upper .Name}}{{lower .IPAM.Driver}}"), "N2default");
        assert_eq!(render("a  {{- .Name -}}  b"), "an2b");
    }

    #[test]
    fn errors() {
        assert!(Template::parse("{{.Name").is_err());
        assert!(Template::parse("{{range .A}}x").is_err());
        assert!(Template::parse("{{end}}").is_err());
        assert!(Template::parse("{{index .A 1}}").is_err());
        assert!(Template::parse("{{Name}}").is_err());
        assert!(Template::parse(r#"{{join .A "x}}"#).is_err());
    }
}
