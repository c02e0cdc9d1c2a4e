//! The import audit: does a built component import only what the `gateway` world in `wit/`
//! allows (and so only what Spin 4.0.2 provides), and does it export the WASIp3 handler?
//!
//! The component's top-level import names (`ns:pkg/interface@version`) are read with
//! wasmparser; the allowed set is the elaborated import list of world `gateway` (includes and
//! `use` dependencies resolved by wit-parser).
//!
//! Versions: `wasi:http` must be exactly `0.3.0-rc-2026-03-15` (a pre-release: no
//! compatibility range; spin-sdk 7's final 0.3.0 is refused by Spin 4.0.2). Other imports
//! must match an interface of the world with a semver-compatible version no newer than the
//! world's (0.2.0 ... 0.2.6 for WASIp2), the rule wasmtime's linker applies.

use std::collections::BTreeSet;
use std::path::Path;
use wasmparser::{Parser, Payload};

/// The world in `wit/` the audit checks against.
pub const WORLD: &str = "gateway";
/// The only `wasi:http` version Spin 4.0.2 accepts from a WASIp3 component.
pub const WASI_HTTP_VERSION: &str = "0.3.0-rc-2026-03-15";
/// The export Spin 4.0.2's HTTP trigger calls.
pub const HANDLER_EXPORT: &str = "wasi:http/handler@0.3.0-rc-2026-03-15";

/// Checks a built component against the `gateway` world of `wit_dir`.
/// `Err` lists every problem found, one sentence each.
pub fn audit_component_imports(wasm: &Path, wit_dir: &Path) -> Result<(), Vec<String>> {
    let allowed = match world_imports(wit_dir) {
        Ok(a) => a,
        Err(e) => return Err(vec![format!("cannot read the world in {}: {e:#}", wit_dir.display())]),
    };
    let bytes = match std::fs::read(wasm) {
        Ok(b) => b,
        Err(e) => {
            return Err(vec![format!(
                "cannot read {}: {e} (build the components first, see tests/host/README.md)",
                wasm.display()
            )])
        }
    };
    let (imports, exports) = match component_imports_exports(&bytes) {
        Ok(x) => x,
        Err(e) => return Err(vec![format!("{}: {e:#}", wasm.display())]),
    };

    let mut problems = Vec::new();
    for import in &imports {
        if let Some(problem) = check_import(import, &allowed) {
            problems.push(format!("{}: {problem}", wasm.display()));
        }
    }
    if !exports.contains(HANDLER_EXPORT) {
        problems.push(format!(
            "{}: does not export {HANDLER_EXPORT} (exports: {})",
            wasm.display(),
            exports.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The top-level import and export names of a component.
pub fn component_imports_exports(bytes: &[u8]) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    if !Parser::is_component(bytes) {
        anyhow::bail!("not a component (a wasm32-wasip1 core module? build for wasm32-wasip2)");
    }
    let mut imports = BTreeSet::new();
    let mut exports = BTreeSet::new();
    // Nested modules and components have their own imports; only depth 0 is the
    // component's contract with the host.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.insert(import?.name.0.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.insert(export?.name.0.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// `ns:pkg/interface@version` names of everything world `gateway` imports.
pub fn world_imports(wit_dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _files) = resolve.push_dir(wit_dir)?;
    let world = resolve.select_world(&[pkg], Some(WORLD))?;
    let mut out = BTreeSet::new();
    for key in resolve.worlds[world].imports.keys() {
        if let wit_parser::WorldKey::Interface(id) = key {
            if let Some(name) = resolve.id_of(*id) {
                out.insert(name);
            }
        }
    }
    Ok(out)
}

struct Name<'a> {
    interface: &'a str,
    version: Option<semver::Version>,
}

fn split_name(name: &str) -> Option<Name<'_>> {
    let (interface, version) = match name.split_once('@') {
        Some((i, v)) => (i, Some(semver::Version::parse(v).ok()?)),
        None => (name, None),
    };
    interface.contains(':').then_some(Name { interface, version })
}

/// `None` if the import is allowed, else why not.
fn check_import(import: &str, allowed: &BTreeSet<String>) -> Option<String> {
    let Some(name) = split_name(import) else {
        return Some(format!("imports {import:?}, which is not an interface of a WIT package"));
    };
    if name.interface.starts_with("wasi:http/") {
        let ok = name.version.as_ref().is_some_and(|v| v.to_string() == WASI_HTTP_VERSION);
        return (!ok).then(|| {
            format!("imports {import}: Spin 4.0.2 provides wasi:http only at {WASI_HTTP_VERSION} for WASIp3 components (spin-sdk must stay =6.0.0)")
        });
    }
    let compatible = allowed.iter().filter_map(|a| split_name(a)).any(|a| {
        a.interface == name.interface
            && match (&a.version, &name.version) {
                (None, None) => true,
                (Some(world), Some(wanted)) => versions_compatible(world, wanted),
                _ => false,
            }
    });
    if compatible {
        None
    } else {
        let same_interface: Vec<&String> =
            allowed.iter().filter(|a| split_name(a).is_some_and(|a| a.interface == name.interface)).collect();
        Some(if same_interface.is_empty() {
            format!("imports {import}, which is outside the `{WORLD}` world in wit/ (Spin 4.0.2 may not provide it)")
        } else {
            format!("imports {import}, but the `{WORLD}` world allows only {same_interface:?}")
        })
    }
}

/// Can a host providing `world` satisfy an import of `wanted`?
fn versions_compatible(world: &semver::Version, wanted: &semver::Version) -> bool {
    if !world.pre.is_empty() || !wanted.pre.is_empty() {
        return world == wanted;
    }
    let same_track =
        if world.major == 0 { wanted.major == 0 && world.minor == wanted.minor } else { world.major == wanted.major };
    same_track && wanted <= world
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> BTreeSet<String> {
        [
            "wasi:cli/environment@0.2.6",
            "wasi:http/types@0.3.0-rc-2026-03-15",
            "spin:variables/variables@3.0.0",
            "wasi:keyvalue/store@0.2.0-draft2",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    #[test]
    fn compatible_versions_pass() {
        let a = allowed();
        assert_eq!(check_import("wasi:cli/environment@0.2.0", &a), None);
        assert_eq!(check_import("wasi:cli/environment@0.2.6", &a), None);
        assert_eq!(check_import("wasi:http/types@0.3.0-rc-2026-03-15", &a), None);
        assert_eq!(check_import("wasi:keyvalue/store@0.2.0-draft2", &a), None);
    }

    #[test]
    fn the_world_in_wit_allows_spin_sqlite() {
        let world = world_imports(&crate::workspace_root().join("wit")).unwrap();
        assert_eq!(check_import("spin:sqlite/sqlite@3.1.0", &world), None);
        assert!(check_import("spin:sqlite/sqlite@3.2.0", &world).is_some(), "newer than Spin 4.0.2's");
        assert!(check_import("fermyon:spin/sqlite@2.0.0", &world).is_some(), "the older package is not in the world");
    }

    #[test]
    fn foreign_or_wrong_versions_fail() {
        let a = allowed();
        assert!(check_import("wasi:http/types@0.3.0", &a).unwrap().contains("=6.0.0"));
        assert!(check_import("wasi:http/outgoing-handler@0.2.6", &a).is_some());
        assert!(check_import("wasi:cli/environment@0.2.7", &a).is_some(), "newer than the host");
        assert!(check_import("wasi:cli/environment@0.3.0-rc-2026-03-15", &a).is_some());
        assert!(check_import("spin:variables/variables@2.0.0", &a).is_some());
        assert!(check_import("wasi:config/store@0.2.0-draft-2024-09-27", &a).unwrap().contains("outside"));
        assert!(check_import("wasi:keyvalue/store@0.2.0-draft", &a).is_some());
        assert!(check_import("plainname", &a).is_some());
    }
}
