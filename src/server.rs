//! Serving: already bound listeners (the API's, and optionally one for
//! `/metrics`), the state, and a shutdown future (the shape of mini-redis).

use std::future::{Future, IntoFuture};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http;
use crate::state::AppState;

/// How often a server re-reads the signing keys, so that replicas pick up a
/// key rotated beside them.
pub const KEY_REFRESH: Duration = Duration::from_secs(5);

/// Serves the API (and `GET /metrics` on its own listener, if given) until
/// `shutdown` completes, then lets in-flight requests finish and
/// records the denials still being gathered. Meanwhile it flushes gathered
/// denials every second and re-reads the signing keys every [`KEY_REFRESH`].
pub async fn serve(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Cancelled once the API has stopped: ends the metrics server and the
    // housekeeping task.
    let stop = CancellationToken::new();
    let metrics = metrics_listener.map(|listener| {
        let served = axum::serve(listener, http::metrics_router(state.clone()))
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        tokio::spawn(served.into_future())
    });
    let housekeeping = tokio::spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move {
            let mut denials = tokio::time::interval(crate::auth::DENIAL_WINDOW);
            let mut keys = tokio::time::interval_at(tokio::time::Instant::now() + KEY_REFRESH, KEY_REFRESH);
            keys.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // The chosen branch's work is not raced against the stop: a
                // flush always finishes writing.
                tokio::select! {
                    _ = denials.tick() => state.denials.flush(&state, false).await,
                    _ = keys.tick() => {
                        if let Err(err) = state.signer.refresh(&state.meta).await {
                            tracing::warn!(error = %err, "could not re-read the signing keys; signing with those last read");
                        }
                    }
                    () = stop.cancelled() => break,
                }
            }
        }
    });
    let served = axum::serve(listener, http::router(state.clone())).with_graceful_shutdown(shutdown).await;
    stop.cancel();
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    let _ = housekeeping.await;
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
