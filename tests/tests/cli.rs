//! The operator CLI against the local AWS emulator: each command on a real ledger, ECS and
//! ECR, tables compared whole (names and times normalised), JSON parsed, refusals checked.

mod common;

use std::path::{Path, PathBuf};

use chrono::Utc;

use common::{REGION, World};
use ferry::model::State;
use ferry::ports::Ledger;
use ferry::verify::VerifyOutcome;
use ferry_cli::{Failure, Term};
use ferry_tests::unique;
use serde_json::Value;

/// Runs `ferry ARGS` in-process, as the world's operator, against the world's ledger.
async fn ferry(w: &World, config: &Path, args: &[&str]) -> Result<String, Failure> {
    let mut argv = vec!["ferry".to_string(), "--config".into(), config.display().to_string()];
    argv.extend(["--table".to_string(), w.table.clone(), "--poll-seconds".into(), "0.05".into()]);
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    ferry_cli::run(argv, &w.home, &mut out, Term::default()).await?;
    Ok(String::from_utf8(out).expect("utf-8"))
}

fn ok(result: Result<String, Failure>) -> String {
    result.unwrap_or_else(|f| panic!("ferry failed: {}", f.message))
}

fn refused(result: Result<String, Failure>) -> String {
    let failure = result.expect_err("refused");
    assert_eq!(failure.code, 1, "{}", failure.message);
    assert!(!failure.message.contains('\n'), "one line: {}", failure.message);
    failure.message
}

/// The world's config, with a production environment whose cluster is elsewhere.
fn config_file(w: &World, extra: &str) -> PathBuf {
    let text = w.config_text(extra).replacen(
        "[[services]]",
        &format!(
            "[[environments]]\nname = \"production\"\nrules = [{{ glob = \"prod-*\" }}]\n\
             targets = [{{ region = \"{REGION}\", cluster = \"{}-prod\" }}]\n\n[[services]]",
            w.cluster
        ),
        1,
    );
    let path = std::env::temp_dir().join(format!("{}.toml", unique("ferry")));
    std::fs::write(&path, text).expect("config");
    path
}

/// Replaces the world's unique names, and times, so that output can be compared whole.
fn normalise(w: &World, text: &str) -> String {
    let text = text.replace(&w.cluster, "<cluster>").replace(&w.repository, "<repo>");
    let times = regex_lite(&text);
    times.replace(&w.family, "<family>")
}

/// `2026-11-23 10:40:49` as `<time>`, and durations (`0s`, `1m02s`) after a state as `<took>`.
fn regex_lite(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut words: Vec<String> = Vec::new();
            let mut rest = line;
            while !rest.is_empty() {
                let is_time = rest.len() >= 19
                    && rest.as_bytes()[4] == b'-'
                    && rest.as_bytes()[10] == b' '
                    && rest.as_bytes()[13] == b':'
                    && rest[..4].bytes().all(|b| b.is_ascii_digit());
                if is_time {
                    words.push("<time>             ".into());
                    rest = &rest[19..];
                } else {
                    let c = rest.chars().next().expect("char");
                    words.push(c.to_string());
                    rest = &rest[c.len_utf8()..];
                }
            }
            words.concat().trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn check_shows_what_the_config_resolves_to_and_rejects_an_invalid_one() {
    let w = World::new().await;
    let config = config_file(&w, "");
    let shown = normalise(&w, &ok(ferry(&w, &config, &["check"]).await));
    let expected = format!(
        "environments (a tag goes to the first whose rules match)
  staging  rules: glob \"staging-*\"
    target {REGION}/<cluster>
  production  rules: glob \"prod-*\"
    target {REGION}/<cluster>-prod
services
  <repo> (containers: api)
    staging: service shop-staging-api
    production: service shop-production-api"
    );
    assert_eq!(shown, expected);

    let bad = std::env::temp_dir().join(format!("{}.toml", unique("bad")));
    let text = "[[environments]]\nname = \"staging\"\nrules = [{ regex = \"(\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n";
    std::fs::write(&bad, text).expect("write");
    let message = refused(ferry(&w, &bad, &["check"]).await);
    assert!(message.starts_with(&format!("{}:3:", bad.display())), "file and line: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_the_change_per_target_or_why_it_would_skip_and_changes_nothing() {
    let w = World::new().await;
    let config = config_file(&w, "");
    let push = w.push("staging-aaaa0001", &"a".repeat(64)).await;
    let before = w.describe().await.task_definition;
    let image = format!("{}:staging-aaaa0001", w.repository);

    let plan: Value =
        serde_json::from_str(&ok(ferry(&w, &config, &["plan", &image, "--output", "json"]).await)).expect("json");
    let [target] = plan.as_array().expect("targets").as_slice() else { panic!("{plan}") };
    assert_eq!(target["action"], "deploy");
    let changes = target["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "only the api container changes, never the sidecar: {changes:?}");
    assert_eq!(changes[0]["container"], "api");
    let pinned = format!("{}@sha256:", w.repository);
    assert!(changes[0]["to"].as_str().is_some_and(|i| i.contains(&pinned)), "pinned by digest: {changes:?}");
    let table = ok(ferry(&w, &config, &["plan", &image]).await);
    assert!(table.contains("container api\n      - image ") && table.contains("      + image "), "{table}");
    assert_eq!(w.describe().await.task_definition, before, "a plan changes nothing");
    assert!(w.ledger().history(&w.target(), 10).await.expect("history").is_empty(), "and records nothing");

    // With --digest, a tag ECR does not have yet is planned for that image.
    let digest =
        changes[0]["to"].as_str().and_then(|i| i.rsplit_once('@')).map(|(_, d)| d.to_string()).expect("digest");
    let unpushed = format!("{}:staging-bbbb0002", w.repository);
    let ahead: Value =
        serde_json::from_str(&ok(
            ferry(&w, &config, &["plan", &unpushed, "--digest", &digest, "--output", "json"]).await
        ))
        .expect("json");
    assert_eq!(
        (ahead[0]["action"].as_str(), ahead[0]["changes"][0]["to"].as_str()),
        (Some("deploy"), changes[0]["to"].as_str())
    );

    // Once that digest is live, the same push would be skipped, and says why.
    w.deploy(&w.config(false), push, "deploy").await;
    let again: Value =
        serde_json::from_str(&ok(ferry(&w, &config, &["plan", &image, "--output", "json"]).await)).expect("json");
    assert_eq!(again[0]["action"], "skip", "{again}");
    assert!(again[0]["reason"].as_str().is_some_and(|r| r.contains("already")), "{again}");

    let unmatched = ok(ferry(&w, &config, &["plan", &format!("{}:nightly", w.repository)]).await);
    assert_eq!(unmatched, "nothing to deploy: no environment's rules match the tag \"nightly\"\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_a_blue_green_services_strategy_and_warns_until_ferrys_hook_gates_it() {
    let w = World::new().await;
    let hook_arn = "arn:aws:lambda:us-east-1:123456789012:function:ferry-verify";
    let health = format!("health = {{ url = \"{0}/health\", test_url = \"{0}/test\" }}", w.sink.url);
    let config = config_file(&w, &health);
    w.push("staging-aaaa0001", &"a".repeat(64)).await;
    let image = format!("{}:staging-aaaa0001", w.repository);
    let set = async |hooks: Vec<aws_sdk_ecs::types::DeploymentLifecycleHook>| {
        let configuration = aws_sdk_ecs::types::DeploymentConfiguration::builder()
            .strategy(aws_sdk_ecs::types::DeploymentStrategy::BlueGreen)
            .set_lifecycle_hooks(Some(hooks))
            .build();
        let ecs = aws_sdk_ecs::Client::new(&w.aws);
        ecs.update_service()
            .cluster(&w.cluster)
            .service(&w.service)
            .deployment_configuration(configuration)
            .send()
            .await
            .expect("update");
    };
    let plan = async || -> Value {
        let out = ok(ferry(&w, &config, &["plan", &image, "--output", "json", "--hook-arn", hook_arn]).await);
        serde_json::from_str(&out).expect("json")
    };

    set(vec![]).await;
    let unhooked = plan().await;
    assert_eq!(unhooked[0]["strategy"], "BLUE_GREEN");
    assert!(unhooked[0]["warnings"][0].as_str().is_some_and(|w| w.contains("POST_TEST_TRAFFIC_SHIFT")), "{unhooked}");

    let hook = aws_sdk_ecs::types::DeploymentLifecycleHook::builder()
        .hook_target_arn(hook_arn)
        .role_arn("arn:aws:iam::123456789012:role/ferry-hook")
        .lifecycle_stages(aws_sdk_ecs::types::DeploymentLifecycleHookStage::PostTestTrafficShift)
        .build();
    set(vec![hook]).await;
    let hooked = plan().await;
    assert_eq!((hooked[0]["strategy"].as_str(), hooked[0].get("warnings")), (Some("BLUE_GREEN"), None), "{hooked}");
    let table = ok(ferry(&w, &config, &["plan", &image, "--hook-arn", hook_arn]).await);
    assert!(table.contains("strategy BLUE_GREEN") && !table.contains("warning"), "{table}");
    let shown = ok(ferry(&w, &config, &["check"]).await);
    assert!(shown.contains(&format!("test route {}/test", w.sink.url)), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_replays_a_lost_push_once_through_the_deploy_handler() {
    let w = World::new().await;
    let config = config_file(&w, "");
    w.push("staging-aaaa0001", &"a".repeat(64)).await; // ECR has it; its event never came
    let image = format!("{}:staging-aaaa0001", w.repository);

    let said: Value =
        serde_json::from_str(&ok(ferry(&w, &config, &["deploy", &image, "--output", "json"]).await)).expect("json");
    assert_eq!(said[0]["outcome"], "started", "{said}");
    let td = w.describe().await.task_definition.expect("td");
    let (definition, _) = w.task_definition(&td).await;
    let api = definition.container_definitions().iter().find(|c| c.name() == Some("api")).expect("api");
    assert!(api.image().is_some_and(|i| i.contains(&format!("{}@sha256:", w.repository))), "pinned by digest");
    let history = w.ledger().history(&w.target(), 10).await.expect("history");
    assert_eq!(history.iter().map(|d| d.state).collect::<Vec<_>>(), [State::InProgress]);

    // Replayed again (or the late original arrives): one deployment, one record.
    let again = ok(ferry(&w, &config, &["deploy", &image]).await);
    assert!(again.contains("already handled"), "{again}");
    assert_eq!(w.ledger().history(&w.target(), 10).await.expect("history").len(), 1);
    assert_eq!(w.describe().await.task_definition.as_deref(), Some(td.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_history_rollback_and_release_act_through_the_functions_paths() {
    let w = World::new().await;
    let file =
        config_file(&w, &format!("health = {{ url = \"{}/health\", attempts = 1, timeout_seconds = 1 }}", w.sink.url));
    let config = ferry::config::Config::load(&file).expect("config");
    w.deployed(&config, "staging-aaaa0001", 'a').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));
    let good_td = w.describe().await.task_definition.expect("td");
    w.deployed(&config, "staging-bbbb0002", 'b').await;

    // In flight: status shows it; history lists both, newest first.
    let status: Value =
        serde_json::from_str(&ok(ferry(&w, &file, &["status", "--env", "staging", "--output", "json"]).await))
            .expect("json");
    let [row] = status.as_array().expect("rows").as_slice() else { panic!("{status}") };
    assert_eq!(
        (row["in_flight"]["tag"].as_str(), row["in_flight"]["state"].as_str()),
        (Some("staging-bbbb0002"), Some("IN_PROGRESS"))
    );
    assert_eq!(row["last_known_good"]["task_definition"].as_str(), Some(good_td.as_str()));

    // The operator asks for a rollback: the event the rollback function handles, on the bus given.
    let bus = unique("ferry-bus");
    aws_sdk_eventbridge::Client::new(&w.home).create_event_bus().name(&bus).send().await.expect("bus");
    let asked = ok(ferry(&w, &file, &["--event-bus", &bus, "rollback", &w.service, "--env", "staging"]).await);
    assert_eq!(asked, "rollback of shop-staging-api in staging requested\n");
    let [request] = w
        .delivered("Rollback Requested")
        .await
        .into_iter()
        .filter(|e| e["bus"] == bus.as_str())
        .collect::<Vec<_>>()
        .try_into()
        .expect("one request");
    assert_eq!(request["detail"]["environment"], "staging");
    assert!(request["detail"]["requested_by"].as_str().is_some_and(|b| b.contains("ferry CLI")));
    w.rollback(&config, request).await;
    assert_eq!(
        w.describe().await.task_definition.as_deref(),
        Some(good_td.as_str()),
        "the known-good revision is back"
    );
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::External { .. }));

    let history = normalise(&w, &ok(ferry(&w, &file, &["history", "--service", &w.service]).await));
    let bad_digest =
        w.ledger().head(&w.target()).await.expect("head").quarantine.first().cloned().expect("quarantined");
    let short = |d: &str| d.trim_start_matches("sha256:")[..12].to_string();
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4, "{history}");
    assert!(
        lines[0].starts_with("STARTED (UTC)") && lines[0].contains("STATE") && lines[0].ends_with("REASON"),
        "{history}"
    );
    assert!(lines[1].contains("ROLLED_BACK") || lines[1].contains("SUCCEEDED"), "newest first: {history}");
    let bad_line = lines.iter().find(|l| l.contains("staging-bbbb0002")).expect("bad deployment");
    assert!(bad_line.contains(&short(&bad_digest)) && bad_line.contains("ROLLED_BACK"), "{history}");
    assert!(lines.iter().any(|l| l.contains("staging-aaaa0001") && l.contains("SUCCEEDED")), "{history}");
    let json: Value =
        serde_json::from_str(&ok(ferry(&w, &file, &["history", "--limit", "1", "--output", "json"]).await))
            .expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(1));

    let status = ok(ferry(&w, &file, &["status", "--service", &w.service]).await);
    assert!(status.contains(&short(&bad_digest)), "the quarantined digest: {status}");

    // Release lifts the quarantine, once.
    let released = ok(ferry(&w, &file, &["release", &w.service, "--env", "staging", &short(&bad_digest)]).await);
    assert!(released.starts_with(&format!("released {}", short(&bad_digest))), "{released}");
    assert!(w.ledger().head(&w.target()).await.expect("head").quarantine.is_empty());
    let again = refused(ferry(&w, &file, &["release", &w.service, "--env", "staging", &short(&bad_digest)]).await);
    assert!(again.contains("is not quarantined"), "{again}");

    // Refusals: a deployment that was never verified, a service that is not there.
    let bogus = refused(ferry(&w, &file, &["rollback", &w.service, "--env", "staging", "--to", "nope"]).await);
    assert!(bogus.contains("is not a verified deployment"), "{bogus}");
    let unknown = refused(ferry(&w, &file, &["rollback", "billing", "--env", "staging"]).await);
    assert!(unknown.contains("no service \"billing\""), "{unknown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_wait_follows_the_rollback_to_its_end() {
    let w = World::new().await;
    let file = config_file(&w, "");
    let config = ferry::config::Config::load(&file).expect("config");
    w.deployed(&config, "staging-aaaa0001", 'a').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));
    w.deployed(&config, "staging-bbbb0002", 'b').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));

    let bus = unique("ferry-bus");
    aws_sdk_eventbridge::Client::new(&w.home).create_event_bus().name(&bus).send().await.expect("bus");
    let args =
        ["--event-bus", bus.as_str(), "rollback", w.service.as_str(), "--env", "staging", "--wait", "--timeout", "60"];
    // The functions, as EventBridge and ECS would drive them, while the CLI waits.
    let functions = async {
        let request = loop {
            let mine: Vec<Value> =
                w.delivered("Rollback Requested").await.into_iter().filter(|e| e["bus"] == bus.as_str()).collect();
            if let Some(request) = mine.into_iter().next() {
                break request;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        w.rollback(&config, request).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        w.verify(&config, w.complete().await).await
    };
    let (said, verified) = tokio::join!(ferry(&w, &file, &args), functions);
    assert!(matches!(verified, VerifyOutcome::External { .. }), "{verified:?}");
    let said = ok(said);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines[0], "rollback of shop-staging-api in staging requested", "{said}");
    let states: Vec<&str> = lines[1..].iter().filter_map(|l| l.split("): ").nth(1)?.split(':').next()).collect();
    // (The rollback's record is PENDING until ECS names its deployment: seen if polled then.)
    let states = states.strip_prefix(&[State::Pending.as_str()]).unwrap_or(&states);
    assert_eq!(states, [State::InProgress.as_str(), State::Succeeded.as_str()], "each change, to the end: {said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_tags_the_verified_digest_for_the_next_environment_or_refuses() {
    let w = World::new().await;
    let file = config_file(&w, "");
    let config = ferry::config::Config::load(&file).expect("config");
    let refusal =
        refused(ferry(&w, &file, &["promote", &w.repository, "--from", "staging", "--to", "production"]).await);
    assert!(refusal.contains("staging has no verified deployment"), "{refusal}");

    w.deployed(&config, "staging-1a2b3c4d", 'a').await;
    let in_progress =
        refused(ferry(&w, &file, &["promote", &w.repository, "--from", "staging", "--to", "production"]).await);
    assert!(in_progress.contains("no verified deployment"), "not before it is verified: {in_progress}");
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));

    let said = ok(ferry(&w, &file, &["promote", &w.repository, "--from", "staging", "--to", "production"]).await);
    assert!(said.contains("tagged prod-1a2b3c4d: Ferry deploys it to production"), "{said}");
    let ecr = aws_sdk_ecr::Client::new(&w.home);
    let digest_of = |tag: &'static str| {
        let ecr = ecr.clone();
        let repository = w.repository.clone();
        async move {
            ecr.describe_images()
                .repository_name(repository)
                .image_ids(aws_sdk_ecr::types::ImageIdentifier::builder().image_tag(tag).build())
                .send()
                .await
                .expect("describe")
                .image_details()
                .first()
                .and_then(|i| i.image_digest().map(str::to_string))
        }
    };
    let proven = digest_of("staging-1a2b3c4d").await.expect("staging image");
    assert_eq!(digest_of("prod-1a2b3c4d").await, Some(proven), "the exact digest proven in staging");

    let wrong = refused(
        ferry(&w, &file, &["promote", &w.repository, "--from", "staging", "--to", "production", "--tag", "staging-x"])
            .await,
    );
    assert!(wrong.contains("deploys to staging, not production"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_are_one_line_and_every_command_has_an_example() {
    let w = World::new().await;
    let file = config_file(&w, "");
    let usage = ferry(&w, &file, &["history", "--colour"]).await.expect_err("usage");
    assert_eq!(usage.code, 2);
    assert!(!usage.message.contains('\n') && usage.message.contains("--colour"), "{}", usage.message);
    for command in ["check", "plan", "deploy", "status", "history", "rollback", "promote", "release"] {
        let help = ok(ferry(&w, &file, &[command, "--help"]).await);
        assert!(help.contains("Example:\n  ferry "), "{command}: {help}");
    }
    let mut argv = vec!["ferry", "--config"];
    let path = file.display().to_string();
    argv.extend([path.as_str(), "history"]);
    let mut out = Vec::new();
    let no_table = ferry_cli::run(argv, &w.home, &mut out, Term::default()).await.expect_err("no table");
    assert_eq!(no_table.message, "no ledger table: pass --table or set FERRY_TABLE");
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_hands_dead_lettered_events_to_their_functions_handler_once() {
    let w = World::new().await;
    let config = config_file(&w, "");
    let sqs = aws_sdk_sqs::Client::new(&w.home);
    let queue =
        sqs.create_queue().queue_name(unique("deploy-dlq")).send().await.expect("queue").queue_url.expect("url");
    // A push whose three deliveries failed, as Lambda's on-failure destination keeps it.
    let event = w.push("staging-aaaa0001", &"a".repeat(64)).await;
    let record = serde_json::json!({"version": "1.0", "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": event, "responsePayload": {"errorType": "Ferry.Retryable", "errorMessage": "retryable: ledger: throttled"}});
    sqs.send_message().queue_url(&queue).message_body(record.to_string()).send().await.expect("send");

    let listed: Value = serde_json::from_str(&ok(ferry(
        &w,
        &config,
        &["redrive", "--dry-run", "--deploy-dlq", &queue, "--output", "json"],
    )
    .await))
    .expect("json");
    let [row] = listed.as_array().expect("rows").as_slice() else { panic!("{listed}") };
    assert_eq!((row["function"].as_str(), row["result"].as_str()), (Some("deploy"), Some("waiting")));
    assert_eq!(row["failed_with"], "retryable: ledger: throttled");
    assert!(w.ledger().history(&w.target(), 10).await.expect("history").is_empty(), "a dry run changes nothing");

    // Handled by the deploy function's handler: deployed once, and gone from the queue.
    let handled: Value =
        serde_json::from_str(&ok(ferry(&w, &config, &["redrive", "--deploy-dlq", &queue, "--output", "json"]).await))
            .expect("json");
    assert_eq!(handled[0]["result"], "handled", "{handled}");
    let history = w.ledger().history(&w.target(), 10).await.expect("history");
    assert_eq!(history.iter().map(|d| d.state).collect::<Vec<_>>(), [State::InProgress]);
    let again = ok(ferry(&w, &config, &["redrive", "--deploy-dlq", &queue]).await);
    assert_eq!(again, "no failed events waiting\n");
    assert_eq!(w.ledger().history(&w.target(), 10).await.expect("history").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_approve_names_the_callers_aws_principal_and_counts_it_once() {
    let w = World::new().await;
    let extra = "approval = { approvers = [\"U0AAAAAAA\", \"U0BBBBBBB\"], required = 2 }";
    let (file, config) = (config_file(&w, extra), w.config_with(extra));
    w.deploy(&config, w.push("staging-aaaa0001", "sha256:a1").await, "push").await;
    let [waiting] = w.ledger().history(&w.target(), 5).await.expect("history").try_into().expect("one");
    assert_eq!(waiting.state, State::AwaitingApproval);

    let first = ok(ferry(&w, &file, &["approve", &waiting.id]).await);
    assert!(first.contains("approval noted (1 of 2: arn:aws:"), "the STS caller, not $USER: {first}");
    let again = ok(ferry(&w, &file, &["approve", &waiting.id]).await);
    assert!(again.contains("(1 of 2:"), "one principal twice is one approver: {again}");
    ok(ferry(&w, &file, &["reject", &waiting.id, "--reason", "not today"]).await);
    let record = w.ledger().deployment(&w.target(), &waiting.id).await.expect("read").expect("record");
    let reason = record.reason.unwrap_or_default();
    assert_eq!(record.state, State::Rejected);
    assert!(reason.starts_with("rejected by arn:aws:") && reason.ends_with(": not today"), "{reason}");
}

/// `ferry ARGS`: what it printed, and its failure if it failed.
async fn ferry_report(w: &World, config: &Path, args: &[&str]) -> (String, Option<Failure>) {
    let mut argv = vec!["ferry".to_string(), "--config".into(), config.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    let failure = ferry_cli::run(argv, &w.home, &mut out, Term::default()).await.err();
    (String::from_utf8(out).expect("utf-8"), failure)
}

/// A stand-in for Ferry's stack: its parameters, and a rule, a queue and an alarm.
async fn stack(w: &World, task_roles: &str) -> String {
    let name = unique("ferry-stack");
    let template = serde_json::json!({
        "Parameters": {
            "EcsClusterNames": {"Type": "CommaDelimitedList"},
            "TaskRoleArns": {"Type": "CommaDelimitedList"},
            "TargetRoleArns": {"Type": "CommaDelimitedList", "Default": ""},
            "ForwardingAccountIds": {"Type": "CommaDelimitedList", "Default": ""},
        },
        "Resources": {
            "PushRule": {"Type": "AWS::Events::Rule", "Properties": {
                "EventPattern": {"source": ["aws.ecr"]}, "State": "ENABLED"}},
            "DeployDeadLetterQueue": {"Type": "AWS::SQS::Queue"},
            "DeployErrorsAlarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
                "MetricName": "Errors", "Namespace": "AWS/Lambda", "Statistic": "Sum", "Period": 60,
                "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold"}},
        },
    });
    let parameter = |k: &str, v: &str| {
        aws_sdk_cloudformation::types::Parameter::builder().parameter_key(k).parameter_value(v).build()
    };
    aws_sdk_cloudformation::Client::new(&w.home)
        .create_stack()
        .stack_name(&name)
        .template_body(template.to_string())
        .parameters(parameter("EcsClusterNames", &w.cluster))
        .parameters(parameter("TaskRoleArns", task_roles))
        .send()
        .await
        .expect("stack");
    name
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_healthy_world_and_names_each_seeded_defect_with_its_fix() {
    let w = World::new().await;
    let roles = "arn:aws:iam::123456789012:role/shop-task,arn:aws:iam::123456789012:role/shop-execution";
    let healthy = stack(&w, roles).await;
    let health = format!("health = {{ url = \"{}/health\" }}", w.sink.url);
    let config = config_file(&w, &health);
    let (text, failure) = ferry_report(&w, &config, &["doctor", "--env", "staging", "--stack", &healthy]).await;
    assert_eq!(failure, None, "{text}");
    assert!(text.contains(&format!("ok   container api takes {}'s images", w.repository)), "{text}");
    assert!(
        text.contains("ok   health URL http://127.0.0.1") && text.ends_with("nothing blocks a deployment\n"),
        "{text}"
    );
    assert!(!text.contains("FAIL") && !text.contains("warn"), "{text}");

    // A container the task definition does not have, and a task role the stack may not pass.
    let wrong = std::env::temp_dir().join(format!("{}.toml", unique("ferry")));
    let text_of = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&wrong, text_of.replace("containers = [\"api\"]", "containers = [\"api\", \"apii\"]"))
        .expect("write");
    let short = stack(&w, "arn:aws:iam::123456789012:role/shop-execution").await;
    let (text, failure) = ferry_report(&w, &wrong, &["doctor", "--env", "staging", "--stack", &short]).await;
    assert_eq!(
        failure.map(|f| (f.code, f.message)),
        Some((1, "2 finding(s) would block a deployment (FAIL above)".into()))
    );
    let fails: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 2, "{text}");
    assert!(
        fails[0].contains("container apii is not in") && fails[0].contains("correct the service's containers"),
        "{text}"
    );
    assert!(
        fails[1].contains("role/shop-task is not in the stack's TaskRoleArns") && fails[1].ends_with("add it there"),
        "{text}"
    );

    // A target in another region: no service there, and nothing forwards its events to Ferry.
    let away = std::env::temp_dir().join(format!("{}.toml", unique("ferry")));
    std::fs::write(
        &away,
        text_of.replace(
            &format!("region = \"{REGION}\", cluster = \"{}-prod\"", w.cluster),
            &format!("region = \"us-west-2\", cluster = \"{}\"", w.cluster),
        ),
    )
    .expect("write");
    let (text, failure) = ferry_report(&w, &away, &["doctor", "--env", "production", "--stack", &healthy]).await;
    assert!(failure.is_some(), "{text}");
    assert!(
        text.contains("nothing forwards ECS's events from account 123456789012 us-west-2 to Ferry's bus"),
        "{text}"
    );
    let west = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&w.home)
            .region(aws_sdk_eventbridge::config::Region::new("us-west-2"))
            .build(),
    );
    west.put_rule().name(unique("forward")).event_pattern(r#"{"source":["aws.ecs"]}"#).send().await.expect("rule");
    let rule = west.list_rules().send().await.expect("rules").rules()[0].name().unwrap_or_default().to_string();
    let ferry_bus = aws_sdk_eventbridge::types::Target::builder()
        .id("ferry")
        .arn(format!("arn:aws:events:{REGION}:123456789012:event-bus/default"))
        .build()
        .expect("target");
    west.put_targets().rule(rule).targets(ferry_bus).send().await.expect("targets");
    let (text, _) = ferry_report(&w, &away, &["doctor", "--env", "production", "--stack", &healthy]).await;
    assert!(text.contains("ok   ECS's events in 123456789012 us-west-2 are forwarded to Ferry"), "{text}");

    // A role in another account whose trust policy does not name Ferry's.
    let other = common::in_account(&w.home, "arn:aws:iam::210987654321:role/admin").await;
    let name = unique("ferry-target");
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "sts:AssumeRole"}]});
    let role = serde_json::json!({"Resources": {"Role": {"Type": "AWS::IAM::Role",
        "Properties": {"RoleName": name, "AssumeRolePolicyDocument": trust}}}});
    let cfn = aws_sdk_cloudformation::Client::new(&other);
    cfn.create_stack().stack_name(unique("role")).template_body(role.to_string()).send().await.expect("role");
    let role_arn = format!("arn:aws:iam::210987654321:role/{name}");
    let untrusted = std::env::temp_dir().join(format!("{}.toml", unique("ferry")));
    std::fs::write(
        &untrusted,
        text_of.replace(
            &format!("cluster = \"{}-prod\"", w.cluster),
            &format!("cluster = \"{}-prod\", role_arn = \"{role_arn}\"", w.cluster),
        ),
    )
    .expect("write");
    let (text, failure) = ferry_report(&w, &untrusted, &["doctor", "--env", "production", "--stack", &healthy]).await;
    assert!(failure.is_some(), "{text}");
    let refused = format!("warn could not assume {role_arn} with your credentials (");
    assert!(text.contains(&refused) && text.contains("not authorized to perform: sts:AssumeRole"), "{text}");
    assert!(text.contains(&format!("FAIL role {role_arn} is not in the stack's TargetRoleArns")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_writes_a_config_check_accepts_that_deploys_the_next_push() {
    let w = World::new().await;
    w.push("staging-aaaa0001", &"a".repeat(64)).await;
    let before = w.describe().await.task_definition;
    let written = std::env::temp_dir().join(format!("{}.toml", unique("init")));
    let nowhere = std::env::temp_dir().join(format!("{}.toml", unique("none")));
    let args = ["init", "--region", REGION, "--cluster", &w.cluster, "--output", &written.display().to_string()];
    let said = ok(ferry(&w, &nowhere, &args).await);
    assert!(said.starts_with("wrote "), "{said}");
    let text = std::fs::read_to_string(&written).expect("written");
    assert!(text.contains("name = \"staging\"") && text.contains("rules = [{ glob = \"staging-*\" }]"), "{text}");
    assert!(
        text.contains(&format!(
            "repository = \"{}\"\nname = \"shop-{{env}}-api\"\ncontainers = [\"api\"]",
            w.repository
        )),
        "{text}"
    );
    assert!(text.contains("# left alone: container"), "the sidecar: {text}");
    assert!(text.contains(&format!("#   EcsClusterNames={}", w.cluster)), "{text}");
    assert!(
        text.contains(
            "#   TaskRoleArns=arn:aws:iam::123456789012:role/shop-execution,arn:aws:iam::123456789012:role/shop-task"
        ),
        "{text}"
    );
    ok(ferry(&w, &written, &["check"]).await);

    let config = ferry::config::Config::parse("ferry.toml", &text).expect("config");
    let deployed = w.deploy(&config, w.push("staging-bbbb0002", &"b".repeat(64)).await, "init").await;
    let ferry::deploy::DeployOutcome::Deployed(outcomes) = &deployed else { panic!("{deployed:?}") };
    assert!(matches!(outcomes.as_slice(), [ferry::deploy::TargetOutcome::Started { .. }]), "{deployed:?}");
    assert_ne!(w.describe().await.task_definition, before, "the next push deployed");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_reports_the_ledgers_deployments_failures_and_what_is_not_yet_restored() {
    let w = World::new().await;
    let config = config_file(&w, "");
    let w = &w;
    let record = |n: usize| async move {
        let all = w.ledger().history(&w.target(), 10).await.expect("history");
        all.into_iter().rev().nth(n).expect("record")
    };
    // A push verified, then one that failed and was not yet put back.
    w.deploy(&w.config(false), w.push("staging-aaaa0001", &"a".repeat(64)).await, "first").await;
    let mut verified = record(0).await;
    (verified.state, verified.live_at) = (State::Succeeded, Some(chrono::Utc::now()));
    let head = ferry::ports::HeadChange::LastKnownGood;
    assert!(w.ledger().transition(&verified, &[State::InProgress], head).await.expect("verified"));
    w.deploy(&w.config(false), w.push("staging-bbbb0002", &"b".repeat(64)).await, "second").await;
    let mut broken = record(1).await;
    broken.state = State::Failed;
    let none = ferry::ports::HeadChange::None;
    assert!(w.ledger().transition(&broken, &[State::InProgress], none).await.expect("failed"));

    let json: Value =
        serde_json::from_str(&ok(ferry(w, &config, &["metrics", "--env", "staging", "--output", "json"]).await))
            .expect("json");
    let rows = json.as_array().expect("rows");
    let service = rows.iter().find(|r| r["service"] == "shop-staging-api").expect("service row");
    let m = &service["metrics"];
    assert_eq!(
        (m["deployments"].as_u64(), m["reached_ecs"].as_u64(), m["failed"].as_u64()),
        (Some(1), Some(2), Some(1))
    );
    assert_eq!((m["change_failure_rate"].as_f64(), m["unrestored"].as_u64()), (Some(0.5), Some(1)));
    assert_eq!(m["lead_time"]["samples"].as_u64(), Some(1));
    assert!(rows.iter().any(|r| r["service"] == "(all)"), "{json}");
    let table = ok(ferry(w, &config, &["metrics", "--env", "staging"]).await);
    assert!(table.contains("50% (1/2)") && table.contains("+1 open"), "{table}");
    assert!(table.contains("SKIPPED, SUPERSEDED, HELD and REJECTED pushes never reached ECS"), "{table}");
    let refused = refused(ferry(w, &config, &["metrics", "--since", "30m"]).await);
    assert!(refused.contains("not a window such as 30d"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_reads_several_regions_into_one_environment_whose_next_push_deploys_to_each() {
    let w = World::new().await;
    let production = unique("shop-production");
    for region in [REGION, "us-west-2"] {
        w.another_service(region, &production, "shop-production-api").await;
    }
    w.push("staging-aaaa0001", &"a".repeat(64)).await;
    w.push("prod-aaaa0001", &"a".repeat(64)).await;
    let written = std::env::temp_dir().join(format!("{}.toml", unique("init")));
    let nowhere = std::env::temp_dir().join(format!("{}.toml", unique("none")));
    let out = written.display().to_string();
    let args = ["init", "--region", REGION, "--region", "us-west-2", "--cluster", &w.cluster, "--cluster", &production];
    ok(ferry(&w, &nowhere, &[&args[..], &["--output", &out]].concat()).await);
    let text = std::fs::read_to_string(&written).expect("written");
    let config = ferry::config::Config::parse("ferry.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let names: Vec<&str> = config.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["staging", "production"], "{text}");
    let regions: Vec<&str> = config.environments[1].targets.iter().map(|t| t.region.as_str()).collect();
    assert_eq!(regions, [REGION, "us-west-2"], "{text}");
    assert!(text.contains("rules = [{ glob = \"prod-*\" }]") && text.contains("Deploy infra/target.yaml"), "{text}");
    assert_eq!(config.services.len(), 1, "one service, named shop-{{env}}-api everywhere: {text}");
    ok(ferry(&w, &written, &["check"]).await);

    let deployed = w.deploy(&config, w.push("prod-bbbb0002", &"b".repeat(64)).await, "init").await;
    let ferry::deploy::DeployOutcome::Deployed(outcomes) = &deployed else { panic!("{deployed:?}") };
    assert_eq!(outcomes.len(), 2, "{deployed:?}");
    assert!(outcomes.iter().all(|o| matches!(o, ferry::deploy::TargetOutcome::Started { .. })), "{deployed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_reads_another_account_through_its_role_and_its_next_push_deploys_there() {
    let w = World::new().await;
    let role = "arn:aws:iam::210987654321:role/ferry-target";
    let production = unique("shop-production");
    let other = common::in_account(&w.home, role).await;
    w.another_service_in(&other, "210987654321", REGION, &production, "shop-production-api").await;
    w.push("v0.1.0-rc.1", &"a".repeat(64)).await;
    w.push("v0.1.0", &"a".repeat(64)).await;
    let written = std::env::temp_dir().join(format!("{}.toml", unique("init")));
    let nowhere = std::env::temp_dir().join(format!("{}.toml", unique("none")));
    let out = written.display().to_string();
    let args = ["init", "--region", REGION, "--cluster", &w.cluster, "--cluster", &production, "--role-arn", role];
    ok(ferry(&w, &nowhere, &[&args[..], &["--output", &out]].concat()).await);
    let text = std::fs::read_to_string(&written).expect("written");
    let config = ferry::config::Config::parse("ferry.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.environment_for_tag("v0.2.0-rc.1").map(|e| e.name.as_str()), Some("staging"), "{text}");
    assert_eq!(config.environment_for_tag("v0.2.0").map(|e| e.name.as_str()), Some("production"), "{text}");
    let target = &config.environments[1].targets[0];
    assert_eq!(target.role_arn.as_deref(), Some(role), "{text}");
    assert!(
        text.contains("#   ForwardingAccountIds=210987654321") && text.contains(&format!("#   TargetRoleArns={role}")),
        "{text}"
    );
    ok(ferry(&w, &written, &["check"]).await);

    let deployed = w.deploy(&config, w.push("v0.2.0", &"b".repeat(64)).await, "init").await;
    let ferry::deploy::DeployOutcome::Deployed(outcomes) = &deployed else { panic!("{deployed:?}") };
    assert!(matches!(outcomes.as_slice(), [ferry::deploy::TargetOutcome::Started { .. }]), "{deployed:?}");
}

/// Runs Debian's Chromium headless on `page` with `args`; its standard output and its log.
fn chromium(page: &Path, args: &[&str]) -> (String, String) {
    let profile = std::env::temp_dir().join(unique("chromium"));
    let browser = std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let out = std::process::Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {browser} ({e}): tests/run installs Debian's chromium"));
    assert!(out.status.success(), "{browser}: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(profile);
    (String::from_utf8(out.stdout).expect("utf-8"), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn report_is_one_page_a_real_browser_shows_with_what_is_live_the_timeline_and_the_figures() {
    let w = World::new().await;
    let production = unique("shop-production");
    for region in [REGION, "us-west-2"] {
        w.another_service(region, &production, "shop-production-api").await;
    }
    let config = w.config_text("").replacen(
        "[[services]]",
        &format!(
            "[[environments]]\nname = \"production\"\nrules = [{{ glob = \"prod-*\" }}]\ntargets = [\
             {{ region = \"{REGION}\", cluster = \"{production}\" }}, {{ region = \"us-west-2\", cluster = \"{production}\" }}]\n\n\
             [[services]]"
        ),
        1,
    );
    let config_path = std::env::temp_dir().join(format!("{}.toml", unique("ferry")));
    std::fs::write(&config_path, &config).expect("config");
    let parsed = ferry::config::Config::parse("ferry.toml", &config).expect("config");
    let targets: Vec<ferry::model::Target> = ["staging", "production"]
        .iter()
        .flat_map(|env| ferry::plan::targets_of(&parsed, env, &format!("shop-{env}-api")))
        .collect();
    let mut live = Vec::new();
    for t in &targets {
        let aws = w.home.to_builder().region(aws_config::Region::new(t.region.clone())).build();
        let service = aws_sdk_ecs::Client::new(&aws)
            .describe_services()
            .cluster(&t.cluster)
            .services(&t.service)
            .send()
            .await
            .expect("service");
        live.push(service.services()[0].task_definition().expect("revision").to_string());
    }
    let now = Utc::now();
    let days_ago = |d: i64, h: i64| now - chrono::Duration::days(d) + chrono::Duration::hours(h);
    let old = |n: usize| format!("arn:aws:ecs:{REGION}:{}:task-definition/api:{n}", common::ACCOUNT);
    // Staging: 20 pushes in 40 days, the last a day ago; the 5th and 12th fail, the 17th is skipped, the last is live.
    for i in 1..=20 {
        let state = match i {
            5 | 12 => State::RolledBack,
            17 => State::Skipped,
            _ => State::Succeeded,
        };
        let td = if i == 20 { live[0].clone() } else { old(i) };
        w.seeded(&targets[0], &format!("staging-{i:04}"), days_ago(41 - 2 * i as i64, 0), state, &td).await;
    }
    // Production, in two regions: 8 pushes; the 4th fails in us-west-2 only, the last is live.
    for i in 1..=8 {
        for (r, t) in targets[1..].iter().enumerate() {
            let state = if i == 4 && r == 1 { State::RolledBack } else { State::Succeeded };
            let td = if i == 8 { live[r + 1].clone() } else { old(100 + i) };
            w.seeded(t, &format!("prod-{i:04}"), days_ago(41 - 5 * i as i64, 0), state, &td).await;
        }
    }

    let page = std::env::temp_dir().join(format!("{}.html", unique("report")));
    let args = ["report", "--html", page.to_str().expect("path"), "--since", "6w"];
    let said = ok(ferry(&w, &config_path, &args).await);
    assert!(said.contains("3 targets"), "{said}");
    let html = std::fs::read_to_string(&page).expect("page");
    assert!(html.contains("content=\"default-src 'none'; style-src 'unsafe-inline'\""), "fetches nothing");
    for fetch in ["src=", "href=", "url(", "@import"] {
        assert!(!html.contains(fetch), "the page refers to something to fetch: {fetch}");
    }

    // What the browser made of it, after parsing.
    let (dom, log) = chromium(&page, &["--dump-dom"]);
    assert!(!log.contains("Content Security Policy"), "the page's own policy refused part of it: {log}");
    for must in [
        "<h2>Live now</h2>",
        "<h3>staging</h3>",
        "<h3>production</h3>",
        "<th>us-west-2</th>",
        "tag <b>staging-0020</b>",
        "tag <b>prod-0008</b>",
        "(2/19)",
        "(1/8)",
        "10m00s / 10m00s</div><div class=\"l\">from commit 45m00s / 45m00s",
        "<small>commit <code>",
        "Deployments of shop-production-api in production",
    ] {
        assert!(dom.to_lowercase().contains(&must.to_lowercase()), "the page lacks {must:?}");
    }
    assert_eq!(dom.matches("<circle").count(), 20 + 16, "one mark per record");
    assert_eq!(dom.matches("class=\"mark bad\"").count(), 3, "the failures in red");
    assert_eq!(dom.matches("class=\"badge good\">SUCCEEDED").count(), 3, "each target's live push verified");
    assert_eq!(dom.matches("<div class=\"chart\"").count(), 8, "four figures per environment");

    let shot = page.with_extension("png");
    let _ =
        chromium(&page, &["--hide-scrollbars", "--window-size=1280,1180", &format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a screenshot of the page ({} bytes)", png.len());
    // FERRY_SCREENSHOT=docs/report.png keeps it for the README.
    if let Ok(keep) = std::env::var("FERRY_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep the screenshot");
    }
}
