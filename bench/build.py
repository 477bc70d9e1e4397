"""Build benchmark: cold build, warm build (dependencies cached) and reused artifact, one run.

    python bench/build.py [--repeat N]

Cold: empty dependency cache (pip's own download cache may be warm; the number says so).
Warm: a new version of unchanged dependencies: only the zip is made.
Reused: the version is already in S3 with the same source hash: hash the source, read the
metadata, and neither build nor upload (what a second deploy of a version does).
Runs against an in-process sandbox; prints medians and their ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opcd.aws import AwsTarget  # noqa: E402
from opcd.config import load_config  # noqa: E402
from sandbox.seed import seed  # noqa: E402
from sandbox.server import SandboxServer  # noqa: E402
from tasks.build import build_zip, lambda_source_hash  # noqa: E402
from tasks.s3_artifacts import artifact_key, read_artifact_metadata  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (default 3)")
    args = parser.parse_args()
    config = load_config(ROOT / "opcd.toml")
    comp, source = config.component("backend"), config.source_dir("backend")
    work = Path(tempfile.mkdtemp(prefix="opcd-bench-"))
    server = SandboxServer(work / "sandbox", config.project.region, 0).start()
    try:
        seed(config, server.url, work / "sandbox")
        target = AwsTarget("sandbox", config.project.region, server.url, credentials=("testing", "testing"))
        s3 = target.client("s3")
        bucket = config.project.artifact_bucket
        cold, warm, reused = [], [], []
        for run in range(args.repeat):
            cache = work / f"cache-{run}"
            start = time.perf_counter()
            package = build_zip("backend", f"1.0.{run}", comp, source, work / f"cold-{run}", cache)
            s3.put_object(Bucket=bucket, Key=artifact_key("backend", package.version), Body=package.path.read_bytes())
            cold.append(time.perf_counter() - start)

            start = time.perf_counter()
            package = build_zip("backend", f"2.0.{run}", comp, source, work / f"warm-{run}", cache)
            s3.put_object(Bucket=bucket, Key=artifact_key("backend", package.version), Body=package.path.read_bytes())
            meta = {"source_hash": package.source_hash, "sha256": package.sha256_hex}
            s3.put_object(
                Bucket=bucket, Key=artifact_key("backend", package.version, "metadata.json"), Body=json.dumps(meta)
            )
            warm.append(time.perf_counter() - start)

            start = time.perf_counter()
            stored = read_artifact_metadata.fn(target, bucket, "backend", package.version)
            assert stored is not None and stored["source_hash"] == lambda_source_hash(comp, source)
            reused.append(time.perf_counter() - start)
        c, w, r = (statistics.median(x) for x in (cold, warm, reused))
        print(f"backend package: {package.size / 1e6:.1f} MB, {args.repeat} runs each (medians)")
        print(
            f"  cold build + upload   {c * 1000:8.0f} ms   (empty dependency cache; pip's download cache may be warm)"
        )
        print(f"  warm build + upload   {w * 1000:8.0f} ms   (dependencies cached, new version)")
        print(f"  reused (no rebuild)   {r * 1000:8.1f} ms   (source hash + S3 metadata read)")
        print(f"  ratio cold/reused     {c / r:8.0f}x")
        print(f"  ratio warm/reused     {w / r:8.0f}x")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
