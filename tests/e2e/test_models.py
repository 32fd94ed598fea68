"""The four deployment models of docs/configuration.md, each with its example config from examples/,
through the sandbox: real function binaries, events routed by the template's rules."""

from __future__ import annotations

import secrets

from conftest import example
from ferry_sandbox import SIDECAR_IMAGE, Sandbox, Target

REPOSITORIES = ["shop/api", "shop/web", "shop/cart", "shop/checkout", "shop/search", "shop/mailer"]


def sha8() -> str:
    return secrets.token_hex(4)


def only_container_changed(sandbox: Sandbox, t: Target, container: str, image: str) -> None:
    """The live revision differs from the service's first one in that container's image only."""
    live = sandbox.service(t)
    first = sandbox.task_definition(t, f"{t.service}:1")
    now = sandbox.task_definition(t, live["taskDefinition"])
    assert now["revision"] > first["revision"]
    for key in ("family", "networkMode", "cpu", "memory", "executionRoleArn", "taskRoleArn", "requiresCompatibilities"):
        assert now.get(key) == first.get(key), key
    before = {c["name"]: c for c in first["containerDefinitions"]}
    for c in now["containerDefinitions"]:
        expected = dict(before[c["name"]], image=image) if c["name"] == container else before[c["name"]]
        assert c == expected, c["name"]


def test_branch_prefixed_tags_land_in_their_cluster_and_region_and_leave_the_sidecar(world: Sandbox) -> None:
    world.load(example("branch-prefixed"))
    commit = sha8()
    digests = {repo: world.push(repo, f"staging-{commit}") for repo in REPOSITORIES}
    world.settle()
    for repo, digest in digests.items():
        name = repo.split("/")[1]
        staging, production = world.target(name, "staging"), world.target(name, "production")
        assert (staging.region, staging.cluster) == ("eu-west-1", "shop-staging")
        assert world.live_images(staging) == {name: world.image(repo, digest), "proxy": SIDECAR_IMAGE}
        only_container_changed(world, staging, name, world.image(repo, digest))
        assert world.live_images(production)[name] == world.image(repo, "initial"), "staging tags never reach production"
        (record,) = world.deployments(service=name, digest=digest)
        assert (record["environment"], record["region"], record["state"]) == ("staging", "eu-west-1", "SUCCEEDED")

    release = world.push("shop/api", f"prod-{commit}")
    world.settle()
    production = world.target("api", "production")
    assert (production.region, production.cluster) == ("us-east-1", "shop-production")
    assert world.live_images(production) == {"api": world.image("shop/api", release), "proxy": SIDECAR_IMAGE}
    (record,) = world.deployments(environment="production")
    assert (record["service"], record["region"], record["state"]) == ("api", "us-east-1", "SUCCEEDED")
    # A tag no rule matches changes nothing.
    before = len(world.deployments())
    world.push("shop/api", f"feature-{commit}")
    world.settle()
    assert len(world.deployments()) == before
    assert world.live_images(production)["api"] == world.image("shop/api", release)


def test_release_tags_go_to_each_environment_account_through_the_assumed_role(world: Sandbox) -> None:
    world.load(example("release-tags"))
    staging, production = world.target("shop-api", "staging"), world.target("shop-api", "production")
    assert (staging.account, production.account) == ("111111111111", "222222222222")

    candidate = world.push("shop/api", "v0.1.0-rc.1")
    world.settle()
    assert world.live_images(staging)["api"] == world.image("shop/api", candidate)
    assert world.live_images(production)["api"] == world.image("shop/api", "initial")
    assert world.service(staging)["taskDefinition"].split(":")[4] == "111111111111"

    final = world.push("shop/api", "v0.1.0")
    world.settle()
    assert world.live_images(production)["api"] == world.image("shop/api", final)
    assert world.live_images(staging)["api"] == world.image("shop/api", candidate), "a final version is not a candidate"
    records = {r["tag"]: r for r in world.deployments()}
    assert set(records) == {"v0.1.0-rc.1", "v0.1.0"}
    assert (records["v0.1.0-rc.1"]["account"], records["v0.1.0-rc.1"]["state"]) == ("111111111111", "SUCCEEDED")
    assert (records["v0.1.0"]["account"], records["v0.1.0"]["state"]) == ("222222222222", "SUCCEEDED")
    assert records["v0.1.0"]["role_arn"] == "arn:aws:iam::222222222222:role/ferry-target"


def test_build_numbers_feed_api_and_worker_and_production_takes_the_promoted_digest(world: Sandbox) -> None:
    world.load(example("build-numbers"))
    staging = [world.target(f"app-staging-{s}") for s in ("api", "worker")]
    production = [t for t in world.targets if t.environment == "production"]
    assert sorted({t.region for t in production}) == ["ap-southeast-1", "eu-west-1", "us-east-1"]
    assert len(production) == 6

    digest = world.push("shop/app", "v42")
    world.settle()
    for t in staging:
        assert world.live_images(t)[t.containers[0]] == world.image("shop/app", digest)
    assert {r["state"] for r in world.deployments(environment="staging")} == {"SUCCEEDED"}
    assert len(world.deployments(environment="staging")) == 2, "one push, two services"
    assert not world.deployments(environment="production"), "production is only reached by promotion"

    promoted = world.ferry("promote", "shop/app", "--from", "staging", "--to", "production")
    assert "prod-v42" in promoted.stdout
    world.settle()
    for t in production:
        assert world.live_images(t)[t.containers[0]] == world.image("shop/app", digest), t
    records = world.deployments(environment="production")
    assert sorted((r["region"], r["service"]) for r in records) == sorted((t.region, t.service) for t in production)
    assert {(r["digest"], r["tag"], r["state"]) for r in records} == {(digest, "prod-v42", "SUCCEEDED")}


def test_latest_is_pinned_by_digest_and_a_failing_migration_leaves_the_service_alone(world: Sandbox) -> None:
    world.load(example("moving-tag"))
    staging, production = world.target("store-staging"), world.target("store-production")

    digest = world.push("shop/store", "latest")
    world.settle()
    assert world.live_images(staging)["store"] == world.image("shop/store", digest), "deployed by digest, not :latest"
    (migration,) = world.tasks(staging)
    assert migration["command"] == ["bin/migrate", "up"]
    assert migration["task_definition"] == world.service(staging)["taskDefinition"], "the migration runs the new revision"

    before = world.service(production)
    broken = world.push("shop/store", "v1.2.3", migration_exit=1)
    world.settle()
    (record,) = world.deployments(environment="production")
    assert (record["digest"], record["state"]) == (broken, "FAILED")
    assert "migration" in record["reason"] and "1" in record["reason"]
    after = world.service(production)
    assert after["taskDefinition"] == before["taskDefinition"]
    assert [d["id"] for d in after["deployments"]] == [d["id"] for d in before["deployments"]], "no deployment started"
    assert world.live_images(production)["store"] == world.image("shop/store", "initial")
