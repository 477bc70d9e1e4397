# What dev and prod share, created only where manage_shared is true (prod.tfvars):
# the artifact bucket (Lambda packages, image metadata, saved Terraform plans, opcd's ledger)
# and the frontend's ECR repository.

resource "aws_s3_bucket" "artifacts" {
  count  = var.manage_shared ? 1 : 0
  bucket = local.artifact_bucket

  tags = {
    Environment = "shared"
  }

  lifecycle {
    prevent_destroy = true # it holds opcd's ledger: the record of every deploy
  }
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  count  = var.manage_shared ? 1 : 0
  bucket = aws_s3_bucket.artifacts[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  count  = var.manage_shared ? 1 : 0
  bucket = aws_s3_bucket.artifacts[0].id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "artifacts" {
  count  = var.manage_shared ? 1 : 0
  bucket = aws_s3_bucket.artifacts[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  count  = var.manage_shared ? 1 : 0
  bucket = aws_s3_bucket.artifacts[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

data "aws_iam_policy_document" "artifacts_tls_only" {
  count = var.manage_shared ? 1 : 0

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.artifacts[0].arn,
      "${aws_s3_bucket.artifacts[0].arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "artifacts" {
  count  = var.manage_shared ? 1 : 0
  bucket = aws_s3_bucket.artifacts[0].id
  policy = data.aws_iam_policy_document.artifacts_tls_only[0].json

  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}

# Retention. The component rules carry the IDs opcd itself uses, `opcd-retention-<component>`
# (tasks/s3_artifacts.py RULE_PREFIX): a Lambda deploy checks that its rule exists with
# Expiration.Days = artifact_retention_days and rewrites it otherwise, and drift-check reports a
# component without that rule. With the same IDs and days, neither ever rewrites the other.
# Nothing expires under ledger/ (opcd's deploy records): no rule covers that prefix.
resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  count  = var.manage_shared ? 1 : 0
  bucket = aws_s3_bucket.artifacts[0].id

  # {component}/{version}/lambda.zip and metadata.json
  dynamic "rule" {
    for_each = local.artifact_components

    content {
      id     = "opcd-retention-${rule.value}"
      status = "Enabled"

      filter {
        prefix = "${rule.value}/"
      }

      expiration {
        days = var.artifact_retention_days
      }

      noncurrent_version_expiration {
        noncurrent_days = 7
      }
    }
  }

  # terraform/plans/{plan id}/{environment}/: saved plans and their summaries
  rule {
    id     = "opcd-retention-terraform-plans"
    status = "Enabled"

    filter {
      prefix = "terraform/plans/"
    }

    expiration {
      days = var.artifact_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.artifacts]
}

# The frontend's images: opcd pushes :{version} (never overwritten) and moves :latest, so tags
# must stay mutable.
resource "aws_ecr_repository" "frontend" {
  count                = var.manage_shared ? 1 : 0
  name                 = local.frontend_repository
  image_tag_mutability = "MUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }

  tags = {
    Environment = "shared"
  }
}

resource "aws_ecr_lifecycle_policy" "frontend" {
  count      = var.manage_shared ? 1 : 0
  repository = aws_ecr_repository.frontend[0].name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Keep the last 30 images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = 30
        }
        action = {
          type = "expire"
        }
      },
    ]
  })
}
