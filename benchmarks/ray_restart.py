"""What losing an engine replica costs on Ray Serve: seconds from killing it until Ray reports the
deployment at full strength again (a new replica loaded and warmed up), on a local Ray instance.

    python benchmarks/ray_restart.py [--addon addons/fastspeech-en] [--replicas 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import ray
from ray import serve

from tts_neuron.server.ray_app import build

REPO = Path(__file__).resolve().parent.parent


def running_replicas() -> int:
    states = serve.status().applications["tts"].deployments["TtsEngine"].replica_states
    return sum(count for state, count in states.items() if str(getattr(state, "value", state)) == "RUNNING")


def engine_replicas() -> list[str]:
    named = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in named if a["namespace"] == "serve" and "TtsEngine" in a["name"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addon", default=str(REPO / "addons" / "fastspeech-en"))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ray_restart.json")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = time.monotonic()
        serve.run(build([args.addon], replicas=args.replicas, engine_cpus=0.5), name="tts")
        first_ready = time.monotonic() - started
        seconds = []
        for _ in range(args.repeats):
            ray.kill(ray.get_actor(engine_replicas()[0], namespace="serve"), no_restart=True)
            killed = time.monotonic()
            while running_replicas() >= args.replicas:  # until Serve has noticed the loss
                time.sleep(0.1)
            while running_replicas() < args.replicas:
                time.sleep(0.1)
            seconds.append(time.monotonic() - killed)
        record = {
            "addon": os.path.relpath(args.addon, REPO),
            "replicas": args.replicas,
            "first_ready_s": round(first_ready, 1),
            "restart_s": [round(s, 1) for s in seconds],
            "restart_median_s": round(statistics.median(seconds), 1),
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
