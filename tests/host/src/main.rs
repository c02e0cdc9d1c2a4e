//! `spin-test-host`: run an app the way `spin up` would, the mock Ximilar, or the import audit.
//! Test infrastructure, not the product. See tests/host/README.md.

use anyhow::{bail, Context, Result};
use spin_test_host::images::ImageHost;
use spin_test_host::mock::{MockConfig, MockXimilar};
use spin_test_host::{audit, start_app, AppOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "\
usage:
  spin-test-host serve [--manifest spin.toml] [--runtime-config-file runtime-config.toml]
                       [--listen 127.0.0.1:3000] [--variable k=v]... [--mock] [--mock-latency-ms N]
                       [--mock-token T] [--mock-collection-id C] [--images] [--images-listen 127.0.0.1:9100]
  spin-test-host mock [--listen 127.0.0.1:9000] [--latency-ms N] [--token T] [--collection-id C]
  spin-test-host images [--listen 127.0.0.1:9100]   (an image host: /photo-<W>x<H>.jpg|png|webp)
  spin-test-host audit [--wit wit] [--manifest spin.toml | WASM...]
  spin-test-host imports WASM   (print a component's imports and exports)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match command.as_str() {
        "serve" => rt.block_on(serve(Args::parse(rest)?)),
        "mock" => rt.block_on(mock(Args::parse(rest)?)),
        "images" => rt.block_on(images(Args::parse(rest)?)),
        "audit" => run_audit(Args::parse(rest)?),
        "imports" => print_imports(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// Hand-written flag parsing: `--flag value`, repeatable `--variable`, bare positionals.
#[derive(Default)]
struct Args {
    values: HashMap<String, String>,
    variables: Vec<(String, String)>,
    switches: Vec<String>,
    positional: Vec<String>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args> {
        const SWITCHES: &[&str] = &["--mock", "--images"];
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if SWITCHES.contains(&a.as_str()) {
                out.switches.push(a.clone());
            } else if let Some(flag) = a.strip_prefix("--") {
                let (name, value) = match flag.split_once('=') {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => (flag.to_string(), it.next().with_context(|| format!("--{flag} needs a value"))?.clone()),
                };
                if name == "variable" {
                    let (k, v) = value.split_once('=').with_context(|| format!("--variable {value}: expected k=v"))?;
                    out.variables.push((k.to_string(), v.to_string()));
                } else {
                    out.values.insert(name, value);
                }
            } else {
                out.positional.push(a.clone());
            }
        }
        Ok(out)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn has(&self, switch: &str) -> bool {
        self.switches.iter().any(|s| s == switch)
    }

    fn millis(&self, name: &str) -> Result<Duration> {
        Ok(Duration::from_millis(match self.get(name) {
            Some(v) => v.parse().with_context(|| format!("--{name} {v}: not a number"))?,
            None => 0,
        }))
    }
}

async fn serve(args: Args) -> Result<()> {
    let mut opts = AppOptions::new(args.get("manifest").unwrap_or("spin.toml"));
    opts.runtime_config = args.get("runtime-config-file").map(PathBuf::from);
    opts.listen = args.get("listen").unwrap_or("127.0.0.1:3000").parse().context("--listen")?;
    opts.env = std::env::vars().collect();
    // Like `spin up`: SQLite paths relative to the working directory, `default` in ./.spin.
    opts.database_dir = Some(std::env::current_dir()?);
    opts.echo_logs = true;

    let _mock = if args.has("--mock") {
        let cfg = MockConfig {
            token: args.get("mock-token").unwrap_or("test-token").to_string(),
            collection_id: args.get("mock-collection-id").unwrap_or("test-collection").to_string(),
            latency: args.millis("mock-latency-ms")?,
            ..MockConfig::default()
        };
        let mock = MockXimilar::start(cfg.clone()).await?;
        println!("mock Ximilar listening on {}", mock.url());
        // The mock's coordinates, overridable by explicit --variable below.
        opts.variables.insert("api_url".into(), mock.url());
        opts.variables.insert("api_token".into(), cfg.token);
        opts.variables.insert("collection_id".into(), cfg.collection_id);
        Some(mock)
    } else {
        None
    };
    // Crop mode against generated photos: /search of a crop_url on this host sends the garment.
    let _images = if args.has("--images") {
        let listen = args.get("images-listen").unwrap_or("127.0.0.1:9100").parse().context("--images-listen")?;
        let host = ImageHost::start(listen).await?;
        println!("image host listening on {} (try {}/photo-1200x1600.jpg)", host.origin(), host.origin());
        opts.variables.insert("search_crop".into(), "true".into());
        opts.variables.insert("image_host_a".into(), host.origin());
        Some(host)
    } else {
        None
    };
    for (k, v) in args.variables {
        opts.variables.insert(k, v);
    }

    let app = start_app(opts).await?;
    println!("serving on {}", app.base_url());
    stop_signal().await?;
    // Like `spin up`: stop serving and return at once, in-flight requests are dropped.
    // Returning drops the runtime, which waits for blocking key-value calls, as Spin's does:
    // a store that never frees its lock keeps the process alive, as on Spin.
    println!("shutting down");
    app.shutdown().await;
    Ok(())
}

/// SIGINT or SIGTERM (`docker stop`, a rolling update), as Spin's handler takes both.
async fn stop_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn mock(args: Args) -> Result<()> {
    let cfg = MockConfig {
        token: args.get("token").unwrap_or("test-token").to_string(),
        collection_id: args.get("collection-id").unwrap_or("test-collection").to_string(),
        latency: args.millis("latency-ms")?,
        listen: args.get("listen").unwrap_or("127.0.0.1:9000").parse::<SocketAddr>().context("--listen")?,
    };
    let mock = MockXimilar::start(cfg).await?;
    println!("mock Ximilar listening on {}", mock.url());
    stop_signal().await?;
    Ok(())
}

async fn images(args: Args) -> Result<()> {
    let listen = args.get("listen").unwrap_or("127.0.0.1:9100").parse::<SocketAddr>().context("--listen")?;
    let host = ImageHost::start(listen).await?;
    println!("image host listening on {}", host.origin());
    stop_signal().await?;
    Ok(())
}

fn run_audit(args: Args) -> Result<()> {
    let wit = PathBuf::from(args.get("wit").unwrap_or("wit"));
    let mut wasm: Vec<PathBuf> = args.positional.iter().map(PathBuf::from).collect();
    if wasm.is_empty() {
        let manifest = spin_test_host::manifest::Manifest::load(std::path::Path::new(
            args.get("manifest").unwrap_or("spin.toml"),
        ))?;
        wasm = manifest.components.values().map(|c| c.source.clone()).collect();
    }
    let mut failed = false;
    for w in &wasm {
        match audit::audit_component_imports(w, &wit) {
            Ok(()) => println!("ok   {}", w.display()),
            Err(problems) => {
                failed = true;
                for p in problems {
                    println!("FAIL {p}");
                }
            }
        }
    }
    if failed {
        bail!("import audit failed");
    }
    Ok(())
}

fn print_imports(paths: &[String]) -> Result<()> {
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {p}"))?;
        let (imports, exports) = audit::component_imports_exports(&bytes)?;
        println!("{p}:");
        for i in imports {
            println!("  import {i}");
        }
        for e in exports {
            println!("  export {e}");
        }
    }
    Ok(())
}
