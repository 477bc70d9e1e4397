terraform {
  # 1.10: the S3 backend's native locking (use_lockfile in backends/*.hcl).
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.4, < 7.0" # 6.4: aws_ecs_service deployment_configuration (ECS blue/green)
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4"
    }
  }

  # Partial configuration: `terraform init -backend-config=backends/<environment>.hcl`.
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = local.project
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
