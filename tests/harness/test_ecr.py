"""The harness's ECR: an image's config is read as a client reads it on AWS. Blobs are uploaded
with InitiateLayerUpload, UploadLayerPart and CompleteLayerUpload, BatchGetImage returns the
manifest PutImage stored, and GetDownloadUrlForLayer gives a URL whose GET returns the blob's
bytes; a digest never uploaded is LayersNotFoundException."""

from __future__ import annotations

import hashlib
import json
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ferry_moto import control

REPOSITORY = "shop/api"
OCI = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json")
DOCKER = ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.container.image.v1+json")
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture
def ecr(endpoint):
    assert control(endpoint, "POST", "/_ferry/reset")[0] == 200
    ecr = boto3.client("ecr", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}))
    ecr.create_repository(repositoryName=REPOSITORY)
    return ecr


def upload(ecr, blob: bytes) -> str:
    """Uploads `blob` as a client pushing an image does; returns its digest."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    upload_id = ecr.initiate_layer_upload(repositoryName=REPOSITORY)["uploadId"]
    ecr.upload_layer_part(repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=0,
                          partLastByte=len(blob) - 1, layerPartBlob=blob)
    assert ecr.complete_layer_upload(repositoryName=REPOSITORY, uploadId=upload_id,
                                     layerDigests=[digest])["layerDigest"] == digest
    return digest


def image_config(labels: dict) -> bytes:
    """An image config (OCI image spec config.md; Docker's image JSON has the same shape)."""
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                       "rootfs": {"type": "layers", "diff_ids": []}}).encode()


def push(ecr, media_types: tuple[str, str], config: bytes, tag: str = "v1") -> str:
    """Uploads `config` and a layer, puts the manifest naming them; returns the manifest."""
    manifest_type, config_type = media_types
    layer = b"\x1f\x8b not really a tarball"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": len(config), "digest": upload(ecr, config)},
        "layers": [{"mediaType": LAYER, "size": len(layer), "digest": upload(ecr, layer)}]})
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest, imageTag=tag)
    return manifest


@pytest.mark.parametrize("media_types", [OCI, DOCKER], ids=["oci", "docker-v2"])
def test_an_images_config_is_read_through_batch_get_image_and_its_download_url(ecr, media_types) -> None:
    config = image_config({"org.opencontainers.image.revision": "4f2c1e9",
                           "org.opencontainers.image.created": "2026-12-05T01:00:00Z"})
    manifest = push(ecr, media_types, config)

    got = ecr.batch_get_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": "v1"}],
                              acceptedMediaTypes=[OCI[0], DOCKER[0]])
    [image] = got["images"]
    assert (image["imageManifest"], image["imageManifestMediaType"]) == (manifest, media_types[0])
    digest = json.loads(image["imageManifest"])["config"]["digest"]

    answer = ecr.get_download_url_for_layer(repositoryName=REPOSITORY, layerDigest=digest)
    assert answer["layerDigest"] == digest
    with urllib.request.urlopen(answer["downloadUrl"]) as response:  # no credentials, as S3's presigned URL
        blob = response.read()
    assert blob == config
    assert json.loads(blob)["config"]["Labels"]["org.opencontainers.image.revision"] == "4f2c1e9"


def test_a_blob_never_uploaded_unreferenced_or_in_no_repository_has_no_download_url(ecr) -> None:
    manifest = json.loads(push(ecr, OCI, image_config({})))
    never_uploaded = "sha256:" + "c" * 64
    unreferenced = upload(ecr, image_config({"org.opencontainers.image.revision": "not pushed"}))

    def refused(repository: str, digest: str) -> str:
        with pytest.raises(ClientError) as error:
            ecr.get_download_url_for_layer(repositoryName=repository, layerDigest=digest)
        return error.value.response["Error"]["Code"]

    assert refused(REPOSITORY, never_uploaded) == "LayersNotFoundException"
    assert refused(REPOSITORY, unreferenced) == "LayerInaccessibleException"
    assert refused("shop/nothing", manifest["config"]["digest"]) == "RepositoryNotFoundException"


def test_an_upload_whose_bytes_do_not_have_the_digest_given_is_refused(ecr) -> None:
    upload_id = ecr.initiate_layer_upload(repositoryName=REPOSITORY)["uploadId"]
    ecr.upload_layer_part(repositoryName=REPOSITORY, uploadId=upload_id, partFirstByte=0, partLastByte=2,
                          layerPartBlob=b"abc")
    with pytest.raises(ClientError) as error:
        ecr.complete_layer_upload(repositoryName=REPOSITORY, uploadId=upload_id, layerDigests=["sha256:" + "0" * 64])
    assert error.value.response["Error"]["Code"] == "InvalidLayerException"
