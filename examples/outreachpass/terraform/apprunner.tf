# The frontend's App Runner service (opcd.toml: environments.<env>.services.frontend).
#
# Created from the repository's :latest image; opcd then points it at version tags
# (UpdateService, keeping every other setting), hence the ignore_changes on the image.
# The image must exist when the service is created: see "First apply" in README.md.

data "aws_iam_policy_document" "apprunner_ecr_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["build.apprunner.amazonaws.com"]
    }
  }
}

# Lets App Runner pull from the private ECR repository.
resource "aws_iam_role" "apprunner_ecr_access" {
  name               = "${local.web_service_name}-ecr-access"
  description        = "App Runner pulls ${local.frontend_repository} images for ${local.web_service_name}"
  assume_role_policy = data.aws_iam_policy_document.apprunner_ecr_assume.json
}

resource "aws_iam_role_policy_attachment" "apprunner_ecr_access" {
  role       = aws_iam_role.apprunner_ecr_access.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSAppRunnerServicePolicyForECRAccess"
}

resource "aws_apprunner_service" "frontend" {
  service_name = local.web_service_name

  source_configuration {
    auto_deployments_enabled = false # opcd decides what runs

    authentication_configuration {
      access_role_arn = aws_iam_role.apprunner_ecr_access.arn
    }

    image_repository {
      image_identifier      = "${local.frontend_repository_url}:latest"
      image_repository_type = "ECR"

      image_configuration {
        port = "8080" # busybox httpd in examples/outreachpass/frontend/Dockerfile
      }
    }
  }

  instance_configuration {
    cpu    = "256"
    memory = "512"
  }

  health_check_configuration {
    protocol            = "HTTP"
    path                = "/health.json"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 1
    unhealthy_threshold = 5
  }

  tags = {
    "opcd:project"   = local.project
    "opcd:component" = "frontend"
  }

  depends_on = [aws_iam_role_policy_attachment.apprunner_ecr_access]

  lifecycle {
    # opcd points the service at :{version} tags.
    ignore_changes = [source_configuration[0].image_repository[0].image_identifier]
  }
}
