//! SMTP protocol machines (sans-IO).
//!
//! Owns: the SMTP wire protocol as pure functions and state machines fed
//! with bytes and the current time.
//! Must never: touch a socket, a file, the executor or the clock; every
//! input (bytes, `now`, spool state, TLS and auth results) comes from the
//! caller, so every rule can be tested with byte strings on virtual time.
#![deny(unsafe_code)]

pub mod address;
pub mod client;
pub mod data;
pub mod envelope;
pub mod header_field;
pub mod params;
pub mod parse;
pub mod received;
pub mod recipients;
pub mod relay;
pub mod reply;
pub mod sasl;
pub mod server;
pub mod xtext;

pub mod fuzzing;
