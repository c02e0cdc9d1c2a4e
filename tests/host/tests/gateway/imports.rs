//! The built product components import nothing outside the world in wit/.

use spin_test_host::{audit_component_imports, workspace_root};

#[test]
fn every_product_component_stays_inside_the_wit_world() {
    let root = workspace_root();
    for name in ["detect", "tag", "search", "health", "metrics"] {
        let wasm = root.join(format!("target/wasm32-wasip2/release/{name}.wasm"));
        assert!(wasm.exists(), "{} is missing: build the components first (see README)", wasm.display());
        if let Err(problems) = audit_component_imports(&wasm, &root.join("wit")) {
            panic!("{name} imports outside wit/: {problems:#?}");
        }
    }
}

#[test]
fn the_metrics_component_imports_no_outbound_http() {
    // It reads variables only to check caller keys (spin.toml maps it no token: tests/manifest.rs).
    let wasm = std::fs::read(workspace_root().join("target/wasm32-wasip2/release/metrics.wasm")).unwrap();
    let imports = component_imports(&wasm);
    assert!(imports.iter().any(|i| i.starts_with("wasi:keyvalue/atomics@")), "{imports:?}");
    assert!(!imports.iter().any(|i| i.starts_with("wasi:http/client@")), "{imports:?}");
    let detect = std::fs::read(workspace_root().join("target/wasm32-wasip2/release/detect.wasm")).unwrap();
    assert!(component_imports(&detect).iter().any(|i| i.starts_with("wasi:http/client@")), "the check itself works");
}

fn component_imports(wasm: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.expect("valid wasm") {
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    names.push(import.expect("import").name.0.to_string());
                }
            }
            _ => {}
        }
    }
    names
}
