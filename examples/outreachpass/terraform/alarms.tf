# CloudWatch alarms. opcd.toml's environments.<env>.alarms names the ones that guard a deploy
# (preflight, bake, post-deploy checks): `outreachpass-api-<env>-errors`. opcd polls their state
# itself; alarm_topic_arn only adds notifications.

# Lambda errors above 5% of invocations, in each 5-minute period of 15 minutes (3 of 3).
resource "aws_cloudwatch_metric_alarm" "api_errors" {
  alarm_name          = "${local.functions.backend.name}-errors"
  alarm_description   = "${local.functions.backend.name}: more than 5% of invocations failed for 15 minutes. Guards opcd deploys."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 5
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "error_rate"
    expression  = "IF(invocations > 0, 100 * FILL(errors, 0) / invocations, 0)"
    label       = "Errors (% of invocations)"
    return_data = true
  }

  metric_query {
    id = "errors"

    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Errors"
      period      = 300
      stat        = "Sum"
      dimensions = {
        FunctionName = aws_lambda_function.app["backend"].function_name
      }
    }
  }

  metric_query {
    id = "invocations"

    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Invocations"
      period      = 300
      stat        = "Sum"
      dimensions = {
        FunctionName = aws_lambda_function.app["backend"].function_name
      }
    }
  }
}

# HTTP API 5xx answers above 1% of requests over 5 minutes.
resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${local.functions.backend.name}-5xx"
  alarm_description   = "${aws_apigatewayv2_api.api.name}: more than 1% of requests answered 5xx over 5 minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 1
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "server_error_rate"
    expression  = "IF(requests > 0, 100 * FILL(server_errors, 0) / requests, 0)"
    label       = "5xx (% of requests)"
    return_data = true
  }

  metric_query {
    id = "server_errors"

    metric {
      namespace   = "AWS/ApiGateway"
      metric_name = "5xx"
      period      = 300
      stat        = "Sum"
      dimensions = {
        ApiId = aws_apigatewayv2_api.api.id
        Stage = aws_apigatewayv2_stage.default.name
      }
    }
  }

  metric_query {
    id = "requests"

    metric {
      namespace   = "AWS/ApiGateway"
      metric_name = "Count"
      period      = 300
      stat        = "Sum"
      dimensions = {
        ApiId = aws_apigatewayv2_api.api.id
        Stage = aws_apigatewayv2_stage.default.name
      }
    }
  }
}

# Database CPU above 80% for 10 minutes (2 periods of 5). The database is not managed here.
resource "aws_cloudwatch_metric_alarm" "db_cpu" {
  count = var.db_instance_identifier == null ? 0 : 1

  alarm_name          = "outreachpass-db-${var.environment}-cpu"
  alarm_description   = "${var.db_instance_identifier}: CPU above 80% for 10 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 80
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  dimensions = {
    DBInstanceIdentifier = var.db_instance_identifier
  }
}
