# The frontend on Amazon ECS (Fargate) behind an Application Load Balancer, beside the App Runner
# service: created only with ecs_frontend = true (opcd-ecs.toml deploys to it). opcd.toml names
# it in environments.<env>.ecs.frontend = { cluster, service, strategy }.
#
# Terraform creates the cluster, the first task definition (from :latest), the service, the load
# balancer with its two target groups and the alarms; opcd then registers a new task definition
# revision per deploy (the same definition, only the `frontend` container's image changed, to its
# digest) and updates the service to it, with the deployment strategy and alarms of opcd.toml,
# hence the ignore_changes below. Native blue/green (strategy BLUE_GREEN) needs the alternate
# target group, the production listener rule and the role that lets ECS move the rule.

locals {
  ecs_cluster_name   = "outreachpass-${var.environment}"
  ecs_service_name   = "outreachpass-web-ecs-${var.environment}"
  ecs_container_name = "frontend" # opcd.toml components.frontend.container
  ecs_container_port = 8080       # busybox httpd in examples/outreachpass/frontend/Dockerfile
  ecs                = var.ecs_frontend ? toset(["frontend"]) : toset([])
}

resource "aws_ecs_cluster" "main" {
  for_each = local.ecs
  name     = local.ecs_cluster_name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Pulls the image and writes the logs. opcd's deploy role may pass it (iam:PassRole, scoped to
# these two roles' names: `opcd iam policy`).
resource "aws_iam_role" "ecs_execution" {
  for_each           = local.ecs
  name               = "${local.ecs_service_name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "ecs_execution" {
  for_each   = local.ecs
  role       = aws_iam_role.ecs_execution[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# What the frontend's code may call: nothing yet.
resource "aws_iam_role" "ecs_task" {
  for_each           = local.ecs
  name               = "${local.ecs_service_name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_cloudwatch_log_group" "ecs" {
  for_each          = local.ecs
  name              = "/ecs/${local.ecs_service_name}"
  retention_in_days = 30
}

resource "aws_ecs_task_definition" "frontend" {
  for_each                 = local.ecs
  family                   = local.ecs_service_name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  execution_role_arn       = aws_iam_role.ecs_execution[each.key].arn
  task_role_arn            = aws_iam_role.ecs_task[each.key].arn

  container_definitions = jsonencode([{
    name         = local.ecs_container_name
    image        = "${local.frontend_repository_url}:latest"
    essential    = true
    portMappings = [{ containerPort = local.ecs_container_port, protocol = "tcp" }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.ecs[each.key].name
        awslogs-region        = var.region
        awslogs-stream-prefix = local.ecs_container_name
      }
    }
  }])
}

resource "aws_security_group" "ecs_alb" {
  for_each    = local.ecs
  name        = "${local.ecs_service_name}-alb"
  description = "HTTP to the ${local.ecs_service_name} load balancer"
  vpc_id      = var.vpc_id

  ingress {
    description = "HTTP from anywhere (put CloudFront or an HTTPS listener in front in production)"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "ecs_tasks" {
  for_each    = local.ecs
  name        = "${local.ecs_service_name}-tasks"
  description = "The load balancer to the ${local.ecs_service_name} tasks"
  vpc_id      = var.vpc_id

  ingress {
    from_port       = local.ecs_container_port
    to_port         = local.ecs_container_port
    protocol        = "tcp"
    security_groups = [aws_security_group.ecs_alb[each.key].id]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_lb" "frontend" {
  for_each           = local.ecs
  name               = "outreachpass-web-${var.environment}"
  load_balancer_type = "application"
  security_groups    = [aws_security_group.ecs_alb[each.key].id]
  subnets            = var.public_subnet_ids
}

# Blue and green: ECS moves the production rule between them during a blue/green deployment.
resource "aws_lb_target_group" "frontend" {
  for_each    = { for pair in setproduct(tolist(local.ecs), ["blue", "green"]) : pair[1] => pair[0] }
  name        = "outreachpass-web-${var.environment}-${each.key}"
  port        = local.ecs_container_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  health_check {
    path                = "/health.json"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
    matcher             = "200"
  }
}

resource "aws_lb_listener" "frontend" {
  for_each          = local.ecs
  load_balancer_arn = aws_lb.frontend[each.key].arn
  port              = 80
  protocol          = "HTTP"

  # Forward actions only: ECS's blue/green refuses listeners that mix forward with fixed-response,
  # redirect or authentication actions.
  default_action {
    type = "forward"

    forward {
      target_group {
        arn    = aws_lb_target_group.frontend["blue"].arn
        weight = 100
      }

      target_group {
        arn    = aws_lb_target_group.frontend["green"].arn
        weight = 0
      }
    }
  }

  lifecycle {
    ignore_changes = [default_action]
  }
}

resource "aws_lb_listener_rule" "production" {
  for_each     = local.ecs
  listener_arn = aws_lb_listener.frontend[each.key].arn
  priority     = 1

  action {
    type = "forward"

    forward {
      target_group {
        arn    = aws_lb_target_group.frontend["blue"].arn
        weight = 100
      }

      target_group {
        arn    = aws_lb_target_group.frontend["green"].arn
        weight = 0
      }
    }
  }

  condition {
    path_pattern {
      values = ["/*"]
    }
  }

  lifecycle {
    # ECS's blue/green deployments move the rule's weights between the target groups.
    ignore_changes = [action]
  }
}

# Lets ECS move the production rule during a blue/green deployment.
data "aws_iam_policy_document" "ecs_infrastructure_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ecs_infrastructure" {
  for_each           = local.ecs
  name               = "${local.ecs_service_name}-infrastructure"
  assume_role_policy = data.aws_iam_policy_document.ecs_infrastructure_assume.json
}

resource "aws_iam_role_policy_attachment" "ecs_infrastructure" {
  for_each   = local.ecs
  role       = aws_iam_role.ecs_infrastructure[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"
}

resource "aws_ecs_service" "frontend" {
  for_each        = local.ecs
  name            = local.ecs_service_name
  cluster         = aws_ecs_cluster.main[each.key].id
  task_definition = aws_ecs_task_definition.frontend[each.key].arn
  desired_count   = var.environment == "prod" ? 2 : 1
  launch_type     = "FARGATE"

  deployment_controller {
    type = "ECS"
  }

  # opcd sets the strategy per deploy (opcd.toml environments.<env>.ecs.frontend.strategy); this
  # is the service's starting point.
  deployment_configuration {
    strategy             = var.environment == "prod" ? "BLUE_GREEN" : "ROLLING"
    bake_time_in_minutes = var.environment == "prod" ? 5 : null
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  alarms {
    enable      = true
    rollback    = true
    alarm_names = [aws_cloudwatch_metric_alarm.frontend_5xx[each.key].alarm_name]
  }

  network_configuration {
    subnets         = var.private_subnet_ids
    security_groups = [aws_security_group.ecs_tasks[each.key].id]
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.frontend["blue"].arn
    container_name   = local.ecs_container_name
    container_port   = local.ecs_container_port

    advanced_configuration {
      alternate_target_group_arn = aws_lb_target_group.frontend["green"].arn
      production_listener_rule   = aws_lb_listener_rule.production[each.key].arn
      role_arn                   = aws_iam_role.ecs_infrastructure[each.key].arn
    }
  }

  tags = {
    "opcd:project"   = local.project
    "opcd:component" = "frontend"
  }

  lifecycle {
    # opcd registers the revisions and chooses the strategy of each deployment.
    ignore_changes = [task_definition, deployment_configuration, deployment_circuit_breaker, alarms, load_balancer]
  }

  depends_on = [aws_iam_role_policy_attachment.ecs_infrastructure, aws_lb_listener_rule.production]
}

# The frontend answering 5xx to more than 1% of requests over 5 minutes: ECS rolls a deployment
# back when it fires (the service's alarms), and opcd.toml's environments.<env>.alarms lists it.
resource "aws_cloudwatch_metric_alarm" "frontend_5xx" {
  for_each            = local.ecs
  alarm_name          = "${local.ecs_service_name}-5xx"
  alarm_description   = "${local.ecs_service_name}: more than 1% of requests answered 5xx over 5 minutes. Rolls an ECS deployment back."
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
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      period      = 300
      stat        = "Sum"
      dimensions = {
        LoadBalancer = aws_lb.frontend[each.key].arn_suffix
      }
    }
  }

  metric_query {
    id = "requests"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      period      = 300
      stat        = "Sum"
      dimensions = {
        LoadBalancer = aws_lb.frontend[each.key].arn_suffix
      }
    }
  }
}
