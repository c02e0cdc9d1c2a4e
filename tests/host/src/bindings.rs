//! Host bindings for the Spin-specific interfaces of world `spin-platform` in `wit/`.
//! WIT `async func`s (spin:variables, spin:key-value) become `HostWithStore` traits driven
//! by an `Accessor`; wasi:keyvalue's synchronous functions become plain `Host` traits.
//! Every function may trap (`trappable`), which the key-value increment uses.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "ximilar:gw/spin-platform",
    imports: { default: trappable },
    with: {
        "spin:key-value/key-value.store": crate::kv::OpenStore,
        "wasi:keyvalue/store.bucket": crate::kv::OpenStore,
        "wasi:keyvalue/atomics.cas": crate::kv::CasState,
    },
});
