"""S3 credentials minted per user through STS, limited by a session policy to one bucket
and prefix (the connection's ``bucket`` and ``prefix``, where ``{user}`` is the hub
user): whatever the role may do, these credentials may only read (and, with ``write``,
write) under that prefix."""

from __future__ import annotations

import json
import re


def session_policy(bucket: str, prefix: str, write: bool = False) -> dict:
    """The policy that limits a user's credentials to ``s3://bucket/prefix*``."""
    actions = ["s3:GetObject"] + (["s3:PutObject", "s3:DeleteObject"] if write else [])
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": actions,
             "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"]},
            {"Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{bucket}"],
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
        ],
    }


def user_prefix(pattern: str, user: str) -> str:
    return pattern.format(user=re.sub(r"[^A-Za-z0-9_.-]", "_", user))


def mint(user: str, settings: dict, ttl: int, keys: dict | None = None) -> dict:
    """STS ``AssumeRole`` for ``user`` with the session policy; the credential's fields."""
    import boto3

    prefix = user_prefix(settings.get("prefix", ""), user)
    policy = session_policy(settings["bucket"], prefix, bool(settings.get("write")))
    client = boto3.client(
        "sts", endpoint_url=settings.get("sts_endpoint_url") or None,
        region_name=settings.get("region") or "us-east-1",
        aws_access_key_id=(keys or {}).get("access_key_id"),
        aws_secret_access_key=(keys or {}).get("secret_access_key"))
    answer = client.assume_role(
        RoleArn=settings["role_arn"], RoleSessionName=f"redspot-{user}"[:64],
        Policy=json.dumps(policy), DurationSeconds=max(900, min(int(ttl), 43200)))
    creds = answer["Credentials"]
    return {
        "s3": {"access_key_id": creds["AccessKeyId"],
               "secret_access_key": creds["SecretAccessKey"],
               "session_token": creds["SessionToken"],
               "region": settings.get("region") or "us-east-1",
               "endpoint_url": settings.get("endpoint_url") or "",
               "bucket": settings["bucket"], "prefix": prefix},
        "expires": creds["Expiration"].timestamp(),
    }
