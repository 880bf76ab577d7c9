# Reads a tuna run's MLflow file store with mlflow's own client (issue 15: "test that the written files are read
# by the tracker's own reader"). Run where mlflow is installed (pip install mlflow), after a tuna run with
# --report_to mlflow:
#   python3 tools/device/check_mlflow.py <mlruns folder> <the run's output_dir (for metrics.jsonl)>
# Compares the run's params, tags and every metric history with what tuna logged; exits non-zero on a mismatch.
import json
import math
import os
import sys

try:
    from mlflow.tracking import MlflowClient
except ImportError as e:  # the check cannot run: say so rather than pass
    print(f"mlflow is not installed here ({e}); pip install mlflow, then run again")
    sys.exit(2)

root, out = sys.argv[1], sys.argv[2]
client = MlflowClient(tracking_uri="file://" + os.path.abspath(root))
experiments = client.search_experiments()
runs = [r for e in experiments for r in client.search_runs([e.experiment_id])]
print(f"experiments: {[e.name for e in experiments]}, runs: {len(runs)}")
assert len(runs) == 1, f"expected one run, found {len(runs)}"
run = runs[0]
print(f"run {run.info.run_id} name={run.info.run_name} status={run.info.status}")
assert run.info.status == "FINISHED", run.info.status
assert run.data.tags.get("mlflow.runName") == run.info.run_name
# The configuration as params (as transformers' MLflowCallback logs TrainingArguments): the run's own values.
params = run.data.params
print(f"params: {len(params)}")
assert params.get("lora_r") == "4" and params.get("max_steps") == "4" and params.get("run_name") == "mlflow-check", {k: params.get(k) for k in ("lora_r", "max_steps", "run_name")}
logged = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if line.strip()]
failures = 0
for key in ("loss", "learning_rate", "grad_norm", "eval_loss"):
    expected = [(e["step"], e[key]) for e in logged if key in e]
    if not expected:
        continue
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
    ok = len(history) == len(expected) and all(s1 == s2 and math.isclose(v1, v2, rel_tol=1e-6, abs_tol=1e-12) for (s1, v1), (s2, v2) in zip(history, expected))
    print(f"metric {key}: {len(history)} points {'match' if ok else 'DIFFER'}")
    failures += 0 if ok else 1
sys.exit(1 if failures else 0)
