//! `ferry doctor [--env E] [--stack NAME]`: everything a deployment will need, checked per target,
//! read-only. One line per finding, saying how to fix it; exit 1 if anything would block a
//! deployment. The judgments are pure ([`judge_stack`], [`judge_target`]); [`Ctx::doctor`] reads.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use ferry::adapters::aws::AwsClients;
use ferry::model::Target;

use super::init::repository_of;
use crate::render::aws_message;
use crate::{Ctx, Failure, fail};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Ok,
    Warn,
    /// A deployment to the target would fail, or never be heard of.
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub level: Level,
    /// What it is about, and, unless it is fine, how to fix it.
    pub text: String,
}

fn ok(text: impl Into<String>) -> Finding {
    Finding { level: Level::Ok, text: text.into() }
}
fn warn(text: impl Into<String>) -> Finding {
    Finding { level: Level::Warn, text: text.into() }
}
fn block(text: impl Into<String>) -> Finding {
    Finding { level: Level::Block, text: text.into() }
}

/// Ferry's stack, as CloudFormation describes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StackFacts {
    pub name: String,
    pub status: String,
    /// Its parameters, comma-delimited lists split (empty values left out).
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Its resources: (logical id, type, status).
    pub resources: Vec<(String, String, String)>,
    /// Its outputs.
    pub outputs: BTreeMap<String, String>,
}

impl StackFacts {
    fn listed(&self, parameter: &str, value: &str) -> bool {
        self.parameters.get(parameter).is_some_and(|values| values.iter().any(|v| v == value))
    }
}

/// A service as ECS describes it, with its task definition.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceFacts {
    pub status: String,
    pub controller: Option<String>,
    pub strategy: Option<String>,
    pub task_definition: String,
    /// (name, image)
    pub containers: Vec<(String, String)>,
    pub task_role: Option<String>,
    pub execution_role: Option<String>,
    pub hooks: Vec<ferry::ports::LifecycleHook>,
}

/// What doctor read about one target.
#[derive(Debug, Clone)]
pub(crate) struct TargetFacts {
    pub target: Target,
    /// The account the target is in (Ferry's own unless it says otherwise).
    pub account: String,
    pub repository: String,
    pub containers: Vec<String>,
    /// The health URL, and whether its host resolved.
    pub health: Option<(String, bool)>,
    /// The blue/green test route's URL, if the service has one.
    pub test_url: Option<String>,
    /// Why the target's role could not be assumed, if it could not.
    pub role_refused: Option<String>,
    /// `Ok(None)`: ECS has no such service (or cluster).
    pub service: Result<Option<ServiceFacts>, String>,
    /// In another account or region: whether a rule there forwards to Ferry's bus (`Err`: could not look).
    pub forwarding: Option<Result<bool, String>>,
}

/// Whether ECR's push events for a repository reach Ferry: it must be in Ferry's region.
/// `elsewhere`: some environment takes images from other accounts' registries, where the
/// repository may be instead.
pub(crate) fn judge_repository(
    repository: &str,
    region: &str,
    found: &Result<bool, String>,
    elsewhere: bool,
) -> Finding {
    match found {
        Ok(true) => ok(format!("{repository} is in {region}, where Ferry hears its pushes")),
        Ok(false) if elsewhere => warn(format!(
            "no repository {repository} in this account's {region}: fine if it is in the registry of an account \
             registry_accounts lists, in {region}"
        )),
        Ok(false) => block(format!(
            "no repository {repository} in {region}: ECR announces a push in the repository's own region only; \
             create it here (or push here), or deploy Ferry in the repository's region"
        )),
        Err(why) => warn(format!("could not look for repository {repository} in {region}: {why}")),
    }
}

/// The stack: there, complete, and its rules, dead-letter queues and alarms in place.
pub(crate) fn judge_stack(stack: &Result<StackFacts, String>) -> Vec<Finding> {
    let s = match stack {
        Ok(s) => s,
        Err(why) => {
            return vec![block(format!(
                "{why}: deploy infra/template.yaml (sam deploy), or name the stack with --stack"
            ))];
        }
    };
    let mut found = Vec::new();
    if !matches!(s.status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "UPDATE_ROLLBACK_COMPLETE") {
        found.push(block(format!("stack {} is {}: finish or fix its last change first", s.name, s.status)));
    }
    for (logical, kind, status) in &s.resources {
        if !status.ends_with("_COMPLETE") || status.contains("ROLLBACK") || status.starts_with("DELETE") {
            found.push(block(format!("{logical} ({kind}) is {status}: see the stack's events")));
        }
    }
    let count = |kind: &str| s.resources.iter().filter(|(_, k, _)| k == kind).count();
    let (rules, queues, alarms) =
        (count("AWS::Events::Rule"), count("AWS::SQS::Queue"), count("AWS::CloudWatch::Alarm"));
    if rules == 0 {
        found.push(block("the stack has no EventBridge rules: no event reaches Ferry; deploy infra/template.yaml"));
    }
    if found.is_empty() {
        found.push(ok(format!(
            "stack {} {}: {rules} rules, {queues} dead-letter queues, {alarms} alarms in place",
            s.name, s.status
        )));
    }
    found
}

/// One target: its role, service, containers, the stack's grants for it, its events' way to
/// Ferry, its health URL.
pub(crate) fn judge_target(f: &TargetFacts, stack: Option<&StackFacts>, home: &str) -> Vec<Finding> {
    let t = &f.target;
    let mut found = Vec::new();
    let elsewhere = f.account != home;
    if let (Some(role), Some(s)) = (&t.role_arn, stack)
        && !s.listed("TargetRoleArns", role)
    {
        found.push(block(format!(
            "role {role} is not in the stack's TargetRoleArns: Ferry may not assume it; add it there"
        )));
    }
    if t.cluster.starts_with("arn:") {
        found.push(block(format!(
            "cluster {} is an ARN: ECS's events and the stack's grants name clusters by name; write its name",
            t.cluster
        )));
    }
    // The target role trusts Ferry's function roles only (infra/target.yaml), so an operator
    // is normally refused: what lies behind it cannot be checked from here.
    if let Some(why) = &f.role_refused {
        let role = t.role_arn.as_deref().unwrap_or_default();
        found.push(warn(format!(
            "could not assume {role} with your credentials ({why}); it trusts only Ferry's function roles \
             (FerryRoleArns of infra/target.yaml in account {}), so the service there was not checked: run \
             ferry doctor with credentials of that account",
            f.account
        )));
        return found;
    }
    match &f.service {
        Ok(Some(service)) => found.extend(judge_service(f, service, stack.filter(|_| !elsewhere))),
        Ok(None) => found.push(block(format!(
            "no service {} in cluster {} ({}): create it, or correct the service's name or the targets in ferry.toml",
            t.service, t.cluster, t.region
        ))),
        Err(why) => found.push(block(format!("cannot read service {}: {why}", t.service))),
    }
    if let Some(s) = stack.filter(|_| elsewhere)
        && !s.listed("ForwardingAccountIds", &f.account)
    {
        found.push(block(format!(
            "account {} is not in the stack's ForwardingAccountIds: its forwarded events would be refused; add it there",
            f.account
        )));
    }
    match &f.forwarding {
        Some(Ok(true)) => found.push(ok(format!("ECS's events in {} {} are forwarded to Ferry", f.account, t.region))),
        Some(Ok(false)) => found.push(block(format!(
            "nothing forwards ECS's events from account {} {} to Ferry's bus: deployments there would stay \
             IN_PROGRESS; deploy infra/target.yaml there",
            f.account, t.region
        ))),
        Some(Err(why)) => found.push(warn(format!(
            "could not look for the rules forwarding account {} {} to Ferry ({why}): check that infra/target.yaml is deployed there",
            f.account, t.region
        ))),
        None => {}
    }
    if let Some((url, resolves)) = &f.health {
        let private = stack.is_some_and(|s| s.parameters.get("VerifySubnetIds").is_some_and(|v| !v.is_empty()));
        match (resolves, private) {
            (true, _) => found.push(ok(format!("health URL {url} resolves"))),
            (false, true) => found.push(warn(format!(
                "health URL {url} does not resolve from here (the verify function runs in VerifySubnetIds)"
            ))),
            (false, false) => found.push(block(format!(
                "health URL {url} does not resolve: every smoke test would fail; correct it, or set VerifySubnetIds \
                 for a private service"
            ))),
        }
    }
    found
}

/// The service itself, and (in Ferry's own account: `stack`) the stack's grants for it.
fn judge_service(f: &TargetFacts, service: &ServiceFacts, stack: Option<&StackFacts>) -> Vec<Finding> {
    let t = &f.target;
    let mut found = Vec::new();
    match service.controller.as_deref().unwrap_or("ECS") {
        _ if service.status != "ACTIVE" => found
            .push(block(format!("service {} is {}: Ferry deploys active services only", t.service, service.status))),
        "ECS" => found.push(ok(format!(
            "service {} is active, on the ECS controller ({})",
            t.service,
            service.strategy.as_deref().unwrap_or("ROLLING")
        ))),
        other => found.push(block(format!(
            "service {} uses the {other} deployment controller: Ferry drives ECS's own (rolling, blue/green, \
             linear, canary); move the service to the ECS controller",
            t.service
        ))),
    }
    let names: Vec<&str> = service.containers.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in &f.containers {
        match service.containers.iter().find(|(n, _)| n == wanted) {
            None => found.push(block(format!(
                "container {wanted} is not in {} (it has {}): correct the service's containers in ferry.toml",
                service.task_definition,
                names.join(", ")
            ))),
            Some((_, image)) if repository_of(image) != Some(f.repository.as_str()) => found.push(warn(format!(
                "container {wanted} runs {image}, not an image of {}: the next push replaces it with one",
                f.repository
            ))),
            Some(_) => found.push(ok(format!("container {wanted} takes {}'s images", f.repository))),
        }
    }
    // Ferry's own hook (LifecycleHookTargetArn) must gate a blue/green, linear or canary rollout.
    let hook = stack.and_then(|s| s.outputs.get("LifecycleHookTargetArn")).map(String::as_str);
    let strategy = service.strategy.as_deref();
    for w in super::plan::blue_green_warnings(strategy, &service.hooks, f.test_url.as_deref(), hook) {
        found.push(warn(format!("{w}: see docs/configuration.md (blue/green)")));
    }
    if let Some(s) = stack {
        if !s.listed("EcsClusterNames", &t.cluster) {
            found.push(block(format!(
                "cluster {} is not in the stack's EcsClusterNames: UpdateService would be denied; add it there",
                t.cluster
            )));
        }
        for (what, role) in [("task role", &service.task_role), ("execution role", &service.execution_role)] {
            if let Some(role) = role.as_deref().filter(|r| !s.listed("TaskRoleArns", r)) {
                found.push(block(format!(
                    "the {what} {role} is not in the stack's TaskRoleArns: registering a revision passes it \
                     (iam:PassRole) and would be denied; add it there"
                )));
            }
        }
    }
    found
}

/// The report, one section per subject, and how many findings block a deployment.
pub(crate) fn report(sections: &[(String, Vec<Finding>)]) -> (String, usize) {
    let mut out = String::new();
    let mut blocking = 0;
    for (subject, findings) in sections {
        out.push_str(&format!("{subject}\n"));
        for f in findings {
            let mark = match f.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Block => {
                    blocking += 1;
                    "FAIL"
                }
            };
            out.push_str(&format!("  {mark} {}\n", f.text));
        }
    }
    (out, blocking)
}

impl Ctx<'_> {
    /// Reads what the checks need, prints the report to `out`; a failure when anything blocks.
    pub(crate) async fn doctor(
        &self,
        out: &mut dyn std::io::Write,
        env: Option<&str>,
        stack_name: &str,
    ) -> Result<String, Failure> {
        let region = self.aws.region().map(|r| r.to_string()).unwrap_or_default();
        let me = self.caller().await?;
        let home = self.config.home_account.clone().unwrap_or_else(|| me.account().unwrap_or_default().to_string());
        // `aws`, `aws-cn`, `aws-us-gov`: the partition of the caller's ARN.
        let partition = me.arn().and_then(|a| a.split(':').nth(1)).unwrap_or("aws").to_string();
        let stack = self.stack(stack_name).await;
        let mut sections = vec![(format!("stack {stack_name} ({region})"), judge_stack(&stack))];
        let stack = stack.ok();

        let targets = self.targets(env, None)?;
        let mut repositories: Vec<&str> = self.config.services.iter().map(|s| s.repository.as_str()).collect();
        repositories.sort_unstable();
        repositories.dedup();
        let ecr = aws_sdk_ecr::Client::new(self.aws);
        let other_registries = self.config.environments.iter().any(|e| e.registry_accounts.iter().any(|a| *a != home));
        for repository in repositories {
            let found = match ecr.describe_repositories().repository_names(repository).send().await {
                Ok(_) => Ok(true),
                Err(e) if e.code() == Some("RepositoryNotFoundException") => Ok(false),
                Err(e) => Err(aws_message(&e)),
            };
            let finding = judge_repository(repository, &region, &found, other_registries);
            sections.push((format!("repository {repository}"), vec![finding]));
        }

        let ecs = AwsClients::new(self.aws.clone(), aws_sdk_ecs::Client::new);
        let events = AwsClients::new(self.aws.clone(), aws_sdk_eventbridge::Client::new);
        let ferry_bus = format!("arn:{partition}:events:{region}:{home}:event-bus/default");
        for t in targets {
            let facts = self.target_facts(&t, &home, &region, &ecs, &events, &ferry_bus).await;
            sections.push((t.to_string(), judge_target(&facts, stack.as_ref(), &home)));
        }
        let (text, blocking) = report(&sections);
        if blocking == 0 {
            return Ok(format!("{text}nothing blocks a deployment\n"));
        }
        out.write_all(text.as_bytes()).map_err(|e| fail(e.to_string()))?;
        Err(fail(format!("{blocking} finding(s) would block a deployment (FAIL above)")))
    }

    async fn stack(&self, name: &str) -> Result<StackFacts, String> {
        let cfn = aws_sdk_cloudformation::Client::new(self.aws);
        let described = cfn.describe_stacks().stack_name(name).send().await;
        let described = described.map_err(|e| format!("no stack {name}: {}", aws_message(&e)))?;
        let stack = described.stacks().first().ok_or_else(|| format!("no stack {name}"))?;
        let mut facts = StackFacts {
            name: name.to_string(),
            status: stack.stack_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
            ..StackFacts::default()
        };
        for o in stack.outputs() {
            let (key, value) = (o.output_key().unwrap_or_default(), o.output_value().unwrap_or_default());
            facts.outputs.insert(key.to_string(), value.to_string());
        }
        for p in stack.parameters() {
            let values = p.parameter_value().unwrap_or_default().split(',').map(str::trim);
            let values = values.filter(|v| !v.is_empty()).map(str::to_string).collect();
            facts.parameters.insert(p.parameter_key().unwrap_or_default().to_string(), values);
        }
        let mut pages = cfn.list_stack_resources().stack_name(name).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("cannot list stack {name}'s resources: {}", aws_message(&e)))?;
            for r in page.stack_resource_summaries() {
                facts.resources.push((
                    r.logical_resource_id().unwrap_or_default().to_string(),
                    r.resource_type().unwrap_or_default().to_string(),
                    r.resource_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                ));
            }
        }
        Ok(facts)
    }

    async fn target_facts(
        &self,
        t: &Target,
        home: &str,
        ferry_region: &str,
        ecs: &AwsClients<aws_sdk_ecs::Client>,
        events: &AwsClients<aws_sdk_eventbridge::Client>,
        ferry_bus: &str,
    ) -> TargetFacts {
        let service = self
            .config
            .services
            .iter()
            .find(|s| s.deploys_to(&t.environment) && s.service_name(&t.environment) == t.service);
        let account = t.account.clone().unwrap_or_else(|| home.to_string());
        let mut facts = TargetFacts {
            target: t.clone(),
            account: account.clone(),
            repository: service.map(|s| s.repository.clone()).unwrap_or_default(),
            containers: service.map(|s| s.containers.clone()).unwrap_or_default(),
            health: None,
            test_url: None,
            role_refused: None,
            service: Ok(None),
            forwarding: None,
        };
        if let Some(role) = &t.role_arn {
            let sts = aws_sdk_sts::Client::new(self.aws);
            if let Err(e) = sts.assume_role().role_arn(role).role_session_name("ferry-doctor").send().await {
                facts.role_refused = Some(aws_message(&e));
                return facts;
            }
        }
        let client = ecs.get(&t.region, t.role_arn.as_deref()).await;
        facts.service = read_service(&client, t).await;
        if account != home || t.region != ferry_region {
            let client = events.get(&t.region, t.role_arn.as_deref()).await;
            let rules = client.list_rule_names_by_target().target_arn(ferry_bus).send().await;
            facts.forwarding = Some(rules.map(|r| !r.rule_names().is_empty()).map_err(|e| aws_message(&e)));
        }
        if let Some(health) = service.and_then(|s| s.health.as_ref()) {
            facts.test_url = health.test_url_for(t, Some(&account));
            let url = health.url_for(t, Some(&account));
            let resolves = resolves(&url).await;
            facts.health = Some((url, resolves));
        }
        facts
    }
}

async fn read_service(client: &aws_sdk_ecs::Client, t: &Target) -> Result<Option<ServiceFacts>, String> {
    let described = match client.describe_services().cluster(&t.cluster).services(&t.service).send().await {
        Ok(d) => d,
        Err(e) if e.code() == Some("ClusterNotFoundException") => return Ok(None),
        Err(e) => return Err(aws_message(&e)),
    };
    let Some(s) = described.services().first() else { return Ok(None) };
    let task_definition = s.task_definition().unwrap_or_default().to_string();
    let mut facts = ServiceFacts {
        status: s.status().unwrap_or_default().to_string(),
        controller: s.deployment_controller().map(|c| c.r#type().as_str().to_string()),
        strategy: s.deployment_configuration().and_then(|c| c.strategy()).map(|s| s.as_str().to_string()),
        task_definition: task_definition.clone(),
        hooks: s
            .deployment_configuration()
            .map(|c| c.lifecycle_hooks())
            .unwrap_or_default()
            .iter()
            .map(|h| ferry::ports::LifecycleHook {
                target: h.hook_target_arn().map(str::to_string),
                stages: h.lifecycle_stages().iter().map(|s| s.as_str().to_string()).collect(),
            })
            .collect(),
        ..ServiceFacts::default()
    };
    let td = client.describe_task_definition().task_definition(&task_definition).send().await;
    let td = td.map_err(|e| aws_message(&e))?;
    if let Some(td) = td.task_definition() {
        facts.containers = super::init::containers_of(td);
        facts.task_role = td.task_role_arn().map(str::to_string);
        facts.execution_role = td.execution_role_arn().map(str::to_string);
    }
    Ok(Some(facts))
}

/// Whether `url`'s host has an address (DNS), looked up from here.
async fn resolves(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let with_port = if host.contains(':') { host.to_string() } else { format!("{host}:443") };
    tokio::net::lookup_host(with_port).await.is_ok_and(|mut addresses| addresses.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(account: Option<&str>, region: &str, role: Option<&str>) -> Target {
        Target {
            environment: "production".into(),
            account: account.map(str::to_string),
            region: region.into(),
            cluster: "shop-prod".into(),
            service: "shop-production-api".into(),
            role_arn: role.map(str::to_string),
        }
    }

    const IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:aa";
    const TASK: &str = "arn:aws:iam::123456789012:role/shop-task";
    const EXECUTION: &str = "arn:aws:iam::123456789012:role/shop-execution";

    fn healthy() -> (TargetFacts, StackFacts) {
        let service = ServiceFacts {
            status: "ACTIVE".into(),
            controller: Some("ECS".into()),
            strategy: Some("ROLLING".into()),
            task_definition: "shop-production-api:7".into(),
            containers: vec![("api".into(), IMAGE.into()), ("envoy".into(), "public.ecr.aws/envoy:v1".into())],
            task_role: Some(TASK.into()),
            execution_role: Some(EXECUTION.into()),
            hooks: Vec::new(),
        };
        let facts = TargetFacts {
            target: target(None, "eu-west-1", None),
            account: "123456789012".into(),
            repository: "shop/api".into(),
            containers: vec!["api".into()],
            health: Some(("https://api.shop.example/health".into(), true)),
            test_url: None,
            role_refused: None,
            service: Ok(Some(service)),
            forwarding: None,
        };
        let mut stack = StackFacts { name: "ferry".into(), status: "CREATE_COMPLETE".into(), ..Default::default() };
        stack.parameters.insert("EcsClusterNames".into(), vec!["shop-prod".into()]);
        stack.parameters.insert("TaskRoleArns".into(), vec![TASK.into(), EXECUTION.into()]);
        (facts, stack)
    }

    fn blocking(found: &[Finding]) -> Vec<&str> {
        found.iter().filter(|f| f.level == Level::Block).map(|f| f.text.as_str()).collect()
    }

    #[test]
    fn a_healthy_target_passes_and_each_defect_blocks_with_its_fix() {
        let (facts, stack) = healthy();
        let found = judge_target(&facts, Some(&stack), "123456789012");
        assert!(blocking(&found).is_empty(), "{found:?}");
        assert_eq!(found.len(), 3, "service, container, health: {found:?}");

        let defect = |change: &dyn Fn(&mut TargetFacts, &mut StackFacts), expected: &str| {
            let (mut facts, mut stack) = healthy();
            change(&mut facts, &mut stack);
            let found = judge_target(&facts, Some(&stack), "123456789012");
            let blocked = blocking(&found);
            assert!(blocked.len() == 1 && blocked[0].contains(expected), "{expected}: {found:?}");
        };
        defect(
            &|f, _| f.containers = vec!["apii".into()],
            "container apii is not in shop-production-api:7 (it has api, envoy)",
        );
        defect(
            &|_, s| s.parameters.insert("TaskRoleArns".into(), vec![EXECUTION.into()]).map_or((), drop),
            "task role arn:aws:iam::123456789012:role/shop-task is not in the stack's TaskRoleArns",
        );
        defect(
            &|_, s| s.parameters.insert("EcsClusterNames".into(), vec![]).map_or((), drop),
            "cluster shop-prod is not in the stack's EcsClusterNames",
        );
        defect(&|f, _| f.service = Ok(None), "no service shop-production-api in cluster shop-prod (eu-west-1)");
        defect(
            &|f, _| {
                f.service
                    .as_mut()
                    .map(|s| s.as_mut().map_or((), |s| s.controller = Some("CODE_DEPLOY".into())))
                    .unwrap_or(())
            },
            "uses the CODE_DEPLOY deployment controller",
        );
        defect(&|f, _| f.health = Some(("https://nowhere.invalid/health".into(), false)), "does not resolve");
    }

    #[test]
    fn a_blue_green_service_ferrys_hook_does_not_gate_is_warned_about() {
        let (mut facts, mut stack) = healthy();
        let hook = "arn:aws:lambda:eu-west-1:123456789012:function:ferry-verify";
        stack.outputs.insert("LifecycleHookTargetArn".into(), hook.into());
        if let Ok(Some(service)) = facts.service.as_mut() {
            service.strategy = Some("BLUE_GREEN".into());
        }
        let found = judge_target(&facts, Some(&stack), "123456789012");
        let warned: Vec<&str> = found.iter().filter(|f| f.level == Level::Warn).map(|f| f.text.as_str()).collect();
        assert_eq!(warned.len(), 2, "no hook at POST_TEST_TRAFFIC_SHIFT, no test_url: {found:?}");
        assert!(warned[0].contains(&format!("no Ferry's hook ({hook}) at POST_TEST_TRAFFIC_SHIFT")), "{warned:?}");

        facts.test_url = Some("https://test.api.shop.example/health".into());
        if let Ok(Some(service)) = facts.service.as_mut() {
            service.hooks = vec![ferry::ports::LifecycleHook {
                target: Some(hook.into()),
                stages: vec!["POST_TEST_TRAFFIC_SHIFT".into()],
            }];
        }
        let found = judge_target(&facts, Some(&stack), "123456789012");
        assert!(found.iter().all(|f| f.level == Level::Ok), "gated: {found:?}");
    }

    #[test]
    fn another_accounts_target_needs_its_role_assumable_listed_and_its_events_forwarded() {
        let role = "arn:aws:iam::210987654321:role/ferry-target";
        let (mut facts, mut stack) = healthy();
        facts.target = target(Some("210987654321"), "eu-west-1", Some(role));
        facts.account = "210987654321".into();
        facts.forwarding = Some(Ok(true));
        stack.parameters.insert("TargetRoleArns".into(), vec![role.into()]);
        stack.parameters.insert("ForwardingAccountIds".into(), vec!["210987654321".into()]);
        let found = judge_target(&facts, Some(&stack), "123456789012");
        assert!(blocking(&found).is_empty(), "its clusters and task roles are target.yaml's business: {found:?}");

        facts.forwarding = Some(Ok(false));
        assert!(
            blocking(&judge_target(&facts, Some(&stack), "123456789012"))[0].contains("deploy infra/target.yaml there")
        );
        facts.forwarding = Some(Err("AccessDenied".into()));
        let found = judge_target(&facts, Some(&stack), "123456789012");
        assert!(
            blocking(&found).is_empty() && found.iter().any(|f| f.level == Level::Warn),
            "could not look: {found:?}"
        );

        facts.role_refused = Some("AccessDenied: not authorized to perform sts:AssumeRole".into());
        stack.parameters.remove("TargetRoleArns");
        let found = judge_target(&facts, Some(&stack), "123456789012");
        let listed = format!("role {role} is not in the stack's TargetRoleArns: Ferry may not assume it; add it there");
        assert_eq!(blocking(&found), [listed.as_str()]);
        let warned: Vec<&Finding> = found.iter().filter(|f| f.level == Level::Warn).collect();
        assert!(
            warned.len() == 1 && warned[0].text.starts_with(&format!("could not assume {role} with your credentials")),
            "an operator is refused by design; what lies behind the role is not judged: {found:?}"
        );
    }

    #[test]
    fn the_stack_must_be_complete_with_its_rules() {
        assert_eq!(blocking(&judge_stack(&Err("no stack ferry: does not exist".into()))).len(), 1);
        let mut stack = StackFacts { name: "ferry".into(), status: "UPDATE_COMPLETE".into(), ..Default::default() };
        for (id, kind) in [("PushRule", "AWS::Events::Rule"), ("DeployDeadLetterQueue", "AWS::SQS::Queue")] {
            stack.resources.push((id.into(), kind.into(), "CREATE_COMPLETE".into()));
        }
        let found = judge_stack(&Ok(stack.clone()));
        assert_eq!(found, [ok("stack ferry UPDATE_COMPLETE: 1 rules, 1 dead-letter queues, 0 alarms in place")]);
        stack.resources[0].2 = "CREATE_FAILED".into();
        stack.status = "UPDATE_ROLLBACK_FAILED".into();
        assert_eq!(blocking(&judge_stack(&Ok(stack))).len(), 2);
    }

    #[test]
    fn images_name_their_ecr_repository() {
        assert_eq!(repository_of(IMAGE), Some("shop/api"));
        assert_eq!(repository_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api:v1"), Some("shop/api"));
        assert_eq!(repository_of("public.ecr.aws/envoy:v1"), None);
        assert_eq!(repository_of("nginx"), None);
    }
}
