//! Helpers of the simulators' smoke tests: a sandbox on a free loopback port, a loopback
//! webhook receiver, a control-API client, reading a cursor listing, and running futures
//! concurrently.

use actix_web::web::Bytes;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{start, SandboxConfig, SandboxHandle};

/// A sandbox on a free loopback port.
pub(crate) async fn sandbox(workers: usize) -> SandboxHandle {
    start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers,
    })
    .await
    .unwrap()
}

/// A loopback receiver answering every `POST /hook` 200 and sending `read(request, body)`
/// to the returned channel; answers its URL, the channel and the server (stop it at the end).
pub(crate) fn webhook_receiver<Received, Read>(
    read: Read,
) -> (
    String,
    mpsc::UnboundedReceiver<Received>,
    actix_web::dev::ServerHandle,
)
where
    Received: Send + 'static,
    Read: Fn(&HttpRequest, Bytes) -> Received + Clone + Send + 'static,
{
    let (hook_sender, hook_receiver) = mpsc::unbounded_channel::<Received>();
    let receiver = HttpServer::new(move || {
        let hook_sender = hook_sender.clone();
        let read = read.clone();
        App::new().route(
            "/hook",
            web::post().to(move |request: HttpRequest, body: Bytes| {
                let _ = hook_sender.send(read(&request, body));
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let hook_url = format!("http://{}/hook", receiver.addrs()[0]);
    let receiver = receiver.run();
    let receiver_handle = receiver.handle();
    actix_web::rt::spawn(receiver);
    (hook_url, hook_receiver, receiver_handle)
}

/// A client of one simulator's control API (`{base}{prefix}{path}`).
pub(crate) struct ControlClient {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    prefix: &'static str,
}

impl ControlClient {
    pub(crate) fn new(handle: &SandboxHandle, prefix: &'static str) -> ControlClient {
        ControlClient {
            http: reqwest::Client::new(),
            base: handle.base_url(),
            prefix,
        }
    }

    /// A JSON request to the control API: its status and JSON answer (`null` if none).
    pub(crate) async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{}{path}", self.base, self.prefix))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Every item id of an `{"items", "next_cursor"}` listing: `list(query)` answers one page
/// (status and JSON); pages are followed by `cursor=` until `next_cursor` is null.
pub(crate) async fn read_all_pages<List, Page>(first_query: &str, mut list: List) -> Vec<String>
where
    List: FnMut(String) -> Page,
    Page: std::future::Future<Output = (u16, Value)>,
{
    let mut ids = Vec::new();
    let mut query = first_query.to_owned();
    loop {
        let (status, page) = list(query).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("cursor={cursor}"),
            None => return ids,
        }
    }
}

/// Runs the futures concurrently on this task (no `futures` crate in the sandbox).
pub(crate) async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(done.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(ready) => *output = Some(ready),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}
