//! What Ferry sends ECS: the register request for a new revision, and the deployment
//! configuration UpdateService carries (none, unless a rolling service's breaker is off).

use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionInputBuilder;
use aws_sdk_ecs::types::{DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentStrategy, Tag, TaskDefinition};

/// The deployment configuration to send with UpdateService: none (the service keeps its
/// own) unless a rolling service's circuit breaker is off, when it is the service's own with
/// the breaker and its rollback on (one the team set on is left as the team set it). A blue/green, linear
/// or canary service, or one with lifecycle hooks (whose roles a resend would have to pass),
/// is left exactly as it is.
pub(super) fn with_breaker(existing: Option<DeploymentConfiguration>) -> Option<DeploymentConfiguration> {
    let mut configuration = existing.unwrap_or_else(|| DeploymentConfiguration::builder().build());
    let rolling = configuration.strategy.as_ref().is_none_or(|s| *s == DeploymentStrategy::Rolling);
    let hooks = !configuration.lifecycle_hooks().is_empty();
    let breaker = configuration.deployment_circuit_breaker.as_ref();
    if !rolling || hooks || breaker.is_some_and(|b| b.enable) {
        return None;
    }
    configuration.deployment_circuit_breaker =
        Some(DeploymentCircuitBreaker::builder().enable(true).rollback(true).build());
    Some(configuration)
}

/// The register request for `from` with the new images: every field a task definition can
/// be registered with is copied, and the read-only ones (ARN, revision, status,
/// requiresAttributes, compatibilities, registeredAt/By, deregisteredAt) are left out.
/// Elastic Inference accelerators are copied too: AWS retired the feature, but a task
/// definition that still names them must not silently lose them.
#[allow(deprecated)]
pub fn render(from: TaskDefinition, tags: Vec<Tag>, images: Vec<Option<String>>) -> RegisterTaskDefinitionInputBuilder {
    let containers = from.container_definitions.map(|containers| {
        containers
            .into_iter()
            .zip(images)
            .map(|(mut c, image)| {
                c.image = image;
                c
            })
            .collect()
    });
    RegisterTaskDefinitionInputBuilder::default()
        .set_family(from.family)
        .set_task_role_arn(from.task_role_arn)
        .set_execution_role_arn(from.execution_role_arn)
        .set_network_mode(from.network_mode)
        .set_container_definitions(containers)
        .set_volumes(from.volumes)
        .set_placement_constraints(from.placement_constraints)
        .set_requires_compatibilities(from.requires_compatibilities)
        .set_cpu(from.cpu)
        .set_memory(from.memory)
        .set_tags((!tags.is_empty()).then_some(tags))
        .set_pid_mode(from.pid_mode)
        .set_ipc_mode(from.ipc_mode)
        .set_proxy_configuration(from.proxy_configuration)
        .set_inference_accelerators(from.inference_accelerators)
        .set_ephemeral_storage(from.ephemeral_storage)
        .set_runtime_platform(from.runtime_platform)
        .set_enable_fault_injection(from.enable_fault_injection)
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::{
        DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentLifecycleHook, DeploymentStrategy,
    };

    use super::with_breaker;

    fn breaker(enable: bool, rollback: bool) -> Option<DeploymentCircuitBreaker> {
        Some(DeploymentCircuitBreaker::builder().enable(enable).rollback(rollback).build())
    }

    #[test]
    fn update_service_sends_a_deployment_configuration_only_to_switch_a_rolling_breaker_on() {
        let rolling = DeploymentConfiguration::builder().maximum_percent(150).build();
        let sent = with_breaker(Some(rolling)).expect("the breaker switched on");
        assert_eq!((sent.deployment_circuit_breaker, sent.maximum_percent), (breaker(true, true), Some(150)));
        assert!(with_breaker(None).is_some_and(|c| c.deployment_circuit_breaker == breaker(true, true)));

        let on_without_rollback =
            DeploymentConfiguration::builder().set_deployment_circuit_breaker(breaker(true, false)).build();
        assert_eq!(with_breaker(Some(on_without_rollback)), None, "the team's own breaker is left alone");
        for strategy in [DeploymentStrategy::BlueGreen, DeploymentStrategy::Linear, DeploymentStrategy::Canary] {
            let configuration = DeploymentConfiguration::builder().strategy(strategy.clone()).build();
            assert_eq!(with_breaker(Some(configuration)), None, "{strategy:?}: its settings untouched");
        }
        let hooked = DeploymentConfiguration::builder()
            .lifecycle_hooks(DeploymentLifecycleHook::builder().hook_target_arn("arn:aws:lambda:x").build())
            .build();
        assert_eq!(with_breaker(Some(hooked)), None, "hooks are never resent");
    }
}
