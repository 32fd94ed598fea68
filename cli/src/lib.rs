//! `ferry`, the operator CLI. It reads the same `ferry.toml` and the same ledger as the
//! functions and acts through their code paths: a rollback is the event the rollback function
//! handles, a promotion is an ECR tag the deploy function deploys, a release is the ledger's
//! own release. Nothing here deploys or rolls back by itself.

mod redrive;
mod table;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use ferry::adapters::dynamodb::DynamoLedger;
use ferry::adapters::ecr::EcrRegistry;
use ferry::adapters::ecs::EcsAdapter;
use ferry::adapters::elb::ElbAdapter;
use ferry::adapters::http::{EventBridgeBus, HttpProbe};
use ferry::adapters::notifiers::Notifiers;
use ferry::config::Config;
use ferry::deploy::{DeploySettings, Deployer, Invocation, Outcome, TargetOutcome};
use ferry::model::{Deployment, Origin, Push, State, Target};
use ferry::plan::{Plan, plan, targets_of};
use ferry::ports::{Ecs, Ledger, SystemClock};
use ferry::reconcile::{Finding, Reconciled};
use ferry::render::Images;
use ferry::rollback::{RollbackHandler, RollbackSettings};
use ferry::rules::TagRule;
use ferry::verify::{Verifier, VerifySettings};
use serde_json::{Value, json};

pub use table::Term;

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
    #[command(after_help = "Example:\n  ferry deploy shop/api:staging-1a2b3c4d")]
    Deploy {
        /// REPOSITORY:TAG, as pushed to ECR.
        image: String,
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
            let first = e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
            return Err(Failure { message: format!("{first} (see ferry --help)"), code: 2 });
        }
    };
    let config = Config::load(&cli.config).map_err(|e| fail(e.to_string()))?;
    let ctx = Ctx { config, aws, cli: &cli, term };
    let text = match &cli.command {
        Command::Check => check(&ctx.config, term),
        Command::Plan { image, digest, output } => ctx.plan(image, digest.as_deref(), *output).await?,
        Command::Deploy { image, output } => ctx.deploy(image, *output).await?,
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

    async fn plan(&self, image: &str, digest: Option<&str>, output: Output) -> Result<String, Failure> {
        let (repository, tag) =
            image.rsplit_once(':').ok_or_else(|| fail(format!("{image:?} is not REPOSITORY:TAG")))?;
        // Routing needs no digest: ECR is asked only for a push that deploys something.
        let mut push = Push {
            event_id: "ferry-plan".into(),
            registry_account: String::new(),
            registry_region: self.aws.region().map(|r| r.to_string()).unwrap_or_default(),
            repository: repository.into(),
            tag: tag.into(),
            digest: String::new(),
            pushed_at: Utc::now(),
        };
        if let Plan::Deploy { .. } | Plan::NotAllowed { .. } = plan(&self.config, &push) {
            let image = self.image_of(repository, tag, digest).await?;
            (push.registry_account, push.digest) = (image.account, image.digest);
        }
        let targets = match plan(&self.config, &push) {
            Plan::Deploy { targets, .. } => targets,
            Plan::UnknownRepository => return Ok(nothing(output, format!("no service is built from {repository}"))),
            Plan::UnmatchedTag => return Ok(nothing(output, format!("no environment's rules match the tag {tag:?}"))),
            Plan::NoServiceInEnvironment { environment } => {
                return Ok(nothing(
                    output,
                    format!("{tag:?} is for {environment}, where no service uses {repository}"),
                ));
            }
            Plan::NotAllowed { reason, .. } => return Ok(nothing(output, reason)),
        };
        let (ledger, ecs, now) = (self.ledger()?, self.ecs(), Utc::now());
        let mut rows = Vec::new();
        for tp in &targets {
            let t = &tp.target;
            let head = ledger.head(t).await.map_err(|e| fail(e.to_string()))?;
            let mut row = json!({"environment": t.environment, "service": t.service, "region": t.region,
                                 "cluster": t.cluster, "account": t.account, "image": tp.change.image});
            if let Err(refusal) = head.admit(&Deployment::new(&push, t.clone(), now), now) {
                let why = refusal.skip_reason().unwrap_or_else(|| format!("{refusal:?}"));
                row["action"] = json!("skip");
                row["reason"] = json!(why);
                rows.push(row);
                continue;
            }
            let service = ecs.service(t).await.map_err(|e| fail(format!("{t}: {e}")))?;
            row["current_task_definition"] = json!(service.task_definition);
            let containers =
                ecs.containers(t, &service.task_definition).await.map_err(|e| fail(format!("{t}: {e}")))?;
            let pairs: Vec<_> = containers.iter().map(|(n, i)| (n.as_deref(), i.as_deref())).collect();
            match tp.change.apply(&pairs) {
                Err(e) => {
                    row["action"] = json!("fail");
                    row["reason"] = json!(e.to_string());
                }
                Ok(Images::Unchanged) => {
                    row["action"] = json!("skip");
                    row["reason"] = json!("the service already runs this image");
                }
                Ok(Images::Changed(images)) => {
                    row["action"] = json!("deploy");
                    let diff: Vec<Value> = containers
                        .iter()
                        .zip(&images)
                        .filter(|((_, old), new)| old != *new)
                        .map(|((name, old), new)| json!({"container": name, "from": old, "to": new}))
                        .collect();
                    row["changes"] = json!(diff);
                    if let Some(m) = &tp.migration {
                        row["migration"] = json!(m.command);
                    }
                }
            }
            rows.push(row);
        }
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => rows.iter().map(|r| plan_text(self.term, r)).collect::<Vec<_>>().join("\n"),
        })
    }

    /// `repository:tag` (or `digest`) as ECR has it.
    async fn image_of(&self, repository: &str, tag: &str, digest: Option<&str>) -> Result<EcrImage, Failure> {
        let ecr = aws_sdk_ecr::Client::new(self.aws);
        let id = aws_sdk_ecr::types::ImageIdentifier::builder();
        let id = match digest {
            Some(d) => id.image_digest(d),
            None => id.image_tag(tag),
        };
        let found = ecr
            .describe_images()
            .repository_name(repository)
            .image_ids(id.build())
            .send()
            .await
            .map_err(|e| fail(format!("ECR has no image {repository}:{tag}: {}", aws_message(&e))))?;
        let image =
            found.image_details().first().ok_or_else(|| fail(format!("ECR has no image {repository}:{tag}")))?;
        Ok(EcrImage {
            account: image.registry_id().unwrap_or_default().to_string(),
            digest: image.image_digest().unwrap_or_default().to_string(),
            pushed_at: image.image_pushed_at().and_then(|t| DateTime::from_timestamp(t.secs(), 0)),
        })
    }

    async fn deploy(&self, image: &str, output: Output) -> Result<String, Failure> {
        let (repository, tag) =
            image.rsplit_once(':').ok_or_else(|| fail(format!("{image:?} is not REPOSITORY:TAG")))?;
        let found = self.image_of(repository, tag, None).await?;
        let region = self.aws.region().map(|r| r.to_string()).unwrap_or_default();
        // The push event ECR sends, at the image's own push time (so that the stale check
        // orders it among other pushes); its id is the image's, so replaying it twice is one push.
        let event = json!({
            "version": "0", "id": ferry::reconcile::replay_event_id(&found.digest, tag),
            "detail-type": "ECR Image Action", "source": "aws.ecr", "account": found.account,
            "time": found.pushed_at.unwrap_or_else(Utc::now).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "region": region, "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": repository, "image-digest": found.digest,
                       "action-type": "PUSH", "image-tag": tag},
        });
        let rows: Vec<Value> = match self.handle(event).await? {
            Outcome::Deployed(targets) => targets.iter().map(target_outcome_json).collect(),
            Outcome::Unplanned(plan) => return Ok(nothing(output, format!("{plan:?}"))),
            Outcome::Ignored(why) | Outcome::Rejected(why) => return Ok(nothing(output, why)),
            Outcome::Reconciled(_) => return Err(fail("the deploy handler reconciled instead of deploying")),
        };
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let cells: Vec<Vec<String>> =
                    rows.iter().map(|r| vec![s(&r["target"]), s(&r["outcome"]), s(&r["detail"])]).collect();
                table::render(self.term, &["TARGET", "OUTCOME", "DETAIL"], &cells)
            }
        })
    }

    /// The deploy function's handler, run here with this operator's credentials, on `event`.
    async fn handle(&self, event: Value) -> Result<Outcome, Failure> {
        self.deployer(async |deployer, invocation| deployer.handle(event, &invocation).await).await
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
        work(&deployer, Invocation { attempt, deadline: None })
            .await
            .map_err(|e| fail(format!("{e}: run it again to resume")))
    }

    async fn reconcile(&self, dry_run: bool, output: Output) -> Result<String, Failure> {
        let found = self.deployer(async |deployer, invocation| deployer.reconcile(&invocation, dry_run).await).await?;
        let mut rows: Vec<Value> = found.iter().map(|r| reconciled_json(r, dry_run)).collect();
        if !dry_run {
            // As the verify function's schedule does: rollouts whose ECS events never came.
            for outcome in self.sweep().await? {
                rows.push(json!({"target": "", "repository": "", "tag": "", "digest": "", "pushed_at": "",
                                 "finding": "settled", "detail": format!("{outcome:?}")}));
            }
        }
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let image = match s(&r["repository"]) {
                            repository if repository.is_empty() => String::new(),
                            repository => format!("{repository}:{} ({})", s(&r["tag"]), short_digest(&s(&r["digest"]))),
                        };
                        vec![s(&r["target"]), image, s(&r["pushed_at"]), s(&r["finding"]), s(&r["detail"])]
                    })
                    .collect();
                table::render(self.term, &["TARGET", "NEWEST IMAGE", "PUSHED", "FINDING", "DETAIL"], &cells)
            }
        })
    }

    async fn redrive(&self, out: &mut dyn Write, dry_run: bool, output: Output) -> Result<String, Failure> {
        use redrive::Function;
        let queues = [
            (Function::Deploy, &self.cli.deploy_dlq),
            (Function::Verify, &self.cli.verify_dlq),
            (Function::Rollback, &self.cli.rollback_dlq),
        ];
        let queues: Vec<(Function, &str)> = queues.iter().filter_map(|(f, q)| Some((*f, q.as_deref()?))).collect();
        if queues.is_empty() {
            return Err(fail(
                "no dead-letter queue: pass --deploy-dlq, --verify-dlq or --rollback-dlq (the stack's \
                 *DeadLetterQueueUrl outputs)",
            ));
        }
        let (mut rows, mut failed) = (Vec::new(), 0);
        for (function, queue) in queues {
            for letter in redrive::receive(self.aws, function, queue).await.map_err(fail)? {
                if dry_run {
                    let shown = redrive::hide(self.aws, queue, &letter, 0).await;
                    rows.push(redrive::row(
                        &letter,
                        "waiting",
                        shown.err().as_deref().unwrap_or("would be handled again"),
                    ));
                    continue;
                }
                // Hidden for as long as its replay may take, from now.
                if let Err(why) = redrive::hide(self.aws, queue, &letter, redrive::HIDDEN_SECONDS).await {
                    failed += 1;
                    rows.push(redrive::row(&letter, "not replayed", &why));
                    continue;
                }
                match self.replay(&letter).await {
                    Ok(outcome) => {
                        let deleted = redrive::delete(self.aws, queue, &letter).await;
                        let detail = match deleted {
                            Ok(()) => outcome,
                            Err(why) => format!("{outcome}; but it stays in its queue: {why}"),
                        };
                        rows.push(redrive::row(&letter, "handled", &detail));
                    }
                    Err(why) => {
                        failed += 1;
                        let shown = redrive::hide(self.aws, queue, &letter, 0).await;
                        let why = match shown {
                            Ok(()) => why,
                            Err(e) => format!("{why}; {e}"),
                        };
                        rows.push(redrive::row(&letter, "failed again", &why));
                    }
                }
            }
        }
        let text = match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table if rows.is_empty() => "no failed events waiting\n".to_string(),
            Output::Table => {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let what = format!("{} {}", s(&r["detail_type"]), s(&r["event"]));
                        vec![
                            s(&r["function"]),
                            what,
                            s(&r["failed_with"]),
                            s(&r["result"]),
                            ellipsis(&s(&r["detail"]), 120),
                        ]
                    })
                    .collect();
                table::render(self.term, &["FUNCTION", "EVENT", "FAILED WITH", "RESULT", "DETAIL"], &cells)
            }
        };
        if failed > 0 {
            out.write_all(text.as_bytes()).map_err(io)?;
            return Err(fail(format!("{failed} event(s) failed again and stay in their queues")));
        }
        Ok(text)
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
        let verifier = Verifier {
            config: &self.config,
            ecs: &ecs,
            balancers: &balancers,
            ledger: &ledger,
            notifier: &notifier,
            bus: &bus,
            probe: &HttpProbe::default(),
            clock: &SystemClock,
            settings: VerifySettings::default(),
        };
        let attempt = format!("ferry-cli-{}-{}", std::process::id(), Utc::now().timestamp_millis());
        work(&verifier, Invocation { attempt, deadline: None }).await.map_err(|e| fail(format!("{e}: run it again")))
    }

    async fn sweep(&self) -> Result<Vec<ferry::verify::VerifyOutcome>, Failure> {
        self.verifier(async |verifier, invocation| verifier.sweep(&invocation).await).await
    }

    /// One failed event, handled by its function's own handler, as Lambda would.
    async fn replay(&self, letter: &redrive::DeadLetter) -> Result<String, String> {
        let event = letter.event.clone();
        let outcome = match letter.function {
            redrive::Function::Deploy => {
                let deployed = self.deployer(async |deployer, invocation| deployer.handle(event, &invocation).await);
                deployed.await.map(|o| format!("{o:?}")).map_err(|f| f.message)?
            }
            redrive::Function::Verify => {
                let verified = self.verifier(async |verifier, invocation| verifier.handle(event, &invocation).await);
                verified.await.map(|o| format!("{o:?}")).map_err(|f| f.message)?
            }
            redrive::Function::Rollback => {
                let attempt = format!("ferry-redrive-{}-{}", std::process::id(), Utc::now().timestamp_millis());
                let invocation = Invocation { attempt, deadline: None };
                let (ecs, ledger) = (self.ecs(), self.ledger().map_err(|f| f.message)?);
                let notifier =
                    Notifiers::new(self.aws, self.cli.topic_arn.as_deref(), self.cli.slack_secret.as_deref());
                let handler = RollbackHandler {
                    config: &self.config,
                    ecs: &ecs,
                    ledger: &ledger,
                    notifier: &notifier,
                    clock: &SystemClock,
                    settings: RollbackSettings::default(),
                };
                handler.handle(event, &invocation).await.map(|o| format!("{o:?}")).map_err(|e| e.to_string())?
            }
        };
        Ok(outcome)
    }

    async fn status(&self, env: Option<&str>, service: Option<&str>, output: Output) -> Result<String, Failure> {
        let (ledger, ecs) = (self.ledger()?, self.ecs());
        let mut rows = Vec::new();
        for t in self.targets(env, service)? {
            let head = ledger.head(&t).await.map_err(|e| fail(e.to_string()))?;
            let live = ecs.service(&t).await.map(|s| s.task_definition).unwrap_or_else(|e| format!("unknown ({e})"));
            let active = match &head.active {
                Some((id, _)) => ledger.deployment(&t, id).await.map_err(|e| fail(e.to_string()))?,
                None => None,
            };
            let in_flight = active.filter(|d| d.is_open() && !matches!(d.state, State::Succeeded | State::Failed));
            // The newest verified revision whose digest has not failed here since.
            let good = |d: &Deployment| {
                d.origin == Origin::Ferry
                    && d.state == State::Succeeded
                    && d.task_definition.is_some()
                    && !head.quarantine.contains(&d.digest)
            };
            let last_known_good =
                ferry::lookup::newest(&ledger, &t, None, good).await.map_err(|e| fail(e.to_string()))?;
            rows.push(json!({
                "environment": t.environment, "service": t.service, "region": t.region, "cluster": t.cluster,
                "account": t.account, "live_task_definition": live,
                "last_known_good": last_known_good.map(|d| json!({"task_definition": d.task_definition, "digest": d.digest})),
                "in_flight": in_flight.map(|d| json!({"deployment": d.id, "tag": d.tag, "digest": d.digest, "state": d.state.as_str()})),
                "quarantined": head.quarantine,
                "locked_by": head.lock.as_ref().filter(|l| l.until > Utc::now()).map(|l| l.deployment.clone()),
            }));
        }
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => {
                let cells = rows
                    .iter()
                    .map(|r| {
                        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
                        let lkg = &r["last_known_good"];
                        let flight = &r["in_flight"];
                        vec![
                            s(&r["environment"]),
                            s(&r["service"]),
                            s(&r["region"]),
                            short_td(&s(&r["live_task_definition"])),
                            if lkg.is_null() {
                                "-".into()
                            } else {
                                format!(
                                    "{} {}",
                                    short_td(&s(&lkg["task_definition"])),
                                    short_digest(&s(&lkg["digest"]))
                                )
                            },
                            if flight.is_null() {
                                "-".into()
                            } else {
                                let state = State::parse(&s(&flight["state"])).unwrap_or(State::Pending);
                                format!("{} {}", s(&flight["tag"]), self.term.state(state))
                            },
                            list(r["quarantined"].as_array().map(|q| q.iter().map(|d| short_digest(&s(d))).collect())),
                        ]
                    })
                    .collect::<Vec<_>>();
                table::render(
                    self.term,
                    &["ENVIRONMENT", "SERVICE", "REGION", "LIVE", "LAST KNOWN GOOD", "IN FLIGHT", "QUARANTINED"],
                    &cells,
                )
            }
        })
    }

    async fn history(
        &self,
        env: Option<&str>,
        service: Option<&str>,
        limit: usize,
        output: Output,
    ) -> Result<String, Failure> {
        let ledger = self.ledger()?;
        let mut all = Vec::new();
        for t in self.targets(env, service)? {
            all.extend(ledger.history(&t, limit).await.map_err(|e| fail(e.to_string()))?);
        }
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        all.truncate(limit);
        Ok(match output {
            Output::Json => pretty(&Value::Array(all.iter().map(deployment_json).collect())),
            Output::Table => {
                let rows = all
                    .iter()
                    .map(|d| {
                        vec![
                            d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            d.target.environment.clone(),
                            d.target.service.clone(),
                            d.target.region.clone(),
                            if d.tag.is_empty() { "-".into() } else { d.tag.clone() },
                            short_digest(&d.digest),
                            self.term.state(d.state),
                            d.origin.as_str().to_string(),
                            took(d),
                            d.reason.as_deref().map_or(String::new(), |r| ellipsis(r, 72)),
                        ]
                    })
                    .collect::<Vec<_>>();
                table::render(
                    self.term,
                    &[
                        "STARTED (UTC)",
                        "ENVIRONMENT",
                        "SERVICE",
                        "REGION",
                        "TAG",
                        "DIGEST",
                        "STATE",
                        "BY",
                        "TOOK",
                        "REASON",
                    ],
                    &rows,
                )
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn rollback(
        &self,
        out: &mut dyn Write,
        service: &str,
        env: &str,
        to: Option<&str>,
        region: Option<&str>,
        wait: bool,
        timeout: u64,
    ) -> Result<String, Failure> {
        let targets: Vec<Target> = targets_of(&self.config, env, service)
            .into_iter()
            .filter(|t| region.is_none_or(|r| r == t.region))
            .collect();
        if targets.is_empty() {
            return Err(fail(format!("no service {service:?} deploys to {env:?}{}", in_region(region))));
        }
        let ledger = self.ledger()?;
        if let Some(to) = to {
            let mut verified = false;
            for t in &targets {
                let d = ledger.deployment(t, to).await.map_err(|e| fail(e.to_string()))?;
                verified |= d.is_some_and(|d| d.task_definition.is_some() && d.state == State::Succeeded);
            }
            if !verified {
                return Err(fail(format!("{to} is not a verified deployment of {service} in {env}")));
            }
        }
        let requested_at = Utc::now();
        let by = std::env::var("USER").map_or_else(|_| "ferry CLI".to_string(), |u| format!("{u} (ferry CLI)"));
        let detail = json!({"environment": env, "service": service, "region": region, "to": to, "requested_by": by});
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(ferry::adapters::http::EVENT_SOURCE)
            .detail_type(ferry::event::ROLLBACK_REQUESTED)
            .detail(detail.to_string())
            .event_bus_name(&self.cli.event_bus)
            .build();
        let put = aws_sdk_eventbridge::Client::new(self.aws)
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| fail(format!("cannot request the rollback: {}", aws_message(&e))))?;
        if put.failed_entry_count() > 0 {
            let why = put.entries().first().and_then(|e| e.error_message()).unwrap_or("rejected").to_string();
            return Err(fail(format!("cannot request the rollback: {why}")));
        }
        let asked = format!("rollback of {service} in {env}{} requested\n", in_region(region));
        if !wait {
            return Ok(asked);
        }
        out.write_all(asked.as_bytes()).map_err(io)?;
        let done = |d: &Deployment| {
            d.origin == Origin::Rollback && d.created_at >= requested_at - chrono::Duration::seconds(5)
        };
        self.follow(out, &ledger, &targets, done, timeout).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn promote(
        &self,
        out: &mut dyn Write,
        repository: &str,
        from: &str,
        to: &str,
        tag: Option<&str>,
        wait: bool,
        timeout: u64,
    ) -> Result<String, Failure> {
        for env in [from, to] {
            if self.config.environment(env).is_none() {
                return Err(fail(format!("no environment {env:?} in {}", self.cli.config.display())));
            }
        }
        let ledger = self.ledger()?;
        let mut verified: Option<Deployment> = None;
        for t in self.targets(Some(from), Some(repository))? {
            let proven = |d: &Deployment| d.origin == Origin::Ferry && d.state == State::Succeeded;
            let newest = ferry::lookup::newest(&ledger, &t, None, proven).await.map_err(|e| fail(e.to_string()))?;
            if let Some(d) = newest.filter(|d| verified.as_ref().is_none_or(|v| d.pushed_at > v.pushed_at)) {
                verified = Some(d);
            }
        }
        let Some(proven) = verified else {
            return Err(fail(format!("{from} has no verified deployment of {repository}: nothing to promote")));
        };
        let new_tag = match tag {
            Some(tag) => tag.to_string(),
            None => promoted_tag(&self.config, &proven.tag, from, to).map_err(fail)?,
        };
        match self.config.environment_for_tag(&new_tag) {
            Some(e) if e.name == to => {}
            Some(e) => return Err(fail(format!("the tag {new_tag:?} deploys to {}, not {to}", e.name))),
            None => return Err(fail(format!("no environment's rules match the tag {new_tag:?}"))),
        }
        let targets = self.targets(Some(to), Some(repository))?;
        for t in &targets {
            if ledger.head(t).await.map_err(|e| fail(e.to_string()))?.quarantine.contains(&proven.digest) {
                return Err(fail(format!(
                    "{} is quarantined on {t}: release it first (ferry release)",
                    short_digest(&proven.digest)
                )));
            }
        }
        tag_image(self.aws, repository, &proven.digest, &new_tag).await?;
        let said = format!(
            "{repository}@{} (verified in {from} as {}) tagged {new_tag}: Ferry deploys it to {to}\n",
            short_digest(&proven.digest),
            proven.tag
        );
        if !wait {
            return Ok(said);
        }
        out.write_all(said.as_bytes()).map_err(io)?;
        let digest = proven.digest.clone();
        let done = move |d: &Deployment| d.origin == Origin::Ferry && d.digest == digest && d.tag == new_tag;
        self.follow(out, &ledger, &targets, done, timeout).await
    }

    async fn release(&self, service: &str, env: &str, digest: &str) -> Result<String, Failure> {
        let targets = targets_of(&self.config, env, service);
        if targets.is_empty() {
            return Err(fail(format!("no service {service:?} deploys to {env:?}")));
        }
        let ledger = self.ledger()?;
        let mut released = Vec::new();
        for t in &targets {
            let head = ledger.head(t).await.map_err(|e| fail(e.to_string()))?;
            let matching: Vec<&String> = head.quarantine.iter().filter(|q| digest_matches(q, digest)).collect();
            if matching.len() > 1 {
                return Err(fail(format!(
                    "{digest} names {} quarantined digests on {t}: give more of it",
                    matching.len()
                )));
            }
            if let Some(q) = matching.first() {
                ledger.release(t, q).await.map_err(|e| fail(e.to_string()))?;
                released.push(format!("{} on {t}\n", short_digest(q)));
            }
        }
        if released.is_empty() {
            return Err(fail(format!("{digest} is not quarantined on {service} in {env}")));
        }
        Ok(released.into_iter().map(|r| format!("released {r}")).collect())
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
type OperatorVerifier<'a> =
    Verifier<'a, EcsAdapter, DynamoLedger, Notifiers, EventBridgeBus, HttpProbe, SystemClock, ElbAdapter>;

/// An image as ECR describes it.
struct EcrImage {
    account: String,
    digest: String,
    pushed_at: Option<DateTime<Utc>>,
}

fn reconciled_json(r: &Reconciled, dry_run: bool) -> Value {
    let (finding, detail) = match &r.finding {
        Finding::UpToDate(why) => ("up to date", why.clone()),
        Finding::NeverDeployed => ("not yet deployed by Ferry", "its first push will deploy it".to_string()),
        Finding::Busy(why) => ("busy", why.clone()),
        Finding::Missed(None) => ("missed", if dry_run { "would deploy it" } else { "" }.to_string()),
        Finding::Stranded(None) => ("stranded", if dry_run { "would deploy it again" } else { "" }.to_string()),
        Finding::Missed(Some(outcome)) | Finding::Stranded(Some(outcome)) => {
            let o = target_outcome_json(outcome);
            (
                if matches!(r.finding, Finding::Missed(_)) { "missed" } else { "stranded" },
                format!("{}: {}", o["outcome"].as_str().unwrap_or_default(), o["detail"].as_str().unwrap_or_default()),
            )
        }
    };
    json!({"target": r.target, "repository": r.repository, "tag": r.tag, "digest": r.digest,
           "pushed_at": r.pushed_at.to_rfc3339(), "finding": finding, "detail": detail})
}

fn target_outcome_json(o: &TargetOutcome) -> Value {
    match o {
        TargetOutcome::Started { target, ecs_deployment_id } => {
            json!({"target": target, "outcome": "started", "detail": format!("ECS deployment {ecs_deployment_id}")})
        }
        TargetOutcome::Skipped { target, reason } => json!({"target": target, "outcome": "skipped", "detail": reason}),
        TargetOutcome::Failed { target, reason } => json!({"target": target, "outcome": "failed", "detail": reason}),
        TargetOutcome::Duplicate { target, state } => {
            json!({"target": target, "outcome": "already handled", "detail": state.as_str()})
        }
    }
}

/// ECR PutImage of the image's own manifest under a new tag: ECR emits the push event that
/// the deploy function handles, exactly as for an image CI pushed.
async fn tag_image(aws: &SdkConfig, repository: &str, digest: &str, tag: &str) -> Result<(), Failure> {
    let ecr = aws_sdk_ecr::Client::new(aws);
    let got = ecr
        .batch_get_image()
        .repository_name(repository)
        .image_ids(aws_sdk_ecr::types::ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await
        .map_err(|e| fail(format!("cannot read {repository}@{digest}: {}", aws_message(&e))))?;
    let image = got.images().first().ok_or_else(|| fail(format!("ECR has no image {repository}@{digest}")))?;
    let manifest = image.image_manifest().ok_or_else(|| fail(format!("ECR gave no manifest for {digest}")))?;
    let put = ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest)
        .set_image_manifest_media_type(image.image_manifest_media_type().map(str::to_string))
        .image_tag(tag)
        .image_digest(digest)
        .send()
        .await;
    match put {
        Ok(_) => Ok(()),
        // The tag is on this digest already: promoted before.
        Err(e) if e.as_service_error().is_some_and(|e| e.is_image_already_exists_exception()) => Ok(()),
        Err(e) => Err(fail(format!("cannot tag {repository}@{digest} as {tag}: {}", aws_message(&e)))),
    }
}

/// The tag that moves an image from one environment to the next: what the `*` of the glob
/// rule that matched `tag` in `from` stood for (the whole tag when another kind of rule
/// matched it), put in the `*` of a glob rule of `to`, as long as the result is deployed to
/// `to` (first match wins across environments): `staging-1a2b3c4d` → `prod-1a2b3c4d`
/// (`staging-*`, `prod-*`), `v42` → `prod-v42` (regex `v[0-9]+`, `prod-*`).
pub fn promoted_tag(config: &Config, tag: &str, from: &str, to: &str) -> Result<String, String> {
    fn star(rule: &TagRule) -> Option<(&str, &str)> {
        match rule {
            TagRule::Glob(p) if p.matches('*').count() == 1 && !p.contains('?') => p.split_once('*'),
            _ => None,
        }
    }
    let (Some(source), Some(dest)) = (config.environment(from), config.environment(to)) else {
        return Err(format!("no environment {from:?} or {to:?}"));
    };
    let Some(rule) = source.rules.iter().find(|r| r.matches(tag)) else {
        return Err(format!("{tag:?} is not a tag of {from}: pass --tag"));
    };
    let stem = star(rule).and_then(|(pre, post)| tag.strip_prefix(pre)?.strip_suffix(post)).unwrap_or(tag);
    dest.rules
        .iter()
        .filter_map(|r| star(r).map(|(pre, post)| format!("{pre}{stem}{post}")))
        .find(|t| config.environment_for_tag(t).is_some_and(|e| e.name == to))
        .ok_or_else(|| format!("no glob rule of {to} turns {tag:?} into a tag {to} deploys: pass --tag"))
}

fn check(config: &Config, term: Term) -> String {
    let mut out = format!("{}\n", term.bold("environments (a tag goes to the first whose rules match)"));
    for e in &config.environments {
        let rules: Vec<String> = e.rules.iter().map(|r| r.to_string()).collect();
        out.push_str(&format!("  {}  rules: {}\n", term.bold(&e.name), rules.join(", ")));
        for t in &e.targets {
            let account = t.account.as_deref().map_or(String::new(), |a| format!(" in account {a}"));
            let role = t.role_arn.as_deref().map_or(String::new(), |r| format!(" as {r}"));
            out.push_str(&format!("    target {}/{}{account}{role}\n", t.region, t.cluster));
        }
    }
    out.push_str(&format!("{}\n", term.bold("services")));
    for s in &config.services {
        let envs: Vec<&str> =
            config.environments.iter().filter(|e| s.deploys_to(&e.name)).map(|e| e.name.as_str()).collect();
        out.push_str(&format!(
            "  {} -> {} (containers: {}) in {}\n",
            s.repository,
            s.name,
            s.containers.join(", "),
            envs.join(", ")
        ));
        if let Some(h) = &s.health {
            for env in config.environments.iter().filter(|e| s.deploys_to(&e.name)) {
                for t in ferry::plan::targets_of(config, &env.name, &s.service_name(&env.name)) {
                    let url = h.url_for(&t, config.home_account.as_deref());
                    out.push_str(&format!("    health {url} ({} attempts) for {t}\n", h.attempts));
                }
            }
        }
        if let Some(m) = &s.migration {
            out.push_str(&format!("    migration {:?} in {}\n", m.command, m.container));
        }
    }
    out
}

fn plan_text(term: Term, r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let account = r["account"].as_str().map_or(String::new(), |a| format!(", account {a}"));
    let mut out = format!(
        "{} {} ({}, {}{account})\n",
        term.bold(&s(&r["environment"])),
        s(&r["service"]),
        s(&r["cluster"]),
        s(&r["region"])
    );
    match r["action"].as_str() {
        Some("deploy") => {
            out.push_str(&format!("  deploy: a new revision of {}\n", s(&r["current_task_definition"])));
            for c in r["changes"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "    container {}\n      - image {}\n      + image {}\n",
                    s(&c["container"]),
                    s(&c["from"]),
                    s(&c["to"])
                ));
            }
            if let Some(m) = r["migration"].as_array() {
                let cmd: Vec<String> = m.iter().map(s).collect();
                out.push_str(&format!("  then the migration {} runs before the service update\n", cmd.join(" ")));
            }
        }
        Some(action) => out.push_str(&format!("  {action}: {}\n", s(&r["reason"]))),
        None => {}
    }
    out
}

fn nothing(output: Output, why: String) -> String {
    match output {
        Output::Json => pretty(&json!({"deploys": [], "reason": why})),
        Output::Table => format!("nothing to deploy: {why}\n"),
    }
}

fn deployment_json(d: &Deployment) -> Value {
    json!({
        "id": d.id, "environment": d.target.environment, "service": d.target.service, "region": d.target.region,
        "cluster": d.target.cluster, "account": d.target.account, "repository": d.repository, "tag": d.tag,
        "digest": d.digest, "state": d.state.as_str(), "origin": d.origin.as_str(), "reason": d.reason,
        "task_definition": d.task_definition, "previous_task_definition": d.previous_task_definition,
        "rolls_back": d.rolls_back, "created_at": d.created_at, "updated_at": d.updated_at,
        "duration_seconds": (d.updated_at - d.created_at).num_seconds(), "notify_error": d.notify_error,
    })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn took(d: &Deployment) -> String {
    let secs = (d.updated_at - d.created_at).num_seconds().max(0);
    if secs >= 60 { format!("{}m{:02}s", secs / 60, secs % 60) } else { format!("{secs}s") }
}

/// A digest as messages show it ([`ferry::notify::short_digest`]); `-` for none.
fn short_digest(digest: &str) -> String {
    if digest.is_empty() { "-".into() } else { ferry::notify::short_digest(digest).to_string() }
}

fn digest_matches(quarantined: &str, given: &str) -> bool {
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).to_string();
    !given.is_empty() && hex(quarantined).starts_with(&hex(given))
}

/// `arn:aws:ecs:…:task-definition/shop-api:42` as `shop-api:42`.
fn short_td(arn: &str) -> String {
    arn.rsplit_once('/').map_or(arn, |(_, name)| name).to_string()
}

fn list(items: Option<Vec<String>>) -> String {
    match items {
        Some(items) if !items.is_empty() => items.join(", "),
        _ => "-".into(),
    }
}

fn ellipsis(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max { line.to_string() } else { line.chars().take(max - 1).collect::<String>() + "…" }
}

fn in_region(region: Option<&str>) -> String {
    region.map_or(String::new(), |r| format!(" ({r})"))
}

fn aws_message<E: aws_sdk_ecr::error::ProvideErrorMetadata, R>(e: &aws_sdk_ecr::error::SdkError<E, R>) -> String {
    match e.as_service_error() {
        Some(service) => service.message().or(service.code()).unwrap_or("rejected").to_string(),
        None => format!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }, { glob = "v*" }]
targets = [{ region = "eu-west-1", cluster = "shop-staging" }]

[[environments]]
name = "production"
rules = [{ glob = "prod-*" }, { glob = "release-v*" }, { semver = "final" }]
targets = [{ region = "eu-west-1", cluster = "shop-production" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
"#;

    #[test]
    fn a_promotion_keeps_what_the_star_stood_for() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let cases = [
            ("staging-1a2b3c4d", Ok("prod-1a2b3c4d".to_string())),
            // `prod-42` would not be a production tag... it is (prod-*): the first glob of
            // production that routes to production wins.
            ("v42", Ok("prod-42".to_string())),
        ];
        for (tag, expected) in cases {
            assert_eq!(promoted_tag(&config, tag, "staging", "production"), expected, "{tag}");
        }
        assert!(promoted_tag(&config, "prod-1", "production", "staging").is_ok_and(|t| t == "staging-1"));
        assert!(promoted_tag(&config, "nope", "staging", "production").is_err());
    }

    #[test]
    fn another_rule_kind_passes_the_whole_tag_on() {
        let config = Config::parse(
            "ferry.toml",
            &CONFIG.replace(r#"[{ glob = "staging-*" }, { glob = "v*" }]"#, r#"[{ regex = 'v[0-9]+' }]"#),
        )
        .expect("config");
        assert_eq!(promoted_tag(&config, "v42", "staging", "production"), Ok("prod-v42".to_string()));
    }

    /// The configs of `examples/` load, and the build-numbers model's promotion lands where
    /// its README says.
    #[test]
    fn the_example_configs_load_and_promote_as_documented() {
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo");
        let examples = std::path::Path::new(&crate_dir).join("../examples/github-actions");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&examples).expect("examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                loaded += 1;
            }
        }
        assert_eq!(loaded, 4, "one config per deployment model");
        let config = Config::load(&examples.join("ferry-build-numbers.toml")).expect("config");
        assert_eq!(promoted_tag(&config, "v42", "staging", "production"), Ok("prod-v42".to_string()));
    }

    #[test]
    fn a_promoted_tag_must_land_in_the_target_environment() {
        // Production's only glob would produce a tag staging's `v*` takes first.
        let config = Config::parse(
            "ferry.toml",
            &CONFIG.replace(
                r#"[{ glob = "prod-*" }, { glob = "release-v*" }, { semver = "final" }]"#,
                r#"[{ glob = "v*-prod" }]"#,
            ),
        )
        .expect("config");
        let err = promoted_tag(&config, "staging-1a2b", "staging", "production").expect_err("refused");
        assert!(err.contains("pass --tag"), "{err}");
    }

    #[test]
    fn digests_are_shown_short_and_matched_by_prefix() {
        let d = format!("sha256:{}", "3f1e2d4c5b6a7980".repeat(4));
        assert_eq!(short_digest(&d), "3f1e2d4c5b6a");
        assert!(digest_matches(&d, "3f1e2d4c5b6a") && digest_matches(&d, &d) && digest_matches(&d, "sha256:3f1e"));
        assert!(!digest_matches(&d, "") && !digest_matches(&d, "3f1f"));
        assert_eq!(short_td("arn:aws:ecs:eu-west-1:1:task-definition/shop-api:42"), "shop-api:42");
    }
}
