"""The KFP front end of odpipe: compile, run locally, submit and schedule the training pipeline.

It sits on top of the layers (launch -> pipelines -> components -> odpipe), so nothing below
imports it; `odpipe/cli.py` maps the `compile`, `run`, `submit` and `schedule` commands here.
One module per job: `spec` (the pipeline's own parameters and task order, compile), `local`
(the kfp local runner), `vertex`, `kubeflow` (the two cloud targets) and `cloud` (their CLI).
"""
