"""A plan is a value: what a deploy, a rollback or a release will do, built once, shown, then executed.

Modules: :mod:`flows.plan.models` (the frozen types, JSON both ways; nothing else imported, so any
flow may import it), :mod:`flows.plan.build` (the builders: a loaded ``Config`` and AWS, read once
and never changed, through the flows' own checks), :mod:`flows.plan.render` (text and JSON).

How a flow executes a plan
--------------------------
A ``DeployPlan`` is an ordered tuple of ``Step`` (an ``action`` and its ``inputs``) plus what was
read while building it (``live``, ``rollback_to``, ``artifact``, ``shift``, ``checks``). The deploy
flows (``deploy-backend``, ``-worker``, ``-lambda``, ``-frontend``, ``-apprunner``, ``-ecs``) take it as
their optional ``plan`` parameter (a run without one, from the UI or a deployment, builds it first
with :func:`flows.plan.build.build_deploy_plan`) and run its steps, in its order, through the tasks
that run them (``update-code`` → ``update_function_code``, ``shift`` → ``shift_and_verify``/``Bake``,
``update-service`` + ``follow-operation`` → ``move_service`` …), with what the plan found instead of
checking it again: the resource, the bucket, the artifact (reused as found, or built without
looking again). Each step a run runs is reported (:func:`flows.common.ran`) and listed in its
ledger record's ``steps``: a test holds a run to the plan its dry run showed. The guarantees stay
where they are: the ``lock`` step takes the environment's lock; ``read-live`` reads what runs again
under it (another run may have moved it since the plan was built: the one AWS read made twice, on
purpose) and that is the rollback target; the "shifting" record precedes the shift;
``on-failure`` is the transaction's rollback hook and its verification, run only on a failure.
Alarm states are read again when a deploy starts (they change over time; a release plan accepts
what fires while it is built, and each of its deploys refuses what fires when it starts). The
account is asked of STS once per process and target. The dry run is an executor that only
displays: :func:`flows.plan.render.render_text` prints the steps the run walks; ``--json`` prints
the same object.

The release (:func:`flows.release.release`, optional ``plan``) builds its ``ReleasePlan`` once; each
``build_component`` gets the first environment's deploy with the build's artifact, and returns the
artifact it made; each ``deploy_component`` passes ``plan.deploy(component, environment)``, with that
artifact, to the child flow.

What is not wired yet
---------------------
1. ``flows.rollback.rollback`` takes no plan: ``opcd rollback`` builds a ``RollbackPlan`` (its
   dry run, its checks), then the flow checks and chooses again (``plan_*_deploy``,
   ``choose_version``/``choose_image``/``choose_revision``), as before.
2. ``plan.stages[i].approval`` and ``plan.on_failure`` are shown by the plan; ``Release.approve``
   and ``Release.deploy`` still read ``opcd.toml``'s approval, and act on a failure as before.
3. A child deploy flow still reads ``opcd.toml`` (a local file: the plan carries no config).
"""
