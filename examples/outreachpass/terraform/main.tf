# Names that opcd.toml refers to: change them in both places or not at all.
locals {
  project = "outreachpass"

  # [project] artifact_bucket, and [components.frontend] repository: shared by dev and prod.
  artifact_bucket     = "outreachpass-artifacts"
  frontend_repository = "outreachpass-frontend"

  # [environments.<env>] functions, services, database_secret.
  functions = {
    backend = {
      name    = "outreachpass-api-${var.environment}"
      handler = "app.handler"
      timeout = 15 # seconds; API Gateway gives up after 30
      memory  = 256
    }
    worker = {
      name    = "outreachpass-worker-${var.environment}"
      handler = "worker.handler"
      timeout = 120
      memory  = 256
    }
  }
  web_service_name     = "outreachpass-web-${var.environment}"
  database_secret_name = "outreachpass/${var.environment}/database" # a name, not a value  # pragma: allowlist secret

  # The alias opcd reads and moves (tasks/lambda_functions.py ALIAS).
  live_alias = "live"

  # Components with a prefix in the artifact bucket (opcd.toml [components.*]).
  artifact_components = ["backend", "worker", "frontend"]

  alarm_actions = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]

  # The repository is created by the state with manage_shared; the other state derives its URL.
  frontend_repository_url = (
    var.manage_shared
    ? aws_ecr_repository.frontend[0].repository_url
    : "${data.aws_caller_identity.current.account_id}.dkr.ecr.${var.region}.amazonaws.com/${local.frontend_repository}"
  )
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}
