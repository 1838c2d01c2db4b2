"""Demo only: polls the hub until every vendor submission is scored or failed, then prints the board."""

import json
import sys
import time

import requests

hub, seed_path = sys.argv[1], sys.argv[2]
seed = json.loads(open(seed_path).read())
task_id = seed["task_id"]
FINAL = {"scored", "failed", "rejected"}
deadline = time.monotonic() + 900
while True:
    submissions = []
    for vendor in seed["vendors"]:
        headers = {"Authorization": f"Bearer {vendor['token']}"}
        submissions += requests.get(f"{hub}/api/v1/submissions", headers=headers, timeout=10).json()["results"]
    done = [s for s in submissions if s["status"] in FINAL]
    print(f"  {len(done)} of {len(submissions)} submissions released (pending until the task's release time)", flush=True)
    if submissions and len(done) == len(submissions):
        break
    if time.monotonic() > deadline:
        sys.exit("timed out waiting for the sites; see var/demo/logs/")
    time.sleep(5)
for failed in (s for s in submissions if s["status"] != "scored"):
    # Vendors see "failed" with no reason; the owner's reasons are on the task's jobs page.
    print(f"  {failed['name']}: {failed['status']} {failed.get('status_reason') or ''}")
board = requests.get(f"{hub}/api/v1/tasks/{task_id}/leaderboard", timeout=10).json()
names = list(board["results"][0]["metrics"]) if board["results"] else []
print()
print(f"{'rank':<5}{'vendor':<14}{'model':<28}{'format':<16}" + "".join(f"{m:<12}" for m in names))
for row in board["results"]:
    print(f"{row['rank']:<5}{row['vendor']:<14}{row['model_name']:<28}{row['artifact_format']:<16}"
          + "".join(f"{row['metrics'][m]:<12}" for m in names))
