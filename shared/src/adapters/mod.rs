//! Adapters: the ports implemented with the AWS SDK and HTTP. `aws_sdk_*` types and
//! `SdkError` stay in here; what leaves speaks Ferry's words.

pub mod aws;
pub mod cloudwatch;
pub mod dynamodb;
pub mod ecr;
pub mod ecs;
pub mod elb;
pub mod eventbridge;
pub mod http;
pub mod notifiers;
pub mod slack;
pub mod sns;
