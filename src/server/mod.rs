//! Serving: the accept loop and graceful shutdown. The accept loop is ours (not
//! `axum::serve`) so that the header read timeout, header limits and the drain deadline are
//! ours to set; [`workers`] serves connections thread-per-core, [`endpoints`] answers the
//! reserved `/_credproxy/*` paths.

pub mod endpoints;
pub mod workers;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::App;
use endpoints::router;
use workers::{connection_builder, spawn_worker};

pub use endpoints::metrics_router;

/// Serves until `shutdown` completes, then stops accepting and drains in-flight requests for
/// up to [`App::drain_timeout`] (default [`crate::state::DRAIN_TIMEOUT`]).
///
/// With more than one serving thread ([`App::threads`]), each runs its own single-threaded
/// runtime and serves whole connections: a connection, its requests and their upstream
/// connections stay on one thread, like nginx's worker processes, so no request pays for
/// waking another thread. Each accepted connection goes to the thread serving the fewest.
/// With one, connections are served on the calling runtime.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router(app.clone());
    let builder = connection_builder(&app);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = (0..app.threads())
        .map(|i| {
            spawn_worker(
                i,
                app.clone(),
                router.clone(),
                builder.clone(),
                stopped.clone(),
            )
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Deregistered from this runtime, to be registered with the worker's.
        let mut handed = match stream.into_std() {
            Ok(stream) => (stream, peer),
            Err(err) => {
                tracing::warn!(error = %err, "cannot hand over an accepted connection");
                continue;
            }
        };
        loop {
            let Some(worker) = workers
                .iter()
                .filter(|w| !w.connections.is_closed())
                .min_by_key(|w| w.open.load(Ordering::Acquire))
            else {
                // Nothing can serve: stop, so the platform restarts the instance.
                return Err(std::io::Error::other(
                    "every serving thread has stopped; exiting",
                ));
            };
            worker.open.fetch_add(1, Ordering::AcqRel);
            match worker.connections.send(handed) {
                Ok(()) => break,
                Err(returned) => {
                    // A thread that stopped is never picked again; the next one serves it.
                    worker.open.fetch_sub(1, Ordering::AcqRel);
                    tracing::error!(
                        "a serving thread has stopped; handing its connections to the others"
                    );
                    handed = returned.0;
                }
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    // Closing a worker's queue makes it drain its connections and end.
    let (drained, threads): (Vec<_>, Vec<_>) = workers
        .into_iter()
        .map(|w| {
            drop(w.connections);
            (w.drained, w.thread)
        })
        .unzip();
    let all_drained = async move {
        for worker in drained {
            let _ = worker.await;
        }
    };
    tokio::select! {
        () = all_drained => tracing::info!("drained"),
        () = tokio::time::sleep(app.drain_timeout) => {
            tracing::warn!(
                seconds = app.drain_timeout.as_secs(),
                "in-flight requests still running at the drain deadline; exiting"
            );
            // What is cut from now on is audited as `shutdown`, not as the caller's doing.
            app.audit.begin_shutdown();
        }
    }
    let _ = stop.send(true);
    // Each thread drops what it still runs (writing those audit entries) and ends.
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    Ok(())
}
