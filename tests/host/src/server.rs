//! Starting an app and serving HTTP the way Spin 4.0.2's HTTP trigger does.
//!
//! Per request: Spin's well-known paths, then routing (404 with an empty body when nothing
//! matches), then the request goes to the component with Spin's `spin-*` headers added.
//! WASIp3 instances are reused like Spin does (up to 128 requests each, 16 at a time, dropped
//! after 1 s idle) through wasmtime-wasi-http's `ProxyHandler`, the same machinery Spin uses.
//! A guest error or trap becomes a 500 with an empty body, as in Spin.

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wasmtime::component::{Accessor, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{HandlerState, Proxy, ProxyHandler, ProxyPre, StoreBundle};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::{WasiHttpCtxView, WasiHttpView};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::kv::{KvAccess, KvBackend, KvHandle, KvHost, KvStores, LOCK_WAIT_LIMIT};
use crate::logs::{CapturedOutput, LogSink, Stream};
use crate::manifest::Manifest;
use crate::outbound::{AllowedHosts, DeniedCall, OutboundLedger, OutboundPolicy};
use crate::routing::{RouteMatch, Router};
use crate::runtime_config::RuntimeConfig;
use crate::sqlite_db::{ScratchDir, SqliteAccess, SqliteDatabases, SqliteHandle, SqliteHost};
use crate::sync_imports::SyncImports;
use crate::variables::{self, ComponentVariables, Environment, Provider, Template, VarsCtx, VarsHost};
use crate::{bindings, engine};

/// How to start an app. Build it with `AppOptions::new(manifest)` or with
/// `AppOptions { manifest, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Path of `spin.toml`.
    pub manifest: PathBuf,
    /// `--runtime-config-file`; `None` = only the `default` key-value store and SQLite
    /// database, and Spin's default variables provider.
    pub runtime_config: Option<PathBuf>,
    /// Explicit overrides, like `spin up --variable k=v` (highest precedence).
    pub variables: HashMap<String, String>,
    /// The environment the env variables providers read (serve mode passes the real one;
    /// tests pass a map, so they are hermetic).
    pub env: HashMap<String, String>,
    /// Where to listen; tests use `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The directory relative `dotenv_path`s (and Spin's default `.env`) resolve against.
    /// Spin uses its working directory; `None` = this process's working directory.
    pub work_dir: Option<PathBuf>,
    /// Also print component output to this process's stdout/stderr (serve mode).
    pub echo_logs: bool,
    /// Instance reuse, Spin 4.0.2's WASIp3 defaults unless changed.
    pub reuse: InstanceReuse,
    /// The key-value model: Spin's SQLite store (default) or a plain map
    /// (`SPIN_TEST_HOST_KV=map`).
    pub kv_backend: KvBackend,
    /// How long a key-value call, or a SQLite call waiting for its connection, may wait for a
    /// lock before the model reports the deadlock Spin would hang in.
    pub kv_lock_limit: Duration,
    /// Where the SQLite files live: relative `[sqlite_database.<label>] path`s resolve against
    /// it (Spin: its working directory) and `default` is `.spin/sqlite_db.db` in it (Spin: the
    /// app's `.spin` state directory). `None` = a fresh temporary directory for this app,
    /// removed once the app is dropped.
    pub database_dir: Option<PathBuf>,
    /// Added to the wall clock the components see (`RunningApp::advance_wall_clock`), for
    /// tests of what happens tomorrow; the host's own clocks are unaffected.
    pub wall_clock_offset: Arc<ShiftedWallClock>,
}

/// The real wall clock plus an offset tests may move forward.
#[derive(Debug, Default)]
pub struct ShiftedWallClock {
    offset_ms: std::sync::atomic::AtomicU64,
}

impl ShiftedWallClock {
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What one instance's WASI context reads the time from.
struct InstanceWallClock(Arc<ShiftedWallClock>);

impl wasmtime_wasi::HostWallClock for InstanceWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        real + Duration::from_millis(self.0.offset_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Spin's WASIp3 instance-reuse knobs (`spin up --max-instance-reuse-count` etc.).
#[derive(Debug, Clone, Copy)]
pub struct InstanceReuse {
    pub max_requests: usize,
    pub max_concurrent: usize,
    pub idle_timeout: Duration,
}

impl Default for InstanceReuse {
    fn default() -> Self {
        InstanceReuse { max_requests: 128, max_concurrent: 16, idle_timeout: Duration::from_secs(1) }
    }
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            manifest: PathBuf::from("spin.toml"),
            runtime_config: None,
            variables: HashMap::new(),
            env: HashMap::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            work_dir: None,
            echo_logs: false,
            reuse: InstanceReuse::default(),
            kv_backend: KvBackend::from_env(),
            kv_lock_limit: LOCK_WAIT_LIMIT,
            database_dir: None,
            wall_clock_offset: Arc::default(),
        }
    }
}

impl AppOptions {
    pub fn new(manifest: impl Into<PathBuf>) -> AppOptions {
        AppOptions { manifest: manifest.into(), ..Default::default() }
    }
}

/// A running app. Dropping it stops accepting connections; `shutdown` also waits for that.
pub struct RunningApp {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl RunningApp {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Outbound requests the component sent (allowed ones; denied ones are not sent).
    pub fn outbound_calls(&self, component: &str) -> usize {
        self.app.ledger.calls(component)
    }

    /// Outbound requests refused by `allowed_outbound_hosts`, all components together.
    pub fn denied_calls(&self) -> usize {
        self.app.ledger.denied().len()
    }

    /// The refused requests themselves (component and URL).
    pub fn denied(&self) -> Vec<DeniedCall> {
        self.app.ledger.denied()
    }

    /// Moves the wall clock the components see forward (they sleep on the monotonic clock).
    pub fn advance_wall_clock(&self, by: Duration) {
        self.app.wall_clock.advance(by);
    }

    /// A key-value store by label (`default` or a runtime-config label).
    pub fn kv(&self, label: &str) -> Option<KvHandle> {
        self.app.kv.handle(label)
    }

    /// Calls the components made to synchronous imports that Spin runs as async host
    /// functions (see `sync_imports`), by import, since the app started.
    pub fn sync_imports(&self) -> BTreeMap<&'static str, u64> {
        self.app.sync_imports.snapshot()
    }

    /// The most instances of the app's components alive at once so far.
    pub fn peak_instances(&self) -> usize {
        self.app.instances.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fiber stacks the process's pool has handed out right now (0 without the pooling
    /// allocator): every instance keeps one, and so does every guest call suspended in an
    /// async host function.
    pub fn stacks_in_use() -> usize {
        crate::engine::engine().pooling_allocator_metrics().map_or(0, |m| m.stacks())
    }

    /// Instances of the app's components started so far.
    pub fn instances_started(&self) -> usize {
        self.app.instances.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Instance failures so far (Spin logs them as `worker error`), such as an empty stack pool.
    pub fn worker_errors(&self) -> Vec<String> {
        self.app.errors.lock().unwrap().clone()
    }

    /// A SQLite database by label (`default` or a runtime-config label).
    pub fn sqlite(&self, label: &str) -> Option<SqliteHandle> {
        self.app.sqlite.handle(label)
    }

    /// Lines the components wrote to stderr, in order.
    pub fn logs(&self) -> Vec<String> {
        self.output(Stream::Stderr, None)
    }

    /// Waits until at least `count` stderr lines have been captured (or `timeout` passes) and
    /// returns them: for output a component writes after its response has been sent.
    pub async fn wait_for_logs(&self, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let lines = self.logs();
            if lines.len() >= count || tokio::time::Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lines one component wrote to stderr.
    pub fn component_logs(&self, component: &str) -> Vec<String> {
        self.output(Stream::Stderr, Some(component))
    }

    /// Lines the components wrote to stdout.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.output(Stream::Stdout, None)
    }

    /// Forgets captured output.
    pub fn clear_logs(&self) {
        self.app.logs.clear();
    }

    /// Guest errors and traps (each of which became a 500), newest last.
    pub fn errors(&self) -> Vec<String> {
        self.app.errors.lock().unwrap().clone()
    }

    /// The resolved value of an application variable (what `{{ name }}` renders to).
    pub fn variable(&self, name: &str) -> Option<String> {
        self.app.variables.get(name).cloned()
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    fn output(&self, stream: Stream, component: Option<&str>) -> Vec<String> {
        self.app
            .logs
            .lines()
            .into_iter()
            .filter(|l| l.stream == stream && component.is_none_or(|c| &*l.component == c))
            .map(|l| l.text)
            .collect()
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Everything one running app shares between requests.
struct App {
    name: String,
    router: Router,
    components: HashMap<String, ProxyHandler<ComponentHost>>,
    ledger: Arc<OutboundLedger>,
    kv: Arc<KvStores>,
    sqlite: Arc<SqliteDatabases>,
    logs: Arc<LogSink>,
    errors: Arc<Mutex<Vec<String>>>,
    variables: HashMap<String, String>,
    wall_clock: Arc<ShiftedWallClock>,
    sync_imports: Arc<SyncImports>,
    instances: Arc<InstanceCount>,
    /// The temporary database directory when the options named none; removed with the app.
    _scratch: Option<ScratchDir>,
}

/// Loads the manifest and runtime config, resolves variables, compiles the components and
/// starts serving. Fails (naming the problem) wherever `spin up` would fail to start.
pub async fn start_app(opts: AppOptions) -> Result<RunningApp> {
    let manifest = Manifest::load(&opts.manifest)?;
    let runtime = match &opts.runtime_config {
        Some(p) => RuntimeConfig::load(p)?,
        None => RuntimeConfig::default(),
    };
    let work_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };

    // Variables: --variable, the runtime config's providers, Spin's default, manifest defaults.
    let mut providers = vec![Provider::Explicit(opts.variables.clone())];
    providers.extend(runtime.variable_providers.iter().cloned());
    providers.push(Provider::spin_default());
    // Like Spin, explicit values for variables the manifest does not declare are ignored.
    let env = Environment { vars: &opts.env, work_dir: &work_dir };
    let app_values = variables::resolve_app_variables(&manifest.variables, &providers, &env)?;

    let kv = Arc::new(
        KvStores::new(&runtime.key_value_stores, opts.kv_backend, opts.kv_lock_limit)
            .context("opening the key-value stores")?,
    );
    let scratch = if opts.database_dir.is_none() { Some(ScratchDir::new()?) } else { None };
    let database_dir = opts.database_dir.as_deref().or(scratch.as_ref().map(ScratchDir::path)).expect("a directory");
    let sqlite = Arc::new(
        SqliteDatabases::new(&runtime.sqlite_databases, database_dir, opts.kv_lock_limit)
            .context("configuring the SQLite databases")?,
    );
    // Spin checks every component, routed or not.
    sqlite.check_components(&manifest)?;
    let ledger = Arc::new(OutboundLedger::default());
    let logs = LogSink::new(opts.echo_logs);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let http = crate::outbound::http_client();
    let sync_imports = Arc::new(SyncImports::default());
    let instances = Arc::new(InstanceCount::default());
    let engine = engine::engine();

    let mut linker = Linker::<InstanceData>::new(engine);
    link_host_interfaces(&mut linker)?;

    // Only components that a route reaches are instantiated, like Spin's HTTP trigger.
    let routed: HashSet<&str> = manifest.http_triggers.iter().map(|t| t.component.as_str()).collect();
    let mut components = HashMap::new();
    for (id, decl) in manifest.components.iter().filter(|(id, _)| routed.contains(id.as_str())) {
        let id = id.as_str();
        for label in &decl.key_value_stores {
            if !kv.contains(label) {
                bail!(
                    "unknown key_value_stores label {label:?} for component {id:?} (declare it in the runtime config)"
                );
            }
        }
        let allowed_entries = decl
            .allowed_outbound_hosts
            .iter()
            .map(|e| Template::parse(e)?.render(&app_values))
            .collect::<Result<Vec<_>>>()?;
        let allowed = AllowedHosts::parse(&allowed_entries)
            .with_context(|| format!("component {id:?}: invalid allowed_outbound_hosts {allowed_entries:?}"))?;

        let component = engine::load_component(id, &decl.source).await?;
        let pre = linker.instantiate_pre(&component).map_err(anyhow::Error::from).with_context(|| {
            format!("component {id:?} imports something Spin 4.0.2 (and this host) does not provide")
        })?;
        let service = ServicePre::new(pre).map_err(anyhow::Error::from).with_context(|| {
            format!("component {id:?} does not export wasi:http/handler@0.3.0-rc-2026-03-15 (spin-sdk =6.0.0 #[http_service])")
        })?;

        let host = ComponentHost {
            id: Arc::from(id),
            vars: Arc::new(ComponentVariables::resolve(&manifest, id, &app_values)?),
            policy: OutboundPolicy {
                component: Arc::from(id),
                allowed: Arc::new(allowed),
                ledger: ledger.clone(),
                http: http.clone(),
            },
            kv_allowed: Arc::new(decl.key_value_stores.iter().cloned().collect()),
            kv: kv.clone(),
            sqlite_allowed: Arc::new(decl.sqlite_databases.iter().cloned().collect()),
            sqlite: sqlite.clone(),
            environment: decl.environment.clone(),
            logs: logs.clone(),
            errors: errors.clone(),
            reuse: opts.reuse,
            wall_clock: opts.wall_clock_offset.clone(),
            sync_imports: sync_imports.clone(),
            instances: instances.clone(),
        };
        components.insert(id.to_string(), ProxyHandler::new(host, ProxyPre::P3(service)));
    }

    let router = Router::build(
        manifest.http_triggers.iter().filter_map(|t| t.route.as_deref().map(|r| (r, t.component.as_str()))),
    )?;

    let app = Arc::new(App {
        name: manifest.name.clone(),
        router,
        components,
        ledger,
        kv,
        sqlite,
        logs,
        errors,
        variables: app_values,
        wall_clock: opts.wall_clock_offset.clone(),
        sync_imports,
        instances,
        _scratch: scratch,
    });

    let listener = TcpListener::bind(opts.listen).await.with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    // Nagle on, as on Spin 4.0.2, whose listener never sets TCP_NODELAY: an answer whose
    // body is not ready when its headers leave waits for the client's ACK.
    let serving = app.clone();
    let server = tokio::spawn(crate::accept::serve_connections(listener, stop_rx, false, move |client| {
        let app = serving.clone();
        hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req, client).await) }
        })
    }));
    Ok(RunningApp { addr, app, stop: Some(stop_tx), server: Some(server) })
}

/// The interfaces Spin 4.0.2 offers a WASIp3 HTTP component (the ones our world uses).
fn link_host_interfaces(linker: &mut Linker<InstanceData>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi::p3::add_to_linker(linker)?;
    wasmtime_wasi_http::p3::add_to_linker(linker)?;
    bindings::spin::variables::variables::add_to_linker::<_, VarsHost>(linker, |d| &mut d.vars)?;
    bindings::spin::key_value::key_value::add_to_linker::<_, KvHost>(linker, |d| &mut d.kv)?;
    bindings::wasi::keyvalue::store::add_to_linker::<_, KvHost>(linker, |d| &mut d.kv)?;
    bindings::wasi::keyvalue::atomics::add_to_linker::<_, KvHost>(linker, |d| &mut d.kv)?;
    bindings::spin::sqlite::sqlite::add_to_linker::<_, SqliteHost>(linker, |d| &mut d.sqlite)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Per-component state and per-instance store data

/// What every instance of one component is created from.
struct ComponentHost {
    id: Arc<str>,
    vars: Arc<ComponentVariables>,
    policy: OutboundPolicy,
    kv_allowed: Arc<HashSet<String>>,
    kv: Arc<KvStores>,
    sqlite_allowed: Arc<HashSet<String>>,
    sqlite: Arc<SqliteDatabases>,
    environment: std::collections::BTreeMap<String, String>,
    logs: Arc<LogSink>,
    errors: Arc<Mutex<Vec<String>>>,
    reuse: InstanceReuse,
    wall_clock: Arc<ShiftedWallClock>,
    sync_imports: Arc<SyncImports>,
    instances: Arc<InstanceCount>,
}

/// How many instances (stores) of the app's components are alive, and the most at once:
/// each holds a fiber stack from the pool while it lives.
#[derive(Default)]
pub(crate) struct InstanceCount {
    live: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    started: std::sync::atomic::AtomicUsize,
}

/// Counts one instance for as long as its store lives.
struct LiveInstance(Arc<InstanceCount>);

impl LiveInstance {
    fn new(count: Arc<InstanceCount>) -> LiveInstance {
        use std::sync::atomic::Ordering::Relaxed;
        count.started.fetch_add(1, Relaxed);
        let now = count.live.fetch_add(1, Relaxed) + 1;
        count.peak.fetch_max(now, Relaxed);
        LiveInstance(count)
    }
}

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The data of one wasmtime `Store` (one instance, possibly serving many requests).
pub(crate) struct InstanceData {
    _live: LiveInstance,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundPolicy,
    vars: VarsCtx,
    kv: KvAccess,
    sqlite: SqliteAccess,
}

impl WasiView for InstanceData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl HandlerState for ComponentHost {
    type StoreData = InstanceData;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<InstanceData>> {
        let live = LiveInstance::new(self.instances.clone());
        let mut wasi = WasiCtxBuilder::new();
        let output = |stream| CapturedOutput {
            sink: self.logs.clone(),
            component: self.id.clone(),
            stream,
            sync_imports: self.sync_imports.clone(),
        };
        wasi.stdout(output(Stream::Stdout)).stderr(output(Stream::Stderr));
        wasi.wall_clock(InstanceWallClock(self.wall_clock.clone()));
        for (k, v) in &self.environment {
            wasi.env(k, v);
        }
        let data = InstanceData {
            _live: live,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: self.policy.clone(),
            vars: VarsCtx(self.vars.clone()),
            kv: KvAccess {
                allowed: self.kv_allowed.clone(),
                stores: self.kv.clone(),
                table: ResourceTable::new(),
                sync_imports: self.sync_imports.clone(),
            },
            sqlite: SqliteAccess::new(self.sqlite_allowed.clone(), self.sqlite.clone()),
        };
        let mut store = Store::new(engine::engine(), data);
        store.set_epoch_deadline(engine::EPOCH_DEADLINE);
        Ok(StoreBundle { store, write_profile: Box::new(|_| {}) })
    }

    fn request_timeout(&self) -> Duration {
        // Spin sets no request timeout by default.
        Duration::MAX
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.reuse.idle_timeout
    }

    fn max_instance_reuse_count(&self) -> usize {
        self.reuse.max_requests.max(1)
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.reuse.max_concurrent.max(1)
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        let msg = format!("component {:?}: instance failed: {error:#}", self.id);
        report_error(&self.errors, &self.logs, msg);
    }
}

fn report_error(errors: &Mutex<Vec<String>>, logs: &LogSink, msg: String) {
    if logs.echoes() {
        eprintln!("spin-test-host: {msg}");
    }
    errors.lock().unwrap().push(msg);
}

// ---------------------------------------------------------------------------------------
// Serving

type HostBody = UnsyncBoxBody<Bytes, ErrorCode>;
type ServeBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

impl App {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, client: SocketAddr) -> Response<ServeBody> {
        let path = req.uri().path().to_string();
        if let Some(well_known) = path.strip_prefix("/.well-known/spin/") {
            return match well_known {
                "health" => text_response(StatusCode::OK, "OK"),
                "info" => text_response(
                    StatusCode::OK,
                    &serde_json::json!({ "name": self.name, "host": "spin-test-host" }).to_string(),
                ),
                _ => empty_response(StatusCode::NOT_FOUND),
            };
        }
        let Some(route) = self.router.route(&path) else {
            return empty_response(StatusCode::NOT_FOUND);
        };
        let req = match prepare_request(req, &route, client) {
            Ok(r) => r,
            Err(e) => {
                report_error(&self.errors, &self.logs, format!("bad request to {path}: {e:#}"));
                return empty_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        let handler = &self.components[&route.component];
        match call_component(handler, req).await {
            Ok(resp) => resp.map(|b| {
                b.map_err(|e| Box::<dyn std::error::Error + Send + Sync>::from(format!("{e:?}"))).boxed_unsync()
            }),
            Err(e) => {
                report_error(
                    &self.errors,
                    &self.logs,
                    format!("component {:?} failed on {path}: {e}", route.component),
                );
                empty_response(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// Gives the request an absolute URI (Spin takes the authority from `Host`) and adds the
/// `spin-*` headers Spin 4.0.2 adds for a WASIp3 component.
fn prepare_request(req: Request<Incoming>, route: &RouteMatch, client: SocketAddr) -> Result<Request<HostBody>> {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(http::header::HOST)
        .map(|h| h.to_str().map(str::to_string))
        .transpose()
        .context("'Host' header is not valid UTF-8")?
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .context("no 'Host' header present in request")?;
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    parts.uri = http::Uri::builder()
        .scheme("http")
        .authority(host.as_str())
        .path_and_query(path_and_query.as_str())
        .build()
        .context("'Host' header contains an invalid authority")?;

    let matched_route = route.raw_route.strip_suffix('/').filter(|r| !r.is_empty()).unwrap_or(&route.raw_route);
    let spin_headers = [
        ("spin-path-info", route.path_info.clone()),
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-matched-route", matched_route.to_string()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", route.raw_route.clone()),
        ("spin-component-route", route.component_route.clone()),
        ("spin-client-addr", client.to_string()),
    ];
    for (name, value) in spin_headers {
        if let Ok(value) = HeaderValue::try_from(value) {
            parts.headers.insert(name, value);
        }
    }
    let body = body.map_err(ErrorCode::from_hyper_request_error).boxed_unsync();
    Ok(Request::from_parts(parts, body))
}

/// Runs one request through an instance of the component and returns its response, whose
/// body keeps the instance's task alive until hyper has read it all.
async fn call_component(
    handler: &ProxyHandler<ComponentHost>,
    req: Request<HostBody>,
) -> Result<Response<HostBody>, String> {
    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(req);
    let (tx, rx) = oneshot::channel::<Result<Response<HostBody>, String>>();
    handler.spawn(
        None,
        Box::new(move |store: &Accessor<InstanceData>, proxy: &Proxy| {
            Box::pin(async move {
                let Proxy::P3(service) = proxy else {
                    let _ = tx.send(Err("not a WASIp3 component".into()));
                    return;
                };
                let result = async {
                    let response = service.handle(store, request).await?;
                    let response = match response {
                        Ok(r) => r,
                        Err(code) => wasmtime::bail!("the component returned error code {code:?}"),
                    };
                    store.with(|mut s| response.into_http(&mut s, request_io))
                }
                .await;
                match result {
                    Ok(response) => {
                        let (done_tx, done_rx) = oneshot::channel();
                        let response = response.map(|body| NotifyOnDrop { body, done: Some(done_tx) }.boxed_unsync());
                        if tx.send(Ok(response)).is_ok() {
                            // Keep the instance's event loop running until the body is read,
                            // or the guest could not finish writing it.
                            let _ = done_rx.await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            })
        }),
    );
    rx.await.map_err(|_| "the instance stopped before answering (trap or instance failure)".to_string())?
}

/// A body that signals when it is dropped (fully read, or abandoned by the client).
struct NotifyOnDrop {
    body: HostBody,
    done: Option<oneshot::Sender<()>>,
}

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl http_body::Body for NotifyOnDrop {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn empty_response(status: StatusCode) -> Response<ServeBody> {
    let mut r = Response::new(Empty::new().map_err(|e: Infallible| match e {}).boxed_unsync());
    *r.status_mut() = status;
    r
}

fn text_response(status: StatusCode, text: &str) -> Response<ServeBody> {
    let mut r =
        Response::new(Full::new(Bytes::from(text.to_string())).map_err(|e: Infallible| match e {}).boxed_unsync());
    *r.status_mut() = status;
    r
}
