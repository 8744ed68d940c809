//! Thread-per-core serving: each serving thread runs its own single-threaded runtime and
//! serves whole connections, so a connection, its requests and their upstream connections
//! stay on one thread (like nginx's worker processes). Also the per-connection hyper
//! builder (header read timeout, header limits) and the service that sends the three
//! reserved paths to the router and everything else straight to the pipeline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::TryFutureExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::ServiceExt as _;

use crate::state::{App, ServingThread};

/// hyper's HTTP/1 and HTTP/2 connection builder.
pub type ConnBuilder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// The connection builder: header read timeout, at most 100 headers, 64 KiB buffers.
pub fn connection_builder(app: &App) -> ConnBuilder {
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.server.header_read_timeout)
        .max_headers(100)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    builder
}

/// Serves one accepted connection on the current runtime until it closes or drains.
pub fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    thread: usize,
    app: &Arc<App>,
    router: &axum::Router,
    builder: &ConnBuilder,
    graceful: hyper_util::server::graceful::Watcher,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    let router = router.clone();
    let app = app.clone();
    // Proxied requests skip the router (its matching, boxing and request extensions): it
    // only answers the three fixed `/_credproxy/*` endpoints.
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            if super::endpoints::is_router_path(req.uri().path()) {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(ServingThread(thread));
                futures_util::future::Either::Left(
                    router
                        .clone()
                        .oneshot(req.map(Body::new))
                        .map_ok(|r| r.map(Reply::Left)),
                )
            } else {
                let app = app.clone();
                futures_util::future::Either::Right(async move {
                    let thread = Some(ServingThread(thread));
                    // A request without a body (most of them) boxes none.
                    let req = if http_body::Body::is_end_stream(req.body()) {
                        req.map(|_| Body::empty())
                    } else {
                        req.map(Body::new)
                    };
                    let response =
                        crate::pipeline::handle(&app, Some(peer.ip()), thread, req).await;
                    Ok::<_, std::convert::Infallible>(response.map(Reply::Right))
                })
            }
        });
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let conn = graceful.watch(conn);
    async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}

/// A response body as hyper sends it: the router's, or a proxied response's, unboxed.
pub type Reply = http_body_util::Either<Body, crate::pipeline::Served>;

/// A serving thread: its own single-threaded runtime, fed accepted connections.
pub struct Worker {
    /// Accepted connections to serve.
    pub connections: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Connections it is serving now.
    pub open: Arc<AtomicUsize>,
    /// Completes (or fails) once it has drained after its queue was closed.
    pub drained: tokio::sync::oneshot::Receiver<()>,
    /// The thread, joined after the drain so that its requests' entries are written.
    pub thread: std::thread::JoinHandle<()>,
}

/// Counts one connection of a serving thread while it lives (also if its task panics).
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts serving thread `index`. It serves the connections it is handed, each for its
/// whole life; when its queue closes it drains them and ends.
pub fn spawn_worker(
    index: usize,
    app: Arc<App>,
    router: axum::Router,
    builder: ConnBuilder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
    let (drained_tx, drained) = tokio::sync::oneshot::channel();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    let thread = std::thread::Builder::new()
        .name(format!("credproxy-serve-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let graceful = hyper_util::server::graceful::GracefulShutdown::new();
                while let Some((stream, peer)) = rx.recv().await {
                    // Registered with this thread's runtime, so its readiness events and
                    // every task of the connection stay on this thread.
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(err) => {
                            counter.fetch_sub(1, Ordering::AcqRel);
                            tracing::warn!(error = %err, "cannot register an accepted connection");
                            continue;
                        }
                    };
                    let open = OpenConnection(counter.clone());
                    let conn = serve_connection(
                        stream,
                        peer,
                        index,
                        &app,
                        &router,
                        &builder,
                        graceful.watcher(),
                    );
                    tokio::spawn(async move {
                        let _open = open;
                        conn.await;
                    });
                }
                let mut deadline = stop.clone();
                let drain = async move {
                    graceful.shutdown().await;
                    let _ = drained_tx.send(());
                    // Tasks on this runtime can still serve other threads (pooled
                    // connections of a shared mutual-TLS client, a shared token mint): it
                    // lives until every thread has drained.
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                tokio::select! {
                    () = drain => {}
                    _ = deadline.wait_for(|stop| *stop) => {}
                }
            });
            // Dropping the runtime drops every request still running: their audit guards
            // write their entries now, before the thread is joined and the log flushed.
            drop(runtime);
        })?;
    Ok(Worker {
        connections: tx,
        open,
        drained,
        thread,
    })
}
