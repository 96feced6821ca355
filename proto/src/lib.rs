//! Types and JSON of the node <-> frontend protocol, and the instance metadata document.
//!
//! Not yet implemented: this crate is filled in by the frontend and node-agent issues.
