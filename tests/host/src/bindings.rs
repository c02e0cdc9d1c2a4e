//! Host bindings for the Spin-specific interfaces of world `spin-platform` in `wit/`.
//! WIT `async func`s (spin:variables, spin:key-value, spin:sqlite's `-async` functions)
//! become `HostWithStore` traits driven by an `Accessor`; wasi:keyvalue's synchronous
//! functions become plain `Host` traits. spin:sqlite's synchronous functions are async on
//! the host, as Spin binds every import: the guest still waits for them, and so does its
//! instance. Every function may trap (`trappable`), which the key-value increment uses.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "ximilar:gw/spin-platform",
    imports: {
        "spin:sqlite/sqlite": async | trappable,
        default: trappable,
    },
    with: {
        "spin:key-value/key-value.store": crate::kv::OpenStore,
        "wasi:keyvalue/store.bucket": crate::kv::OpenStore,
        "wasi:keyvalue/atomics.cas": crate::kv::CasState,
    },
});
