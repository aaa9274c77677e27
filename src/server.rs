//! Serving: an already bound listener, the state, and a shutdown future
//! (the shape of mini-redis), so tests and `main` start the server the same way.

use std::future::Future;

use tokio::net::TcpListener;

use crate::http;
use crate::state::AppState;

/// Serves until `shutdown` completes, then lets in-flight requests finish and
/// records the denials still being gathered.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher = tokio::spawn({
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(crate::auth::DENIAL_WINDOW);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                // Not raced against the stop: a flush always finishes writing.
                state.denials.flush(&state, false).await;
            }
        }
    });
    let served = axum::serve(listener, http::router(state.clone())).with_graceful_shutdown(shutdown).await;
    let _ = stop.send(());
    let _ = flusher.await;
    state.denials.flush(&state, true).await;
    served
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down; finishing in-flight requests");
}
