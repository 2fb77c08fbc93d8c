//! What validation reports: a tracing event per request, a counter per
//! rejection.

use std::sync::Arc;

#[cfg(feature = "metrics")]
use crate::observability::{VALIDATION_REJECTIONS, record};

use super::error::Error;

/// The statuses a rejection answers with, as a number (for the tracing
/// field) and as the `status` label.
const STATUSES: [(u16, &str); 5] = [
    (400, "400"),
    (406, "406"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
];

/// A validation layer's name and metric keys, built once per layer and
/// shared by its services.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    rejections: [metrics::Key; 5],
}

impl Observer {
    pub(crate) fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            #[cfg(feature = "metrics")]
            rejections: STATUSES.map(|(_, status)| {
                record::key(VALIDATION_REJECTIONS, &name, &[("status", status)])
            }),
            name,
        })
    }

    pub(crate) fn unnamed() -> Arc<Self> {
        Self::new(Arc::from(crate::observability::DEFAULT_NAME))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The request passed every check and goes to the inner service.
    #[inline]
    pub(crate) fn accepted(&self) {
        if tracing::level_enabled!(tracing::Level::TRACE) {
            self.trace_accepted();
        }
    }

    #[cold]
    #[inline(never)]
    fn trace_accepted(&self) {
        tracing::trace!(
            layer = "validate",
            name = &*self.name,
            outcome = "accepted",
            "request accepted"
        );
    }

    /// The request was refused with `error`.
    #[cold]
    pub(crate) fn rejected<E>(&self, error: &Error<E>) {
        let Some(status) = status(error) else {
            return;
        };
        #[cfg(feature = "metrics")]
        record::increment(&self.rejections[status]);
        tracing::debug!(
            layer = "validate",
            name = &*self.name,
            outcome = "rejected",
            status = STATUSES[status].0,
            reason = error.reason(),
            "request rejected"
        );
    }
}

/// The index in [`STATUSES`] of the status `error` answers with; `None` for the inner
/// service's errors, which are not rejections.
fn status<E>(error: &Error<E>) -> Option<usize> {
    match error {
        Error::Headers(_)
        | Error::Body(_)
        | Error::Syntax { .. }
        | Error::DuplicateMember { .. } => Some(0),
        Error::NotAcceptable { .. } => Some(1),
        Error::TooLarge { .. } => Some(2),
        Error::UnsupportedMediaType { .. } => Some(3),
        Error::Invalid(_) => Some(4),
        Error::Inner(_) => None,
    }
}
