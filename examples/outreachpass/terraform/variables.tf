variable "environment" {
  description = "The opcd environment this state holds: dev or prod (opcd.toml [environments])."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be \"dev\" or \"prod\" (the environments of opcd.toml)."
  }
}

variable "region" {
  description = "AWS region; must be opcd.toml's project.region."
  type        = string
  default     = "us-east-1"
}

variable "artifact_retention_days" {
  description = "Days before artifacts under each component's prefix expire; must equal opcd.toml's project.artifact_retention_days (a Lambda deploy rewrites a retention rule whose days differ)."
  type        = number
  default     = 30

  validation {
    condition     = var.artifact_retention_days >= 1 && var.artifact_retention_days <= 3650
    error_message = "artifact_retention_days must be between 1 and 3650 (the bounds opcd accepts)."
  }
}

variable "manage_shared" {
  description = "Create what both environments share (the artifact bucket and the ECR repository). True in exactly one environment's state: prod's."
  type        = bool
}

variable "db_instance_identifier" {
  description = "The RDS instance the functions use (it is not managed here); null skips the DB CPU alarm."
  type        = string
  default     = null
}

variable "alarm_topic_arn" {
  description = "SNS topic notified when an alarm fires or clears; null for none (opcd polls the alarms itself)."
  type        = string
  default     = null
}

variable "database_url_from_secret" {
  description = "Set the functions' DATABASE_URL from the database secret's current value (read at plan time; it is then in the state and the functions' configuration). Turn on once the secret holds a value."
  type        = bool
  default     = false
}

variable "ecs_frontend" {
  description = "Also run the frontend on ECS Fargate behind a load balancer (ecs.tf; opcd-ecs.toml deploys to it)."
  type        = bool
  default     = false
}

variable "vpc_id" {
  description = "The VPC of the ECS frontend's load balancer and tasks (with ecs_frontend)."
  type        = string
  default     = null

  validation {
    condition     = !var.ecs_frontend || var.vpc_id != null
    error_message = "ecs_frontend needs vpc_id (and public_subnet_ids, private_subnet_ids)."
  }
}

variable "public_subnet_ids" {
  description = "Subnets of the ECS frontend's load balancer, in two or more zones (with ecs_frontend)."
  type        = list(string)
  default     = []

  validation {
    condition     = !var.ecs_frontend || length(var.public_subnet_ids) >= 2
    error_message = "ecs_frontend needs public_subnet_ids in at least two availability zones."
  }
}

variable "private_subnet_ids" {
  description = "Subnets of the ECS frontend's tasks, with a route to ECR (NAT or VPC endpoints) (with ecs_frontend)."
  type        = list(string)
  default     = []

  validation {
    condition     = !var.ecs_frontend || length(var.private_subnet_ids) >= 1
    error_message = "ecs_frontend needs private_subnet_ids (with a route to ECR and CloudWatch Logs)."
  }
}
