//! Ferry's handlers and their ports: everything the three functions and the CLI share
//! beyond the pure core.
//!
//! - The pure core is the `ferry-core` crate, re-exported here: [`config`], [`rules`],
//!   [`event`], [`hook`], [`model`], [`plan`], [`render`], [`notify`], [`freeze`], [`approval`].
//! - [`ports`]: what the handlers need from the world, in Ferry's words; [`adapters`]
//!   implement them on AWS.
//! - Handlers: [`deploy`] (and its [`reconcile`]), [`verify`], [`rollback`], [`approve`], generic over the
//!   ports so tests drive them with [`fakes`]; what they share about the invocation they run
//!   in: [`invocation`]. The Lambda bootstrap is the `ferry-runtime` crate's.

pub use deploy::reconcile;
pub use ferry_core::{approval, config, digest, event, freeze, hook, metrics, model, notify, plan, render, rules};

pub mod adapters;
pub mod approve;
pub mod deploy;
pub mod invocation;
pub mod lookup;
pub mod ports;
pub mod rollback;
pub mod verify;

#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
