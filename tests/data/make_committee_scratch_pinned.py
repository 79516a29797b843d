"""Writes tests/data/committee_scratch_pinned.json from the code of commit 5bcd967 (main, before the
linear parametrisation): every entry of Q, R, a of a few scratch runs (chain and full-d SGD)."""
import json, sys
import numpy as np
import popgrad
from popgrad.models.committee.spec import committee_model

CASES = [
    dict(model=dict(teacher_activation="erf(z/sqrt(2))", width=3, teacher_width=3), d=60, delta=1.0),
    dict(model=dict(teacher_activation="erf(z/sqrt(2))", student_activation="relu", width=3, teacher_width=2, noise=0.3, train_second_layer=True, second_layer_ratio=0.5, weight_decay=0.1, init={"kind": "zero"}), d=40, delta=1.0),
    dict(model=dict(teacher_activation="relu", student_activation="tanh", width=2, T=[[1.0, 0.6], [0.6, 1.0]], constraint="sphere", convention="popgrad"), d=30, delta=0.5),
    dict(model=dict(teacher_activation="erf(z/sqrt(2))", width=3, T=[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], constraint="stiefel", init={"kind": "random", "scale": 1.0}), d=30, delta=1.0),
]
out = []
for case in CASES:
    model = committee_model(**case["model"])
    for method in ("chain", "full"):
        run = popgrad.simulate(model, d=case["d"], delta=case["delta"], checkpoints=[0, 1, 7, 50], trajectories=3, seed=17, method=method)
        out.append({"model": model.to_dict(), "d": case["d"], "delta": case["delta"], "method": method, "checkpoints": [0, 1, 7, 50], "trajectories": 3, "seed": 17,
                    **{name: np.asarray(run.observables[name]).tolist() for name in ("Q", "R", "a")}})
        print(method, case["model"], flush=True)
json.dump(out, open(sys.argv[1], "w"))
