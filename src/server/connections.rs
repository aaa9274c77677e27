//! The accept loop and every connection's lifetime, where axum's `serve`
//! gives no say: a header timeout (hyper's, from the connection opening and
//! after each response), an idle timeout (no byte moved either way), and a
//! cap on open connections that closes idle ones first to make room.
//!
//! With TLS, the handshake happens on the connection's own task and counts
//! in the header timeout like a request's first bytes.
//!
//! One sweeper task checks every connection twice a second, rather than a
//! timer per connection. A connection is *idle* while no request is in
//! flight on it (a response counts until its body has been sent), and it may
//! be closed at any moment then without losing anything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

pub use crate::metrics::ConnectionCounters;

/// How often the sweeper looks for connections past a timeout.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Most concurrent HTTP/2 streams on one connection.
const MAX_H2_STREAMS: u32 = 64;

/// The connection limits, from [`crate::config::Limits`].
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// A request body that makes no progress this long fails (`408`).
    pub body_idle_timeout: Duration,
}

/// What the accept loop and the sweeper know of one connection.
struct Tracked {
    opened: Instant,
    activity: Arc<Activity>,
    close: CancellationToken,
}

/// Shared between a connection's I/O, its requests and the sweeper.
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Whether any request has begun (its headers arrived).
    started: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        self.last_io_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Open connections by id, which grows with accept order, so the first
/// idle one found is the oldest.
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Tracked>,
    /// Open connections not yet told to close.
    live: usize,
}

impl Table {
    /// Tells a connection to close (its task then drops it).
    fn close(&mut self, id: u64) {
        if let Some(tracked) = self.open.get(&id)
            && !tracked.close.is_cancelled()
        {
            tracked.close.cancel();
            self.live -= 1;
        }
    }

    fn remove(&mut self, id: u64) {
        self.close(id);
        self.open.remove(&id);
    }
}

/// The bytes of one connection: plain, or TLS over TCP.
type Io = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` is
/// cancelled, then lets requests in flight finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    counters: Arc<ConnectionCounters>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    let tasks = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_H2_STREAMS);
    let builder = Arc::new(builder);
    let sweeper = tokio::spawn(sweep(table.clone(), limits.clone(), counters.clone(), shutdown.clone()));
    let epoch = Instant::now();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors or a connection reset before accept:
                // back off a moment instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !make_room(&table, limits.max_connections, &counters) {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream); // every open connection is busy: refuse this one
            continue;
        }
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            epoch,
            last_io_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
        });
        activity.touch();
        let close = CancellationToken::new();
        let id = {
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            table.next += 1;
            let id = table.next;
            table.open.insert(id, Tracked { opened: Instant::now(), activity: activity.clone(), close: close.clone() });
            table.live += 1;
            id
        };
        let (router, builder, table, shutdown) = (router.clone(), builder.clone(), table.clone(), shutdown.clone());
        let tls = tls.clone();
        let limits = limits.clone();
        let counters = counters.clone();
        counters.open.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            if let Some(stream) = handshake(stream, tls, &close, &shutdown).await {
                let accepted = Accepted { stream, peer, activity, close };
                serve_connection(&builder, accepted, router, limits.body_idle_timeout, shutdown).await;
            }
            table.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
            counters.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    sweeper.abort();
    drop(listener);
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(open = tasks.len(), "shutdown grace ended with connections still open; closing them");
    }
}

/// True when there is room for one more connection, closing the oldest idle
/// connection if that is what it takes.
fn make_room(table: &Mutex<Table>, max: usize, counters: &ConnectionCounters) -> bool {
    let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
    if table.live < max {
        return true;
    }
    let victim = table.open.iter().find(|(_, t)| !t.close.is_cancelled() && t.activity.idle()).map(|(id, _)| *id);
    match victim {
        Some(id) => {
            table.close(id);
            counters.shed.fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Closes connections whose first request has not arrived within the header
/// timeout (hyper times the later ones) and connections that moved no byte
/// for the idle timeout, whatever they were doing.
async fn sweep(
    table: Arc<Mutex<Table>>,
    limits: ConnectionLimits,
    counters: Arc<ConnectionCounters>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
        let expired: Vec<u64> = table
            .open
            .iter()
            .filter(|(_, tracked)| {
                let activity = &tracked.activity;
                let silent_start =
                    !activity.started.load(Ordering::Relaxed) && tracked.opened.elapsed() >= limits.header_timeout;
                !tracked.close.is_cancelled() && (silent_start || activity.quiet_for() >= limits.idle_timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            table.close(id);
            counters.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The connection's stream, after the TLS handshake if there is one; `None`
/// if the handshake failed, or the connection was closed (past the header
/// timeout, shed) or the server stops first.
async fn handshake(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    close: &CancellationToken,
    shutdown: &CancellationToken,
) -> Option<Io> {
    let Some(acceptor) = tls else { return Some(Either::Left(stream)) };
    tokio::select! {
        accepted = acceptor.accept(stream) => match accepted {
            Ok(stream) => Some(Either::Right(stream)),
            Err(err) => {
                tracing::debug!(error = %err, "TLS handshake failed");
                None
            }
        },
        () = close.cancelled() => None,
        () = shutdown.cancelled() => None,
    }
}

/// A connection just accepted, and what the accept loop keeps of it.
struct Accepted {
    stream: Io,
    peer: SocketAddr,
    activity: Arc<Activity>,
    close: CancellationToken,
}

async fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    accepted: Accepted,
    router: Router,
    body_idle: Duration,
    shutdown: CancellationToken,
) {
    let Accepted { stream, peer, activity, close } = accepted;
    let io = TokioIo::new(Watched { stream, activity: activity.clone(), rewritten: None, wrote: false });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let guard = InFlight::start(activity.clone());
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(request.map(|body| Body::new(TimeoutBody::new(body_idle, body))));
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Body::new(ResponseBody { body, _guard: guard })))
        }
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
        // Shed or past a timeout: dropping the connection closes the socket.
        () = close.cancelled() => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                () = close.cancelled() => {}
            }
        }
    }
}

/// Counts a request in flight from its headers until its response body has
/// been sent or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.started.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight.
struct ResponseBody {
    body: Body,
    _guard: InFlight,
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket that notes when bytes last moved, and gives hyper's own `400`
/// (sent for a request head it cannot parse) the JSON body every other error
/// has.
struct Watched {
    stream: Io,
    activity: Arc<Activity>,
    /// The JSON answer still to be written in place of hyper's bare one.
    rewritten: Option<(Vec<u8>, usize)>,
    /// Bytes were written: only the first write of a connection is surely
    /// the start of an answer's head (a later one may be a blob's bytes,
    /// which are never touched), so only an unparsable first request gets
    /// the JSON answer; a later one on the same connection gets hyper's.
    wrote: bool,
}

/// How hyper's HTTP/1 server starts its answer to an unparsable request head
/// (it then closes the connection). Amber's own answers always have a body.
const HYPER_BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n";

/// hyper's whole bare answer in `head`, with a JSON body instead.
fn json_bad_request(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(HYPER_BAD_REQUEST)?.strip_suffix(b"\r\n")?;
    if !rest.ends_with(b"\r\n") && !rest.is_empty() {
        return None;
    }
    let body = crate::error::unparsable_request_body();
    let mut answer = format!(
        "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(rest); // hyper's other headers (its date)
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(&body);
    Some(answer)
}

impl Watched {
    /// Writes what is left of a rewritten answer; ready once all of it is out.
    fn drain_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((answer, written)) = &mut self.rewritten {
            if *written == answer.len() {
                break;
            }
            match Pin::new(&mut self.stream).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if !self.wrote
            && let Some(answer) = json_bad_request(buf)
        {
            // Taken whole in place of hyper's; written now or at the flush.
            self.rewritten = Some((answer, 0));
            self.activity.touch();
            return match self.drain_rewritten(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        if self.rewritten.is_some() {
            // hyper closes after its 400: nothing more is written after it.
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
            self.wrote = true;
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && (self.rewritten.is_some() || (!self.wrote && first.starts_with(HYPER_BAD_REQUEST)))
        {
            return self.poll_write(cx, first);
        }
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
            self.wrote = true;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain_rewritten(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain_rewritten(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Raises the soft file-descriptor limit to the hard one and returns it.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        let raised = rustix::process::Rlimit { current: Some(hard), maximum: Some(hard) };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %err, "could not raise the file-descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}
