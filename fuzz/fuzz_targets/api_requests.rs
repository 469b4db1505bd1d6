//! Arbitrary control-socket requests: a method, a path and a body, routed to an API request,
//! and the same bytes as a `--config-file`. Routing must never panic; every failure is an
//! error with a status and a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 5] = ["GET", "PUT", "PATCH", "POST", "DELETE"];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let path = String::from_utf8_lossy(&rest[..split]);
    let body = rest.get(split + 1..).unwrap_or_default();
    let method = METHODS[usize::from(m) % METHODS.len()];
    if let Err(e) = fennec::api::routes::route(method, &path, body) {
        assert!((400..500).contains(&e.status) && !e.message.is_empty());
    }
    let _ = fennec::config::json::vm_config(&String::from_utf8_lossy(body));
});
