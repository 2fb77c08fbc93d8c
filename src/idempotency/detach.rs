//! Work that outlives the request future that started it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use tracing::Instrument;

/// Runs `future` in place and, if it is dropped before it finished (the
/// client hung up), moves it to a task of its own to finish there: what
/// [`OnCancel::Detach`](super::OnCancel::Detach) promises, at the price of one allocation instead of
/// a task per request.
pub(crate) struct DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    future: Option<Pin<Box<F>>>,
    /// The span the run was started in. Polled in place, the run is in it
    /// already (whoever polls the request entered it); moved to a task, it
    /// is instrumented with it then, so the handler's events keep the
    /// request's span wherever it ends, and a run that finishes in place
    /// pays no span enter and exit per poll.
    span: tracing::Span,
}

impl<F> DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub(crate) fn new(future: F) -> Self {
        Self {
            future: Some(Box::pin(future)),
            span: tracing::Span::current(),
        }
    }
}

impl<F> Future for DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let future = self
            .future
            .as_mut()
            .expect("future polled after completion");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F> Drop for DetachOnDrop<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        // Not while unwinding: a future that panicked must not be polled
        // again. Outside a runtime the run is dropped, and its guard holds
        // the key until the lease runs out.
        if let Some(future) = self.future.take()
            && !std::thread::panicking()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let span = std::mem::replace(&mut self.span, tracing::Span::none());
            drop(runtime.spawn(future.instrument(span)));
        }
    }
}

/// Runs `future` on a task of its own unless it finishes on its first
/// poll, and waits for it: dropping the wait does not stop it.
pub(crate) async fn run_to_end(future: impl Future<Output = ()> + Send + 'static) {
    let mut future = Box::pin(future);
    if (&mut future).now_or_never().is_some() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(future.in_current_span()).await),
        Err(_) => future.await,
    }
}
