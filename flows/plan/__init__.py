"""A plan is a value: what a deploy, a rollback or a release will do, built once, shown, then executed.

Modules: :mod:`flows.plan.models` (the frozen types, JSON both ways; nothing else imported, so any
flow may import it), :mod:`flows.plan.build` (the builders: a loaded ``Config`` and AWS, read once
and never changed, through the flows' own checks), :mod:`flows.plan.render` (text and JSON).

How a flow will execute a plan
------------------------------
A ``DeployPlan`` is an ordered tuple of ``Step`` (an ``action`` and its ``inputs``) plus what was
read while building it (``live``, ``rollback_to``, ``artifact``, ``shift``, ``checks``). The executor
walks ``plan.steps`` and runs, for each ``action``, the task that runs it today (``build`` →
``ensure_artifact``/``build_and_push``, ``update-code`` → ``update_function_code``, ``shift`` →
``shift_and_verify``/``Bake``, ``update-service`` + ``follow-operation`` → ``move_service`` …), with
the step's inputs instead of re-deriving them from ``opcd.toml``. The guarantees stay where they
are: the ``lock`` step takes the environment's lock; ``read-live`` reads what runs again under it
(another run may have moved it since the plan was built: the one AWS read made twice, on purpose)
and a live state different from ``plan.live`` is logged and becomes the rollback target; the
"shifting" record precedes the shift; ``on-failure`` is the transaction's rollback hook and its
verification, not a step run in sequence. Alarm states are read again when a deploy starts (they
change over time; a release plan accepts what fires while it is built, as its preflight did).
The dry run is an executor that only displays: :func:`flows.plan.render.render_text` prints the
steps the real executor would walk, so the two cannot drift; ``--json`` prints the same object.

Wiring the next step must make
------------------------------
1. ``flows.lambda_deploy.deploy_lambda(plan: DeployPlan, git_sha, notify)`` and
   ``flows.frontend_deploy.deploy_apprunner(plan: DeployPlan, git_sha, notify)`` walk ``plan.steps``
   (an executor per ``action``); the flows ``deploy-backend``/``deploy-worker``/``deploy-lambda``/
   ``deploy-frontend``/``deploy-apprunner`` take ``plan: DeployPlan`` (a JSON parameter) instead of
   ``component``/``environment``/``version``/``config_path``/``accept_alarms``; a plan-less call
   (a deployment run from the UI) builds it first with :func:`flows.plan.build.build_deploy_plan`.
   The target comes back from ``plan.target`` (``opcd.aws.resolve_target`` with its region and role).
2. ``flows.rollback.rollback(plan: RollbackPlan)``: ``rollback_apprunner`` and the Lambda body walk
   ``plan.steps``; ``choose_version``/``choose_image`` run again under the lock only to confirm
   ``plan.to`` (the ledger may have moved).
3. ``flows.release.release(plan: ReleasePlan)``: ``build_component`` takes ``plan.builds[i]``;
   ``deploy_component`` passes ``plan.deploy(component, environment)`` to the child flow; the
   ``preflight`` function and the per-task ``load_config`` go; ``plan.stages[i].approval`` drives
   ``Release.approve``; ``plan.on_failure == "rollback-all"`` rolls back, verified, the stage's
   other deployed components (each one's ``rollback_to``). ``choose_components``,
   ``ordered_environments`` and ``check_request`` move into :mod:`flows.plan.build` (it imports
   them from ``flows.release`` today; ``release`` importing the builder then closes no cycle).
   ``on_failure`` comes from ``opcd.toml``'s ``release.on_failure`` once the config has it.
4. The CLI (``cli/``): ``opcd deploy`` builds ``build_deploy_plan(config, …)`` once (it replaces
   ``_preflight``), prints it for ``--dry-run`` (``render_text``; ``--json``: ``render_json``) and
   otherwise runs the flow with that plan; ``_dry_run_deploy``, ``_dry_run_apprunner``,
   ``_dry_run_release`` and ``_rollback_target`` go; ``opcd rollback`` and ``opcd release`` likewise
   with ``build_rollback_plan`` / ``build_release_plan``. A test compares the ``--dry-run --json``
   plan with the steps the run then executes.
5. ``plan_lambda_deploy``/``plan_apprunner_deploy`` (config path in, re-read each time) stay only
   for callers not yet given a plan; ``check_lambda_deploy``/``check_apprunner_deploy`` with
   ``check_environment`` are what the builders call.
6. ECS components (``kind = "ecs"``): ``Kind`` already names them; once ``EcsComponent`` exists, its
   builder adds its actions to ``Action`` (a new task definition revision, ``UpdateService``) and
   reuses ``follow-operation`` for ECS's service deployment; ``build_deploy_plan`` refuses it today.
"""
