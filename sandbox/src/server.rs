//! The one HTTP server every simulator mounts its routes on, and the request helpers they
//! share: closing a connection unanswered (the timeout and drop-after-apply faults) and
//! percent-decoded path parameters, status codes and query fields.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::SandboxConfig;

/// Bulk webhook deliveries and 100-item batches are large; real Virtuous limits are unknown.
const BODY_LIMIT_BYTES: usize = 8 * 1024 * 1024;

/// A duplicate of the connection's socket descriptor, stashed at accept so a handler can
/// close the connection unanswered. Owning a duplicate (closed when the connection's data is
/// dropped) means a late shutdown, after a hang whose client already gave up, can only ever
/// hit this connection's socket, never a newer connection that reused the fd number.
#[derive(Debug)]
struct ConnectionSocket(OwnedFd);

/// Binds the server; `routes` mounts the simulators' routes and their shared state (run
/// once per worker). Unmatched paths answer 404.
pub(crate) fn bind<Routes>(
    config: SandboxConfig,
    routes: Routes,
) -> std::io::Result<(Server, std::net::SocketAddr)>
where
    Routes: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(web::PayloadConfig::new(BODY_LIMIT_BYTES))
            .configure(routes.clone())
            .default_service(web::to(HttpResponse::NotFound))
    })
    .on_connect(|connection, extensions| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            match tcp.as_fd().try_clone_to_owned() {
                Ok(socket) => {
                    extensions.insert(ConnectionSocket(socket));
                }
                Err(error) => tracing::warn!(error = %error, "sandbox could not duplicate a socket; close faults will answer 500 instead"),
            }
        }
    })
    // The host process (steward serve, a test) owns signals, not the embedded sandbox.
    .disable_signals()
    .backlog(1024);
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server.bind(config.listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("the sandbox bound no address"))?;
    Ok((server.run(), addr))
}

/// Mounts one source simulator: its API under `api.0` and its control API under `control.0`
/// (each configured by its function), both with `registry` as app data; run once per server
/// worker. Mount it before any `/_sandbox` scope: a scope that matches a prefix does not
/// fall through.
pub(crate) fn mount_simulator<Registry: Send + Sync + 'static>(
    registry: &std::sync::Arc<Registry>,
    api: (&'static str, fn(&mut web::ServiceConfig)),
    control: (&'static str, fn(&mut web::ServiceConfig)),
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    let registry = web::Data::from(std::sync::Arc::clone(registry));
    move |config| {
        config
            .service(
                web::scope(api.0)
                    .app_data(registry.clone())
                    .configure(api.1),
            )
            .service(
                web::scope(control.0)
                    .app_data(registry.clone())
                    .configure(control.1),
            );
    }
}

/// Closes the request's connection without writing a byte of response.
pub(crate) fn close_connection(request: &HttpRequest) {
    if let Some(ConnectionSocket(socket)) = request.conn_data::<ConnectionSocket>() {
        // SAFETY: `socket` is an open descriptor we own (it lives as long as the request's
        // connection data); shutdown ends the stream for every descriptor of the socket,
        // so actix sees the connection end and closes its own descriptor as usual.
        unsafe {
            libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

/// A path parameter, fully percent-decoded ("" when absent). The router decodes most
/// escapes but keeps `%2F`, `%25` and `%2B` encoded so segments stay unambiguous; ids such
/// as `ch 1/a` arrive as `ch%201%2Fa` and must round-trip.
pub(crate) fn path_param(request: &HttpRequest, name: &str) -> String {
    percent_decode(request.match_info().get(name).unwrap_or(""))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// An HTTP status from its number; 500 for a number that is not one.
pub(crate) fn status_code(status: u16) -> actix_web::http::StatusCode {
    use actix_web::http::StatusCode;
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The fields of a query string or an `x-www-form-urlencoded` body (none if it is not one).
pub(crate) fn query_fields(text: &str) -> std::collections::HashMap<String, String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(text)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// A numeric id path parameter; `None` (→ 404) when it is not a number.
pub(crate) fn id_param(request: &HttpRequest) -> Option<u64> {
    path_param(request, "id").parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding_restores_protected_characters() {
        // Goal: the escapes the router keeps (%2F, %25, %2B) are decoded; bad escapes stay.
        assert_eq!(super::percent_decode("ch%201%2Fa"), "ch 1/a");
        assert_eq!(super::percent_decode("100%25%2Bx"), "100%+x");
        assert_eq!(super::percent_decode("50%"), "50%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
