"""ARNs built from what labkit knows (region, account, name), as AWS writes them: no call needed."""

from __future__ import annotations


def partition(region: str) -> str:
    """The ARN partition of a region: ``aws``, ``aws-cn`` or ``aws-us-gov``."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def queue_arn(region: str, account: str, name: str) -> str:
    """The ARN of queue ``name``."""
    return f"arn:{partition(region)}:sqs:{region}:{account}:{name}"


def bucket_arn(region: str, bucket: str, key_pattern: str | None = None) -> str:
    """The ARN of the bucket, or of its keys matching ``key_pattern``."""
    base = f"arn:{partition(region)}:s3:::{bucket}"
    return base if key_pattern is None else f"{base}/{key_pattern}"
