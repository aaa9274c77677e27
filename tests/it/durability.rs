//! Large blobs in bounded memory, crash safety under `kill -9`, and graceful
//! shutdown that lets in-flight uploads finish.

use std::io::Write;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio_util::io::ReaderStream;

use crate::backends::Backend;
use crate::harness::{TestServer, data, independent_b3, independent_b3_bytes};
use crate::on_both_backends;

#[tokio::test]
async fn a_1_gib_blob_streams_both_ways_in_bounded_memory() {
    let server = TestServer::start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("source");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        let block = data(1 << 20, 42);
        for i in 0..1024u32 {
            file.write_all(&i.to_le_bytes()).unwrap();
            file.write_all(&block[4..]).unwrap();
        }
    }
    let digest = independent_b3(&source);
    let path = format!("/v1/repos/acme/big/blobs/{digest}");
    let file = tokio::fs::File::open(&source).await.unwrap();
    let put = server
        .request(Method::PUT, &path, &token)
        .header("content-length", (1u64 << 30).to_string())
        .body(reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, 1 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{}", put.text().await.unwrap());
    let after_upload = server.peak_rss_kib();

    let mut get = server.request(Method::GET, &path, &token).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let target = scratch.path().join("download");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&target).unwrap());
    while let Some(chunk) = get.chunk().await.unwrap() {
        out.write_all(&chunk).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    assert_eq!(independent_b3(&target), digest);
    let peak = server.peak_rss_kib();
    eprintln!("amberd peak RSS: {after_upload} KiB after a 1 GiB upload, {peak} KiB after the download");
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB exceeds 100 MiB");
}

#[tokio::test]
async fn kill_9_during_uploads_loses_nothing_acknowledged_and_shows_nothing_partial() {
    let mut server = TestServer::start().await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let blobs: Vec<Vec<u8>> = (0..20).map(|i| data(4 << 20, 100 + i)).collect();
    let digests: Vec<String> = blobs.iter().map(|b| independent_b3_bytes(b)).collect();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, blob) in blobs.iter().enumerate() {
        // Each upload trickles in 64 KiB pieces so that some are mid-flight at the kill.
        let pieces: Vec<Vec<u8>> = blob.chunks(64 << 10).map(<[u8]>::to_vec).collect();
        let delay = Duration::from_millis(3 + (i as u64 % 5) * 4);
        let body = futures_util::stream::unfold(pieces.into_iter(), move |mut it| async move {
            tokio::time::sleep(delay).await;
            it.next().map(|piece| (Ok::<_, std::io::Error>(piece), it))
        });
        let request = server
            .request(Method::PUT, &format!("/v1/repos/acme/crash/blobs/{}", digests[i]), &token)
            .body(reqwest::Body::wrap_stream(body));
        let acked = acked_tx.clone();
        tokio::spawn(async move {
            if let Ok(response) = request.send().await
                && response.status() == StatusCode::CREATED
            {
                let _ = acked.send(i);
            }
        });
    }
    drop(acked_tx);
    // Wait until a few uploads are acknowledged, then pull the plug.
    let mut acked = Vec::new();
    while acked.len() < 3 {
        acked.push(tokio::time::timeout(Duration::from_secs(60), acked_rx.recv()).await.unwrap().unwrap());
    }
    server.kill9();
    while let Ok(i) = acked_rx.try_recv() {
        acked.push(i);
    }
    assert!(acked.len() < 20, "every upload finished before the kill; the test proved nothing");

    server.restart();
    assert_eq!(server.staging_entries(), 0, "staging was not reclaimed");
    for (i, digest) in digests.iter().enumerate() {
        let response =
            server.request(Method::GET, &format!("/v1/repos/acme/crash/blobs/{digest}"), &token).send().await.unwrap();
        if acked.contains(&i) {
            assert_eq!(response.status(), StatusCode::OK, "acknowledged blob {i} lost");
        }
        if response.status() == StatusCode::OK {
            let body = response.bytes().await.unwrap();
            assert_eq!(independent_b3_bytes(&body), *digest, "blob {i} is partial");
        } else {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            assert!(!server.blob_file(digest).exists() || std::fs::read(server.blob_file(digest)).unwrap() == blobs[i]);
        }
    }
}

async fn sigterm_lets_an_in_flight_upload_finish(backend: Backend) {
    let mut server = TestServer::on(backend).await;
    let token = server.token(&[("acme/*", &["push", "pull"])]).await;
    let blob = data(2 << 20, 77);
    let digest = independent_b3_bytes(&blob);
    let pieces: Vec<Vec<u8>> = blob.chunks(128 << 10).map(<[u8]>::to_vec).collect();
    let body = futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        it.next().map(|piece| (Ok::<_, std::io::Error>(piece), it))
    });
    let upload = tokio::spawn(
        server
            .request(Method::PUT, &format!("/v1/repos/acme/web/blobs/{digest}"), &token)
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopper = tokio::task::spawn_blocking(move || {
        let clean = server.terminate();
        (server, clean)
    });
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (mut server, clean) = stopper.await.unwrap();
    assert!(clean, "amberd did not exit cleanly");
    server.restart();
    let get = server.request(Method::GET, &format!("/v1/repos/acme/web/blobs/{digest}"), &token).send().await.unwrap();
    assert_eq!(independent_b3_bytes(&get.bytes().await.unwrap()), digest);
}

on_both_backends!(sigterm_lets_an_in_flight_upload_finish,);

/// A SIGTERM as soon as the port answers is a clean stop (exit 0), never the
/// signal's default action: the handler is installed before anything listens.
#[tokio::test]
async fn a_sigterm_right_after_start_stops_cleanly() {
    for _ in 0..10 {
        let mut server = TestServer::start().await;
        assert!(server.terminate(), "amberd exited with a failure on an early SIGTERM");
    }
}
