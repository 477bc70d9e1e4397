"""``opcd setup``'s example automation, against the Prefect test server (tests/e2e sees it fire)."""

from __future__ import annotations

from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import EventTrigger

from deployments.setup import AUTOMATION, ensure_automation
from tasks.events import DEPLOY_ROLLED_BACK


def test_the_automation_waits_for_drift_check_then_is_created_once_and_put_back_when_changed(
    prefect_server: None,
) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(AUTOMATION):  # another test's, on this session's server
            client.delete_automation(old.id)
        assert (ensure_automation(client, dry_run=False).action, client.read_automations_by_name(AUTOMATION)) == (
            "missing", [],
        )  # fmt: skip
        flow_id = client.create_flow_from_name("drift-check")
        drift_check = client.create_deployment(flow_id, "drift-check", entrypoint="flows/drift.py:drift_check")

        assert ensure_automation(client, dry_run=True).action == "created"
        assert client.read_automations_by_name(AUTOMATION) == []
        changes = [ensure_automation(client, dry_run=False) for _ in range(2)]
        assert [(c.kind, c.name, c.action) for c in changes] == [
            ("automation", AUTOMATION, "created"), ("automation", AUTOMATION, "unchanged"),
        ]  # fmt: skip
        (saved,) = client.read_automations_by_name(AUTOMATION)
        assert saved.enabled
        assert isinstance(saved.trigger, EventTrigger) and saved.trigger.expect == {DEPLOY_ROLLED_BACK}
        assert saved.trigger.match.root["opcd.environment"] == "prod"
        (action,) = saved.actions
        assert isinstance(action, RunDeployment) and action.deployment_id == drift_check

        # someone disabled it in the UI: setup puts it back
        client.pause_automation(saved.id)
        assert ensure_automation(client, dry_run=False).action == "updated"
        (saved,) = client.read_automations_by_name(AUTOMATION)
        assert saved.enabled
