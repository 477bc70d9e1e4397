output "function_names" {
  description = "Lambda function per component: opcd.toml environments.<env>.functions."
  value       = { for component, fn in aws_lambda_function.app : component => fn.function_name }
}

output "live_alias_arns" {
  description = "The `live` alias of each function (what the API and the worker's rules invoke)."
  value       = { for component, alias in aws_lambda_alias.live : component => alias.arn }
}

output "api_endpoint" {
  description = "The HTTP API's default endpoint (its $default stage)."
  value       = aws_apigatewayv2_api.api.api_endpoint
}

output "frontend_service_arn" {
  description = "The App Runner service: opcd.toml environments.<env>.services.frontend may name it by ARN."
  value       = aws_apprunner_service.frontend.arn
}

output "frontend_service_url" {
  description = "The App Runner service's default URL."
  value       = "https://${aws_apprunner_service.frontend.service_url}"
}

output "artifact_bucket" {
  description = "opcd.toml project.artifact_bucket (created by the state with manage_shared)."
  value       = var.manage_shared ? aws_s3_bucket.artifacts[0].id : local.artifact_bucket
}

output "frontend_repository_url" {
  description = "ECR repository of the frontend's images (created by the state with manage_shared)."
  value       = local.frontend_repository_url
}

output "database_secret_arn" {
  description = "opcd.toml environments.<env>.database_secret (its value is set outside Terraform)."
  value       = aws_secretsmanager_secret.database.arn
}

output "event_rule_names" {
  description = "The worker's EventBridge rules, as opcd names them."
  value       = [for rule in aws_cloudwatch_event_rule.worker : rule.name]
}

output "alarm_names" {
  description = "CloudWatch alarms; opcd.toml environments.<env>.alarms lists those that guard deploys."
  value = concat(
    [aws_cloudwatch_metric_alarm.api_errors.alarm_name, aws_cloudwatch_metric_alarm.api_5xx.alarm_name],
    aws_cloudwatch_metric_alarm.db_cpu[*].alarm_name,
  )
}

output "frontend_ecs" {
  description = "The ECS frontend (ecs_frontend): opcd.toml environments.<env>.ecs.frontend and its URL; null without it."
  value = var.ecs_frontend ? {
    cluster = aws_ecs_cluster.main["frontend"].name
    service = aws_ecs_service.frontend["frontend"].name
    url     = "http://${aws_lb.frontend["frontend"].dns_name}"
  } : null
}
