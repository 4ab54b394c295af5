//! Configuration errors that point at the file, line and key, so an operator can fix them without guessing.

use std::ops::Range;

/// A config file that cannot be used. Its `Display` is the whole message an operator sees.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read the file: {source} (check the path given to --config)")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Whole { origin: String, message: String },
}

/// The text being parsed and where it came from; turns byte spans into `file:line:column` errors.
pub(crate) struct Source<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let message = message.into();
        let Some(span) = span else {
            return ConfigError::Whole {
                origin: self.origin.to_string(),
                message,
            };
        };
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            line,
            column,
            message,
        }
    }

    /// Wraps a serde/TOML error, quoting the offending line so the key is visible even when the
    /// parser's message (e.g. "invalid type") does not name it.
    pub fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let message = err.message().trim().to_string();
        let Some(span) = err.span() else {
            return self.at(None, message);
        };
        let (line, _) = line_column(self.text, span.start);
        let quoted = self.text.lines().nth(line - 1).unwrap_or("").trim();
        let message = if quoted.is_empty() {
            message
        } else {
            format!("{message} (in `{quoted}`)")
        };
        self.at(Some(span), message)
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 4));
    }
}
