//! `ferry init --region R --cluster C [--role-arn ARN] [--env NAME=CLUSTER] [--output FILE]`:
//! reads an estate's services (never changes anything) and writes a commented `ferry.toml`
//! proposing environments, tag rules and services, with the stack parameters it implies.
//! The proposal is pure ([`propose`], [`render`]); [`Ctx::init`] reads.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::error::ProvideErrorMetadata;
use ferry::adapters::aws::AwsClients;

use crate::render::aws_message;
use crate::{Ctx, Failure, fail};

/// One ECS service found, with its task definition's containers and roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Found {
    pub account: String,
    /// The role read through (another account), if any.
    pub role_arn: Option<String>,
    pub region: String,
    pub cluster: String,
    pub service: String,
    /// (name, image)
    pub containers: Vec<(String, String)>,
    pub roles: Vec<String>,
}

/// What `ferry init` read, and what the operator said.
#[derive(Debug, Clone, Default)]
pub(crate) struct Estate {
    pub home: String,
    pub services: Vec<Found>,
    /// Each ECR repository's tags, as ECR has them.
    pub tags: BTreeMap<String, Vec<String>>,
    /// `--env NAME=CLUSTER` (CLUSTER may be `ACCOUNT/CLUSTER`).
    pub named: Vec<(String, String)>,
    /// Repositories whose tags could not be read, and why.
    pub unread: Vec<(String, String)>,
}

/// Environment words a cluster name may carry, in the order a release passes through them.
const STAGES: [&[&str]; 5] = [
    &["dev", "development", "sandbox"],
    &["test", "qa", "ci"],
    &["staging", "stage", "stg", "uat"],
    &["preprod", "pre-prod", "preproduction"],
    &["prod", "production", "live", "prd"],
];

/// The environment a cluster belongs to, and whether that is a guess.
fn environment_of(estate: &Estate, account: &str, cluster: &str) -> (String, bool) {
    let qualified = format!("{account}/{cluster}");
    if let Some((name, _)) = estate.named.iter().find(|(_, c)| *c == cluster || *c == qualified) {
        return (name.clone(), false);
    }
    let tokens = cluster.split(['-', '_']).map(str::to_ascii_lowercase);
    for token in tokens {
        if STAGES.iter().any(|words| words.contains(&token.as_str())) {
            return (token, false);
        }
    }
    (env_name(cluster), true)
}

/// Where `env` comes in a release's path (unknown names last).
fn stage(env: &str) -> usize {
    STAGES.iter().position(|words| words.contains(&env)).unwrap_or(STAGES.len())
}

/// A cluster's name, from its name or its ARN (`arn:aws:ecs:…:cluster/NAME`).
fn cluster_name(cluster: &str) -> &str {
    if cluster.starts_with("arn:") { cluster.rsplit('/').next().unwrap_or(cluster) } else { cluster }
}

/// `service` with each of its `-`/`_`-separated words that is `env` replaced by `{env}`.
fn templated(service: &str, env: &str) -> String {
    let (mut out, mut word) = (String::new(), String::new());
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(if word == env { "{env}" } else { word.as_str() });
        word.clear();
    };
    for c in service.chars() {
        if c == '-' || c == '_' {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `shop/api` of an ECR image (`<account>.dkr.ecr.<region>.amazonaws.com/shop/api:tag`, or
/// `@digest`); `None` for an image not in ECR.
pub(crate) fn repository_of(image: &str) -> Option<&str> {
    let (host, path) = image.split_once('/')?;
    host.contains(".dkr.ecr.").then(|| path.split(['@', ':']).next().unwrap_or(path))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProposedEnv {
    pub name: String,
    pub guessed_name: bool,
    /// (account, region, cluster, role_arn)
    pub targets: Vec<(String, String, String, Option<String>)>,
    /// Rules as TOML inline tables, and a comment on how each was chosen.
    pub rules: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProposedService {
    pub repository: String,
    /// The ECS name, `{env}` where the environment's name stands in it.
    pub name: String,
    pub containers: Vec<String>,
    /// Empty: every environment.
    pub environments: Vec<String>,
    /// Containers left alone (sidecars from elsewhere): (name, image).
    pub untouched: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proposal {
    pub environments: Vec<ProposedEnv>,
    pub services: Vec<ProposedService>,
    /// Stack parameters: name → values.
    pub parameters: BTreeMap<&'static str, BTreeSet<String>>,
    /// Per other account: its clusters and task roles (infra/target.yaml's parameters there).
    pub elsewhere: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Services not proposed, and why.
    pub skipped: Vec<String>,
    /// Repositories whose tags could not be read, and why.
    pub unread: Vec<(String, String)>,
}

/// A proposed service: its repository and its name (with `{env}`).
type GroupKey = (String, String);

/// What the services of one group have: containers fed from the repository, environments,
/// and the containers Ferry leaves alone.
#[derive(Default)]
struct Group {
    containers: BTreeSet<String>,
    environments: BTreeSet<String>,
    untouched: Vec<(String, String)>,
}

/// `name` as an environment name: lower case, letters, digits and `-`, at most 64.
pub(crate) fn env_name(name: &str) -> String {
    let cleaned: String =
        name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let cleaned = cleaned.trim_matches('-');
    let cleaned = &cleaned[..cleaned.len().min(64)];
    if cleaned.is_empty() { "env".into() } else { cleaned.trim_end_matches('-').to_string() }
}

/// Of a service's ECR images, the one Ferry deploys (one repository feeds a service): the one
/// whose name the service's name carries, else its first container's.
fn main_repository<'a>(service: &str, by_repository: &BTreeMap<&'a str, Vec<String>>, first: &'a str) -> &'a str {
    by_repository
        .keys()
        .find(|r| r.rsplit('/').next().is_some_and(|last| service.contains(last)))
        .copied()
        .unwrap_or(first)
}

pub(crate) fn propose(estate: &Estate) -> Proposal {
    let mut envs: BTreeMap<String, ProposedEnv> = BTreeMap::new();
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut parameters: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut elsewhere: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut skipped = Vec::new();
    for f in &estate.services {
        let (env, guessed) = environment_of(estate, &f.account, &f.cluster);
        let e = envs.entry(env.clone()).or_insert_with(|| ProposedEnv {
            name: env.clone(),
            guessed_name: guessed,
            targets: Vec::new(),
            rules: Vec::new(),
        });
        let target = (f.account.clone(), f.region.clone(), f.cluster.clone(), f.role_arn.clone());
        if !e.targets.contains(&target) {
            e.targets.push(target);
        }
        if f.account == estate.home {
            parameters.entry("EcsClusterNames").or_default().insert(f.cluster.clone());
            parameters.entry("TaskRoleArns").or_default().extend(f.roles.iter().cloned());
        } else {
            parameters.entry("ForwardingAccountIds").or_default().insert(f.account.clone());
            parameters.entry("TargetRoleArns").or_default().extend(f.role_arn.iter().cloned());
            let there = elsewhere.entry(f.account.clone()).or_default();
            there.0.insert(f.cluster.clone());
            there.1.extend(f.roles.iter().cloned());
        }
        let mut by_repository: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut untouched = Vec::new();
        let mut first = None;
        for (name, image) in &f.containers {
            match repository_of(image) {
                Some(repository) => {
                    first.get_or_insert(repository);
                    by_repository.entry(repository).or_default().push(name.clone());
                }
                None => untouched.push((name.clone(), image.clone())),
            }
        }
        let Some(first) = first else {
            skipped.push(format!("{} ({}/{}): no container runs an ECR image", f.service, f.region, f.cluster));
            continue;
        };
        let repository = main_repository(&f.service, &by_repository, first);
        for (other, containers) in by_repository.iter().filter(|(r, _)| **r != repository) {
            for c in containers {
                untouched.push((c.clone(), format!("{other}, another ECR repository: one repository feeds a service")));
            }
        }
        let name = if guessed { f.service.clone() } else { templated(&f.service, &env) };
        let group = groups.entry((repository.to_string(), name)).or_default();
        group.containers.extend(by_repository[repository].iter().cloned());
        group.environments.insert(env.clone());
        for u in untouched {
            if !group.untouched.contains(&u) {
                group.untouched.push(u);
            }
        }
    }
    let mut environments: Vec<ProposedEnv> = envs.into_values().collect();
    environments.sort_by_key(|e| (stage(&e.name), e.name.clone()));
    let all: BTreeSet<String> = environments.iter().map(|e| e.name.clone()).collect();
    let mut services: Vec<ProposedService> = Vec::new();
    for ((repository, name), group) in groups {
        // One repository feeds each ECS service in an environment: a second is not proposed.
        let clash = services.iter().find(|s| {
            s.name == name
                && s.repository != repository
                && (s.environments.is_empty() || s.environments.iter().any(|e| group.environments.contains(e)))
        });
        if let Some(first) = clash {
            skipped.push(format!("{name} from {repository}: already deployed from {}", first.repository));
            continue;
        }
        services.push(ProposedService {
            repository,
            name,
            containers: group.containers.into_iter().collect(),
            environments: if group.environments == all { Vec::new() } else { group.environments.into_iter().collect() },
            untouched: group.untouched,
        });
    }
    // Final versions go to the last environment a release passes through that the names tell,
    // pre-releases to the one before it; build numbers and `latest` to the first.
    let last = environments.len().saturating_sub(1);
    let release = environments.iter().rposition(|e| stage(&e.name) < STAGES.len()).unwrap_or(last);
    let mut used = BTreeSet::new();
    for (i, env) in environments.iter_mut().enumerate() {
        let tags: Vec<&str> = services
            .iter()
            .filter(|s| s.environments.is_empty() || s.environments.contains(&env.name))
            .flat_map(|s| estate.tags.get(&s.repository).into_iter().flatten().map(String::as_str))
            .collect();
        let place = Place { first: i == 0, pre: i + 1 == release, release: i == release };
        let mut rule = rule_for(&env.name, place, &tags);
        // The first environment whose rules match a tag takes it: a rule an earlier one has is
        // unreachable here.
        if !used.insert(rule.0.clone()) {
            rule = guessed(&env.name);
            used.insert(rule.0.clone());
        }
        env.rules = vec![rule];
    }
    Proposal { environments, services, parameters, elsewhere, skipped, unread: estate.unread.clone() }
}

/// Where an environment comes in a release's path.
#[derive(Debug, Clone, Copy)]
struct Place {
    first: bool,
    /// Just before the release environment: pre-releases go here.
    pre: bool,
    release: bool,
}

fn guessed(env: &str) -> (String, String) {
    (
        format!("{{ glob = \"{env}-*\" }}"),
        format!("GUESSED: no tag seen that only {env} could take; push {env}-<sha> (or change the rule)"),
    )
}

/// The tag rule an environment gets from the tags its repositories already have.
fn rule_for(env: &str, place: Place, tags: &[&str]) -> (String, String) {
    let words: Vec<&str> =
        STAGES.iter().find(|words| words.contains(&env)).map_or_else(|| vec![env], |words| words.to_vec());
    // A prefix the team already uses for this environment: `staging-…`, `prod-…`.
    let mut prefixes: BTreeMap<&str, usize> = BTreeMap::new();
    for tag in tags {
        for w in &words {
            if tag.strip_prefix(w).is_some_and(|rest| rest.starts_with('-') && rest.len() > 1) {
                *prefixes.entry(w).or_default() += 1;
            }
        }
    }
    if let Some((prefix, n)) = prefixes.iter().max_by_key(|(_, n)| **n) {
        return (format!("{{ glob = \"{prefix}-*\" }}"), format!("{n} tags start with {prefix}-"));
    }
    let versions: Vec<_> = tags.iter().filter_map(|t| ferry::rules::version(t)).collect();
    let finals = versions.iter().filter(|v| v.pre.is_empty()).count();
    // A pre-release's label without its number: `rc` of `rc.1` and of `rc1`.
    let pres: BTreeSet<String> = versions
        .iter()
        .filter(|v| !v.pre.is_empty())
        .filter_map(|v| {
            v.pre.as_str().split('.').next().map(|l| l.trim_end_matches(|c: char| c.is_ascii_digit()).to_string())
        })
        .collect();
    if place.release && finals > 0 {
        return ("{ semver = \"final\" }".into(), format!("{finals} tags are final semantic versions"));
    }
    if place.pre && !pres.is_empty() {
        let count = versions.len() - finals;
        return match pres.iter().collect::<Vec<_>>().as_slice() {
            [label] if !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => (
                format!("{{ semver = \"prerelease\", pre = \"{label}\" }}"),
                format!("{count} tags are {label} pre-releases"),
            ),
            _ => ("{ semver = \"prerelease\" }".into(), format!("{count} tags are pre-releases")),
        };
    }
    let builds =
        tags.iter().filter(|t| t.len() > 1 && t.trim_start_matches('v').bytes().all(|b| b.is_ascii_digit())).count();
    if place.first && !place.release && builds > 0 {
        return ("{ regex = 'v?[0-9]+' }".into(), format!("{builds} tags are build numbers"));
    }
    if place.first && !place.release && tags.contains(&"latest") {
        return ("{ glob = \"latest\" }".into(), "a moving tag, `latest`".into());
    }
    guessed(env)
}

/// The proposal as a commented `ferry.toml`.
pub(crate) fn render(p: &Proposal, source: &str) -> String {
    let mut out = format!(
        "# ferry.toml written by `ferry init` ({source}).\n\
         # Read it through: every line marked GUESSED is a guess. Then `ferry check` and `ferry doctor`.\n"
    );
    for e in &p.environments {
        out.push_str("\n[[environments]]\n");
        if e.guessed_name {
            out.push_str(&format!(
                "# GUESSED: the cluster's name says no environment; pass --env NAME={}\n",
                e.targets[0].2
            ));
        }
        out.push_str(&format!("name = \"{}\"\n", e.name));
        for (_, why) in &e.rules {
            out.push_str(&format!("# {why}\n"));
        }
        let rules: Vec<&str> = e.rules.iter().map(|(r, _)| r.as_str()).collect();
        out.push_str(&format!("rules = [{}]\n", rules.join(", ")));
        let targets: Vec<String> = e
            .targets
            .iter()
            .map(|(_, region, cluster, role)| match role {
                Some(role) => format!("  {{ region = \"{region}\", cluster = \"{cluster}\", role_arn = \"{role}\" }},"),
                None => format!("  {{ region = \"{region}\", cluster = \"{cluster}\" }},"),
            })
            .collect();
        out.push_str(&format!("targets = [\n{}\n]\n", targets.join("\n")));
    }
    for s in &p.services {
        out.push_str("\n[[services]]\n");
        out.push_str(&format!("repository = \"{}\"\n", s.repository));
        out.push_str(&format!("name = \"{}\"\n", s.name));
        out.push_str(&format!("containers = [{}]\n", quoted(&s.containers)));
        if !s.environments.is_empty() {
            out.push_str(&format!("environments = [{}]\n", quoted(&s.environments)));
        }
        for (name, image) in &s.untouched {
            out.push_str(&format!("# left alone: container {name} ({image})\n"));
        }
        out.push_str(
            "# health = { url = \"https://…/healthz\" }   # GUESSED: none; a smoke test proves a deployment\n",
        );
    }
    for why in &p.skipped {
        out.push_str(&format!("\n# not proposed: {why}\n"));
    }
    out.push_str("\n# The stack's parameters this implies (sam deploy --parameter-overrides ...):\n");
    for (name, values) in &p.parameters {
        out.push_str(&format!("#   {name}={}\n", values.iter().cloned().collect::<Vec<_>>().join(",")));
    }
    let regions: BTreeSet<&str> = p.environments.iter().flat_map(|e| e.targets.iter().map(|t| t.1.as_str())).collect();
    if regions.len() > 1 || !p.elsewhere.is_empty() {
        out.push_str("# Deploy infra/target.yaml in every other account and region with targets.\n");
    }
    for (account, (clusters, roles)) in &p.elsewhere {
        let join = |v: &BTreeSet<String>| v.iter().cloned().collect::<Vec<_>>().join(",");
        out.push_str(&format!(
            "#   in account {account}, its EcsClusterNames={} TaskRoleArns={}\n",
            join(clusters),
            join(roles)
        ));
    }
    for (repository, why) in &p.unread {
        out.push_str(&format!("# GUESSED rules: the tags of {repository} could not be read ({why})\n"));
    }
    out
}

fn quoted(values: &[String]) -> String {
    values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
}

impl Ctx<'_> {
    /// Reads the clusters' services and the repositories' tags; writes the proposal to
    /// `output` (or returns it).
    pub(crate) async fn init(
        &self,
        regions: &[String],
        clusters: &[String],
        roles: &[String],
        named: &[String],
        output: Option<&std::path::Path>,
    ) -> Result<String, Failure> {
        let mut estate = Estate::default();
        for n in named {
            let (name, cluster) = n.split_once('=').ok_or_else(|| fail(format!("--env {n:?} is not NAME=CLUSTER")))?;
            if env_name(name) != name {
                return Err(fail(format!("--env {n:?}: an environment name is lower-case letters, digits and '-'")));
            }
            estate.named.push((name.to_string(), cluster_name(cluster).to_string()));
        }
        // A cluster given by its ARN is read, and written, by its name (as ECS's events name it).
        let clusters: Vec<&str> = clusters.iter().map(|c| cluster_name(c)).collect();
        estate.home = self.caller().await?.account().unwrap_or_default().to_string();
        let ecs = AwsClients::new(self.aws.clone(), aws_sdk_ecs::Client::new);
        let accounts: Vec<Option<&String>> = std::iter::once(None).chain(roles.iter().map(Some)).collect();
        for region in regions {
            for role in &accounts {
                let account = match role {
                    Some(r) => r.split(':').nth(4).unwrap_or_default().to_string(),
                    None => estate.home.clone(),
                };
                let client = ecs.get(region, role.map(String::as_str)).await;
                for cluster in &clusters {
                    let found = read_cluster(&client, cluster)
                        .await
                        .map_err(|e| fail(format!("cannot read cluster {cluster} in {account} {region}: {e}")))?;
                    for mut f in found {
                        (f.account, f.role_arn, f.region) = (account.clone(), role.cloned(), region.clone());
                        estate.services.push(f);
                    }
                }
            }
        }
        if estate.services.is_empty() {
            return Err(fail("no services found in those clusters: nothing to propose"));
        }
        let ecr = aws_sdk_ecr::Client::new(self.aws);
        let repositories: BTreeSet<String> = estate
            .services
            .iter()
            .flat_map(|f| f.containers.iter().filter_map(|(_, image)| repository_of(image).map(str::to_string)))
            .collect();
        for repository in repositories {
            let mut tags = Vec::new();
            let mut pages = ecr.describe_images().repository_name(&repository).into_paginator().send();
            while let Some(page) = pages.next().await {
                match page {
                    Ok(page) => tags.extend(page.image_details().iter().flat_map(|d| d.image_tags().iter().cloned())),
                    // Another account's or region's repository, or a failure: said, and its rules guessed.
                    Err(e) => {
                        estate.unread.push((repository.clone(), aws_message(&e)));
                        break;
                    }
                }
            }
            estate.tags.insert(repository, tags);
        }
        let source = format!("regions {}, clusters {}", regions.join(", "), clusters.join(", "));
        let text = render(&propose(&estate), &source);
        ferry::config::Config::parse("ferry.toml", &text)
            .map_err(|e| fail(format!("the proposal does not parse (a bug in ferry init): {e}")))?;
        match output {
            Some(path) => {
                std::fs::write(path, &text).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
                Ok(format!("wrote {}: read it through, then ferry check and ferry doctor\n", path.display()))
            }
            None => Ok(text),
        }
    }
}

/// A task definition's containers, as `(name, image)`.
pub(crate) fn containers_of(td: &aws_sdk_ecs::types::TaskDefinition) -> Vec<(String, String)> {
    let named = |c: &aws_sdk_ecs::types::ContainerDefinition| {
        (c.name().unwrap_or_default().to_string(), c.image().unwrap_or_default().to_string())
    };
    td.container_definitions().iter().map(named).collect()
}

/// Every service of `cluster`, with its task definition's containers and roles; none if the
/// cluster is not there.
async fn read_cluster(client: &aws_sdk_ecs::Client, cluster: &str) -> Result<Vec<Found>, String> {
    let mut arns = Vec::new();
    let mut pages = client.list_services().cluster(cluster).into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => arns.extend(page.service_arns().iter().cloned()),
            Err(e) if e.code() == Some("ClusterNotFoundException") => return Ok(Vec::new()),
            Err(e) => return Err(aws_message(&e)),
        }
    }
    let mut found = Vec::new();
    // DescribeServices takes at most 10 services per call.
    for chunk in arns.chunks(10) {
        let described = client.describe_services().cluster(cluster).set_services(Some(chunk.to_vec())).send().await;
        for s in described.map_err(|e| aws_message(&e))?.services() {
            let td = client.describe_task_definition().task_definition(s.task_definition().unwrap_or_default());
            let td = td.send().await.map_err(|e| aws_message(&e))?;
            let Some(td) = td.task_definition() else { continue };
            found.push(Found {
                cluster: cluster.to_string(),
                service: s.service_name().unwrap_or_default().to_string(),
                containers: containers_of(td),
                roles: td.task_role_arn().into_iter().chain(td.execution_role_arn()).map(str::to_string).collect(),
                ..Found::default()
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry::config::Config;

    const HOME: &str = "123456789012";

    fn image(repository: &str) -> String {
        format!("{HOME}.dkr.ecr.eu-west-1.amazonaws.com/{repository}:x")
    }

    fn found(account: &str, region: &str, cluster: &str, service: &str, containers: &[(&str, &str)]) -> Found {
        Found {
            account: account.into(),
            role_arn: (account != HOME).then(|| format!("arn:aws:iam::{account}:role/ferry-target")),
            region: region.into(),
            cluster: cluster.into(),
            service: service.into(),
            containers: containers.iter().map(|(n, i)| (n.to_string(), i.to_string())).collect(),
            roles: vec![format!("arn:aws:iam::{account}:role/{service}-task")],
        }
    }

    fn tags(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(r, t)| (r.to_string(), t.iter().map(|t| t.to_string()).collect())).collect()
    }

    /// The proposal, parsed: it must be a config `ferry check` accepts.
    fn config(estate: &Estate) -> (Config, String) {
        let text = render(&propose(estate), "test");
        (Config::parse("ferry.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}")), text)
    }

    fn env_of(config: &Config, tag: &str) -> Option<String> {
        config.environment_for_tag(tag).map(|e| e.name.clone())
    }

    #[test]
    fn branch_prefixed_tags_in_two_clusters_with_a_sidecar() {
        let proxy = ("proxy", "public.ecr.aws/envoy:v1.30");
        let estate = Estate {
            home: HOME.into(),
            services: vec![
                found(HOME, "eu-west-1", "shop-staging", "api", &[("api", &image("shop/api")), proxy]),
                found(HOME, "us-east-1", "shop-production", "api", &[("api", &image("shop/api")), proxy]),
                found(HOME, "eu-west-1", "shop-staging", "web", &[("web", &image("shop/web"))]),
                found(HOME, "us-east-1", "shop-production", "web", &[("web", &image("shop/web"))]),
            ],
            tags: tags(&[
                ("shop/api", &["staging-1a2b3c4d", "prod-1a2b3c4d", "staging-99"]),
                ("shop/web", &["prod-aa"]),
            ]),
            ..Estate::default()
        };
        let (config, text) = config(&estate);
        let names: Vec<&str> = config.environments.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["staging", "production"], "staging first: {text}");
        assert_eq!(env_of(&config, "staging-5e6f7a8b").as_deref(), Some("staging"));
        assert_eq!(env_of(&config, "prod-5e6f7a8b").as_deref(), Some("production"));
        assert_eq!(env_of(&config, "feature-x"), None);
        let api = config.services.iter().find(|s| s.repository == "shop/api").expect("api");
        assert_eq!((api.name.as_str(), api.containers.as_slice()), ("api", ["api".to_string()].as_slice()));
        assert!(text.contains("# left alone: container proxy (public.ecr.aws/envoy:v1.30)"), "{text}");
        assert!(text.contains("#   EcsClusterNames=shop-production,shop-staging"), "{text}");
        assert!(text.contains("TaskRoleArns=arn:aws:iam::123456789012:role/api-task"), "{text}");
    }

    #[test]
    fn release_tags_across_accounts_named_by_the_operator() {
        let estate = Estate {
            home: HOME.into(),
            services: vec![
                found("111111111111", "eu-west-1", "shop", "shop-api", &[("api", &image("shop/api"))]),
                found("222222222222", "eu-west-1", "shop", "shop-api", &[("api", &image("shop/api"))]),
            ],
            tags: tags(&[("shop/api", &["v0.1.0-rc.1", "v0.1.0", "v0.2.0-rc.1"])]),
            named: vec![
                ("staging".into(), "111111111111/shop".into()),
                ("production".into(), "222222222222/shop".into()),
            ],
            ..Estate::default()
        };
        let (config, text) = config(&estate);
        assert_eq!(env_of(&config, "v0.3.0-rc.2").as_deref(), Some("staging"), "{text}");
        assert_eq!(env_of(&config, "v0.3.0").as_deref(), Some("production"), "{text}");
        let roles: Vec<Option<&str>> = config.environments.iter().map(|e| e.targets[0].role_arn.as_deref()).collect();
        assert_eq!(
            roles,
            [Some("arn:aws:iam::111111111111:role/ferry-target"), Some("arn:aws:iam::222222222222:role/ferry-target")]
        );
        assert!(text.contains("#   ForwardingAccountIds=111111111111,222222222222"), "{text}");
        assert!(text.contains("Deploy infra/target.yaml"), "{text}");
    }

    #[test]
    fn build_numbers_with_one_push_feeding_two_services_in_three_regions() {
        let mut services =
            vec![found(HOME, "eu-west-1", "app-staging", "app-staging-api", &[("api", &image("shop/app"))])];
        services.push(found(HOME, "eu-west-1", "app-staging", "app-staging-worker", &[("worker", &image("shop/app"))]));
        for region in ["eu-west-1", "us-east-1", "ap-southeast-1"] {
            services.push(found(HOME, region, "app-production", "app-production-api", &[("api", &image("shop/app"))]));
            services.push(found(
                HOME,
                region,
                "app-production",
                "app-production-worker",
                &[("worker", &image("shop/app"))],
            ));
        }
        let estate = Estate {
            home: HOME.into(),
            services,
            tags: tags(&[("shop/app", &["v41", "v42", "prod-v41"])]),
            ..Estate::default()
        };
        let (config, text) = config(&estate);
        assert_eq!(env_of(&config, "v43").as_deref(), Some("staging"), "{text}");
        assert_eq!(env_of(&config, "prod-v43").as_deref(), Some("production"), "{text}");
        assert_eq!(config.environments[1].targets.len(), 3);
        let names: BTreeSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["app-{env}-api", "app-{env}-worker"]));
    }

    #[test]
    fn a_moving_tag_and_versions_and_a_cluster_that_names_no_environment() {
        let estate = Estate {
            home: HOME.into(),
            services: vec![
                found(HOME, "eu-west-1", "store-staging", "store-staging", &[("store", &image("shop/store"))]),
                found(HOME, "eu-west-1", "store-production", "store-production", &[("store", &image("shop/store"))]),
                found(HOME, "eu-west-1", "blue", "tools", &[("tools", &image("shop/tools"))]),
                found(HOME, "eu-west-1", "blue", "nginx", &[("nginx", "nginx:1.27")]),
            ],
            tags: tags(&[("shop/store", &["latest", "v1.2.3"])]),
            ..Estate::default()
        };
        let (config, text) = config(&estate);
        assert_eq!(env_of(&config, "latest").as_deref(), Some("staging"), "{text}");
        assert_eq!(env_of(&config, "v1.2.4").as_deref(), Some("production"), "{text}");
        assert!(text.contains("# GUESSED: the cluster's name says no environment; pass --env NAME=blue"), "{text}");
        assert!(text.contains("not proposed: nginx (eu-west-1/blue): no container runs an ECR image"), "{text}");
        let store = config.services.iter().find(|s| s.repository == "shop/store").expect("store");
        assert_eq!((store.name.as_str(), store.environments.len()), ("store-{env}", 2));
    }

    #[test]
    fn a_service_with_two_ecr_images_is_proposed_once_and_containers_differing_by_environment_are_joined() {
        let estate = Estate {
            home: HOME.into(),
            services: vec![
                found(
                    HOME,
                    "eu-west-1",
                    "shop-staging",
                    "api",
                    &[("api", &image("shop/api")), ("agent", &image("ops/agent"))],
                ),
                found(
                    HOME,
                    "eu-west-1",
                    "shop-production",
                    "api",
                    &[("api", &image("shop/api")), ("jobs", &image("shop/api"))],
                ),
            ],
            tags: tags(&[("shop/api", &["staging-1", "prod-1"])]),
            ..Estate::default()
        };
        let (config, text) = config(&estate);
        let [api] = config.services.as_slice() else { panic!("{text}") };
        assert_eq!(
            (api.repository.as_str(), api.containers.as_slice()),
            ("shop/api", ["api".to_string(), "jobs".to_string()].as_slice())
        );
        assert!(text.contains("# left alone: container agent (ops/agent, another ECR repository"), "{text}");
    }

    #[test]
    fn each_environment_gets_a_rule_no_earlier_one_has_and_a_lone_one_takes_final_versions() {
        let three = Estate {
            home: HOME.into(),
            services: ["shop-dev", "shop-staging", "shop-production"]
                .iter()
                .map(|c| found(HOME, "eu-west-1", c, "api", &[("api", &image("shop/api"))]))
                .collect(),
            tags: tags(&[("shop/api", &["v1.0.0-rc1", "v1.0.0"])]),
            ..Estate::default()
        };
        let (config, text) = config(&three);
        assert_eq!(env_of(&config, "v1.1.0-rc2").as_deref(), Some("staging"), "rc, not rc1: {text}");
        assert_eq!(env_of(&config, "v1.1.0").as_deref(), Some("production"), "{text}");
        assert_eq!(env_of(&config, "dev-1a2b3c4d").as_deref(), Some("dev"), "dev's own, guessed: {text}");
        assert!(text.contains("GUESSED: no tag seen that only dev could take"), "{text}");

        let alone = Estate { services: three.services[2..].to_vec(), ..three.clone() };
        let (lone, text) = self::config(&alone);
        assert_eq!(env_of(&lone, "v1.1.0").as_deref(), Some("production"), "{text}");
    }

    #[test]
    fn a_cluster_name_that_says_no_environment_becomes_a_valid_environment_name() {
        assert_eq!(env_name("ShopCluster_AbC123"), "shopcluster-abc123");
        assert_eq!(env_name("--"), "env");
        assert_eq!(env_name(&"x".repeat(80)).len(), 64);
        assert_eq!(cluster_name("arn:aws:ecs:eu-west-1:123456789012:cluster/shop-staging"), "shop-staging");
    }

    #[test]
    fn only_whole_words_of_a_service_name_become_env() {
        assert_eq!(templated("shop-production-api", "prod"), "shop-production-api");
        assert_eq!(templated("shop-prod-api", "prod"), "shop-{env}-api");
        assert_eq!(templated("prod_worker", "prod"), "{env}_worker");
    }
}
