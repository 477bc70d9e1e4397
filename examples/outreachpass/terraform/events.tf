# The worker's EventBridge rules (opcd.toml: components.worker.rules).
#
# opcd also syncs these on every worker deploy (tasks/eventbridge.py): it names a rule
# `{project}-{environment}-{rule}`, gives it one target `opcd-live` on the worker's `live` alias
# with the input as `json.dumps(input, sort_keys=True)`, and lets events.amazonaws.com invoke
# `live` under statement `opcd-{rule name}`. Every value below is the one opcd writes, so neither
# side ever rewrites the other (no ignore_changes needed). Keep them in step with opcd.toml:
# a rule dropped there is deleted by the next worker deploy (it carries opcd's tags), so drop it
# here too.
locals {
  worker_rules = {
    "nightly-digest" = {
      schedule = "cron(0 3 * * ? *)"
      # Exactly as Python's json.dumps(..., sort_keys=True) writes it (opcd compares the strings).
      input = "{\"since_hours\": 24}"
    }
  }
}

resource "aws_cloudwatch_event_rule" "worker" {
  for_each = local.worker_rules

  name                = "${local.project}-${var.environment}-${each.key}"
  description         = "opcd: worker in ${var.environment}"
  schedule_expression = each.value.schedule
  state               = "ENABLED"

  tags = {
    "opcd:project"     = local.project
    "opcd:environment" = var.environment
    "opcd:component"   = "worker"
  }
}

resource "aws_cloudwatch_event_target" "worker" {
  for_each = local.worker_rules

  rule      = aws_cloudwatch_event_rule.worker[each.key].name
  target_id = "opcd-live"
  arn       = aws_lambda_alias.live["worker"].arn
  input     = each.value.input
}

resource "aws_lambda_permission" "worker_events" {
  for_each = local.worker_rules

  statement_id  = substr("opcd-${aws_cloudwatch_event_rule.worker[each.key].name}", 0, 100)
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.app["worker"].function_name
  qualifier     = aws_lambda_alias.live["worker"].name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.worker[each.key].arn
}
