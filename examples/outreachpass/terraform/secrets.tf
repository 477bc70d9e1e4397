# The database's connection URL (opcd.toml: environments.<env>.database_secret). opcd reads it to
# run migrations; the functions use it as DATABASE_URL.
#
# The secret's VALUE is never in this code: set it outside Terraform, once per environment, e.g.
#   aws secretsmanager put-secret-value --secret-id outreachpass/dev/database --secret-string 'postgresql://…'
resource "aws_secretsmanager_secret" "database" {
  name                    = local.database_secret_name
  description             = "OutreachPass ${var.environment} database URL (value set outside Terraform)"
  recovery_window_in_days = var.environment == "prod" ? 30 : 7
}

# Only with database_url_from_secret = true: the current value, for the functions' DATABASE_URL.
# It fails while the secret has no value yet; it puts the value in the state (encrypted S3) and in
# the functions' configuration.
data "aws_secretsmanager_secret_version" "database" {
  count     = var.database_url_from_secret ? 1 : 0
  secret_id = aws_secretsmanager_secret.database.id
}
