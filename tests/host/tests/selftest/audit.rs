//! The import audit: built components may import only the `gateway` world of wit/.

use crate::common::*;
use spin_test_host::audit::{audit_component_imports, component_imports_exports, world_imports};
use spin_test_host::workspace_root;

fn wit_dir() -> std::path::PathBuf {
    workspace_root().join("wit")
}

#[test]
fn the_forwarder_imports_only_the_gateway_world() {
    let wasm = forwarder_wasm();
    if let Err(problems) = audit_component_imports(&wasm, &wit_dir()) {
        panic!("audit failed:\n{}", problems.join("\n"));
    }
    let (imports, exports) = component_imports_exports(&std::fs::read(&wasm).unwrap()).unwrap();
    assert!(imports.contains("wasi:http/types@0.3.0-rc-2026-03-15"), "{imports:?}");
    assert!(imports.contains("spin:variables/variables@3.0.0"), "{imports:?}");
    assert!(exports.contains("wasi:http/handler@0.3.0-rc-2026-03-15"), "{exports:?}");
}

#[test]
fn the_world_lists_spin_and_wasi_interfaces_at_the_pinned_versions() {
    let world = world_imports(&wit_dir()).unwrap();
    for expected in [
        "spin:variables/variables@3.0.0",
        "spin:key-value/key-value@3.0.0",
        "wasi:keyvalue/store@0.2.0-draft2",
        "wasi:keyvalue/atomics@0.2.0-draft2",
        "spin:sqlite/sqlite@3.1.0",
        "wasi:http/types@0.3.0-rc-2026-03-15",
        "wasi:http/client@0.3.0-rc-2026-03-15",
        "wasi:clocks/monotonic-clock@0.3.0-rc-2026-03-15",
        "wasi:cli/stderr@0.2.6",
        "wasi:io/streams@0.2.6",
    ] {
        assert!(world.contains(expected), "{expected} missing from {world:?}");
    }
    assert!(!world.iter().any(|i| i.starts_with("wasi:sockets/") || i.starts_with("wasi:filesystem/")), "{world:?}");
}

#[test]
fn an_import_outside_the_world_fails_the_audit() {
    // Audit the forwarder against a copy of wit/ whose gateway world lacks spin:key-value.
    let dir = TempDir::new("narrow-wit");
    copy_dir(&wit_dir(), dir.path());
    let world = std::fs::read_to_string(dir.path().join("world.wit")).unwrap();
    let narrowed = world.replace("  import spin:key-value/key-value@3.0.0;\n", "");
    assert_ne!(world, narrowed, "the world should import spin:key-value");
    std::fs::write(dir.path().join("world.wit"), narrowed).unwrap();

    let problems = audit_component_imports(&forwarder_wasm(), dir.path()).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("spin:key-value/key-value@3.0.0"), "{problems:?}");
}

#[test]
fn a_core_module_or_a_missing_file_is_reported() {
    let dir = TempDir::new("core-module");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let problems = audit_component_imports(&core, &wit_dir()).unwrap_err();
    assert!(problems[0].contains("not a component"), "{problems:?}");
    let problems = audit_component_imports(&dir.path().join("absent.wasm"), &wit_dir()).unwrap_err();
    assert!(problems[0].contains("build the components first"), "{problems:?}");
}

/// The product's own components. Ignored here because this suite must not depend on the
/// product being built; run it with `cargo test -p spin-test-host -- --ignored` after
/// building them, or use `spin-test-host audit --manifest spin.toml` in CI.
#[test]
#[ignore]
fn product_components_import_only_the_gateway_world() {
    let manifest = spin_test_host::manifest::Manifest::load(&workspace_root().join("spin.toml")).unwrap();
    let mut problems = Vec::new();
    for c in manifest.components.values() {
        if let Err(p) = audit_component_imports(&c.source, &wit_dir()) {
            problems.extend(p);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
