//! Host bindings for the Spin-specific interfaces of world `spin-platform` in `wit/`,
//! generated as Spin 4.0.2 generates its own (`imports: { default: async | trappable }`).
//! WIT `async func`s (spin:variables, spin:key-value, spin:sqlite's `-async` functions)
//! become `HostWithStore` traits driven by an `Accessor` (wasmtime's concurrent host
//! functions: the instance goes on while they wait). Synchronous WIT functions
//! (wasi:keyvalue's store and atomics, spin:sqlite's `open` and `execute`) become async
//! Rust functions on the host (`func_wrap_async`): the guest waits for them, and so does
//! every other request of its instance. Every function may trap (`trappable`), which the
//! key-value increment uses.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "ximilar:gw/spin-platform",
    imports: {
        default: async | trappable,
    },
    with: {
        "spin:key-value/key-value.store": crate::kv::OpenStore,
        "wasi:keyvalue/store.bucket": crate::kv::OpenStore,
        "wasi:keyvalue/atomics.cas": crate::kv::CasState,
    },
});
