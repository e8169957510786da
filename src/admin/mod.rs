//! The admin HTTP API: metrics, health and readiness, status, overrides, reload.
