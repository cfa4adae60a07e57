//! The spool runtime.
