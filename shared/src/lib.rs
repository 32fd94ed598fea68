//! Ferry's library: everything the three functions and the CLI share.
//!
//! - Pure core, no I/O: [`config`], [`rules`], [`event`], [`model`], [`plan`], [`render`],
//!   [`notify`].
//! - [`ports`]: what the core needs from the world; [`adapters`] implement them on AWS.
//! - Handlers: [`deploy`] (and its [`reconcile`]), [`verify`], [`rollback`], generic over the ports so tests drive them with [`fakes`];
//!   what they share about the invocation they run in: [`invocation`].

pub mod adapters;
pub mod config;
pub mod deploy;
pub mod event;
pub mod function;
pub mod invocation;
pub mod lookup;
pub mod model;
pub mod notify;
pub mod plan;
pub mod ports;
pub mod reconcile;
pub mod render;
pub mod rollback;
pub mod rules;
pub mod verify;

#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
