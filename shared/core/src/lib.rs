//! Ferry's core: every decision that needs no I/O, so it can be tested, fuzzed and read
//! alone. Nothing here talks to AWS, the network or a clock it was not handed.
//!
//! - [`config`] and its [`rules`]: which environment and services a pushed tag feeds.
//! - [`event`]: the EventBridge events Ferry acts on, parsed or refused.
//! - [`model`]: a deployment, a target's head, and the state machine between them.
//! - [`plan`]: what a push deploys where; [`render`]: the image change in a task definition.
//! - [`freeze`]: when an environment takes no deployments.
//! - [`notify`]: what Slack and SNS are told, escaped and clipped to their limits.
//! - [`metrics`]: the four DORA figures from the ledger's records; [`digest`]: the weekly digest of them.

pub mod approval;
pub mod config;
pub mod digest;
pub mod event;
pub mod freeze;
pub mod hook;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod plan;
pub mod render;
pub mod rules;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
