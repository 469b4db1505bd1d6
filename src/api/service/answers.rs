//! The answers the control socket's service gives in more than one place: refusals by the VM's
//! state, errors on one line, how a guest ended.

use serde_json::{json, Value};

use crate::api::ApiError;
use crate::ExitReason;

pub(super) fn not_after_start() -> ApiError {
    ApiError::bad_request(
        "The requested operation is not supported after starting the VM (it is pre-boot only)",
    )
}

pub(super) fn not_before_start() -> ApiError {
    ApiError::bad_request("The requested operation is not supported before starting the VM")
}

/// An error and its sources on one line.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

/// A guest's end, as JSON: a stable `kind` and a sentence.
pub fn exit_json(reason: &ExitReason) -> Value {
    json!({ "kind": reason.kind(), "message": reason.to_string() })
}

/// A VM's error as a 400, its causes on one line.
pub(super) fn vm_error(e: crate::Error) -> ApiError {
    ApiError::bad_request(one_line(&e))
}
