//! `switchyard plugin inspect`: what a component exports and imports, and
//! which Switchyard world it can be loaded as.

use super::engine::{Engine, World};
use crate::error::Error;
use std::fmt::Write;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;

/// A human-readable report, or why the bytes are not a loadable component.
pub fn report(engine: &Engine, bytes: &[u8]) -> Result<String, Error> {
    if !bytes.starts_with(b"\0asm") {
        return Err(Error::internal("not a WebAssembly file"));
    }
    let raw = engine.raw();
    let component = Component::from_binary(raw, bytes)
        .map_err(|e| Error::internal(format!("not a valid component (build with --target wasm32-wasip2): {e:#}")))?;
    let ty = component.component_type();
    let mut out = String::new();
    let worlds = World::from_exports(ty.exports(raw).map(|(name, _)| name));
    let _ = writeln!(out, "worlds:  {}", if worlds.is_empty() { "none (no Switchyard seam exported)".into() } else { worlds.join(", ") });
    let reads = super::engine::reads_request(raw, &component);
    let _ = writeln!(out, "reads the request: {}", if reads { "yes (imports request methods; the gateway builds the request view for it)" } else { "no (the gateway skips building the request view)" });
    let _ = writeln!(out, "exports:");
    for (name, item) in ty.exports(raw) {
        let _ = writeln!(out, "  {name}{}", functions(raw, &item.ty));
    }
    let _ = writeln!(out, "imports:");
    for (name, item) in ty.imports(raw) {
        let _ = writeln!(out, "  {name}{}", functions(raw, &item.ty));
    }
    Ok(out)
}

fn functions(engine: &wasmtime::Engine, item: &ComponentItem) -> String {
    match item {
        ComponentItem::ComponentInstance(inst) => {
            let names: Vec<&str> = inst.exports(engine).map(|(n, _)| n).collect();
            format!(" ({})", names.join(", "))
        }
        ComponentItem::ComponentFunc(_) => " (function)".into(),
        _ => String::new(),
    }
}
