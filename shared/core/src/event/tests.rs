//! The events' tests: the sample fixtures and their variants, acted on, ignored, rejected or malformed.

use super::*;

fn sample(name: &str) -> Value {
    crate::testing::sample_event(name)
}

#[test]
fn a_successful_push_is_parsed() {
    let Received::Act(DeployEvent::Push(push)) = parse_deploy_event(sample("ecr-push-staging.json")).expect("parse")
    else {
        panic!("not a push");
    };
    assert_eq!(push.event_id, "13cde686-328b-6117-af20-0e5566167482");
    assert_eq!(push.repository, "shop/api");
    assert_eq!(push.tag, "staging-1a2b3c4d");
    assert_eq!(push.pushed_at.to_rfc3339(), "2026-11-16T01:54:34+00:00");
    assert_eq!(
        push.image(),
        "123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/shop/api@sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234"
    );
}

#[test]
fn everything_but_a_tagged_successful_push_is_ignored_rejected_or_malformed() {
    let ignored = |v| matches!(parse_deploy_event(v), Ok(Received::Ignored(_)));
    assert!(ignored(sample("ecr-push-failed.json")));
    assert!(ignored(sample("ecr-delete.json")));
    let mut untagged = sample("ecr-push-staging.json");
    untagged["detail"].as_object_mut().expect("detail").remove("image-tag");
    assert!(ignored(untagged));
    // The push rule never sends another source: such an event is rejected, by name.
    let rejected = parse_deploy_event(sample("ecs-deployment-completed.json")).expect("parse");
    assert!(
        matches!(&rejected, Received::Rejected(why) if why.contains("aws.ecs") && why.contains("ECS Deployment State Change")),
        "{rejected:?}"
    );
    let mut spoofed = sample("ecr-push-staging.json");
    spoofed["source"] = "my.app".into();
    assert!(matches!(parse_deploy_event(spoofed), Ok(Received::Rejected(_))));

    let malformed = |v: Value| parse_deploy_event(v).expect_err("malformed").0;
    assert!(malformed(serde_json::json!({"hello": "world"})).contains("not an EventBridge event"));
    assert!(malformed(serde_json::json!([1, 2])).contains("not an EventBridge event"));
    let mut no_digest = sample("ecr-push-staging.json");
    no_digest["detail"].as_object_mut().expect("detail").remove("image-digest");
    assert!(malformed(no_digest).contains("image-digest"));
    let mut bad_digest = sample("ecr-push-staging.json");
    bad_digest["detail"]["image-digest"] = "latest".into();
    assert!(malformed(bad_digest).contains("not an image digest"));
    let mut no_id = sample("ecr-push-staging.json");
    no_id.as_object_mut().expect("event").remove("id");
    assert!(malformed(no_id).contains("missing id"));
}

#[test]
fn the_reconciliation_schedule_is_parsed() {
    let scheduled = serde_json::json!({"version": "0", "id": "s1", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-16T02:00:00Z",
        "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/ferry-reconcile"],
        "detail": {}});
    assert_eq!(
        parse_deploy_event(scheduled.clone()),
        Ok(Received::Act(DeployEvent::Reconcile { account: "123456789012".into() }))
    );
    let mut anonymous = scheduled;
    anonymous.as_object_mut().expect("event").remove("account");
    assert!(parse_deploy_event(anonymous).is_err());
}

#[test]
fn approvers_decisions_are_parsed() {
    let event = |kind: &str, detail: Value| {
        serde_json::json!({"version": "0", "id": "d1", "detail-type": kind, "source": "ferry",
            "account": "123456789012", "time": "2026-12-24T10:00:00Z", "region": "eu-west-1", "resources": [],
            "detail": detail})
    };
    let detail = serde_json::json!({"deployment": "20261224T100000Z-e1", "target": "-/eu-west-1/c/s",
                                    "by": "U0123ABCD", "environment": "production"});
    let decided = |kind| match parse_deploy_event(event(kind, detail.clone())) {
        Ok(Received::Act(DeployEvent::Decided(d))) => d,
        other => panic!("{other:?}"),
    };
    let approved = decided(DEPLOYMENT_APPROVED);
    assert_eq!(
        (approved.deployment.as_str(), approved.target.as_str(), approved.by.as_str(), approved.verdict),
        ("20261224T100000Z-e1", "-/eu-west-1/c/s", "U0123ABCD", crate::approval::Verdict::Approve)
    );
    assert_eq!(approved.account, "123456789012");
    assert_eq!(decided(DEPLOYMENT_REJECTED).verdict, crate::approval::Verdict::Reject);
    assert!(parse_deploy_event(event(DEPLOYMENT_APPROVED, serde_json::json!({"deployment": "x"}))).is_err());
    assert!(matches!(parse_deploy_event(event("Deployment Wished", detail)), Ok(Received::Rejected(_))));
}

#[test]
fn ecs_deployment_events_are_parsed() {
    let parse = |name| match parse_ecs_event(sample(name)).expect("parse") {
        Received::Act(ev) => ev,
        other => panic!("not an ECS event: {other:?}"),
    };
    let completed = parse("ecs-deployment-completed.json");
    assert_eq!(completed.kind, EcsEventKind::Completed);
    assert_eq!(completed.deployment_id, "ecs-svc/1234567890123456789");
    assert_eq!(
        (completed.account.as_str(), completed.region.as_str(), completed.cluster.as_str(), completed.service.as_str()),
        ("123456789012", "ap-southeast-1", "shop-staging", "shop-staging-api")
    );
    assert_eq!(parse("ecs-deployment-in-progress.json").kind, EcsEventKind::InProgress);
    let failed = parse("ecs-deployment-failed.json");
    assert_eq!(
        (failed.kind, failed.reason.as_str()),
        (EcsEventKind::Failed, "ECS deployment circuit breaker: task failed to start.")
    );
    let rollback = parse("ecs-deployment-circuit-breaker-rollback.json");
    assert_eq!(
        (rollback.kind, rollback.deployment_id.as_str()),
        (EcsEventKind::InProgress, "ecs-svc/9876543210987654321")
    );

    assert!(matches!(parse_ecs_event(sample("ecs-service-action-placement-failure.json")), Ok(Received::Rejected(_))));
    assert!(matches!(parse_ecs_event(sample("ecr-push-staging.json")), Ok(Received::Rejected(_))));
    let mut unknown_kind = sample("ecs-deployment-completed.json");
    unknown_kind["detail"]["eventName"] = "SERVICE_DEPLOYMENT_PAUSED".into();
    assert!(matches!(parse_ecs_event(unknown_kind), Ok(Received::Ignored(_))));
    let mut no_arn = sample("ecs-deployment-completed.json");
    no_arn["resources"] = serde_json::json!([]);
    assert!(parse_ecs_event(no_arn).is_err());
    let mut bad_arn = sample("ecs-deployment-completed.json");
    bad_arn["resources"] = serde_json::json!(["arn:aws:ecs:eu-west-1:1:service/a/b/c"]);
    assert!(parse_ecs_event(bad_arn).is_err());
    // The old format names the service alone.
    let mut old_arn = sample("ecs-deployment-completed.json");
    old_arn["resources"] = serde_json::json!(["arn:aws:ecs:eu-west-1:111122223333:service/only-a-name"]);
    let Ok(Received::Act(ev)) = parse_ecs_event(old_arn) else { panic!("an old-format ARN") };
    assert_eq!((ev.cluster.as_str(), ev.service.as_str(), ev.region.as_str()), ("", "only-a-name", "eu-west-1"));
}

#[test]
fn rollback_triggers_are_parsed() {
    let alarm = parse_rollback_trigger(sample("cloudwatch-alarm-state-change.json")).expect("parse");
    assert!(
        matches!(&alarm, Received::Act(RollbackTrigger::Alarm { name, region, .. }) if name == "shop-staging-api-5xx" && region == "ap-southeast-1"),
        "{alarm:?}"
    );
    // When CloudWatch changed the state, to the millisecond, not when the event was sent.
    let mut late = sample("cloudwatch-alarm-state-change.json");
    late["time"] = "2026-11-16T03:00:00Z".into();
    late["detail"]["state"]["timestamp"] = "2026-11-16T02:09:30.250+0000".into();
    let Ok(Received::Act(RollbackTrigger::Alarm { at, .. })) = parse_rollback_trigger(late) else { panic!() };
    assert_eq!(at.to_rfc3339(), "2026-11-16T02:09:30.250+00:00");
    let mut again = sample("cloudwatch-alarm-state-change.json");
    again["detail"]["previousState"]["value"] = "ALARM".into();
    assert!(matches!(parse_rollback_trigger(again), Ok(Received::Ignored(_))), "not a change into ALARM");
    let mut ok = sample("cloudwatch-alarm-state-change.json");
    ok["detail"]["state"]["value"] = "OK".into();
    assert!(matches!(parse_rollback_trigger(ok), Ok(Received::Ignored(_))), "only ALARM rolls back");
    assert!(matches!(
        parse_rollback_trigger(sample("ecs-deployment-failed.json")),
        Ok(Received::Act(RollbackTrigger::EcsFailed(_)))
    ));
    assert!(matches!(parse_rollback_trigger(sample("ecs-deployment-completed.json")), Ok(Received::Ignored(_))));
    assert!(matches!(parse_rollback_trigger(sample("ecr-push-staging.json")), Ok(Received::Rejected(_))));
    let request = serde_json::json!({"version": "0", "id": "r1", "detail-type": "Rollback Requested", "source": "ferry",
        "account": "123456789012", "time": "2026-11-16T02:00:00Z", "region": "eu-west-1", "resources": [],
        "detail": {"environment": "staging", "service": "shop-staging-api", "requested_by": "alice"}});
    assert_eq!(
        parse_rollback_trigger(request.clone()),
        Ok(Received::Act(RollbackTrigger::Requested {
            environment: "staging".into(),
            service: "shop-staging-api".into(),
            region: None,
            to: None,
            by: "alice".into(),
            from: "123456789012".into(),
        }))
    );
    let mut bad = request;
    bad["detail"] = serde_json::json!({"service": 3});
    assert!(parse_rollback_trigger(bad).is_err());
}

#[test]
fn unknown_fields_are_tolerated() {
    let mut event = sample("ecr-push-staging.json");
    event["detail"]["artifact-media-type"] = "application/vnd.oci.image.manifest.v1+json".into();
    event["new-top-level"] = serde_json::json!({"x": 1});
    assert!(matches!(parse_deploy_event(event), Ok(Received::Act(DeployEvent::Push(_)))));
}

#[test]
fn the_verify_function_tells_its_sweep_from_the_weekly_digest() {
    let digest = serde_json::json!({"source": "ferry", "detail-type": "Weekly Digest", "account": "123456789012"});
    assert_eq!(
        parse_verify_event(digest.clone()),
        Ok(Received::Act(VerifyEvent::Digest { account: "123456789012".into() }))
    );
    let sweep = serde_json::json!({"version": "0", "id": "s1", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-16T02:00:00Z",
        "region": "eu-west-1", "resources": [], "detail": {}});
    assert_eq!(parse_verify_event(sweep), Ok(Received::Act(VerifyEvent::Sweep { account: "123456789012".into() })));
    let mut anonymous = digest;
    anonymous.as_object_mut().expect("event").remove("account");
    assert!(parse_verify_event(anonymous).is_err());
}
