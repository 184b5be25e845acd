"""S3 through aioboto3 against the stack's real S3 server."""

import aioboto3

from riskengine.connections import s3_client_options


async def test_put_get_and_list(settings, unique):
    session = aioboto3.Session()
    async with session.client("s3", **s3_client_options(settings)) as s3:
        keys = [f"it-{unique}/part-{n}.bin" for n in range(3)]
        for n, key in enumerate(keys):
            await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=bytes([n]) * 1024)
        got = await s3.get_object(Bucket=settings.s3_bucket, Key=keys[1])
        async with got["Body"] as body:
            assert await body.read() == b"\x01" * 1024
        listed = await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"it-{unique}/")
        assert sorted(item["Key"] for item in listed["Contents"]) == keys
        assert all(item["Size"] == 1024 for item in listed["Contents"])
