# terraform init -backend-config=backends/prod.hcl
bucket       = "outreachpass-terraform-state"
key          = "outreachpass/prod/terraform.tfstate"
region       = "us-east-1"
use_lockfile = true
encrypt      = true
