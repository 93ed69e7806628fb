//! The dashboard's session security without a browser (docs/dashboard.md "Security"): a wrong
//! token gets no cookie; the cookie carries its flags; with a cookie, a state-changing `/v1`
//! call needs its own session's CSRF token (else 403 and nothing changes); logout ends the
//! session; every `/ui` answer carries the Content-Security-Policy.

use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{tenant_body, SpawnOptions, TestApp};

/// A client that shows redirects and keeps no cookies: each test step says what it sends.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A logged-in browser, as the server sees it: the cookie and the page's CSRF token.
struct Session {
    cookie: String,
    csrf_token: String,
}

async fn log_in(app: &TestApp, token: &str) -> reqwest::Response {
    plain_client()
        .post(format!("{}/ui/login", app.admin_url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

async fn open_session(app: &TestApp) -> Session {
    let response = log_in(app, &app.admin_token).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/");
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let page = plain_client()
        .get(format!("{}/ui/", app.admin_url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf_token = html
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    Session { cookie, csrf_token }
}

/// A `/v1` call with a session cookie and, optionally, a CSRF header.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf_token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = plain_client()
        .request(method, format!("{}{path}", app.admin_url))
        .header(COOKIE, cookie);
    if let Some(csrf_token) = csrf_token {
        request = request.header("X-CSRF-Token", csrf_token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Pauses the tenant with a cookie and, optionally, a CSRF header.
async fn pause(app: &TestApp, cookie: &str, csrf_token: Option<&str>) -> (StatusCode, Value) {
    call(
        app,
        Method::POST,
        "/v1/tenants/guarded/pause",
        cookie,
        csrf_token,
    )
    .await
}

/// The status of a read of the tenant with this cookie alone.
async fn reads(app: &TestApp, cookie: &str) -> StatusCode {
    call(app, Method::GET, "/v1/tenants/guarded", cookie, None)
        .await
        .0
}

#[actix_rt::test]
async fn sessions_need_the_token_and_their_own_csrf_token() {
    // Goal: the dashboard's login, cookie, CSRF and logout rules hold against the real binary.
    let app = TestApp::spawn(SpawnOptions::default()).await;
    app.create_tenant(&tenant_body("guarded")).await;
    app.wait_ready().await;

    let page = plain_client()
        .get(format!("{}/ui/", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::SEE_OTHER,
        "no session: the login form"
    );
    assert_eq!(page.headers()[LOCATION], "/ui/login");
    let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );

    let refused = log_in(&app, "not-the-admin-token").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers().get(SET_COOKIE).is_none(),
        "a wrong token gets no cookie"
    );
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("not the admin token"));

    let first = open_session(&app).await;
    let second = open_session(&app).await;
    assert_eq!(
        reads(&app, &first.cookie).await,
        StatusCode::OK,
        "a cookie reads"
    );

    let (status, error) = pause(&app, &first.cookie, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"]["code"], "csrf_failed");
    let (status, error) = pause(&app, &first.cookie, Some(&second.csrf_token)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "another session's token: {error}"
    );
    assert_eq!(
        app.status("guarded").await["state"],
        "running",
        "nothing changed"
    );
    let (status, paused) = pause(&app, &first.cookie, Some(&first.csrf_token)).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(app.status("guarded").await["state"], "paused");

    let forged = "steward_session=forged-session-id";
    assert_eq!(reads(&app, forged).await, StatusCode::UNAUTHORIZED);
    let wrong_bearer = plain_client()
        .get(format!("{}/v1/tenants/guarded", app.admin_url))
        .header(COOKIE, &first.cookie)
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong_bearer.status(),
        StatusCode::UNAUTHORIZED,
        "a wrong bearer token is refused even beside a live cookie"
    );

    // Logout needs the session's CSRF token, then the cookie opens nothing.
    let logout = |csrf_token: &str| {
        plain_client()
            .post(format!("{}/ui/logout", app.admin_url))
            .header(COOKIE, &first.cookie)
            .form(&[("csrf", csrf_token.to_string())])
            .send()
    };
    let response = logout(&second.csrf_token).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a cross-site logout"
    );
    let response = logout(&first.csrf_token).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        reads(&app, &first.cookie).await,
        StatusCode::UNAUTHORIZED,
        "the session ended"
    );
    assert_eq!(
        reads(&app, &second.cookie).await,
        StatusCode::OK,
        "other sessions live on"
    );
}
