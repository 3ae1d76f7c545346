//! Rendering a [`Notice`] for one destination's API. (Work in progress.)

use super::model::Notice;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("template: {0}")]
    Template(String),
    #[error("cannot encode notice: {0}")]
    Json(#[from] serde_json::Error),
}

/// A rendered request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub content_type: String,
}

/// How notices are rendered for one destination.
pub struct Formatter {
    kind: Kind,
}

enum Kind {
    Json,
}

impl Formatter {
    /// seamwatch's own JSON: the notice as it is.
    pub fn json() -> Formatter {
        Formatter { kind: Kind::Json }
    }

    /// The body for `notice`, or `None` when this format does not send it.
    pub fn render(&self, notice: &Notice) -> Result<Option<Rendered>, FormatError> {
        match self.kind {
            Kind::Json => Ok(Some(Rendered {
                body: serde_json::to_vec(notice)?,
                content_type: "application/json".into(),
            })),
        }
    }
}
