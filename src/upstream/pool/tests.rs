use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt as _, Full};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::upstream::UpstreamClient;

/// An HTTP/1 upstream counting the connections it accepted; `/big` answers 1 MiB, anything
/// else the request's target and `Host`.
async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = if req.uri().path() == "/big" {
                        Bytes::from(vec![b'x'; 1 << 20])
                    } else {
                        let host = req.headers().get(header::HOST).cloned();
                        Bytes::from(format!("{} {:?}", req.uri(), host))
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn client() -> UpstreamClient {
    UpstreamClient::with_system_roots().unwrap()
}

async fn get(client: &UpstreamClient, url: &str) -> Response<ResponseBody> {
    let mut request = Request::new(UpstreamBody::empty());
    *request.uri_mut() = url.parse().unwrap();
    client.request(request).await.unwrap()
}

async fn text(response: Response<ResponseBody>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_body_is_read() {
    let (addr, accepted) = upstream().await;
    let client = client();
    for i in 0..5 {
        let body = text(get(&client, &format!("http://{addr}/v1/items?n={i}")).await).await;
        // Origin form on the request line, `Host` from the authority.
        assert_eq!(body, format!("/v1/items?n={i} Some(\"{addr}\")"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_default_port_is_left_out_of_host() {
    let uri: Uri = "http://example.test:80/x".parse().unwrap();
    let host = client().inner.host(&uri).unwrap();
    assert_eq!(host.host, "example.test");
    let uri: Uri = "https://example.test:8443/x".parse().unwrap();
    let host = client().inner.host(&uri).unwrap();
    assert_eq!(host.host, "example.test:8443");
    let uri: Uri = "/relative".parse().unwrap();
    assert!(client().inner.host(&uri).is_err());
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_are_pooled_after() {
    let (addr, accepted) = upstream().await;
    let client = client();
    let url = format!("http://{addr}/big");
    // Both heads in hand, neither body read: two connections.
    let (a, b) = tokio::join!(get(&client, &url), get(&client, &url));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(text(a).await.len(), 1 << 20);
    assert_eq!(text(b).await.len(), 1 << 20);
    for _ in 0..4 {
        let (a, b) = tokio::join!(get(&client, &url), get(&client, &url));
        assert_eq!(text(a).await.len() + text(b).await.len(), 2 << 20);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the two were reused");
}

#[tokio::test]
async fn a_body_dropped_part_way_closes_its_connection() {
    let (addr, accepted) = upstream().await;
    let client = client();
    let mut body = get(&client, &format!("http://{addr}/big"))
        .await
        .into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| d.len() < 1 << 20));
    drop(body);
    // The next request cannot use a connection with the rest of a body on it.
    assert!(
        text(get(&client, &format!("http://{addr}/small")).await)
            .await
            .starts_with("/small")
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    let (addr, accepted) = raw_upstream(false).await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            text(get(&client, &format!("http://{addr}/")).await).await,
            "ok"
        );
        // Time for the close to reach the pooled connection's task.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_expire_after_the_idle_timeout() {
    let (addr, accepted) = upstream().await;
    let client = client();
    let url = format!("http://{addr}/x");
    let (a, b) = tokio::join!(get(&client, &url), get(&client, &url));
    text(a).await;
    text(b).await;
    let host = client.inner.host(&url.parse().unwrap()).unwrap();
    // Wait for both connections to be back and ready.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(host.idle().h1.len(), 2);
    expire(
        &mut host.idle().h1,
        Instant::now() + POOL_IDLE_TIMEOUT - Duration::from_secs(1),
    );
    assert_eq!(host.idle().h1.len(), 2, "not yet idle long enough");
    expire(&mut host.idle().h1, Instant::now() + POOL_IDLE_TIMEOUT);
    assert_eq!(host.idle().h1.len(), 0);
    text(get(&client, &url).await).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a new connection after expiry"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut request = Request::new(UpstreamBody::empty());
    *request.uri_mut() = format!("http://{addr}/").parse().unwrap();
    let err = client().request(request).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
}

/// A raw upstream answering each connection's first request with keep-alive as soon as it
/// has its head. Then, with `keep_reading`, it reads whatever follows (a body) without ever
/// closing, so the answer can be over before the upload; without, it closes the idle
/// connection.
async fn raw_upstream(keep_reading: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                while keep_reading && matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_still_sending_a_request_body_is_not_handed_to_the_next_request() {
    let (addr, accepted) = raw_upstream(true).await;
    let client = client();
    // A request body that sends one chunk and then stalls: the upstream answers without
    // reading it, so the answer is over while the upload is not.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    tx.send(Ok(Bytes::from_static(b"first"))).unwrap();
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let body = UpstreamBody::Stream {
        inner: axum::body::Body::from_stream(chunks),
        seen: 0,
        limit: u64::MAX,
        exceeded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let mut request = Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = format!("http://{addr}/upload").parse().unwrap();
    let early = client.request(request).await.unwrap();
    assert_eq!(text(early).await, "ok");
    // The next request gets a connection that can send now, not one behind the upload.
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        get(&client, &format!("http://{addr}/next")),
    )
    .await
    .expect("the next request waited behind another's upload");
    assert_eq!(text(next).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    drop(tx);
}

/// A request handed back by a closed connection is retried with the path and query it
/// carries: taking them from its URI again gives the same request line (HTTP/1) and the
/// same `:path` (HTTP/2).
#[test]
fn a_retried_request_keeps_its_path_and_query() {
    let host = Host {
        dst: "http://upstream.test:8080/".parse().expect("dst"),
        host: HeaderValue::from_static("upstream.test:8080"),
        idle: Mutex::new(Idle::default()),
    };
    for target in ["/", "/v1/items", "/v1/items?page=2&q=a%20b", "/?x=1"] {
        let mut uri: Uri = format!("http://upstream.test:8080{target}")
            .parse()
            .expect("uri");
        // HTTP/1, twice: as sent, then as retried from the handed-back request.
        for _ in 0..2 {
            uri = origin_form(std::mem::take(&mut uri).into_parts().path_and_query);
            assert_eq!(uri.to_string(), target);
        }
        // HTTP/2: absolute, then back.
        let absolute = host
            .absolute(uri.clone().into_parts().path_and_query)
            .expect("absolute");
        assert_eq!(
            absolute.to_string(),
            format!("http://upstream.test:8080{target}")
        );
        let again = host
            .absolute(absolute.into_parts().path_and_query)
            .expect("absolute");
        assert_eq!(
            again.to_string(),
            format!("http://upstream.test:8080{target}")
        );
    }
}
