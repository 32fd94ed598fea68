//! `ferry`, the operator CLI. It reads the same `ferry.toml` and the same ledger as the
//! functions and acts through their code paths: a rollback is the event the rollback function
//! handles, a promotion is an ECR tag the deploy function deploys, a release is the ledger's
//! own release. Nothing here deploys or rolls back by itself.

mod commands;
mod dead_letters;
mod render;
mod table;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use ferry::adapters::cloudwatch::CloudWatchAdapter;
use ferry::adapters::dynamodb::DynamoLedger;
use ferry::adapters::ecr::EcrRegistry;
use ferry::adapters::ecs::EcsAdapter;
use ferry::adapters::elb::ElbAdapter;
use ferry::adapters::eventbridge::EventBridgeBus;
use ferry::adapters::http::HttpProbe;
use ferry::adapters::notifiers::Notifiers;
use ferry::config::Config;
use ferry::deploy::{DeployOutcome, DeploySettings, Deployer, Invocation};
use ferry::model::{Deployment, State, Target};
use ferry::plan::targets_of;
use ferry::ports::{Ledger, SystemClock};
use ferry::verify::{Verifier, VerifySettings};
use serde_json::Value;

pub use commands::promote::promoted_tag;
pub use table::Term;

use render::ellipsis;

/// Why a command stopped: one line, and the exit code (1: refused or failed; 2: usage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

/// A refusal or failure, on one line (a regex error, say, spans several).
fn fail(message: impl Into<String>) -> Failure {
    let message: String = message.into();
    Failure { message: message.split_whitespace().collect::<Vec<_>>().join(" "), code: 1 }
}

/// Which deployments `metrics` and `report` read: an environment, a service, how far back.
#[derive(Debug, clap::Args)]
struct Window {
    #[arg(long)]
    env: Option<String>,
    /// The ECS service name or the ECR repository.
    #[arg(long)]
    service: Option<String>,
    /// The window: 30d, 12w, 48h.
    #[arg(long, default_value = "30d")]
    since: String,
}

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Operate Ferry's deployments: what is live, what happened, put it back, ship it on."
)]
struct Cli {
    /// Ferry's config.
    #[arg(long, global = true, env = "FERRY_CONFIG", default_value = "ferry.toml")]
    config: PathBuf,
    /// The ledger's DynamoDB table (the stack's LedgerTableName output).
    #[arg(long, global = true, env = "FERRY_TABLE")]
    table: Option<String>,
    /// SNS topic for `ferry deploy`'s notifications (the stack's NotificationTopicArn).
    #[arg(long, global = true, env = "FERRY_TOPIC_ARN")]
    topic_arn: Option<String>,
    /// Secrets Manager secret with the Slack webhooks, for `ferry deploy`'s notifications.
    #[arg(long, global = true, env = "FERRY_SLACK_SECRET")]
    slack_secret: Option<String>,
    /// The event bus the rollback function listens on.
    #[arg(long, global = true, env = "FERRY_EVENT_BUS", default_value = "default")]
    event_bus: String,
    /// The deploy function's dead-letter queue, for `ferry redrive` (the stack's
    /// DeployDeadLetterQueueUrl output).
    #[arg(long, global = true, env = "FERRY_DEPLOY_DLQ")]
    deploy_dlq: Option<String>,
    /// The verify function's dead-letter queue (VerifyDeadLetterQueueUrl).
    #[arg(long, global = true, env = "FERRY_VERIFY_DLQ")]
    verify_dlq: Option<String>,
    /// The rollback function's dead-letter queue (RollbackDeadLetterQueueUrl).
    #[arg(long, global = true, env = "FERRY_ROLLBACK_DLQ")]
    rollback_dlq: Option<String>,
    /// The verify function's ARN as a lifecycle hook (the stack's LifecycleHookTargetArn): `ferry
    /// plan` warns when a blue/green service's hooks do not call it.
    #[arg(long, global = true, env = "FERRY_HOOK_ARN")]
    hook_arn: Option<String>,
    /// Seconds between two looks at the ledger while waiting.
    #[arg(long, global = true, default_value_t = 2.0, hide = true)]
    poll_seconds: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config and show the environments, rules, targets and services it resolves to.
    #[command(after_help = "Example:\n  ferry check --config infra/config/ferry.toml")]
    Check,
    /// Dry run of a push: what each target would get, or why it would be skipped. Changes nothing.
    #[command(after_help = "Example:\n  ferry plan shop/api:staging-1a2b3c4d")]
    Plan {
        /// REPOSITORY:TAG, as pushed to ECR.
        image: String,
        /// The image's digest, instead of asking ECR for the tag's.
        #[arg(long)]
        digest: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Deploy the image ECR has under a tag, as its push event would: the deploy function's own
    /// handler, run here (to replay a push whose event was lost: ECR sends them best-effort).
    #[command(after_help = "Example:\n  ferry deploy shop/api:staging-1a2b3c4d\n  \
                             ferry deploy shop/api:v1.4.1 --override-freeze --reason \"fix for INC-231\"")]
    Deploy {
        /// REPOSITORY:TAG, as pushed to ECR.
        image: String,
        /// Deploy even if the environment is in a freeze window (recorded with who and why).
        #[arg(long, requires = "reason")]
        override_freeze: bool,
        /// Why the freeze is overridden.
        #[arg(long, requires = "override_freeze")]
        reason: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Look in ECR for pushes whose events never came (ECR sends them best-effort) and deploy
    /// them through the deploy function's handler, as its schedule does.
    #[command(after_help = "Example:\n  ferry reconcile --dry-run")]
    Reconcile {
        /// Only say what would be deployed.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Handle again the events each function gave up on (its dead-letter queue) with that
    /// function's own handler; an event handled leaves its queue, one that fails stays.
    #[command(
        after_help = "Example:\n  ferry redrive --dry-run --deploy-dlq https://sqs.eu-west-1.amazonaws.com/123456789012/ferry-deploy-dlq"
    )]
    Redrive {
        /// Only list the events waiting.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Per target: what is live, the last-known-good, what is in flight, quarantined digests.
    #[command(after_help = "Example:\n  ferry status --env production --service shop-production-api")]
    Status {
        #[arg(long)]
        env: Option<String>,
        /// The ECS service name or the ECR repository.
        #[arg(long)]
        service: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delivery metrics per environment and service: deployments per week, lead time, change
    /// failure rate, time to restore (medians and p90), from the ledger.
    #[command(after_help = "Example:\n  ferry metrics --env production --since 90d --output json")]
    Metrics {
        #[command(flatten)]
        scope: Window,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One self-contained HTML page: what is live where, each service's deployments on a
    /// timeline, and the delivery figures per environment as weekly charts.
    #[command(after_help = "Example:\n  ferry report --html report.html --since 90d")]
    Report {
        /// Where to write the page.
        #[arg(long)]
        html: PathBuf,
        #[command(flatten)]
        scope: Window,
    },
    /// Deployments, newest first, with their states, durations and reasons.
    #[command(after_help = "Example:\n  ferry history --env staging --limit 5 --output json")]
    History {
        #[arg(long)]
        env: Option<String>,
        /// The ECS service name or the ECR repository.
        #[arg(long)]
        service: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Ask the rollback function to put the last-known-good revision (or --to) back.
    #[command(after_help = "Example:\n  ferry rollback shop-production-api --env production --wait")]
    Rollback {
        /// The ECS service name.
        service: String,
        #[arg(long)]
        env: String,
        /// A verified deployment of the service to go back to (its id, from `ferry history --output json`).
        #[arg(long)]
        to: Option<String>,
        /// Only the target in this region.
        #[arg(long)]
        region: Option<String>,
        /// Follow the rollback to its end.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Tag the digest verified in one environment so that the next one's rules deploy it.
    #[command(after_help = "Example:\n  ferry promote shop/api --from staging --to production --wait")]
    Promote {
        /// The ECR repository.
        repository: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// The tag to give it (default: derived from the two environments' glob rules).
        #[arg(long)]
        tag: Option<String>,
        /// Follow the deployments it starts to their end.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Propose a commented ferry.toml (and the stack's parameters) from the clusters' services
    /// and the repositories' tags. Read-only.
    #[command(
        after_help = "Example:\n  ferry init --region eu-west-1 --cluster shop-staging --cluster shop-production --output ferry.toml"
    )]
    Init {
        /// A region to look in (repeat for more).
        #[arg(long, required = true)]
        region: Vec<String>,
        /// A cluster to read (repeat for more), in each region and account.
        #[arg(long, required = true)]
        cluster: Vec<String>,
        /// A role in another account to read the same clusters through (repeat for more).
        #[arg(long)]
        role_arn: Vec<String>,
        /// NAME=CLUSTER (or NAME=ACCOUNT/CLUSTER): the environment a cluster is, when its name does not say.
        #[arg(long)]
        env: Vec<String>,
        /// Where to write the config (default: print it).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check, read-only, everything a deployment needs per target (service, containers, roles,
    /// the stack's grants, forwarding rules, health URLs, repositories); exit 1 if anything blocks one.
    #[command(after_help = "Example:\n  ferry doctor --env production --stack ferry")]
    Doctor {
        #[arg(long)]
        env: Option<String>,
        /// Ferry's CloudFormation stack, in this region.
        #[arg(long, default_value = "ferry")]
        stack: String,
    },
    /// Approve a push awaiting approval (as a Slack approver's click would; recorded as your
    /// AWS principal): the deploy function deploys it once enough approvals are in.
    #[command(after_help = "Example:\n  ferry approve 20261224T100000Z-6f0c1a2b-8f3e-4d5c-9b7a-0e1f2a3b4c5d")]
    Approve {
        /// The deployment's id, as `ferry history` and the Slack message show it.
        deployment: String,
    },
    /// Reject a push awaiting approval: it is recorded REJECTED and never deployed.
    #[command(after_help = "Example:\n  ferry reject 20261224T100000Z-6f0c1a2b --reason \"breaks the checkout\"")]
    Reject {
        deployment: String,
        /// Why: on the record and in the message.
        #[arg(long)]
        reason: String,
    },
    /// Lift a digest's quarantine, so that pushing it deploys it again.
    #[command(after_help = "Example:\n  ferry release shop-staging-api --env staging sha256:3f1e…")]
    Release {
        /// The ECS service name.
        service: String,
        #[arg(long)]
        env: String,
        /// The quarantined digest (or its first characters, as `ferry status` shows them).
        digest: String,
    },
}

/// Runs one command line; output goes to `out`, a failure is returned for the caller to print.
pub async fn run<I, T>(args: I, aws: &SdkConfig, out: &mut dyn Write, term: Term) -> Result<(), Failure>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            return write!(out, "{e}").map_err(io);
        }
        Err(e) => {
            // The message and what it lists (missing arguments), up to clap's usage block, on one line.
            let text = e.to_string();
            let lines: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let first = lines.join(" ").trim_start_matches("error: ").to_string();
            return Err(Failure { message: format!("{first} (see ferry --help)"), code: 2 });
        }
    };
    let config = match cli.command {
        // It writes the config: there is none to read yet.
        Command::Init { .. } => Config { environments: Vec::new(), services: Vec::new(), home_account: None },
        _ => Config::load(&cli.config).map_err(|e| fail(e.to_string()))?,
    };
    let ctx = Ctx { config, aws, cli: &cli, term };
    let text = match &cli.command {
        Command::Check => commands::check::check(&ctx.config, term, Utc::now()),
        Command::Plan { image, digest, output } => ctx.plan(image, digest.as_deref(), *output).await?,
        Command::Deploy { image, override_freeze, reason, output } => {
            let freeze_override = match override_freeze {
                true => Some(ferry::deploy::FreezeOverride {
                    by: ctx.operator().await?,
                    reason: reason.clone().unwrap_or_default(),
                }),
                false => None,
            };
            Box::pin(ctx.deploy(image, freeze_override, *output)).await?
        }
        // Boxed: they run whole handlers, whose futures would make every command's stack large.
        Command::Reconcile { dry_run, output } => Box::pin(ctx.reconcile(*dry_run, *output)).await?,
        Command::Redrive { dry_run, output } => Box::pin(ctx.redrive(out, *dry_run, *output)).await?,
        Command::Status { env, service, output } => ctx.status(env.as_deref(), service.as_deref(), *output).await?,
        Command::History { env, service, limit, output } => {
            ctx.history(env.as_deref(), service.as_deref(), *limit, *output).await?
        }
        Command::Rollback { service, env, to, region, wait, timeout } => {
            ctx.rollback(out, service, env, to.as_deref(), region.as_deref(), *wait, *timeout).await?
        }
        Command::Promote { repository, from, to, tag, wait, timeout } => {
            ctx.promote(out, repository, from, to, tag.as_deref(), *wait, *timeout).await?
        }
        Command::Release { service, env, digest } => ctx.release(service, env, digest).await?,
        Command::Init { region, cluster, role_arn, env, output } => {
            ctx.init(region, cluster, role_arn, env, output.as_deref()).await?
        }
        Command::Metrics { scope, output } => {
            ctx.metrics(scope.env.as_deref(), scope.service.as_deref(), &scope.since, *output).await?
        }
        Command::Report { html, scope } => {
            Box::pin(ctx.report(html, scope.env.as_deref(), scope.service.as_deref(), &scope.since)).await?
        }
        Command::Doctor { env, stack } => ctx.doctor(out, env.as_deref(), stack).await?,
        Command::Approve { deployment } => ctx.approve(deployment).await?,
        Command::Reject { deployment, reason } => ctx.reject(deployment, reason).await?,
    };
    out.write_all(text.as_bytes()).map_err(io)
}

fn io(e: std::io::Error) -> Failure {
    fail(format!("cannot write the output: {e}"))
}

struct Ctx<'a> {
    config: Config,
    aws: &'a SdkConfig,
    cli: &'a Cli,
    term: Term,
}

impl Ctx<'_> {
    fn ledger(&self) -> Result<DynamoLedger, Failure> {
        let table =
            self.cli.table.as_deref().ok_or_else(|| fail("no ledger table: pass --table or set FERRY_TABLE"))?;
        Ok(DynamoLedger::new(aws_sdk_dynamodb::Client::new(self.aws), table))
    }

    fn ecs(&self) -> EcsAdapter {
        EcsAdapter::new(self.aws.clone())
    }

    /// The configured targets, narrowed to an environment and a service (its ECS name or
    /// its repository); a filter that names nothing is an error.
    fn targets(&self, env: Option<&str>, service: Option<&str>) -> Result<Vec<Target>, Failure> {
        if let Some(env) = env.filter(|e| self.config.environment(e).is_none()) {
            return Err(fail(format!("no environment {env:?} in {}", self.cli.config.display())));
        }
        let mut found = Vec::new();
        for e in self.config.environments.iter().filter(|e| env.is_none_or(|env| env == e.name)) {
            for s in self.config.services.iter().filter(|s| s.deploys_to(&e.name)) {
                let name = s.service_name(&e.name);
                if service.is_none_or(|wanted| wanted == name || wanted == s.repository) {
                    found.extend(targets_of(&self.config, &e.name, &name));
                }
            }
        }
        if found.is_empty() {
            let what = service.map_or("no service".to_string(), |s| format!("no service {s:?}"));
            return Err(fail(format!(
                "{what} deploys to {}",
                env.map_or("any environment".into(), |e| format!("{e:?}"))
            )));
        }
        Ok(found)
    }

    /// The deploy function's handler, run here with this operator's credentials, on `event`.
    async fn handle(
        &self,
        event: Value,
        freeze_override: Option<&ferry::deploy::FreezeOverride>,
    ) -> Result<DeployOutcome, Failure> {
        self.deployer(async |deployer, invocation| {
            deployer.handle_overriding(event, &invocation, freeze_override).await
        })
        .await
    }

    /// Runs `work` with the deploy function's handler, as the operator.
    async fn deployer<T>(
        &self,
        work: impl AsyncFnOnce(&OperatorDeployer<'_>, Invocation) -> Result<T, ferry::deploy::Retryable>,
    ) -> Result<T, Failure> {
        let (ecs, ledger, registry) = (self.ecs(), self.ledger()?, EcrRegistry::new(self.aws));
        let notifier = Notifiers::new(self.aws, self.cli.topic_arn.as_deref(), self.cli.slack_secret.as_deref());
        let deployer = Deployer {
            config: &self.config,
            ecs: &ecs,
            ledger: &ledger,
            notifier: &notifier,
            clock: &SystemClock,
            registry: &registry,
            settings: DeploySettings::default(),
        };
        let attempt = format!("ferry-cli-{}-{}", std::process::id(), Utc::now().timestamp_millis());
        // Boxed: a handler's future is large, and commands run on the caller's stack.
        Box::pin(work(&deployer, Invocation { attempt, deadline: None }))
            .await
            .map_err(|e| fail(format!("{e}: run it again to resume")))
    }

    /// `work` with the verify function's handler, built here as the function builds it.
    async fn verifier<T>(
        &self,
        work: impl AsyncFnOnce(&OperatorVerifier<'_>, Invocation) -> Result<T, ferry::deploy::Retryable>,
    ) -> Result<T, Failure> {
        let (ecs, ledger) = (self.ecs(), self.ledger()?);
        let notifier = Notifiers::new(self.aws, self.cli.topic_arn.as_deref(), self.cli.slack_secret.as_deref());
        let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(self.aws), &self.cli.event_bus);
        let balancers = ElbAdapter::new(self.aws.clone());
        let alarms = CloudWatchAdapter::new(self.aws.clone());
        let verifier = Verifier {
            config: &self.config,
            ecs: &ecs,
            balancers: &balancers,
            alarms: &alarms,
            ledger: &ledger,
            notifier: &notifier,
            bus: &bus,
            probe: &HttpProbe::default(),
            clock: &SystemClock,
            settings: VerifySettings::default(),
        };
        let attempt = format!("ferry-cli-{}-{}", std::process::id(), Utc::now().timestamp_millis());
        Box::pin(work(&verifier, Invocation { attempt, deadline: None }))
            .await
            .map_err(|e| fail(format!("{e}: run it again")))
    }

    /// Waits until every target has a record `done` picks in a final state, telling each
    /// change of state as it happens.
    async fn follow(
        &self,
        out: &mut dyn Write,
        ledger: &DynamoLedger,
        targets: &[Target],
        done: impl Fn(&Deployment) -> bool,
        timeout: u64,
    ) -> Result<String, Failure> {
        let started = std::time::Instant::now();
        let mut seen: Vec<Option<State>> = vec![None; targets.len()];
        let spinner = ['|', '/', '-', '\\'];
        let mut tick = 0;
        loop {
            for (i, t) in targets.iter().enumerate() {
                let history = ledger.history(t, 20).await.map_err(|e| fail(e.to_string()))?;
                let Some(d) = history.iter().find(|d| done(d)) else { continue };
                if seen[i] != Some(d.state) {
                    seen[i] = Some(d.state);
                    let reason = d.reason.as_deref().map_or(String::new(), |r| format!(": {}", ellipsis(r, 120)));
                    let clear = if self.term.live { "\r\x1b[2K" } else { "" };
                    writeln!(out, "{clear}{t}: {}{reason}", self.term.state(d.state)).map_err(io)?;
                }
            }
            if seen.iter().all(|s| s.is_some_and(|s| s.next().is_empty() || s == State::Succeeded)) {
                let failed = seen.iter().any(|s| matches!(s, Some(State::RollbackFailed | State::Failed)));
                return if failed { Err(fail("it did not end well: see above")) } else { Ok(String::new()) };
            }
            if started.elapsed() > Duration::from_secs(timeout) {
                return Err(fail(format!("still not finished after {timeout} s: see ferry history")));
            }
            if self.term.live {
                tick += 1;
                write!(out, "\r{} waiting ({} s)", spinner[tick % 4], started.elapsed().as_secs()).map_err(io)?;
                out.flush().map_err(io)?;
            }
            tokio::time::sleep(Duration::from_secs_f64(self.cli.poll_seconds)).await;
        }
    }
}

/// The deploy function's handler with the operator's clients.
type OperatorDeployer<'a> = Deployer<'a, EcsAdapter, DynamoLedger, Notifiers, SystemClock, EcrRegistry>;

type OperatorVerifier<'a> = Verifier<
    'a,
    EcsAdapter,
    DynamoLedger,
    Notifiers,
    EventBridgeBus,
    HttpProbe,
    SystemClock,
    ElbAdapter,
    CloudWatchAdapter,
>;
