//! Serving: already bound listeners (the API's, and optionally one for
//! `/metrics`), the state, and a shutdown future (the shape of mini-redis).

mod connections;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use amber_core::wire::RunKind;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use self::connections::{ConnectionCounters, ConnectionLimits};
use crate::http;
use crate::state::AppState;

/// How often a server re-reads the signing keys, so that replicas pick up a
/// key rotated beside them.
pub const KEY_REFRESH: Duration = Duration::from_secs(5);
/// Between passes that discard expired uploads (more often when the expiry is shorter).
const UPLOAD_EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// Serves the API (and `GET /metrics` on its own listener, if given) until
/// `shutdown` completes, then lets in-flight requests finish within the
/// shutdown grace and records the denials still being gathered. Meanwhile it
/// flushes gathered denials every second and re-reads the signing keys every
/// [`KEY_REFRESH`].
pub async fn serve(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<Arc<tls::Certificates>>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = &state.config.limits;
    let fd_limit = connections::raise_fd_limit();
    let connection_limits = ConnectionLimits {
        max_connections: limits.max_connections.unwrap_or((fd_limit / 2).max(64) as usize),
        header_timeout: limits.header_timeout,
        idle_timeout: limits.idle_timeout,
        body_idle_timeout: limits.body_idle_timeout,
    };
    tracing::debug!(?connection_limits, fd_limit, "connection limits");
    // Drained within the grace, less a little for the last audit flush.
    let drain = limits.shutdown_grace.saturating_sub(FINAL_FLUSH).max(Duration::from_secs(1));
    let stopping = CancellationToken::new();
    tokio::spawn({
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    });
    let metrics = metrics_listener.map(|listener| {
        let router = http::metrics_router(state.clone());
        tokio::spawn(connections::serve(
            listener,
            None,
            router,
            ConnectionLimits { max_connections: 64, ..connection_limits.clone() },
            Arc::default(),
            stopping.clone(),
            drain,
        ))
    });
    // Cancelled once the API has stopped: ends the housekeeping task.
    let stop = CancellationToken::new();
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
                    _ = denials.tick() => state.denials.flush(&state.meta, &state.signer, false).await,
                    _ = keys.tick() => {
                        for signer in [&state.signer, state.log.signer()] {
                            if let Err(err) = signer.refresh(&state.meta).await {
                                tracing::warn!(error = %err, "could not re-read the signing keys; signing with those last read");
                            }
                        }
                        // What other replicas quarantined or healed.
                        if let Err(err) = state.quarantine.refresh(&state.meta).await {
                            tracing::warn!(error = %err, "could not re-read the quarantined blobs");
                        }
                    }
                    () = stop.cancelled() => break,
                }
            }
        }
    });
    // Each scheduled run is a run like one asked for (`crate::runs`), skipped
    // while one of its kind is under way. Stopping mid-run is safe: each
    // expiry and unlink is its own transaction, marked digests are finished
    // by the next reclaim, and the next run does the rest.
    let retention = state.config.retention_interval.map(|every| {
        let (state, actor) = (state.clone(), crate::lifecycle::scheduled_actor());
        periodically(every, stop.clone(), move || {
            let (state, actor) = (state.clone(), actor.clone());
            async move {
                let by = crate::runs::started_by(&actor);
                crate::runs::scheduled(&state, RunKind::Retention, &by, |state, progress| async move {
                    crate::runs::outcome(crate::lifecycle::run_all(&state, &actor, &progress).await)
                })
                .await
            }
        })
    });
    let reclaim = state.config.reclaim_interval.map(|every| {
        let (state, actor) = (state.clone(), crate::lifecycle::reclaim::scheduled_actor());
        periodically(every, stop.clone(), move || {
            let (state, actor) = (state.clone(), actor.clone());
            async move {
                let by = crate::runs::started_by(&actor);
                crate::runs::scheduled(&state, RunKind::Reclaim, &by, |state, progress| async move {
                    let grace = state.config.reclaim_grace;
                    crate::runs::outcome(crate::lifecycle::reclaim::run(&state, &actor, grace, &progress).await)
                })
                .await
            }
        })
    });
    // Unfinished uploads past their expiry, and bytes no upload owns.
    // Stopping mid-pass is safe: an upload is discarded bytes first, record last.
    let uploads = periodically(UPLOAD_EXPIRY_CHECK.min(state.config.upload_expiry), stop.clone(), {
        let state = state.clone();
        move || {
            let state = state.clone();
            async move {
                match crate::push::resumable::expire(&state).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(uploads = n, "discarded expired uploads"),
                    Err(err) => {
                        tracing::warn!(error = %err, "discarding expired uploads failed; the next pass retries")
                    }
                }
            }
        }
    });
    // An initial admin token's file left behind is mentioned once a day.
    let left_behind = periodically(crate::auth::initial::LEFT_BEHIND, stop.clone(), {
        let config = state.config.clone();
        move || {
            crate::auth::initial::warn_if_left(&config);
            std::future::ready(())
        }
    });
    let oidc_keys = (!state.config.oidc.issuers.is_empty()).then(|| {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move { state.oidc.refresh_forever(stop).await })
    });
    let log = tokio::spawn({
        let (state, stop) = (state.clone(), stop.clone());
        async move {
            tokio::select! {
                () = state.log.run(&state.meta) => {}
                () = stop.cancelled() => {}
            }
        }
    });
    let witnesses = (!state.log.witnesses.is_empty()).then(|| {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = state.log.witnesses.run(&state.log, &state.meta, &state.signer) => {}
                () = stop.cancelled() => {}
            }
        })
    });
    let scrub = (state.config.scrub_rate > 0).then(|| {
        tokio::spawn(crate::lifecycle::scrub::scrub_forever(state.clone(), state.config.scrub_rate, stop.clone()))
    });
    let doors = if state.config.oci { vec![crate::oci::door()] } else { Vec::new() };
    let router = http::router(state.clone(), doors);
    let acceptor = match &tls {
        Some(certificates) => {
            tokio::spawn(certificates.clone().watch(stop.clone()));
            let config = certificates.server_config().map_err(std::io::Error::other)?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    let counters = state.metrics.connections.clone();
    connections::serve(listener, acceptor, router, connection_limits, counters, stopping, drain).await;
    stop.cancel();
    // Runs under way record that they stopped (the next run goes on).
    state.running.stop(RUNS_STOP).await;
    let finish = async {
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        let _ = housekeeping.await;
        for task in [retention, reclaim, scrub, oidc_keys, witnesses, Some(log), Some(uploads), Some(left_behind)]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        state.denials.flush(&state.meta, &state.signer, true).await;
        // What the last moments recorded, covered before the process ends.
        if let Err(err) = state.log.sign_if_grown(&state.meta).await {
            tracing::warn!(error = %err, "could not sign a last log checkpoint");
        }
    };
    if tokio::time::timeout(FINAL_FLUSH, finish).await.is_err() {
        tracing::warn!("the last audit flush did not finish in time; repeats of recent denials may be uncounted");
    }
    Ok(())
}

/// Time runs under way get to record that they stopped.
const RUNS_STOP: Duration = Duration::from_secs(2);

/// Time kept at the end of the grace for recording the last denials.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when it is first polled: call it before the listener is bound,
/// so that a SIGTERM that comes as soon as the port answers is a clean stop
/// rather than the default action (the process killed by the signal).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let (terminate, interrupt) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let wait = |stream: std::io::Result<tokio::signal::unix::Signal>| async move {
            match stream {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait(terminate) => {},
            () = wait(interrupt) => {},
        }
        tracing::info!("shutting down; finishing in-flight requests");
    }
}

/// Runs `pass` every `every` (the first after one period) until `stop`; a
/// pass under way when `stop` comes is dropped, so every pass must be safe
/// to stop anywhere.
fn periodically<F, Fut>(every: Duration, stop: CancellationToken, mut pass: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => break,
            }
            tokio::select! {
                () = pass() => {}
                () = stop.cancelled() => break,
            }
        }
    })
}
