//! The web dashboard at `/ui/` on the admin listener (docs/dashboard.md).
//!
//! # Layout
//! - `mod.rs` — the routes: the login form, logout, the page, the embedded assets.
//! - `session.rs` — the sessions a login opens, the cookie, the CSRF check the `/v1`
//!   middleware (`auth.rs`) applies to calls made with a cookie.
//! - `assets/` — plain HTML, CSS and JavaScript, compiled into the binary (`include_str!`):
//!   no build step, no framework, no third-party origin. The page's scripts call the `/v1`
//!   JSON API with the session cookie; every answer is put in the DOM as text, never as HTML.
//!
//! `/ui` itself is not behind the bearer middleware: a browser cannot send the header. The
//! page is served only to a live session; the login form to anyone.

pub mod session;

use actix_web::http::header;
use actix_web::{middleware, web, HttpRequest, HttpResponse};

use super::auth::AdminToken;
use super::error::ApiError;
use super::read_body_limited;
use session::{
    cleared_cookie_header, csrf_matches, session_cookie, session_cookie_header, UiSessions,
};

/// Where the login form sends a browser with a live session, and where logout lands.
const PAGE_PATH: &str = "/ui/";
const LOGIN_PATH: &str = "/ui/login";
/// A login form's body is one token: anything longer is refused unread.
const LOGIN_BODY_LIMIT_BYTES: usize = 4_096;
/// How long a wrong token waits for its answer: with a 16-character minimum token, this
/// bounds guessing to a handful of tries a second per connection; no state is kept for it.
const LOGIN_FAILURE_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

/// Only this origin's scripts, styles and connections; no frames, no plugins, forms posting
/// only here. Scripts are files (no inline script), so injected markup cannot run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// The embedded assets under `/ui/assets/`: name, content type, bytes.
const ASSETS: [(&str, &str, &str); 6] = [
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "fleet.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/fleet.js"),
    ),
    (
        "tenant.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/tenant.js"),
    ),
    (
        "dead_letters.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dead_letters.js"),
    ),
    (
        "records.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/records.js"),
    ),
];

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/ui")
            .wrap(
                middleware::DefaultHeaders::new()
                    .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::X_FRAME_OPTIONS, "DENY"))
                    .add((header::REFERRER_POLICY, "no-referrer")),
            )
            // `NormalizePath::trim` turns `/ui/` into `/ui`.
            .service(web::resource("").route(web::get().to(page)))
            .service(
                web::resource("/login")
                    .route(web::get().to(login_form))
                    .route(web::post().to(login)),
            )
            .service(web::resource("/logout").route(web::post().to(logout)))
            .service(web::resource("/assets/{name}").route(web::get().to(asset))),
    );
}

/// `<`, `>`, `&` and quotes as entities: the one way text enters the server's HTML.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // Pages carry a CSRF token: never kept by a cache.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn login_page(status: actix_web::http::StatusCode, error: &str) -> HttpResponse {
    html(status, LOGIN_HTML.replace("{{error}}", &escape_html(error)))
}

/// `GET /ui/`: the dashboard for a live session, else the login form.
async fn page(request: HttpRequest, sessions: web::Data<UiSessions>) -> HttpResponse {
    let now_ms = steward_actors::ports::now_ms();
    let csrf_token = session_cookie(&request).and_then(|id| sessions.csrf_token(&id, now_ms));
    match csrf_token {
        Some(csrf_token) => html(
            actix_web::http::StatusCode::OK,
            INDEX_HTML.replace("{{csrf_token}}", &escape_html(&csrf_token)),
        ),
        None => see_other(LOGIN_PATH),
    }
}

async fn login_form() -> HttpResponse {
    login_page(actix_web::http::StatusCode::OK, "")
}

/// `POST /ui/login` (form field `token`): a right token opens a session and goes to the
/// page; a wrong one, after [`LOGIN_FAILURE_DELAY`], shows the form again and keeps nothing.
async fn login(
    request: HttpRequest,
    payload: web::Payload,
    token: web::Data<AdminToken>,
    sessions: web::Data<UiSessions>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body_limited(&request, payload, LOGIN_BODY_LIMIT_BYTES).await?;
    let presented = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    if !token.matches(&presented) {
        tracing::warn!("dashboard login refused: wrong admin token");
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        return Ok(login_page(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "That is not the admin token.",
        ));
    }
    let created = sessions.create(steward_actors::ports::now_ms());
    let over_https = request.connection_info().scheme() == "https";
    tracing::info!(sessions = sessions.len(), "dashboard login");
    let mut response = see_other(PAGE_PATH);
    response.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_str(&session_cookie_header(&created.id, over_https))
            .expect("the cookie is base64url"),
    );
    Ok(response)
}

/// `POST /ui/logout` (form field `csrf`): ends the session and clears the cookie. Without the
/// session's CSRF token nothing ends (a cross-site form cannot log an operator out).
async fn logout(
    request: HttpRequest,
    payload: web::Payload,
    sessions: web::Data<UiSessions>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body_limited(&request, payload, LOGIN_BODY_LIMIT_BYTES).await?;
    let presented = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let now_ms = steward_actors::ports::now_ms();
    if let Some(id) = session_cookie(&request) {
        match sessions.csrf_token(&id, now_ms) {
            Some(csrf_token) if csrf_matches(&csrf_token, &presented) => sessions.end(&id),
            Some(_) => {
                return Err(ApiError::new(
                    super::error::ErrorCode::CsrfFailed,
                    "logout needs the session's CSRF token",
                ))
            }
            None => {}
        }
    }
    let mut response = see_other(LOGIN_PATH);
    response.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_str(&cleared_cookie_header()).expect("ASCII"),
    );
    Ok(response)
}

/// `GET /ui/assets/{name}`: the embedded files (public: code, no data).
async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS
        .iter()
        .find(|(asset_name, _, _)| *asset_name == name.as_str())
    {
        Some((_, content_type, bytes)) => HttpResponse::Ok()
            .content_type(*content_type)
            // Revalidated on every load: a new binary's assets are used at once.
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(*bytes),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such asset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_covers_markup_and_quotes() {
        // Goal: text put in the server's HTML can open no tag and close no attribute.
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn pages_reference_only_embedded_assets() {
        // Goal: every script and stylesheet the pages load is embedded, and nothing loads
        // from another origin (no CDN: the page works on a closed network).
        for page in [INDEX_HTML, LOGIN_HTML] {
            for reference in page.split("/ui/assets/").skip(1) {
                let name = reference.split('"').next().unwrap();
                assert!(
                    ASSETS.iter().any(|(asset, _, _)| *asset == name),
                    "{name} is not embedded"
                );
            }
            assert!(!page.contains("http://") && !page.contains("https://"));
            assert!(!page.contains("<script>"), "no inline script (CSP)");
        }
        for (name, _, text) in ASSETS {
            // The SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("innerHTML")
                    && !text.contains("http://")
                    && !text.contains("https://"),
                "{name}: DOM text only, same origin only"
            );
        }
    }
}
