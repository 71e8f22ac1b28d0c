//! One thing wrong with the configuration or a plugin file, with where it
//! is: what `switchyard check` prints and what `serve` refuses or reports.

use std::fmt;
use std::path::PathBuf;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file, tenant or instance cannot be used.
    Error,
    /// It can, but probably not as meant; `check` still succeeds.
    Warning,
}

/// One problem, as `file:line: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File, relative to the config directory (or a plugin's path).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is about the whole file.
    pub line: usize,
    /// Dotted field path, e.g. `instance[0].config.colour`.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// An error about a whole file.
    pub fn file(file: impl Into<PathBuf>, field: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            field: field.to_owned(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// Whether it is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}{}",
            self.file.display(),
            self.line,
            self.field,
            match self.severity {
                Severity::Error => "",
                Severity::Warning => "warning: ",
            },
            self.message
        )
    }
}

/// Every problem, one per line, sorted by file and line.
pub fn render(problems: &[Problem]) -> String {
    let mut sorted: Vec<&Problem> = problems.iter().collect();
    sorted.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    sorted
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
