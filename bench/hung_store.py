"""How long a pull waits on a hung store before it reads the next location (issue 15).

The preferred S3 location is moto behind a paused ``DelayProxy`` (accepts, forwards nothing),
the other is moto itself. With the default deadlines, a HEAD's check of the hung store runs
under the pull's per-location budget, fails, and the healthy store answers; the figure is the
whole of that, measured ``--runs`` times. Run: ``PYTHONPATH=. .venv/bin/python -m bench.hung_store``
(needs ``DATABASE_URL`` for Django's settings and the moto servers of scripts/test-servers.sh).
"""

import argparse
import contextlib
import io
import os
import statistics
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import django

if TYPE_CHECKING:
    from storage_engines.base import StorageEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quay_geo.settings")
    django.setup()
    from registry.services.serving import attempt_seconds, store_budget
    from storage_engines.errors import StorageError
    from storage_engines.registry import engine_create
    from tests import servers
    from tests.delayproxy import DelayProxy

    def engine(endpoint: str, bucket: str) -> "StorageEngine":
        options = {
            "s3_bucket": bucket,
            "endpoint_url": endpoint,
            "s3_access_key": servers.S3_ACCESS_KEY,
            "s3_secret_key": servers.S3_SECRET_KEY,
            "addressing_style": "path",
        }
        return engine_create(kind="s3", location_id=endpoint, options=options)

    bucket_a, bucket_b = servers.new_s3_bucket(servers.S3_A), servers.new_s3_bucket(servers.S3_B)
    with DelayProxy(int(urlsplit(servers.S3_A).port or 0), handshake=False) as proxy:
        hung = engine(f"http://{proxy.url_host}", bucket_a)
        healthy = engine(servers.S3_B, bucket_b)
        healthy.write_small("k", io.BytesIO(b"x"), 1)
        proxy.pause()
        figures = []
        for _ in range(args.runs):
            started = time.monotonic()
            with contextlib.suppress(StorageError):
                store_budget.call(
                    lambda: hung.stat("k"), seconds=attempt_seconds(), location_id="hung"
                )
            assert healthy.stat("k") is not None
            figures.append(time.monotonic() - started)
    print(
        f"hung store to next location, {args.runs} runs: median {statistics.median(figures):.2f} s,"
        f" max {max(figures):.2f} s (budget {attempt_seconds():g} s)"
    )


if __name__ == "__main__":
    main()
