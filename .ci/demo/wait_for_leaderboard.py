"""Demo only: polls the hub until no submission is still being evaluated, then prints the board."""

import sys
import time

import requests

hub, task_id = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 900
while True:
    board = requests.get(f"{hub}/api/v1/tasks/{task_id}/leaderboard", timeout=10).json()
    scored = len(board["rows"])
    print(f"  {scored} model(s) on the leaderboard", flush=True)
    if scored >= 4:
        break
    if time.monotonic() > deadline:
        sys.exit("timed out waiting for the sites; see var/demo/logs/")
    time.sleep(5)
print()
print(f"{'rank':<5}{'vendor':<14}{'model':<28}{'format':<16}" + "".join(f"{m:<12}" for m in board["rows"][0]["metrics"]))
for row in board["rows"]:
    print(f"{row['rank']:<5}{row['vendor']:<14}{row['model_name']:<28}{row['artifact_format']:<16}"
          + "".join(f"{v:<12}" for v in row["metrics"].values()))
