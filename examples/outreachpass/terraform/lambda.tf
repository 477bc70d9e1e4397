# The backend (API) and worker functions, each with its `live` alias.
#
# Terraform creates each function with a placeholder package (bootstrap/) and publishes it as
# version 1, where `live` starts. From then on opcd owns the code and the alias: a deploy updates
# $LATEST from the artifact bucket, publishes a version and moves `live` (all at once, canary or
# linear). Hence the ignore_changes below: without them every plan would put the placeholder back
# and point `live` at whatever version Terraform last published.
#
# A configuration change here (memory, timeout, environment) publishes a new version that `live`
# does not point at: it reaches traffic with the next opcd deploy, which publishes $LATEST with it.

data "archive_file" "bootstrap" {
  type             = "zip"
  source_dir       = "${path.module}/bootstrap"
  output_path      = "${path.module}/.bootstrap/bootstrap.zip"
  output_file_mode = "0644"
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "lambda" {
  for_each = local.functions

  name               = "${each.value.name}-lambda"
  description        = "Execution role of ${each.value.name}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy_attachment" "lambda_basic" {
  for_each = local.functions

  role       = aws_iam_role.lambda[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

# Both functions use the database: the API serves passes, the worker reads them for its digest.
data "aws_iam_policy_document" "read_database_secret" {
  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_secretsmanager_secret.database.arn]
  }
}

resource "aws_iam_role_policy" "read_database_secret" {
  for_each = local.functions

  name   = "read-database-secret"
  role   = aws_iam_role.lambda[each.key].id
  policy = data.aws_iam_policy_document.read_database_secret.json
}

# Created before the functions, so that Lambda never creates them without a retention.
resource "aws_cloudwatch_log_group" "lambda" {
  for_each = local.functions

  name              = "/aws/lambda/${each.value.name}"
  retention_in_days = 30
}

resource "aws_lambda_function" "app" {
  for_each = local.functions

  function_name = each.value.name
  description   = "OutreachPass ${each.key} (${var.environment}): code deployed by opcd"
  role          = aws_iam_role.lambda[each.key].arn
  runtime       = "python3.12"
  handler       = each.value.handler
  architectures = ["x86_64"]
  timeout       = each.value.timeout
  memory_size   = each.value.memory
  publish       = true

  filename         = data.archive_file.bootstrap.output_path
  source_code_hash = data.archive_file.bootstrap.output_base64sha256

  environment {
    variables = merge(
      {
        APP_ENV              = var.environment
        DATABASE_SECRET_NAME = aws_secretsmanager_secret.database.name
      },
      # The app reads DATABASE_URL (examples/outreachpass/*); see variable database_url_from_secret.
      var.database_url_from_secret ? { DATABASE_URL = data.aws_secretsmanager_secret_version.database[0].secret_string } : {},
    )
  }

  tags = {
    "opcd:project"   = local.project
    "opcd:component" = each.key
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda,
    aws_iam_role_policy_attachment.lambda_basic,
  ]

  lifecycle {
    # opcd deploys the code (UpdateFunctionCode from s3://outreachpass-artifacts/…).
    ignore_changes = [filename, source_code_hash, s3_bucket, s3_key, description]
  }
}

resource "aws_lambda_alias" "live" {
  for_each = aws_lambda_function.app

  name             = local.live_alias
  description      = "Serving traffic; moved by opcd deploys and rollbacks"
  function_name    = each.value.function_name
  function_version = each.value.version

  lifecycle {
    # opcd moves `live` (and splits it during canary and linear shifts).
    ignore_changes = [function_version, routing_config]
  }
}
