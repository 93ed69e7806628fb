//! Wiring and lifecycle: open the store, load secrets, start the runtime and every
//! registered tenant, serve HTTP, and shut down gracefully on SIGTERM / SIGINT.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use steward_actors::runtime::Runtime;
use steward_actors::store::{MasterKey, Store, StoreOptions};
use steward_sandbox::{SandboxConfig, SandboxHandle, StartError};

use crate::config::Config;
use crate::http::auth::{require_admin_token, AdminToken};
use crate::http::error::{json_error_bodies, no_route, ApiError, ErrorCode};
use crate::http::{admin, ops};
use crate::telemetry;

/// Everything request handlers share. One per process.
pub struct AppState {
    pub config: Config,
    /// The store, behind the tenants facade (HTTP modules cannot reach it).
    pub stores: crate::tenants::TenantStores,
    pub master_key: MasterKey,
    pub runtime: Runtime,
    pub metrics: PrometheusHandle,
    /// The embedded Virtuous simulator, when `[sandbox] embedded = true`.
    pub sandbox: Option<SandboxHandle>,
    /// Base of the ingress URLs shown in tenant status (`public_url`, else the listener).
    pub ingress_base_url: String,
    /// The main listener as the embedded sandbox, in this process, reaches it (an unspecified
    /// address becomes loopback): where tenants on it receive their Virtuous webhooks
    /// (`[sandbox] webhooks_to_engine`).
    pub own_ingress_url: String,
    /// Serialises admin mutations (create, patch, delete, pause) — they are rare, and one
    /// lock keeps "check then write" on the registry simple.
    pub admin_lock: tokio::sync::Mutex<()>,
    /// Set once boot has tried to start every registered tenant.
    pub booted: AtomicBool,
    /// Tenants in the registry that run here (not `moved`), kept with every create, delete,
    /// export and import (a registry scan per `/readyz` would cost milliseconds at 10,000
    /// tenants).
    pub registered_tenants: AtomicUsize,
    /// Each running tenant's full document, secrets included, parsed once (ingress verifies
    /// signatures and maps events with it). Kept in step by `tenants.rs`.
    pub tenant_docs: dashmap::DashMap<String, std::sync::Arc<crate::tenant::TenantDoc>>,
    /// Tenants exported to another instance (`moved`): never started here; their webhooks are
    /// answered 503 `moved`.
    pub moved_tenants: dashmap::DashSet<String>,
    /// The last `/metrics` render, served again for [`ops::METRICS_CACHE_FOR`].
    pub metrics_cache: ops::MetricsCache,
    /// Ingress admission: deliveries and body bytes in flight (`[ingress]`).
    pub admission: crate::http::admission::Admission,
    /// Backfill files being uploaded (one upload of a job at a time).
    pub backfill_uploads: crate::http::admin_backfill::upload::UploadsInProgress,
}

pub struct Readiness {
    pub ready: bool,
    pub store_open: bool,
    /// Tenants in the registry.
    pub tenants: usize,
    /// Tenants whose actors run.
    pub tenants_running: usize,
    pub tenants_started: bool,
}

impl AppState {
    pub fn readiness(&self) -> Readiness {
        let store_open = self.stores.is_open();
        let tenants = self.registered_tenants.load(Ordering::Acquire);
        let tenants_running = self.runtime.tenant_ids().len();
        // Every registered tenant runs (one that failed to start keeps this false) and every
        // running tenant's five children have started.
        let tenants_started = self.booted.load(Ordering::Acquire)
            && tenants_running == tenants
            && self.runtime.all_children_started();
        Readiness {
            ready: store_open && tenants_started,
            store_open,
            tenants,
            tenants_running,
            tenants_started,
        }
    }
}

/// The addresses a running Steward bound, written to `{data_dir}/listen-addr` so that
/// scripts and tests started with port 0 can find them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BoundAddresses {
    pub main: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub sandbox: Option<String>,
}

pub const LISTEN_ADDR_FILE: &str = "listen-addr";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// `steward serve`: runs until SIGTERM / SIGINT, then shuts down within the deadline.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_until(config, wait_for_shutdown_signal()).await
}

/// [`serve`] until `shutdown` resolves (to the name of what asked), then the same graceful
/// shutdown. `steward demo` runs the engine in its own process this way.
pub async fn serve_until(
    config: Config,
    shutdown: impl std::future::Future<Output = &'static str>,
) -> anyhow::Result<()> {
    // Before anything touches the disk: every file Steward creates (sled's store files
    // included) is private to its user — donor names and emails live there.
    make_created_files_private();
    return_large_buffers_to_the_system();
    let listeners = config
        .listeners()
        .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
    // Every address is bound before anything is created on disk: "port in use" leaves no
    // half-made data dir behind.
    let bound_listeners = BoundListeners::bind(&listeners)?;
    let sandbox = start_embedded_sandbox(&config, &listeners).await?;
    create_private_data_dir(&config.data_dir)?;
    tracing::info!(data_dir = %config.data_dir.display(), "data dir");
    crate::tenants::backup::clear_tmp(&config.data_dir);
    let addr_file = config.data_dir.join(LISTEN_ADDR_FILE);
    let _ = std::fs::remove_file(&addr_file);

    let metrics_handle = telemetry::install_metrics();
    telemetry::spawn_metrics_upkeep(metrics_handle.clone());
    let (store, master_key) = open_store_and_master_key(&config)?;
    let admin_token = load_or_create_admin_token(&config.data_dir)?;
    // Before the tenants start: notices they queue at boot are delivered from the first one.
    crate::alert_sinks::start(&config, &store)?;
    let own_ingress_url = own_ingress_url(bound_listeners.main_addr);
    let ingress_base_url = if config.public_url.is_empty() {
        format!("http://{}", bound_listeners.main_addr)
    } else {
        config.public_url.trim_end_matches('/').to_string()
    };

    let runtime = Runtime::new(config.arbiter_count());
    let state = web::Data::new(AppState {
        config: config.clone(),
        stores: crate::tenants::TenantStores::new(store),
        master_key,
        runtime,
        metrics: metrics_handle,
        sandbox,
        ingress_base_url,
        own_ingress_url,
        admin_lock: tokio::sync::Mutex::new(()),
        booted: AtomicBool::new(false),
        registered_tenants: AtomicUsize::new(0),
        tenant_docs: dashmap::DashMap::new(),
        moved_tenants: dashmap::DashSet::new(),
        metrics_cache: ops::MetricsCache::default(),
        admission: crate::http::admission::Admission::new(config.ingress.clone()),
        backfill_uploads: Default::default(),
    });
    let bound = BoundAddresses {
        main: bound_listeners.main_addr,
        admin: bound_listeners.admin_addr,
        sandbox: state.sandbox.as_ref().map(SandboxHandle::base_url),
    };
    let servers = start_http_servers(&state, &admin_token, bound_listeners)?;

    let started_tenants = crate::tenants::start_registered_tenants(&state).await?;
    state.booted.store(true, Ordering::Release);
    write_atomically(&addr_file, serde_json::to_string(&bound)?.as_bytes(), 0o600)?;
    tracing::info!(listen = %bound.main, admin = ?bound.admin, tenants = started_tenants, "steward is serving");
    let servers = servers.spawn();

    let signal_name = shutdown.await;
    tracing::info!(
        signal = signal_name,
        deadline_s = config.shutdown_deadline_s,
        "shutting down"
    );
    shut_down(
        &state,
        servers,
        Duration::from_secs(config.shutdown_deadline_s),
    )
    .await;
    state.stores.flush_blocking()?;
    if let Some(sandbox) = &state.sandbox {
        if let Err(error) = sandbox.save_kept_state().await {
            tracing::error!(error = %error.escape_debug(), "the embedded sandbox's organizations could not all be saved");
        }
    }
    let _ = std::fs::remove_file(&addr_file);
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Opens the store and the master key that unseals its tenants' secrets. A freshly generated
/// key beside a store that already holds tenants is refused: it cannot open their secrets.
fn open_store_and_master_key(config: &Config) -> anyhow::Result<(Store, MasterKey)> {
    let store_path = config.data_dir.join("store");
    let store = Store::open(
        &store_path,
        StoreOptions {
            cache_capacity_bytes: config.store.cache_capacity_bytes,
            alert_notices: crate::alert_sinks::notice_policy(config),
        },
    )?;
    let master_key_env = std::env::var("STEWARD_MASTER_KEY").ok();
    let (master_key, master_key_generated) =
        MasterKey::load_or_create(&config.data_dir, master_key_env.as_deref())?;
    if master_key_generated && !store.registry().list()?.is_empty() {
        // A new key cannot open the secrets sealed by the old one: starting would leave
        // every tenant unable to run. Refuse, and say where the key should come from.
        anyhow::bail!(
            "{} was just generated, but the store already holds tenants sealed with another master key; \
             restore the original master.key or set STEWARD_MASTER_KEY (the new file was left in place: delete it first)",
            config.data_dir.join("master.key").display()
        );
    }
    if !master_key_generated {
        let key_origin = match master_key_env {
            Some(_) => "STEWARD_MASTER_KEY".to_string(),
            None => config.data_dir.join("master.key").display().to_string(),
        };
        ensure_master_key_opens_the_store(&store, &master_key, &key_origin, &store_path)?;
    }
    if master_key_generated {
        tracing::warn!(
            path = %config.data_dir.join("master.key").display(),
            "generated a new master key for tenant secrets; back it up — without it sealed credentials cannot be read"
        );
    }
    Ok((store, master_key))
}

/// A well-formed key that is not the one the stored secrets were sealed with would start
/// a server with no tenant running and every webhook answered `404 unknown_tenant`: refuse,
/// naming where the key came from. One secret that opens proves the key (a damaged single
/// record is that tenant's own start error, logged at boot).
fn ensure_master_key_opens_the_store(
    store: &Store,
    master_key: &MasterKey,
    key_origin: &str,
    store_path: &Path,
) -> anyhow::Result<()> {
    let records = store.registry().list()?;
    let first_secrets = records.iter().filter_map(|record| {
        let (pointer, sealed) = record.sealed_secrets.first()?;
        Some((record.id.as_str(), pointer.as_str(), sealed.as_slice()))
    });
    let mut tried = 0;
    for (tenant_id, pointer, sealed) in first_secrets {
        tried += 1;
        if master_key.open(tenant_id, pointer, sealed).is_ok() {
            return Ok(());
        }
    }
    anyhow::ensure!(
        tried == 0,
        "the master key from {key_origin} cannot open the secrets of the {tried} tenant(s) stored in {}: \
         it is not the key they were sealed with; restore the original key (STEWARD_MASTER_KEY or \
         master.key in the data dir) and start again",
        store_path.display()
    );
    Ok(())
}

/// Sets the process umask to 0o077: files and directories Steward (and sled) creates are
/// readable by their owner only. Process-wide, set once at start.
fn make_created_files_private() {
    // SAFETY: umask(2) only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Large allocations (webhook bodies up to `virtuous_body_limit_bytes`) are mapped and
/// unmapped on their own instead of being carved from the heap: glibc otherwise raises its
/// mmap threshold after the first large free, and hostile clients sending large bodies over
/// and over left the heap fragmented (+56 MB after 12 attacks in `benches/hostile.rs`).
fn return_large_buffers_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tuning parameter; setting M_MMAP_THRESHOLD also
    // turns off glibc's dynamic adjustment of it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Creates the data dir (0700 under the umask) and narrows an existing one to 0700: a
/// data dir made earlier under umask 022 would leave the store readable through it.
pub(crate) fn create_private_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let mode = std::fs::metadata(data_dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "cannot make data_dir {} private (chmod 700)",
                    data_dir.display()
                )
            },
        )?;
        tracing::info!(data_dir = %data_dir.display(), previous_mode = %format!("{mode:o}"), "data dir made private (mode 700)");
    }
    Ok(())
}

/// Where the embedded sandbox keeps its Virtuous organizations across restarts.
pub const SANDBOX_DIR: &str = "sandbox";

/// The embedded Virtuous simulator, when `[sandbox] embedded` is on (loudly: it is not
/// Virtuous), with its organizations kept in `{data_dir}/sandbox/` unless
/// `keep_organizations = false`: what an earlier run kept comes back (a kept file that cannot
/// be read refuses the start, naming it).
async fn start_embedded_sandbox(
    config: &Config,
    listeners: &crate::config::Listeners,
) -> anyhow::Result<Option<SandboxHandle>> {
    if !config.sandbox.embedded {
        return Ok(None);
    }
    let sandbox_config = SandboxConfig {
        listen: listeners.sandbox,
        workers: 1,
    };
    let started = if config.sandbox.keep_organizations {
        let state_dir = config.data_dir.join(SANDBOX_DIR);
        steward_sandbox::start_keeping_state(sandbox_config, &state_dir).await
    } else {
        steward_sandbox::start(sandbox_config)
            .await
            .map_err(StartError::Listen)
    };
    let handle = match started {
        Ok(handle) => handle,
        Err(StartError::Listen(error)) => {
            return Err(anyhow::Error::new(error).context(format!(
                "cannot listen on sandbox.listen {}",
                listeners.sandbox
            )))
        }
        Err(StartError::KeptState(reason)) => anyhow::bail!("{reason}"),
    };
    tracing::warn!(
        sandbox = %handle.base_url(),
        "EMBEDDED SANDBOX: tenants with virtuous.base_url = \"embedded\" talk to a Virtuous SIMULATOR, not to Virtuous"
    );
    Ok(Some(handle))
}

/// `http://{addr}` as this process reaches it: an unspecified address (`0.0.0.0`, `[::]`)
/// becomes the loopback address of its family.
fn own_ingress_url(main_addr: SocketAddr) -> String {
    let mut reachable = main_addr;
    if main_addr.ip().is_unspecified() {
        reachable.set_ip(match main_addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{reachable}")
}

/// The main listener and, unless `admin_listen = "shared"`, the admin one — bound, not yet
/// served.
struct BoundListeners {
    main: TcpListener,
    main_addr: SocketAddr,
    admin: Option<TcpListener>,
    admin_addr: Option<SocketAddr>,
}

impl BoundListeners {
    fn bind(listeners: &crate::config::Listeners) -> anyhow::Result<BoundListeners> {
        let main = TcpListener::bind(listeners.main)
            .with_context(|| format!("cannot listen on listen {}", listeners.main))?;
        let main_addr = main.local_addr()?;
        let admin = match listeners.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on admin_listen {addr}"))?,
            ),
            None => None,
        };
        let admin_addr = match &admin {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        Ok(BoundListeners {
            main,
            main_addr,
            admin,
            admin_addr,
        })
    }
}

/// The HTTP servers, built but not yet running (they run once spawned).
struct Servers {
    main: actix_web::dev::Server,
    admin: Option<actix_web::dev::Server>,
}

/// Handles of the running HTTP servers, for the graceful stop.
struct ServerHandles {
    main: actix_web::dev::ServerHandle,
    admin: Option<actix_web::dev::ServerHandle>,
}

impl Servers {
    fn spawn(self) -> ServerHandles {
        let handles = ServerHandles {
            main: self.main.handle(),
            admin: self.admin.as_ref().map(|server| server.handle()),
        };
        actix_rt::spawn(self.main);
        if let Some(server) = self.admin {
            actix_rt::spawn(server);
        }
        handles
    }
}

/// The listener contract (ARCHITECTURE.md): the main listener serves `/hooks` and health
/// only; the admin listener serves `/v1` and `/metrics`; with `admin_listen = "shared"` the
/// main listener serves both sets, `/metrics` then behind the admin token. Every listener
/// answers an unknown route or a wrong method in the JSON error shape.
fn start_http_servers(
    state: &web::Data<AppState>,
    admin_token: &str,
    listeners: BoundListeners,
) -> anyhow::Result<Servers> {
    let shutdown_timeout_s = state.config.shutdown_deadline_s;
    let admin_token = web::Data::new(AdminToken::new(admin_token));
    // The dashboard's sessions, shared by both listeners (with `admin_listen = "shared"` the
    // dashboard is on the main one).
    let ui_sessions = web::Data::new(crate::http::ui::session::UiSessions::default());
    let admin_on_main = listeners.admin.is_none();
    // `[ingress] max_connections` is for the listener; actix counts per worker.
    // One worker per core, but never more workers than connections: actix's limit is per
    // worker, so workers × per-worker stays within `max_connections`.
    let ingress_workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(state.config.ingress.max_connections.max(1));
    let ingress_connections_per_worker =
        crate::http::admission::connections_per_worker(&state.config.ingress, ingress_workers);
    let main_server = {
        let state = state.clone();
        let admin_token = admin_token.clone();
        let ui_sessions = ui_sessions.clone();
        HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                .app_data(admin_token.clone())
                .app_data(ui_sessions.clone())
                .wrap(middleware::from_fn(json_error_bodies))
                .wrap(middleware::NormalizePath::trim())
                .configure(crate::http::virtuous_hook::routes)
                .configure(ops::health_routes)
                .configure(crate::http::ingress::routes)
                .default_service(web::to(no_route));
            if admin_on_main {
                app.configure(|config| admin_routes(config, MetricsAccess::AdminToken))
            } else {
                app
            }
        })
        .workers(ingress_workers)
        .max_connections(ingress_connections_per_worker)
        // No lingering read after an answer that leaves a body unread (a refusal before the
        // body, 408): actix would otherwise read and discard whatever the client still sends
        // for up to a second, which lets a client that pumps a large body burn CPU.
        .client_disconnect_timeout(Duration::ZERO)
        .disable_signals()
        .shutdown_timeout(shutdown_timeout_s)
        .listen(listeners.main)?
        .run()
    };
    let admin_server = match listeners.admin {
        Some(listener) => {
            let state = state.clone();
            Some(
                HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .app_data(admin_token.clone())
                        .app_data(ui_sessions.clone())
                        .wrap(middleware::from_fn(json_error_bodies))
                        .wrap(middleware::NormalizePath::trim())
                        .configure(|config| admin_routes(config, MetricsAccess::Open))
                        .default_service(web::to(no_route))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(shutdown_timeout_s)
                .listen(listener)?
                .run(),
            )
        }
        None => None,
    };
    Ok(Servers {
        main: main_server,
        admin: admin_server,
    })
}

/// Who may read `/metrics`: anyone who reaches the admin listener (loopback or an internal
/// interface), or only holders of the admin token when it shares the ingress listener.
#[derive(Clone, Copy)]
enum MetricsAccess {
    Open,
    AdminToken,
}

/// Stops accepting, lets in-flight requests finish (their store writes and flushes
/// included) and stops the tenants, within the deadline less a moment for the final flush.
async fn shut_down(state: &AppState, servers: ServerHandles, deadline: Duration) {
    let graceful = async {
        let admin_stop = async {
            if let Some(handle) = &servers.admin {
                handle.stop(true).await;
            }
        };
        tokio::join!(servers.main.stop(true), admin_stop);
        state.runtime.shutdown().await;
    };
    let graceful_budget = deadline
        .saturating_sub(Duration::from_millis(500))
        .max(Duration::from_millis(100));
    if tokio::time::timeout(graceful_budget, graceful)
        .await
        .is_err()
    {
        tracing::warn!("graceful shutdown exceeded its deadline; flushing and exiting");
    }
}

/// `/v1` (bearer token or a dashboard session), `/metrics` and the dashboard `/ui/`.
fn admin_routes(config: &mut web::ServiceConfig, metrics_access: MetricsAccess) {
    config.configure(crate::http::ui::routes);
    let metrics = web::resource("/metrics").route(web::get().to(ops::metrics));
    match metrics_access {
        MetricsAccess::Open => config.service(metrics),
        MetricsAccess::AdminToken => {
            config.service(metrics.wrap(middleware::from_fn(require_admin_token)))
        }
    };
    config.service(
        web::scope("/v1")
            .wrap(middleware::from_fn(require_admin_token))
            // A bad query string answers in the JSON error shape like everything else.
            .app_data(web::QueryConfig::default().error_handler(|err, _request| {
                ApiError::new(ErrorCode::MalformedBody, format!("bad query string: {err}")).into()
            }))
            .configure(crate::http::openapi::routes)
            .configure(admin::routes)
            .configure(crate::http::virtuous_hook::test_routes),
    );
}

async fn wait_for_shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// `STEWARD_ADMIN_TOKEN`, else `{data_dir}/admin-token` (generated with mode 0600 on first
/// start). The log names the file, never the token.
fn load_or_create_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("STEWARD_ADMIN_TOKEN") {
        anyhow::ensure!(
            token.len() >= 16,
            "STEWARD_ADMIN_TOKEN must be at least 16 characters"
        );
        return Ok(token);
    }
    let path: PathBuf = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{} is readable by group or others (mode {mode:o}); run `chmod 600` on it",
            path.display()
        );
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let token = token.trim().to_string();
        anyhow::ensure!(
            token.len() >= 16,
            "{} holds no usable token (at least 16 characters)",
            path.display()
        );
        tracing::info!(path = %path.display(), "admin token read from file");
        return Ok(token);
    }
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    write_atomically(&path, token.as_bytes(), 0o600)?;
    tracing::warn!(path = %path.display(), "no STEWARD_ADMIN_TOKEN set: generated an admin token into this file (mode 0600)");
    Ok(token)
}

/// Writes a file through a temporary file and a rename, so a crash never leaves an empty or
/// half-written file behind (a token, the listen addresses).
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}
