//! Finding and loading rule files: the built-in pack (embedded in the binary
//! from `config/rules/`) and user folders of seamwatch rules or Sigma rules,
//! told apart by their top-level keys (`rules:` or `detection:`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};

use super::rule::{Rule, RuleError, parse_rule_document};
use super::sigma::load_sigma_text;
use crate::correlate::rule::CorrelationDef;

static BUILTIN: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/config/rules");

/// A rule or file that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub file: String,
    pub rule: Option<String>,
    pub reason: String,
}

/// What a load produced.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub rules: Vec<Rule>,
    /// Correlation rules, their rule references not resolved yet.
    pub correlations: Vec<CorrelationDef>,
    pub rejected: Vec<Rejected>,
    pub files: usize,
}

impl LoadReport {
    fn add_text(&mut self, text: &str, path: &Path) {
        self.files += 1;
        let file = path.display().to_string();
        if is_native(text) {
            match parse_rule_document(text, path) {
                Ok((rules, correlations)) => {
                    self.rules.extend(rules);
                    self.correlations.extend(correlations);
                }
                Err(e) => self.rejected.push(Rejected {
                    file,
                    rule: None,
                    reason: e.to_string(),
                }),
            }
        } else {
            let load = load_sigma_text(text, path);
            self.rules.extend(load.rules);
            self.correlations.extend(load.correlations);
            self.rejected
                .extend(load.rejected.into_iter().map(|(rule, reason)| Rejected {
                    file: file.clone(),
                    rule: Some(rule),
                    reason,
                }));
        }
    }

    /// Drops rules whose id was already loaded, recording them as rejected.
    fn dedup(&mut self) {
        let mut seen = HashSet::new();
        let mut kept = Vec::with_capacity(self.rules.len());
        for rule in std::mem::take(&mut self.rules) {
            if seen.insert(rule.meta.id.clone()) {
                kept.push(rule);
            } else {
                self.rejected.push(Rejected {
                    file: rule.meta.file.display().to_string(),
                    rule: Some(rule.meta.id.clone()),
                    reason: "duplicate rule id".into(),
                });
            }
        }
        self.rules = kept;
        let mut correlations = Vec::with_capacity(self.correlations.len());
        for correlation in std::mem::take(&mut self.correlations) {
            if seen.insert(correlation.meta.id.clone()) {
                correlations.push(correlation);
            } else {
                self.rejected.push(Rejected {
                    file: correlation.meta.file.display().to_string(),
                    rule: Some(correlation.meta.id.clone()),
                    reason: "duplicate rule id".into(),
                });
            }
        }
        self.correlations = correlations;
    }

    pub fn merge(&mut self, other: LoadReport) {
        self.rules.extend(other.rules);
        self.correlations.extend(other.correlations);
        self.rejected.extend(other.rejected);
        self.files += other.files;
        self.dedup();
    }
}

/// seamwatch's format has a top-level `rules:` or `correlations:` list; Sigma
/// has `detection:` (or `correlation:`).
fn is_native(text: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with("rules:") || line.starts_with("correlations:"))
}

fn is_rule_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yml" | "yaml")
    )
}

/// The built-in pack's single-event rules.
pub fn load_builtin() -> Result<Vec<Rule>, RuleError> {
    load_builtin_report().map(|report| report.rules)
}

/// The built-in pack: rules and correlations. Its files are tested in CI, so
/// an error here is a bug.
pub fn load_builtin_report() -> Result<LoadReport, RuleError> {
    let mut report = LoadReport::default();
    fn collect<'d>(dir: &'d Dir<'d>, out: &mut Vec<&'d include_dir::File<'d>>) {
        out.extend(dir.files());
        for sub in dir.dirs() {
            collect(sub, out);
        }
    }
    let mut files = Vec::new();
    collect(&BUILTIN, &mut files);
    files.sort_by_key(|f| f.path().to_owned());
    for file in files {
        let path = Path::new("builtin").join(file.path());
        if !is_rule_file(&path) {
            continue;
        }
        let text = file.contents_utf8().ok_or_else(|| RuleError::Invalid {
            path: path.clone(),
            message: "not UTF-8".into(),
        })?;
        report.add_text(text, &path);
    }
    report.dedup();
    if let Some(first) = report.rejected.first() {
        return Err(RuleError::Invalid {
            path: PathBuf::from(&first.file),
            message: format!(
                "{}{}",
                first
                    .rule
                    .as_deref()
                    .map(|r| format!("{r}: "))
                    .unwrap_or_default(),
                first.reason
            ),
        });
    }
    Ok(report)
}

/// Every `.yml`/`.yaml` file under `path` (or `path` itself), recursively.
pub fn load_path(path: &Path) -> Result<LoadReport, RuleError> {
    let mut report = LoadReport::default();
    let meta = std::fs::metadata(path).map_err(|source| RuleError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = if meta.is_dir() {
        walkdir::WalkDir::new(path)
            .follow_links(true)
            .into_iter()
            // A Kubernetes ConfigMap volume holds each file three times: in
            // a `..<timestamp>` folder, through the `..data` link, and as a
            // link at the top. Only the top-level names count.
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with(".."))
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && is_rule_file(e.path()))
            .map(|e| e.into_path())
            .collect()
    } else {
        vec![path.to_owned()]
    };
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| RuleError::Read {
            path: file.clone(),
            source,
        })?;
        report.add_text(&text, &file);
    }
    report.dedup();
    Ok(report)
}
